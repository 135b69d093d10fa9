"""`ioc cameras`: the site's cameras through the pipeline, events to TimescaleDB and the bus.

One reader and pipeline thread per camera, one shared ONNX Runtime session (its ``run`` is
thread-safe), and one writer (this thread) that does all database and Redis I/O, so a slow or
absent database never stalls a camera. A camera whose configuration is bad is reported and left
out; the others run.

Several workers share the cameras through leases in Redis (``leases.py``): a lease thread renews
this worker's leases, claims its fair share of free cameras, hands back its surplus when workers
join, and stops a camera as soon as its lease can no longer be known to be ours.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from analytics.vision import sinks
from analytics.vision.detector import Detector, load_detector
from analytics.vision.events import CameraEvent, prune_media
from analytics.vision.leases import LeaseStore, lease_deadline, plan
from analytics.vision.reader import LiveReader
from analytics.vision.runner import Pipeline
from core import bus, db
from core.errors import IOCError
from core.settings import Settings
from core.site import Camera, Site

log = logging.getLogger("ioc.vision")
COUNTS_EVERY_S = 60.0
PRUNE_EVERY_S = 3600.0
BEAT_EVERY_S = 1.0


@dataclass
class _Msg:
    kind: str  # "start" | "end" | "status" | "counts" | "beat"
    camera: Camera
    payload: Any
    arrived: float | None = None  # monotonic time the frame that completed the rule arrived


@dataclass
class _Running:
    """A camera this worker runs: its thread, its own stop flag, and how long its lease holds."""

    camera: Camera
    deadline: float
    stop: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)  # no more frames processed
    last_frame_at: float = 0.0  # monotonic time the last frame was processed
    thread: threading.Thread | None = None
    stats: dict[str, Any] = field(default_factory=dict)


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:4]}"


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
        worker_id: str | None = None,
        lease_ttl_s: float = 6.0,
        renew_s: float | None = None,
        open_timeout_s: float = 10.0,
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
        self.open_timeout_s = open_timeout_s
        self.worker_id = worker_id or default_worker_id()
        self.lease_ttl_s = lease_ttl_s
        self.renew_s = renew_s or lease_ttl_s / 3
        self.keys = bus.Keys(settings.redis_prefix)
        self.outbox: queue.Queue[_Msg] = queue.Queue(maxsize=10_000)
        self._stop = threading.Event()
        self._detectors: dict[str, Detector] = {}
        self.errors: dict[str, str] = {}
        self.running: dict[str, _Running] = {}
        self._lock = threading.Lock()
        self._ending: list[threading.Thread] = []  # camera threads closing their stream

    def stop(self) -> None:
        self._stop.set()

    def status(self) -> dict[str, dict[str, Any]]:
        """Per camera run here: frame counters (read, processed, dropped, skipped)."""
        with self._lock:
            return {cid: dict(r.stats) for cid, r in self.running.items()}

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

    def _camera_loop(self, run: _Running, pipe: Pipeline) -> None:
        cam = run.camera
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

        reader = LiveReader(
            cam.substream_url or cam.url,
            stall_s=self.stall_s,
            open_timeout_s=self.open_timeout_s,
            on_status=on_status,
        )
        reader.start()
        every = 1.0 / cam.detect_fps
        next_t, next_counts = 0.0, time.monotonic() + COUNTS_EVERY_S
        next_beat = time.monotonic() + BEAT_EVERY_S
        processed = skipped = 0
        span: list[float] = []  # wall-clock times of the first and last frame processed
        stats = run.stats
        try:
            while not self._stop.is_set() and not run.stop.is_set():
                if time.monotonic() >= run.deadline:
                    log.warning("camera %s: lease not renewed in time, stopping it", cam.id)
                    break
                fr = reader.latest(timeout=0.2)
                if fr is not None and fr.t >= next_t and time.monotonic() < run.deadline:
                    next_t = fr.t + every
                    arrived = time.monotonic() - (reader.now() - fr.t)
                    span[:] = [span[0] if span else time.time(), time.time()]
                    run.last_frame_at = time.monotonic()
                    started, ended = pipe.process(fr.image, fr.t)
                    processed += 1
                    for ev in started:
                        self._put(_Msg("start", cam, ev, arrived))
                    for ev in ended:
                        self._put(_Msg("end", cam, ev, arrived))
                elif fr is not None:
                    skipped += 1
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + BEAT_EVERY_S
                    stats.update(
                        worker=self.worker_id,
                        online=reader.online,
                        frames_read=reader.frames_read,
                        frames_processed=processed,
                        frames_dropped=reader.frames_dropped,
                        frames_skipped=skipped,
                        reconnects=reader.reconnects,
                    )
                    self._put(_Msg("beat", cam, {**stats, "span": list(span)}))
                    span.clear()
                if time.monotonic() >= next_counts and pipe.engine:
                    next_counts += COUNTS_EVERY_S
                    self._put(_Msg("counts", cam, pipe.engine.take_counts()))
        finally:
            if offline is not None:  # handed over or stopped while offline: close the period
                offline.end_s, offline.ended_at = reader.now(), datetime.now(UTC)
                offline.detail["ended_by"] = f"worker {self.worker_id} stopped the camera"
                self._put(_Msg("end", cam, offline))
            if span:
                self._put(_Msg("beat", cam, {**stats, "span": list(span)}))
            for ev in pipe.flush(reader.now()):
                self._put(_Msg("end", cam, ev))
            if pipe.engine:
                self._put(_Msg("counts", cam, pipe.engine.take_counts()))
            run.done.set()  # the lease may go now; closing the stream can take a while
            reader.stop()

    def _pipeline(self, cam: Camera) -> Pipeline:
        return Pipeline(cam, self._detector(cam.model), media_dir=self.media_dir)

    def check_cameras(self) -> list[Camera]:
        """The cameras whose configuration and model load; the others are reported once."""
        good = []
        for cam in self.cameras:
            try:
                self._pipeline(cam)
            except IOCError as exc:
                self.errors[cam.id] = str(exc)
                log.error("camera %s left out: %s", cam.id, exc)
                self._put(_Msg("status", cam, ("error", str(exc))))
                continue
            good.append(cam)
        return good

    def _start_camera(self, cam: Camera, deadline: float) -> None:
        run = _Running(cam, deadline)
        th = threading.Thread(
            target=self._camera_loop, args=(run, self._pipeline(cam)), name=cam.id, daemon=True
        )
        run.thread = th
        with self._lock:
            self.running[cam.id] = run
        th.start()
        log.info("camera %s taken by worker %s", cam.id, self.worker_id)

    def _stop_camera(self, cid: str) -> None:
        with self._lock:
            run = self.running.pop(cid, None)
        if run is None:
            return
        run.stop.set()
        if not run.done.wait(timeout=10):
            log.error("camera %s: its thread did not stop within 10 s", cid)
        if run.thread:
            self._ending.append(run.thread)

    def _lease_loop(self, cams: list[Camera]) -> None:
        """Renew, claim and hand back leases every ``renew_s`` until stopped; then release all."""
        by_id = {c.id: c for c in cams}
        client = bus.connect(self.settings)
        store = LeaseStore(client, self.keys, self.worker_id, self.lease_ttl_s)
        try:
            while not self._stop.is_set():
                try:
                    self._lease_round(store, by_id)
                except Exception as exc:  # Redis away: cameras stop at their lease deadline
                    log.error("camera leases: %s", str(exc).splitlines()[0] if str(exc) else exc)
                with self._lock:  # a camera thread that ended by itself gives its lease back
                    dead = [c for c, r in self.running.items() if r.done.is_set()]
                for cid in dead:
                    self._stop_camera(cid)
                    try:
                        store.release([cid])
                    except Exception as exc:  # it expires by itself
                        log.error("camera %s: lease not released (%s)", cid, exc)
                self._stop.wait(self.renew_s)
        finally:
            held = list(self.running)
            for cid in held:
                self._stop_camera(cid)
            try:
                store.release(held)
                store.leave()
            except Exception as exc:
                log.error("camera leases not released (they expire): %s", exc)
            client.close()
            for th in self._ending:
                th.join(timeout=self.stall_s + self.open_timeout_s + 5)

    def _lease_round(self, store: LeaseStore, by_id: dict[str, Camera]) -> None:
        sent = time.monotonic()
        workers = store.heartbeat()
        held = list(self.running)
        still = set(store.renew(held))
        for cid in held:
            if cid in still:
                self.running[cid].deadline = lease_deadline(sent, self.lease_ttl_s)
            else:
                log.warning("camera %s: lease lost, stopping it", cid)
                self._stop_camera(cid)
        holders = store.holders(list(by_id))
        todo = plan(self.worker_id, by_id, workers, holders)
        for cid in todo.release:  # stop first, then hand back: never two workers at once
            self._stop_camera(cid)
            store.release([cid])
        for cid in todo.claim:
            sent = time.monotonic()
            if not self._stop.is_set() and store.claim(cid):
                self._start_camera(by_id[cid], lease_deadline(sent, self.lease_ttl_s))

    def run(self) -> None:
        """Run until ``stop``; the calling thread is the writer."""
        client = bus.connect(self.settings)
        conn = db.connect(self.settings, autocommit=True)
        cams = self.check_cameras()
        log.info("worker %s: %d cameras to share, %d left out",
                 self.worker_id, len(cams), len(self.errors))  # fmt: skip
        leases = threading.Thread(target=self._lease_loop, args=(cams,), name="leases", daemon=True)
        leases.start()
        next_prune = 0.0
        try:
            while not self._stop.is_set() or leases.is_alive():
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
            if msg.kind == "beat":
                sinks.publish_activity(client, self.keys, cam.id, msg.payload)
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
