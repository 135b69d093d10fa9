"""Ingestion: MQTT in, validated, stored in TimescaleDB, latest values and updates on the bus."""
