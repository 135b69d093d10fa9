"""The screens, served as static files by the API."""

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
