"""Versioned SQL migrations, applied in file-name order by `ioc setup`."""
