"""Shared plumbing of the IOC: settings, the site file, database access and migrations, the bus."""
