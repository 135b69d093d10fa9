"""The camera pipeline (motion → detector → tracker → rules → events) and the offline runner
behind `ioc detect SOURCE [--site FILE --camera ID] [--json]`, which needs no service."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analytics.vision.detector import Detector, load_detector
from analytics.vision.events import CameraEvent, render_snapshot, write_snapshot
from analytics.vision.motion import MotionDetector, MotionResult
from analytics.vision.reader import LiveReader, is_live, read_file
from analytics.vision.rules import RuleEngine
from analytics.vision.tracker import Tracker
from analytics.vision.zones import FULL_FRAME, build_zone, check_polygon
from core.errors import ConfigError, IOCError
from core.site import Camera, CameraRule, Site, Zone

DEFAULT_RULE = CameraRule(kind="intrusion", zone="frame")


def default_camera(camera_id: str = "source", url: str = "") -> Camera:
    """One zone covering the whole frame with an intrusion rule for people and vehicles."""
    return Camera(
        id=camera_id,
        org_unit="-",
        name=camera_id,
        url=url or "-",
        zones=[Zone(id="frame", name="Toàn khung hình", points=list(FULL_FRAME))],
        rules=[DEFAULT_RULE],
    )


def pick_camera(site: Site | None, camera_id: str | None, source: str) -> Camera:
    if site is None:
        if camera_id:
            raise ConfigError("--camera needs --site FILE")
        return default_camera(url=source)
    if camera_id is None:
        if len(site.cameras) != 1:
            raise ConfigError("the site file has several cameras: choose one with --camera ID")
        return site.cameras[0]
    for cam in site.cameras:
        if cam.id == camera_id:
            return cam
    raise ConfigError(f"camera '{camera_id}' is not in the site file")


def camera_with_rules(cam: Camera) -> Camera:
    """A camera without rules gets the default full-frame intrusion rule."""
    if cam.rules:
        return cam
    zones = [*cam.zones, Zone(id="frame", name="Toàn khung hình", points=list(FULL_FRAME))]
    zones = [z for i, z in enumerate(zones) if z.id != "frame" or i == len(zones) - 1]
    return cam.model_copy(update={"zones": zones, "rules": [DEFAULT_RULE]})


@dataclass
class _Best:
    """The best-scoring frame of an open event so far: its evidence."""

    score: float
    t: float
    frame: np.ndarray
    boxes: list[tuple[float, float, float, float]]
    blur: list[tuple[float, float, float, float]]
    written: float | None = None  # score of the frame on disk


@dataclass
class Pipeline:
    """One camera's processing state; ``process`` takes one frame at source time ``t``."""

    camera: Camera
    detector: Detector
    media_dir: Path | None = None
    recheck_s: float = 5.0  # stationary objects are re-detected this often without motion
    on_event_start: Callable[[CameraEvent], None] | None = None
    motion: MotionDetector = field(init=False)
    tracker: Tracker = field(default_factory=Tracker)
    engine: RuleEngine | None = field(default=None, init=False)
    frames: int = 0
    frames_detected: int = 0
    _last_detect: float = field(default=-1e18, init=False)
    _best: dict[str, _Best] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.camera = camera_with_rules(self.camera)
        where = f"camera {self.camera.id}"
        for i, m in enumerate(self.camera.motion_masks):
            check_polygon(m, f"{where} motion_masks[{i}]")
        for i, m in enumerate(self.camera.privacy_masks):
            check_polygon(m, f"{where} privacy_masks[{i}]")
        for z in self.camera.zones:
            build_zone(z.id, z.kind, z.points, 1, 1, f"{where} zone {z.id}")
        self.motion = MotionDetector(masks=self.camera.motion_masks)

    def _engine(self, frame: np.ndarray) -> RuleEngine:
        h, w = frame.shape[:2]
        if self.engine is None or (self.engine.frame_w, self.engine.frame_h) != (w, h):
            where = f"camera {self.camera.id}"
            zones = {
                z.id: build_zone(z.id, z.kind, z.points, w, h, f"{where} zone {z.id}")
                for z in self.camera.zones
            }
            self.engine = RuleEngine(
                self.camera.id,
                self.camera.rules,
                zones,
                w,
                h,
                model=self.detector.model_name,
                model_version=self.detector.model_version,
            )
        return self.engine

    def should_detect(self, t: float, motion: MotionResult) -> bool:
        """Motion gating: run on motion, or to re-check tracked (stationary) objects."""
        if motion.moving:
            return True
        return bool(self.tracker.tracks) and t - self._last_detect >= self.recheck_s

    def process(self, frame: np.ndarray, t: float) -> tuple[list[CameraEvent], list[CameraEvent]]:
        engine = self._engine(frame)
        self.frames += 1
        motion = self.motion.update(frame)
        if self.should_detect(t, motion):
            self.frames_detected += 1
            self._last_detect = t
            self.tracker.update(self.detector.detect(frame), t)
        else:
            self.tracker.prune(t)
        active = self.tracker.active(t)
        started, ended = engine.step(t, active, motion)
        if self.media_dir is not None:
            self._keep_best(frame, t, active, engine.open_events())
            for ev in started:
                self._snapshot(frame, t, ev)
            for ev in ended:
                self._final_snapshot(ev)
            open_ids = {ev.id for ev in engine.open_events()}
            for eid in [e for e in self._best if e not in open_ids]:
                del self._best[eid]  # debounced away, or ended
        for ev in started:
            if self.on_event_start:
                self.on_event_start(ev)
        return started, ended

    def _keep_best(self, frame: np.ndarray, t: float, active: list, events: list) -> None:
        """Remember, per open event, the frame where its objects were detected with the highest
        score (summed over its tracks detected in that frame): the snapshot shows that frame."""
        seen = {tr.id: tr for tr in active if tr.last_t == t and tr.scores}
        copy: np.ndarray | None = None
        for ev in events:
            mine = [seen[i] for i in ev.track_ids if i in seen]
            if not mine:
                continue
            score = sum(tr.scores[-1] for tr in mine)
            best = self._best.get(ev.id)
            if best is not None and score <= best.score:
                continue
            copy = frame.copy() if copy is None else copy  # one copy per frame, shared
            people = self.camera.blur_people
            blur = [tr.box for tr in active if tr.label == "person"] if people else []
            written = best.written if best else None
            self._best[ev.id] = _Best(score, t, copy, [tr.box for tr in mine], blur, written)

    def _write(self, ev: CameraEvent, best: _Best) -> None:
        img = render_snapshot(best.frame, ev, self.camera.privacy_masks, best.blur, best.boxes)
        assert self.media_dir is not None
        ev.snapshot = str(write_snapshot(self.media_dir, ev, img))
        ev.detail["snapshot_s"] = round(best.t, 3)
        best.written = best.score

    def _snapshot(self, frame: np.ndarray, t: float, ev: CameraEvent) -> None:
        """At the start, the best frame seen so far (the debounce period included)."""
        best = self._best.get(ev.id)
        if best is None:  # no tracked object (tampering): the frame that completed the rule
            blur = []
            if self.camera.blur_people:
                blur = [tr.box for tr in self.tracker.active(t) if tr.label == "person"]
            best = self._best[ev.id] = _Best(0.0, t, frame.copy(), list(ev.boxes), blur)
        self._write(ev, best)

    def _final_snapshot(self, ev: CameraEvent) -> None:
        """At the end, the same file again when a better frame came after the start."""
        best = self._best.pop(ev.id, None)
        if (
            best is not None
            and ev.snapshot
            and best.written is not None
            and best.score > best.written
        ):
            self._write(ev, best)

    def flush(self, t: float) -> list[CameraEvent]:
        ended = self.engine.flush(t) if self.engine else []
        if self.media_dir is not None:
            for ev in ended:
                self._final_snapshot(ev)
        return ended


