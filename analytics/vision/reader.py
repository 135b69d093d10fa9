"""Camera readers through OpenCV's FFmpeg backend.

A file is read frame by frame (offline: nothing dropped, time from the frame index). A live
stream (RTSP, HTTP) is read by a thread that keeps only the newest frame, so processing never
lags behind the camera (frames are dropped instead); when no frame arrives for ``stall_s`` it
reports the camera offline, reconnects with exponential backoff and reports it back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.errors import IOCError

log = logging.getLogger("ioc.vision.reader")
LIVE_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def is_live(source: str) -> bool:
    return source.lower().startswith(LIVE_SCHEMES)


def _redact(source: str) -> str:
    """Hide a password in an RTSP URL before it reaches a log or an error message."""
    if "@" in source and "://" in source:
        scheme, rest = source.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return source


def open_capture(source: str, open_timeout_s: float = 10, read_timeout_s: float = 5):
    """Open a source with the FFmpeg backend; IOCError (one line) when it gives no frame."""
    import cv2

    if not is_live(source) and not Path(source).is_file():
        raise IOCError(f"video source {source}: no such file")
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ]  # fmt: skip
    cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        raise IOCError(f"video source {_redact(source)}: cannot be opened (not a readable stream)")
    return cap


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    t: float  # seconds: into the file, or since the reader started for a live stream
    index: int  # frames read from the source so far (dropped ones included)


def read_file(
    source: str, every_s: float = 0.0, stats: dict[str, int] | None = None
) -> Iterator[Frame]:
    """Every frame of a file (or one per ``every_s`` seconds of video), in order; ``stats``
    gets ``frames_read`` (skipped frames included)."""
    stats = stats if stats is not None else {}
    cap = open_capture(source)
    fps = cap.get(5) or 0.0  # CAP_PROP_FPS
    fps = fps if 1 <= fps <= 240 else 25.0
    index, next_t, got = 0, 0.0, 0
    try:
        while True:
            ok = cap.grab()
            if not ok:
                break
            t = index / fps
            index += 1
            stats["frames_read"] = index
            if t + 1e-9 < next_t:
                continue
            ok, image = cap.retrieve()
            if not ok or image is None:
                break
            got += 1
            next_t = t + every_s
            yield Frame(image, t, index)
    finally:
        cap.release()
    if got == 0:
        raise IOCError(f"video source {source}: no frame could be decoded (not a video?)")


StatusCallback = Callable[[str, float, str], None]  # ("offline" | "back", t, reason)


@dataclass
class LiveReader:
    """Newest-frame reader of a live stream with stall detection and reconnection."""

    source: str
    stall_s: float = 5.0
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    on_status: StatusCallback | None = None
    give_up_first: bool = False  # stop (set ``failed``) when the very first connection fails
    open_timeout_s: float = 10.0
    frames_read: int = 0
    frames_dropped: int = 0  # replaced by a newer one before the consumer took them
    reconnects: int = 0
    online: bool = False
    _frame: Frame | None = field(default=None, init=False, repr=False)
    _taken: int = field(default=0, init=False)
    _cond: threading.Condition = field(default_factory=threading.Condition, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _t0: float = field(default_factory=time.monotonic, init=False)
    last_error: str = ""
    failed: bool = False

    def now(self) -> float:
        return time.monotonic() - self._t0

    def start(self) -> LiveReader:
        self._thread = threading.Thread(target=self._run, name=f"reader {self.source}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=self.stall_s + 5)

    def _status(self, state: str, reason: str) -> None:
        self.online = state == "back" or state == "online"
        log.info("camera %s %s (%s)", _redact(self.source), state, reason)
        if self.on_status:
            self.on_status(state, self.now(), reason)

    def _run(self) -> None:
        delay = self.backoff_s
        ever_online = False
        offline_reported = False
        while not self._stop.is_set():
            try:
                cap = open_capture(
                    self.source, open_timeout_s=self.open_timeout_s, read_timeout_s=self.stall_s
                )
            except IOCError as exc:
                self.last_error = str(exc)
                if self.give_up_first and not ever_online:
                    self.failed = True
                    with self._cond:
                        self._cond.notify_all()
                    return
                if not offline_reported:
                    self._status("offline", "cannot connect")
                    offline_reported = True
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            last_frame = time.monotonic()
            reason = "stream ended"
            while not self._stop.is_set():
                ok, image = cap.read()
                if not ok or image is None:
                    # The read timeout turns a silent stream into a failed read.
                    stalled = time.monotonic() - last_frame
                    reason = f"no frame for {stalled:.1f} s"
                    if stalled >= self.stall_s or not cap.isOpened():
                        break
                    self._stop.wait(0.05)
                    continue
                last_frame = time.monotonic()
                if offline_reported or not ever_online:
                    self._status("back" if ever_online else "online", "frames flowing")
                    ever_online, offline_reported = True, False
                    delay = self.backoff_s
                self.frames_read += 1
                with self._cond:
                    if self._frame is not None and self._frame.index != self._taken:
                        self.frames_dropped += 1  # the one-frame queue: drop, never lag
                    self._frame = Frame(image, self.now(), self.frames_read)
                    self._cond.notify_all()
            cap.release()
            if self._stop.is_set():
                break
            self.reconnects += 1
            if not offline_reported:
                self._status("offline", reason)
                offline_reported = True
            self._stop.wait(delay)
            delay = min(delay * 2, self.backoff_max_s)

    def latest(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet taken; None when none arrives within ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._frame is None or self._frame.index == self._taken:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set() or self.failed:
                    return None
                self._cond.wait(left)
            self._taken = self._frame.index
            return self._frame
