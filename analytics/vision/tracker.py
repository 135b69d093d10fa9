"""A small ByteTrack-style tracker: stable ids across frames from IoU association in two passes
(confident detections first, then weak ones that keep existing tracks alive), constant-velocity
prediction, and a longer memory for stationary objects.

No library is used: the maintained ByteTrack ports come inside large frameworks (supervision,
ultralytics, boxmot) whose dependencies (torch, scipy, matplotlib) are out of proportion here.
A track's label and score are the mode and median over its history, not one frame's.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from dataclasses import dataclass, field

import numpy as np

from analytics.vision.decoders import iou_matrix
from analytics.vision.detector import Detection

Box = tuple[float, float, float, float]


@dataclass
class Track:
    """One object followed over time (seconds are the source's own clock)."""

    id: int
    box: Box
    first_t: float
    last_t: float
    hits: int = 1
    velocity: tuple[float, float] = (0.0, 0.0)  # box centre, pixels per second
    labels: deque[str] = field(default_factory=lambda: deque(maxlen=50))
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=50))
    path: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=200))
    confirmed: bool = False
    stationary: bool = False

    @property
    def label(self) -> str:
        """Most frequent label over the history (ties: the latest)."""
        counts = Counter(self.labels)
        best = max(counts.values())
        return next(lb for lb in reversed(self.labels) if counts[lb] == best)

    @property
    def score(self) -> float:
        """Median score of the detections that carried the track's label."""
        lb = self.label
        return float(
            statistics.median(s for s, x in zip(self.scores, self.labels, strict=True) if x == lb)
        )

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    @property
    def foot(self) -> tuple[float, float]:
        """Bottom centre: where an object stands, the point tested against zones."""
        return (self.box[0] + self.box[2]) / 2, self.box[3]

    def predicted(self, t: float) -> Box:
        dt = min(t - self.last_t, 2.0)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        x1, y1, x2, y2 = self.box
        return (x1 + dx, y1 + dy, x2 + dx, y2 + dy)


@dataclass
class Tracker:
    """ByteTrack-style association; ``update`` returns the confirmed tracks seen this frame."""

    high_score: float = 0.45
    low_score: float = 0.2
    match_iou: float = 0.25
    min_hits: int = 2
    max_lost_s: float = 2.0
    stationary_lost_s: float = 30.0
    stationary_window_s: float = 3.0
    stationary_move: float = 0.15  # fraction of the box height the centre may move
    tracks: list[Track] = field(default_factory=list)
    _next_id: int = 1

    def _match(
        self, tracks: list[Track], dets: list[Detection], t: float
    ) -> tuple[list[tuple[Track, Detection]], list[Track], list[Detection]]:
        if not tracks or not dets:
            return [], list(tracks), list(dets)
        a = np.array([tr.predicted(t) for tr in tracks], np.float32)
        b = np.array([d.box for d in dets], np.float32)
        iou = iou_matrix(a, b)
        pairs: list[tuple[Track, Detection]] = []
        used_t: set[int] = set()
        used_d: set[int] = set()
        for flat in np.argsort(-iou, axis=None):
            i, j = divmod(int(flat), iou.shape[1])
            if iou[i, j] < self.match_iou:
                break
            if i in used_t or j in used_d:
                continue
            used_t.add(i)
            used_d.add(j)
            pairs.append((tracks[i], dets[j]))
        rest_t = [tr for i, tr in enumerate(tracks) if i not in used_t]
        rest_d = [d for j, d in enumerate(dets) if j not in used_d]
        return pairs, rest_t, rest_d

    def _apply(self, tr: Track, det: Detection, t: float) -> None:
        dt = t - tr.last_t
        (ocx, ocy), box = tr.centre, det.box
        ncx, ncy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        if dt > 0:
            vx, vy = (ncx - ocx) / dt, (ncy - ocy) / dt
            tr.velocity = (0.5 * tr.velocity[0] + 0.5 * vx, 0.5 * tr.velocity[1] + 0.5 * vy)
        tr.box, tr.last_t = box, t
        tr.hits += 1
        tr.labels.append(det.label)
        tr.scores.append(det.score)
        tr.path.append((t, ncx, ncy))
        tr.confirmed = tr.confirmed or tr.hits >= self.min_hits
        tr.stationary = self._is_stationary(tr, t)
        if tr.stationary:
            tr.velocity = (0.0, 0.0)

    def _is_stationary(self, tr: Track, t: float) -> bool:
        if t - tr.first_t < self.stationary_window_s:
            return False
        recent = [(x, y) for (pt, x, y) in tr.path if pt >= t - self.stationary_window_s]
        if len(recent) < 2:
            return tr.stationary
        xs, ys = [p[0] for p in recent], [p[1] for p in recent]
        spread = max(max(xs) - min(xs), max(ys) - min(ys))
        return spread <= self.stationary_move * max(1.0, tr.box[3] - tr.box[1])

    def update(self, detections: list[Detection], t: float) -> list[Track]:
        """Associate this frame's detections (taken at source time ``t``)."""
        high = [d for d in detections if d.score >= self.high_score]
        low = [d for d in detections if self.low_score <= d.score < self.high_score]
        pairs, rest, new = self._match(self.tracks, high, t)
        pairs2, rest, _ = self._match([tr for tr in rest if tr.confirmed], low, t)
        seen = []
        for tr, d in pairs + pairs2:
            self._apply(tr, d, t)
            seen.append(tr)
        for d in new:
            tr = Track(self._next_id, d.box, t, t)
            tr.labels.append(d.label)
            tr.scores.append(d.score)
            tr.path.append((t, (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2))
            tr.confirmed = self.min_hits <= 1
            self._next_id += 1
            self.tracks.append(tr)
            seen.append(tr)
        self.prune(t)
        return [tr for tr in seen if tr.confirmed]

    def prune(self, t: float) -> list[Track]:
        """Forget tracks unseen for too long (stationary ones much later); return them."""
        gone, keep = [], []
        for tr in self.tracks:
            limit = self.stationary_lost_s if tr.stationary else self.max_lost_s
            (gone if t - tr.last_t > limit else keep).append(tr)
        self.tracks = keep
        return gone

    def active(self, t: float, within_s: float = 1.0) -> list[Track]:
        """Confirmed tracks seen recently, or stationary ones still remembered."""
        return [
            tr
            for tr in self.tracks
            if tr.confirmed and (tr.stationary or t - tr.last_t <= within_s)
        ]
