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


class ServeProcess:
    """`ioc serve` as its own OS process (multi-process fan-out, memory measurements)."""

    def __init__(self, env: dict[str, str]) -> None:
        import subprocess
        import sys

        from core.settings import ROOT

        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env={**env, "IOC_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def __enter__(self) -> ServeProcess:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-2000:])  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("API process did not become ready")
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:
            self.proc.kill()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login_full(base_url: str, username: str, password: str) -> dict:
    r = httpx.post(
        f"{base_url}/api/v1/auth/token", data={"username": username, "password": password}
    )
    r.raise_for_status()
    return r.json()
