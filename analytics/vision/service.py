"""`ioc cameras`: every camera of the site through the pipeline, events to TimescaleDB and the bus.

One reader and pipeline thread per camera, one shared ONNX Runtime session (its ``run`` is
thread-safe), and one writer (this thread) that does all database and Redis I/O, so a slow or
absent database never stalls a camera. A camera whose configuration is bad is reported and left
out; the others run.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics.vision import sinks
from analytics.vision.detector import Detector, load_detector
from analytics.vision.events import CameraEvent, prune_media
from analytics.vision.reader import LiveReader
from analytics.vision.runner import Pipeline
from core import bus, db
from core.errors import IOCError
from core.settings import Settings
from core.site import Camera, Site

log = logging.getLogger("ioc.vision")
COUNTS_EVERY_S = 60.0
PRUNE_EVERY_S = 3600.0


@dataclass
class _Msg:
    kind: str  # "start" | "end" | "status" | "counts"
    camera: Camera
    payload: Any
    arrived: float | None = None  # monotonic time the frame that completed the rule arrived


class CameraService:
    def __init__(
        self,
        settings: Settings,
        site: Site,
        cameras: list[str] | None = None,
        media_dir: Path | None = None,
        threads: int = 2,
        stall_s: float = 5.0,
        media_keep_days: float = 30.0,
    ) -> None:
        self.settings, self.site = settings, site
        self.cameras = [c for c in site.cameras if cameras is None or c.id in cameras]
        if cameras and len(self.cameras) != len(set(cameras)):
            known = {c.id for c in site.cameras}
            raise IOCError(
                f"camera '{next(c for c in cameras if c not in known)}' is not in the site"
            )
        self.media_dir = media_dir or settings.var_dir / "media"
        self.threads, self.stall_s, self.media_keep_days = threads, stall_s, media_keep_days
        self.keys = bus.Keys(settings.redis_prefix)
        self.outbox: queue.Queue[_Msg] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._detectors: dict[str, Detector] = {}
        self.errors: dict[str, str] = {}

    def stop(self) -> None:
        self._stop.set()

    def _detector(self, card: str | None) -> Detector:
        key = card or ""
        if key not in self._detectors:
            self._detectors[key] = load_detector(card, threads=self.threads)
        return self._detectors[key]

    def _put(self, msg: _Msg) -> None:
        try:
            self.outbox.put_nowait(msg)
        except queue.Full:
            log.error("camera outbox full: dropping a %s message of %s", msg.kind, msg.camera.id)

    def _camera_loop(self, cam: Camera, pipe: Pipeline) -> None:
        offline: CameraEvent | None = None

        def on_status(state: str, t: float, reason: str) -> None:
            nonlocal offline
            self._put(_Msg("status", cam, (state, reason)))
            if state == "offline" and offline is None:
                offline = CameraEvent(
                    cam.id, "camera_offline", None, "", t, detail={"reason": reason}
                )
                self._put(_Msg("start", cam, offline))
            elif state == "back" and offline is not None:
                offline.end_s, offline.ended_at = t, datetime.now(UTC)
                self._put(_Msg("end", cam, offline))
                offline = None

        reader = LiveReader(cam.substream_url or cam.url, stall_s=self.stall_s, on_status=on_status)
        reader.start()
        every = 1.0 / cam.detect_fps
        next_t, next_counts = 0.0, time.monotonic() + COUNTS_EVERY_S
        try:
            while not self._stop.is_set():
                fr = reader.latest(timeout=0.5)
                if fr is not None and fr.t >= next_t:
                    next_t = fr.t + every
                    arrived = time.monotonic() - (reader.now() - fr.t)
                    started, ended = pipe.process(fr.image, fr.t)
                    for ev in started:
                        self._put(_Msg("start", cam, ev, arrived))
                    for ev in ended:
                        self._put(_Msg("end", cam, ev, arrived))
                if time.monotonic() >= next_counts and pipe.engine:
                    next_counts += COUNTS_EVERY_S
                    self._put(_Msg("counts", cam, pipe.engine.take_counts()))
        finally:
            reader.stop()
            for ev in pipe.flush(reader.now()):
                self._put(_Msg("end", cam, ev))
            if pipe.engine:
                self._put(_Msg("counts", cam, pipe.engine.take_counts()))

    def start_cameras(self) -> list[threading.Thread]:
        workers = []
        for cam in self.cameras:
            try:
                pipe = Pipeline(cam, self._detector(cam.model), media_dir=self.media_dir)
            except IOCError as exc:
                self.errors[cam.id] = str(exc)
                log.error("camera %s left out: %s", cam.id, exc)
                self._put(_Msg("status", cam, ("error", str(exc))))
                continue
            th = threading.Thread(
                target=self._camera_loop, args=(cam, pipe), name=cam.id, daemon=True
            )
            th.start()
            workers.append(th)
        return workers

    def run(self) -> None:
        """Run until ``stop``; the calling thread is the writer."""
        client = bus.connect(self.settings)
        conn = db.connect(self.settings, autocommit=True)
        workers = self.start_cameras()
        log.info("cameras: %d running, %d left out", len(workers), len(self.errors))
        next_prune = 0.0
        try:
            while not self._stop.is_set() or any(w.is_alive() for w in workers):
                if time.monotonic() >= next_prune:
                    next_prune = time.monotonic() + PRUNE_EVERY_S
                    if self.media_dir.exists():
                        removed = prune_media(self.media_dir, self.media_keep_days)
                        log.info(
                            "snapshots older than %g days removed: %d",
                            self.media_keep_days,
                            removed,
                        )
                try:
                    msg = self.outbox.get(timeout=0.2)
                except queue.Empty:
                    continue
                conn = self._write(conn, client, msg)
            while not self.outbox.empty():
                conn = self._write(conn, client, self.outbox.get_nowait())
        finally:
            conn.close()
            client.close()

    def _write(self, conn: Any, client: Any, msg: _Msg) -> Any:
        cam = msg.camera
        try:
            if msg.kind == "status":
                state, reason = msg.payload
                sinks.publish_status(client, self.keys, cam.id, state, reason)
                return conn
            if msg.kind == "counts":
                sinks.store_counts(conn, cam.id, msg.payload)
                return conn
            ev: CameraEvent = msg.payload
            # Bus first: the live view should not wait on the database.
            extra: dict[str, Any] = {"org_unit": cam.org_unit}  # for the API's scope filter
            if msg.arrived is not None:  # frame in → event on the bus (target: under 1 s)
                extra["latency_ms"] = round((time.monotonic() - msg.arrived) * 1000, 1)
            sinks.publish_event(client, self.keys, ev, msg.kind, extra)
            sinks.store_events(conn, [(ev, cam.org_unit)])
        except Exception as exc:  # keep the writer alive; the event is logged with its reason
            log.error("camera %s: %s not written (%s)", cam.id, msg.kind, str(exc).splitlines()[0])
            if getattr(conn, "closed", False):
                try:
                    conn = db.connect(self.settings, autocommit=True)
                except IOCError as again:
                    log.error("%s", again)
        return conn
