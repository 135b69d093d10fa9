"""Cameras through a real RTSP server (GStreamer's gst-rtsp-server, H.264): newest-frame reading,
camera offline / back events when the server is stopped and restarted, and `ioc detect` on a URL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from analytics.vision.reader import LiveReader
from tests.vision.conftest import RtspServer, free_port, run_ioc, wait_for, write_clip


def test_reader_reports_offline_and_back_across_a_server_restart(
    rtsp_server: Callable[..., RtspServer],
) -> None:
    srv = rtsp_server("cam")
    statuses: list[tuple[str, float, str]] = []
    lock = threading.Lock()

    def on_status(state: str, t: float, reason: str) -> None:
        with lock:
            statuses.append((state, t, reason))

    reader = LiveReader(srv.url("cam"), stall_s=2.0, backoff_s=0.5, backoff_max_s=2.0,
                        on_status=on_status).start()  # fmt: skip
    try:
        first = wait_for(lambda: reader.latest(timeout=0.5), timeout=30)
        assert first.image.shape == (288, 384, 3)
        wait_for(lambda: reader.frames_read >= 10, timeout=20)
        before = reader.frames_read
        # Newest frame only: a slow consumer skips frames instead of falling behind.
        time.sleep(1.0)
        fr = reader.latest(timeout=2)
        assert fr is not None and fr.index > before + 1
        srv.stop()
        wait_for(lambda: any(s[0] == "offline" for s in statuses), timeout=20)
        srv.start()  # same port, same mount
        wait_for(lambda: any(s[0] == "back" for s in statuses), timeout=40)
        n = reader.frames_read
        wait_for(lambda: reader.frames_read > n + 5, timeout=20)
    finally:
        reader.stop()
    states = [s[0] for s in statuses]
    assert states[0] == "online" and states.index("offline") < states.index("back")
    assert reader.reconnects >= 1


def test_detect_on_an_rtsp_url(rtsp_server: Callable[..., RtspServer]) -> None:
    srv = rtsp_server("walk")
    res = run_ioc("detect", srv.url("walk"), "--json", "--no-snapshots", "--max-seconds", "8")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])["summary"]
    assert summary["frames_read"] > 10 and summary["frames_detected"] > 0


def test_unreachable_rtsp_url_gives_one_line() -> None:
    res = run_ioc("detect", f"rtsp://127.0.0.1:{free_port()}/none", "--json", timeout=60)
    err = res.stderr.strip()
    assert res.returncode == 1 and err.startswith("error: ") and "\n" not in err, err


def test_server_loops_the_file(tmp_path: Path, vtest_frames: list[np.ndarray]) -> None:
    """A 2-second file is served without end: the server seeks back instead of ending."""
    short = write_clip(tmp_path / "two_seconds.avi", vtest_frames[:20])
    srv = RtspServer(short, free_port(), ("loop",))
    srv.start()
    statuses: list[str] = []
    reader = LiveReader(srv.url("loop"), stall_s=3.0, on_status=lambda s, t, r: statuses.append(s))
    try:
        reader.start()
        wait_for(lambda: reader.frames_read >= 50, timeout=30)  # 5 s of a 2 s file
    finally:
        reader.stop()
        srv.stop()
    assert statuses == ["online"]


def test_detect_on_an_http_stream(clip: Path) -> None:
    """HTTP sources go through the same FFmpeg reader (a local HTTP server, a real socket)."""
    import functools
    import http.server

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(clip.parent))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/{clip.name}"
        res = run_ioc("detect", url, "--json", "--no-snapshots", "--max-seconds", "4")
    finally:
        httpd.shutdown()
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])["summary"]
    assert summary["frames_read"] > 0 and summary["frames_processed"] > 0
