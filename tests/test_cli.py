"""The `ioc` command as a user meets it: the help lists every command; bad settings, unreachable
services and a malformed site file give one line naming the key or host, and a non-zero exit."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from core.settings import ROOT


def ioc(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_help_lists_the_commands(env_for):
    out = ioc("--help", env=env_for()).stdout
    for command in ("setup", "demo", "ingest", "serve", "simulate", "analytics", "broker", "user"):
        assert command in out


@pytest.mark.parametrize(
    ("extra", "args", "expected", "code"),
    [
        ({"IOC_DATABSE_URL": "x"}, ("setup",), "unknown setting IOC_DATABSE_URL", 2),
        ({"IOC_MQTT_PORT": "eighty"}, ("setup",), "bad setting IOC_MQTT_PORT", 2),
        ({"IOC_API_PORT": "70000"}, ("serve",), "bad setting IOC_API_PORT", 2),
        (
            {"IOC_REDIS_URL": "redis://127.0.0.1:1/0"},
            ("setup",),
            "Redis is not reachable at 127.0.0.1:1 (connection refused)",
            3,
        ),
        (
            {"IOC_DATABASE_URL": "postgresql://ioc:x@127.0.0.1:1/ioc"},
            ("setup",),
            "PostgreSQL is not reachable at 127.0.0.1:1",
            3,
        ),
        ({"IOC_MQTT_PORT": "1"}, ("ingest",), "Mosquitto is not reachable at 127.0.0.1:1", 3),
        (
            {"IOC_SITE_FILE": "/nonexistent/site.yaml"},
            ("setup",),
            "site file /nonexistent/site.yaml: cannot be read",
            2,
        ),
    ],
)
def test_expected_errors_are_one_line(env_for, migrated, extra, args, expected, code):
    r = ioc(*args, env=env_for(**extra))
    assert r.returncode == code, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "Traceback" not in r.stderr


def test_services_refuse_an_unmigrated_database(env_for, base_settings, run_id):
    import psycopg

    from tests.conftest import _with_db

    owner = base_settings.database_url.get_secret_value()
    name = f"ioc_t_{run_id}_empty"
    with psycopg.connect(owner, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        for command in ("ingest", "analytics"):
            r = ioc(command, env=env_for(IOC_DATABASE_URL=_with_db(owner, name)))
            assert r.returncode == 1
            msg = r.stderr.strip()  # every migration is listed: 0001 and whatever follows
            assert msg.startswith("error: the database is missing migration(s) 0001")
            assert msg.endswith(": run `ioc setup` first") and "\n" not in msg
    finally:
        with psycopg.connect(owner, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_malformed_site_file_names_the_key(env_for, tmp_path):
    bad = tmp_path / "site.yaml"
    text = (
        (ROOT / "sites" / "iahdrai.yaml")
        .read_text()
        .replace(
            'org_unit: iahdrai-iadal, name: "AP UBND xã Ia Đal"', 'org_unit: nowhere, name: "AP"'
        )
    )
    bad.write_text(text)
    r = ioc("setup", env=env_for(IOC_SITE_FILE=str(bad)))
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"error: site file {bad}: sources[")
    assert "org_unit: unknown org unit 'nowhere'" in r.stderr


def test_setup_twice_is_idempotent_and_quick(env_for, migrated):
    env = env_for()
    first = ioc("setup", env=env)
    assert first.returncode == 0, first.stderr
    t0 = time.monotonic()
    second = ioc("setup", env=env)
    took = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    assert "migrations: up to date" in second.stdout
    print(f"second `ioc setup`: {took:.2f}s")
