"""Pure zone rules: tracks (and motion statistics) in, camera events out.

Every rule has a minimum median score and object size, a debounce (the condition must hold that
long before an event starts), a grace period (an object lost for a few frames does not end and
restart its event) and a cooldown (after an event, the same object, or a new track at the same
place such as a re-acquired parked car, does not start another). Time is the source's clock.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo

import numpy as np

from analytics.vision.decoders import iou_matrix
from analytics.vision.detector import VEHICLES
from analytics.vision.events import CameraEvent
from analytics.vision.motion import MotionResult
from analytics.vision.tracker import Track
from analytics.vision.zones import ZoneGeom, crossing
from core.site import CameraRule

DEFAULT_LABELS = {
    "intrusion": ("person", *sorted(VEHICLES)),
    "crowding": ("person",),
    "loitering": ("person",),
    "line_crossing": ("person", *sorted(VEHICLES)),
    "stopped_vehicle": tuple(sorted(VEHICLES)),
}
BLACKOUT_BRIGHTNESS = 12.0
COVERED_SHARPNESS = 4.0
COVERED_CONTRAST = 10.0
SCENE_CHANGE = 0.6


def in_schedule(schedule: str | None, when: datetime) -> bool:
    """``"22:00-05:00"`` (local time, may wrap midnight); no schedule means always."""
    if not schedule:
        return True
    start, end = schedule.split("-")
    now = when.hour * 60 + when.minute
    a = int(start[:2]) * 60 + int(start[3:])
    b = int(end[:2]) * 60 + int(end[3:])
    return a <= now < b if a <= b else now >= a or now < b


@dataclass
class _Open:
    event: CameraEvent
    first_true: float
    last_true: float
    started: bool = False
    last_box: tuple[float, float, float, float] | None = None
    stationary: bool = False


@dataclass
class RuleEngine:
    """Evaluate one camera's rules frame after frame; ``step`` returns (started, ended) events."""

    camera: str
    rules: Sequence[CameraRule]
    zones: dict[str, ZoneGeom]
    frame_w: int
    frame_h: int
    model: str = ""
    model_version: str = ""
    wall_start: datetime = field(default_factory=lambda: datetime.now(UTC))
    tz: tzinfo = UTC
    grace_s: float = 2.0
    _open: dict[tuple, _Open] = field(default_factory=dict)
    _cooldown: dict[tuple, float] = field(default_factory=dict)
    _recent: list[tuple[int, float, tuple[float, float, float, float]]] = field(
        default_factory=list
    )
    _last_foot: dict[int, tuple[float, float]] = field(default_factory=dict)
    counts: dict[tuple[str, str, str, int], int] = field(default_factory=lambda: defaultdict(int))

    def wall(self, t: float) -> datetime:
        return self.wall_start + timedelta(seconds=t)

    # ------------------------------------------------------------------ helpers
    def _qualifies(self, rule: CameraRule, tr: Track) -> bool:
        labels = rule.labels or DEFAULT_LABELS[rule.kind]
        x1, y1, x2, y2 = tr.box
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1) / (self.frame_w * self.frame_h)
        return tr.label in labels and tr.score >= rule.min_score and area >= rule.min_area

    def _new(self, ri: int, rule: CameraRule, label: str, t: float) -> CameraEvent:
        return CameraEvent(
            camera=self.camera,
            rule=rule.kind,
            zone=rule.zone,
            label=label,
            start_s=t,
            started_at=self.wall(t),
            model=self.model,
            model_version=self.model_version,
        )

    def _suppressed(self, ri: int, key: tuple, t: float, box: tuple | None) -> bool:
        if self._cooldown.get(key, -1e18) > t:
            return True
        if box is None:
            return False
        for r, until, b in self._recent:
            if r == ri and until > t:
                iou = iou_matrix(np.array([b], np.float32), np.array([box], np.float32))
                if float(iou[0, 0]) > 0.5:
                    return True
        return False

    def _hold(
        self,
        ri: int,
        rule: CameraRule,
        key: tuple,
        t: float,
        tracks: list[Track],
        label: str,
        hold_s: float,
        started: list[CameraEvent],
        count: int | None = None,
    ) -> None:
        """The condition of ``key`` is true at ``t`` for ``tracks``."""
        op = self._open.get(key)
        box = tracks[0].box if len(tracks) == 1 else None
        if op is None:
            if self._suppressed(ri, key, t, box):
                return
            op = self._open[key] = _Open(self._new(ri, rule, label, t), t, t)
        op.last_true = t
        ev = op.event
        ev.track_ids = sorted(set(ev.track_ids) | {tr.id for tr in tracks})
        ev.max_count = max(ev.max_count, count if count is not None else len(tracks))
        if tracks:
            ev.score = max(ev.score, max(tr.score for tr in tracks))
            op.last_box = tracks[0].box
            op.stationary = len(tracks) == 1 and tracks[0].stationary
            if len(tracks) == 1:
                ev.label = tracks[0].label
        if not op.started and t - op.first_true >= hold_s:
            op.started = True
            ev.start_s = op.first_true
            ev.started_at = self.wall(op.first_true)
            ev.boxes = [tr.box for tr in tracks]
            started.append(ev)

    def _close(self, t: float, keep: set[tuple], ended: list[CameraEvent]) -> None:
        for key in list(self._open):
            op = self._open[key]
            if key in keep:
                continue
            if op.started and t - op.last_true <= self.grace_s:
                continue
            del self._open[key]
            if not op.started:
                continue  # never held long enough: debounced away
            self._finish(key, op, op.last_true, ended)

    def _finish(self, key: tuple, op: _Open, end: float, ended: list[CameraEvent]) -> None:
        ev = op.event
        ev.end_s = end
        ev.ended_at = self.wall(end)
        ri = key[0]
        cooldown = self.rules[ri].cooldown_s
        self._cooldown[key] = end + cooldown
        if op.last_box is not None and op.stationary:
            # A parked car or a seated person lost and found again under a new track id.
            self._recent.append((ri, end + cooldown, op.last_box))
        ended.append(ev)

    # ------------------------------------------------------------------ the step
    def step(
        self, t: float, tracks: Iterable[Track], motion: MotionResult | None = None
    ) -> tuple[list[CameraEvent], list[CameraEvent]]:
        """Advance to source time ``t`` with the tracks believed present now."""
        tracks = list(tracks)
        started: list[CameraEvent] = []
        ended: list[CameraEvent] = []
        true_now: set[tuple] = set()
        self._recent = [r for r in self._recent if r[1] > t]
        for ri, rule in enumerate(self.rules):
            if rule.kind == "tampering":
                self._tampering(ri, rule, t, motion, true_now, started, ended)
                continue
            if not in_schedule(rule.schedule, self.wall(t).astimezone(self.tz)):
                continue
            zone = self.zones[rule.zone] if rule.zone else None
            ok = [tr for tr in tracks if self._qualifies(rule, tr)]
            if rule.kind == "line_crossing":
                self._line(ri, rule, zone, t, ok, ended)
                continue
            inside = [tr for tr in ok if zone is None or zone.contains(tr.foot)]
            if rule.kind == "crowding":
                if len(inside) >= rule.min_count:
                    key = (ri,)
                    true_now.add(key)
                    hold = max(rule.debounce_s, rule.min_duration_s)
                    self._hold(ri, rule, key, t, inside, "person", hold, started)
                continue
            for tr in inside:
                if rule.kind == "stopped_vehicle" and not tr.stationary:
                    continue
                key = (ri, tr.id)
                true_now.add(key)
                hold = max(rule.debounce_s, rule.min_duration_s)
                self._hold(ri, rule, key, t, [tr], tr.label, hold, started)
        self._close(t, true_now, ended)
        self._last_foot = {tr.id: tr.foot for tr in tracks}
        if len(self._cooldown) > 1000:  # a long-running camera sees many tracks: forget old ones
            self._cooldown = {k: v for k, v in self._cooldown.items() if v > t}
        return started, ended

    def _line(
        self,
        ri: int,
        rule: CameraRule,
        zone: ZoneGeom | None,
        t: float,
        tracks: list[Track],
        ended: list[CameraEvent],
    ) -> None:
        assert zone is not None
        for tr in tracks:
            before = self._last_foot.get(tr.id)
            if before is None:
                continue
            sign = crossing(zone.line, before, tr.foot)
            key = (ri, tr.id, sign)
            if sign == 0 or self._cooldown.get(key, -1e18) > t:
                continue
            direction = "in" if sign > 0 else "out"
            minute = int(self.wall(t).timestamp() // 60) * 60
            self.counts[(zone.id, direction, tr.label, minute)] += 1
            ev = self._new(ri, rule, tr.label, t)
            ev.end_s, ev.ended_at = t, self.wall(t)
            ev.track_ids, ev.score, ev.boxes = [tr.id], tr.score, [tr.box]
            ev.detail = {"direction": direction}
            self._cooldown[key] = t + rule.cooldown_s
            ended.append(ev)

    def _tampering(
        self,
        ri: int,
        rule: CameraRule,
        t: float,
        motion: MotionResult | None,
        true_now: set[tuple],
        started: list[CameraEvent],
        ended: list[CameraEvent],
    ) -> None:
        if motion is None:
            return
        kinds = []
        if motion.brightness < BLACKOUT_BRIGHTNESS:
            kinds.append("blackout")
        elif motion.sharpness < COVERED_SHARPNESS and motion.contrast < COVERED_CONTRAST:
            kinds.append("covered")
        if motion.changed >= SCENE_CHANGE:
            kinds.append("scene_change")
        for kind in kinds:
            key = (ri, kind)
            true_now.add(key)
            self._hold(ri, rule, key, t, [], kind, rule.debounce_s, started, count=1)
            self._open[key].event.score = 1.0

    def flush(self, t: float) -> list[CameraEvent]:
        """End every open event (end of the source)."""
        ended: list[CameraEvent] = []
        for key, op in list(self._open.items()):
            del self._open[key]
            if op.started:
                self._finish(key, op, min(t, op.last_true), ended)
        return ended

    def open_events(self) -> list[CameraEvent]:
        """Events whose condition holds now or held lately (started or still in debounce)."""
        return [op.event for op in self._open.values()]

    def take_counts(self) -> Counter:
        """Line-crossing counts per (zone, direction, label, minute start epoch) so far."""
        out = Counter(self.counts)
        self.counts.clear()
        return out
