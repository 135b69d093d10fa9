"""`ioc demo` as a user runs it: everything comes up, the page in headless Chromium shows live
WiFi users after logging in, and Ctrl-C stops every process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import sync_playwright

from core.settings import ROOT
from tests.conftest import CHROMIUM_ARGS, free_port, wait_until


@pytest.fixture
def demo(env_for):
    var = Path(tempfile.mkdtemp(prefix="ioc-demo-"))
    var.chmod(0o755)  # the broker drops to the mosquitto user and must reach its files
    port, mqtt_port = free_port(), free_port()
    env = env_for(
        IOC_VAR_DIR=str(var),
        IOC_MQTT_PORT=str(mqtt_port),
        IOC_MQTT_TLS_PORT=str(free_port()),
        IOC_INGEST_CLIENT_ID=f"demo-{port}",
    )
    log = open(var / "demo.log", "w+b")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.cli", "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_until(lambda: _up(port) or proc.poll() is not None, timeout=60, every=0.3)
        assert proc.poll() is None, (var / "demo.log").read_text()
        yield proc, port, var
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(
            [sys.executable, "-m", "core.cli", "broker", "stop"],
            env=env,
            cwd=ROOT,
            capture_output=True,
        )


def _up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _children(pgid: int) -> list[str]:
    out = subprocess.run(
        ["ps", "-e", "-o", "pid=,pgid=,stat=,args="], capture_output=True, text=True
    ).stdout
    return [
        line
        for line in out.splitlines()
        if line.split()[1] == str(pgid) and "Z" not in line.split()[2]
    ]


def test_demo_page_shows_live_values_and_ctrl_c_stops_all(demo, artifacts):
    proc, port, var = demo
    creds = (var / "demo-credentials.txt").read_text().splitlines()[1:]
    username, password = creds[0].split("\t")[:2]
    assert oct((var / "demo-credentials.txt").stat().st_mode & 0o777) == "0o600"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1080})
        page.goto(f"http://127.0.0.1:{port}/")
        assert page.locator("h1").inner_text() == "Đăng nhập"  # Vietnamese first
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", password)
        page.click("#login button[type=submit]")
        page.wait_for_selector("#wall:not([hidden])")
        page.wait_for_function("document.querySelector('#conn').classList.contains('on')")
        assert page.locator("#login").is_hidden()
        tile = page.locator("#tile-iahdrai .value")
        page.wait_for_function(
            "/^[0-9.]+$/.test(document.querySelector('#tile-iahdrai .value').textContent)",
            timeout=15000,
        )
        values = {page.locator(".tile .value").all_inner_texts().__str__()}
        deadline = time.monotonic() + 30
        while len(values) < 3 and time.monotonic() < deadline:  # the simulator moves the numbers
            values.add(page.locator(".tile .value").all_inner_texts().__str__())
            time.sleep(0.3)
        assert len(values) >= 3, "values on the page did not change"
        assert tile.inner_text().replace(".", "").isdigit()
        page.screenshot(path=str(artifacts / "demo-wall-1920x1080.png"))
        page.click("#lang")
        assert page.locator("h2 span").first.inner_text().startswith("Public WiFi")
        browser.close()

    proc.send_signal(signal.SIGINT)
    assert proc.wait(20) == 0
    log = (var / "demo.log").read_text()
    assert "demo stopped" in log
    assert "Traceback" not in log
    assert _children(proc.pid) == []
