"""Run the real API (uvicorn) in a thread on a free port for a test, and make accounts."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import uvicorn

from api.app import create_app
from api.auth import hash_password
from core.settings import Settings
from core.tls import ensure_tls
from tests.conftest import free_port


class ApiServer:
    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        tls: dict[str, str] = {}
        if settings.api_tls:
            files = ensure_tls(settings.tls_dir, settings.tls_hostnames.split(","))
            tls = {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}
        self.scheme = "https" if settings.api_tls else "http"
        config = uvicorn.Config(
            create_app(settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            ws_max_size=65536,
            **tls,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("API did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def make_user(settings: Settings, username: str, role: str, unit: str, password: str) -> None:
    with psycopg.connect(settings.database_url.get_secret_value()) as conn:
        conn.execute(
            """INSERT INTO users (username, password_hash, role, org_unit_id)
               VALUES (%s, %s, %s, %s) ON CONFLICT (username) DO UPDATE
               SET password_hash = EXCLUDED.password_hash, role = EXCLUDED.role,
                   org_unit_id = EXCLUDED.org_unit_id""",
            (username, hash_password(password), role, unit),
        )


def login(base_url: str, username: str, password: str) -> str:
    r = httpx.post(
        f"{base_url}/api/v1/auth/token", data={"username": username, "password": password}
    )
    r.raise_for_status()
    return r.json()["access_token"]
