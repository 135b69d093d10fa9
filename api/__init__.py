"""The FastAPI REST + websocket API and the static dashboard it serves."""