def run(
    source: str,
    camera: Camera,
    *,
    model: str | Path | None = None,
    media_dir: Path | None = None,
    fps: float | None = None,
    max_seconds: float | None = None,
    threads: int = 1,
) -> Iterator[dict[str, Any]]:
    """Run the pipeline on a file or URL; yield each event as it ends, then the summary."""
    detector = load_detector(model or camera.model, threads=threads)
    pipe = Pipeline(camera, detector, media_dir=media_dir)
    fps = fps or camera.detect_fps
    t0 = time.perf_counter()
    last_t = 0.0
    counts: dict[str, int] = {}
    stats = {"frames_read": 0}
    if is_live(source):
        frames: Iterator[Any] = _live_frames(source, 1.0 / fps, max_seconds, stats)
    else:
        frames = read_file(source, every_s=1.0 / fps, stats=stats)
    for fr in frames:
        if max_seconds is not None and fr.t > max_seconds:
            break
        last_t = fr.t
        _, ended = pipe.process(fr.image, fr.t)
        for ev in ended:
            yield ev.to_json()
    for ev in pipe.flush(last_t):
        yield ev.to_json()
    if pipe.engine:
        for (zone, direction, label, _minute), n in pipe.engine.take_counts().items():
            k = f"{zone}:{direction}:{label}"
            counts[k] = counts.get(k, 0) + n
    wall = time.perf_counter() - t0
    yield {
        "summary": {
            "camera": pipe.camera.id,
            "frames_read": stats["frames_read"],
            "frames_processed": pipe.frames,
            "frames_detected": pipe.frames_detected,
            "seconds": round(last_t, 3),
            "wall_s": round(wall, 3),
            "fps": round(pipe.frames / wall, 2) if wall > 0 else None,
            "model": detector.model_name,
            "model_version": detector.model_version,
            "line_counts": counts,
        }
    }


def _live_frames(
    source: str, every_s: float, max_seconds: float | None, stats: dict[str, int]
) -> Iterator[Any]:
    reader = LiveReader(source, give_up_first=True).start()
    next_t = 0.0
    try:
        while max_seconds is None or reader.now() <= max_seconds:
            fr = reader.latest(timeout=1.0)
            if reader.failed:
                raise IOCError(reader.last_error)
            stats["frames_read"] = reader.frames_read
            if fr is None or fr.t < next_t:
                continue
            next_t = fr.t + every_s
            yield fr
    finally:
        reader.stop()
