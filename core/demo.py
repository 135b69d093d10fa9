"""`ioc demo`: services, migrations, the simulator and every IOC process in one process group.
Ctrl-C (or SIGTERM) stops the children cleanly, then the demo exits."""

from __future__ import annotations

import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from core.errors import IOCError
from core.settings import Settings

DEMO_USERS = (
    ("operator", "operator", "iahdrai", "Trực ban IOC huyện"),
    ("lanhdao", "leader", "iahdrai", "Lãnh đạo UBND huyện"),
    ("xa-iadal", "field", "iahdrai-iadal", "Cán bộ xã Ia Đal"),
)


def ensure_demo_users(settings: Settings) -> str:
    """Create the demo accounts once; their passwords go to var/demo-credentials.txt (0600)."""
    from api.auth import hash_password
    from core import db

    path = settings.var_dir / "demo-credentials.txt"
    if path.exists():
        return str(path)
    lines = []
    with db.connect(settings) as conn:
        for username, role, unit, name in DEMO_USERS:
            password = secrets.token_urlsafe(9)
            conn.execute(
                """INSERT INTO users (username, display_name, password_hash, role, org_unit_id)
                   VALUES (%s, %s, %s, %s, %s) ON CONFLICT (username) DO UPDATE
                   SET password_hash = EXCLUDED.password_hash""",
                (username, name, hash_password(password), role, unit),
            )
            lines.append(f"{username}\t{password}\t{role}\t{unit}")
    path.touch(mode=0o600)
    path.write_text("username\tpassword\trole\torg unit\n" + "\n".join(lines) + "\n")
    return str(path)


def camera_specs(settings: Settings) -> list[tuple[str, list[str]]]:
    """The site's cameras played from real footage (vtest.avi) by the project's RTSP server, and
    the camera service on the first one (one camera keeps a shared 2-core machine usable).
    Optional: without the footage or GStreamer the demo runs without cameras."""
    from urllib.parse import urlsplit

    from analytics.vision.footage import vtest_path
    from core.site import load_site

    cams = load_site(settings.site_file).cameras
    local = [
        c for c in cams if urlsplit(c.url).hostname == "127.0.0.1" and c.url.startswith("rtsp")
    ]
    if not local or not Path(SYSTEM_PYTHON).exists():
        return []
    try:
        video = vtest_path()
    except IOCError as exc:
        print(f"• cameras left out: {exc}", flush=True)
        return []
    rtsp_port = str(urlsplit(local[0].url).port or 554)
    mounts = [urlsplit(c.url).path.lstrip("/") for c in local]
    server = str(Path(__file__).resolve().parent.parent / "analytics" / "vision" / "rtsp_server.py")
    env_free = ["env", "-u", "PYTHONPATH", "-u", "PYTHONHOME"]
    return [
        (
            "rtsp",
            [*env_free, SYSTEM_PYTHON, server, "--port", rtsp_port, "--file", str(video), *mounts],
        ),
        ("cameras", [sys.executable, "-m", "core.cli", "cameras", "--camera", local[0].id]),
    ]


SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi for GStreamer's RTSP server


def run_demo(settings: Settings, setup: Callable[[Settings], str], *, port: int) -> None:
    broker_action = setup(settings)
    creds = ensure_demo_users(settings)
    py = [sys.executable, "-m", "core.cli"]
    specs = [
        ("ingest", [*py, "ingest"]),
        ("analytics", [*py, "analytics"]),
        ("ops", [*py, "ops"]),  # KPIs against targets, rules → incidents, escalation, reports
        ("api", [*py, "serve", "--port", str(port)]),
        ("simulator", [*py, "simulate", "--interval", "1"]),
    ]
    extra = camera_specs(settings)
    optional = {name for name, _ in extra}  # cameras are a bonus: their exit is only reported
    specs += extra
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, argv in specs:
            children.append((name, subprocess.Popen(argv)))
            time.sleep(0.5)
        print(
            f"\n  IOC demo running: http://127.0.0.1:{port}\n"
            f"  screens: /wall (control room), /tablet (leaders), /phone (field staff)\n"
            f"  accounts (username / password): {creds}\n  Ctrl-C stops everything.\n",
            flush=True,
        )
        while not stopping:
            for name, proc in children:
                if proc.poll() is None:
                    continue
                if name not in optional:
                    raise IOCError(f"demo process '{name}' exited with code {proc.returncode}")
                print(f"• demo {name} stopped (code {proc.returncode})", flush=True)
                optional.discard(name)
                children.remove((name, proc))
                break
            time.sleep(0.5)
    finally:
        for _, proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in children:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
        if broker_action == "started":  # the demo started the broker, so it stops it too
            from core import broker

            broker.stop(settings)
        print("demo stopped", flush=True)
