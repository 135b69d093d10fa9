"""Fixtures for the camera pipeline tests: real footage (vtest.avi from Debian's opencv-doc),
short clips cut from it, the real model, and a real GStreamer RTSP server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from analytics.vision.footage import vtest_path
from core.settings import ROOT

RTSP_SCRIPT = ROOT / "analytics" / "vision" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi (the venv cannot import gi)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_clip(path: Path, frames: list[np.ndarray], fps: float = 10.0) -> Path:
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        out.write(f)
    out.release()
    return path


@pytest.fixture(scope="session")
def vtest() -> Path:
    return vtest_path()


@pytest.fixture(scope="session")
def vtest_frames(vtest: Path) -> list[np.ndarray]:
    """The first 160 frames (16 s) of vtest.avi."""
    cap = cv2.VideoCapture(str(vtest), cv2.CAP_FFMPEG)
    frames = []
    while len(frames) < 160:
        ok, f = cap.read()
        assert ok, "vtest.avi ended early"
        frames.append(f)
    cap.release()
    return frames


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory, vtest_frames: list[np.ndarray]) -> Path:
    """A 12-second clip of real footage, so the CLI tests stay short."""
    return write_clip(tmp_path_factory.mktemp("clip") / "vtest12.avi", vtest_frames[:120])


@pytest.fixture(scope="session")
def still_clip(tmp_path_factory: pytest.TempPathFactory, vtest_frames: list[np.ndarray]) -> Path:
    """A still scene: one real frame repeated for 8 seconds (no motion at all)."""
    return write_clip(tmp_path_factory.mktemp("still") / "still.avi", [vtest_frames[0]] * 80)


class RtspServer:
    """The project's GStreamer RTSP server as a child process, stoppable and restartable."""

    def __init__(self, video: Path, port: int, mounts: tuple[str, ...]) -> None:
        self.video, self.port, self.mounts = video, port, mounts
        self.proc: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{mount}"

    def start(self) -> None:
        args = [SYSTEM_PYTHON, str(RTSP_SCRIPT), "--port", str(self.port), "--file"]
        args += [str(self.video), "--width", "384", "--height", "288", *self.mounts]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line == "ready", f"RTSP server did not start: {line!r}"

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


@pytest.fixture
def rtsp_server(clip: Path) -> Iterator[Callable[..., RtspServer]]:
    servers: list[RtspServer] = []

    def make(*mounts: str) -> RtspServer:
        srv = RtspServer(clip, free_port(), mounts or ("cam",))
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


def run_ioc(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """The real `ioc` command in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def wait_for(check: Callable[[], object], timeout: float, every: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


with contextlib.suppress(Exception):
    cv2.setNumThreads(2)
