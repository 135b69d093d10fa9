"""Event records and their evidence: a JPEG snapshot with the boxes drawn, privacy masks blacked
out (Decree 13/2023/NĐ-CP) and, optionally, detected people blurred."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

Point = tuple[float, float]
Box = tuple[float, float, float, float]


@dataclass
class CameraEvent:
    """One event of one rule; times are seconds into the source and wall-clock datetimes."""

    camera: str
    rule: str
    zone: str | None
    label: str
    start_s: float
    end_s: float | None = None
    max_count: int = 1
    score: float = 0.0
    track_ids: list[int] = field(default_factory=list)
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended_at: datetime | None = None
    model: str = ""
    model_version: str = ""
    snapshot: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    boxes: list[Box] = field(default_factory=list, repr=False)  # at the start, for the snapshot

    def to_json(self) -> dict[str, Any]:
        """The stable contract of `ioc detect --json` (and of the bus message)."""
        out: dict[str, Any] = {
            "id": self.id,
            "camera": self.camera,
            "rule": self.rule,
            "zone": self.zone,
            "label": self.label,
            "start_s": round(self.start_s, 3),
            "end_s": None if self.end_s is None else round(self.end_s, 3),
            "max_count": self.max_count,
            "score": round(self.score, 4),
            "track_ids": sorted(self.track_ids),
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "model": self.model,
            "model_version": self.model_version,
            "snapshot": self.snapshot,
        }
        if self.detail:
            out["detail"] = self.detail
        return out


def apply_privacy(
    frame: np.ndarray, masks: Sequence[Sequence[Point]], blur_boxes: Sequence[Box] = ()
) -> np.ndarray:
    """A copy of ``frame`` with mask polygons (frame fractions) black and ``blur_boxes`` blurred."""
    out = frame.copy()
    h, w = out.shape[:2]
    for box in blur_boxes:
        x1, y1 = max(0, int(box[0])), max(0, int(box[1]))
        x2, y2 = min(w, int(box[2])), min(h, int(box[3]))
        if x2 > x1 and y2 > y1:
            # Pixelate to ~8 cells across, then smooth: no face or clothing detail survives.
            roi = out[y1:y2, x1:x2]
            tiny = cv2.resize(roi, (max(1, (x2 - x1) // 12), max(1, (y2 - y1) // 12)),
                              interpolation=cv2.INTER_AREA)  # fmt: skip
            out[y1:y2, x1:x2] = cv2.blur(
                cv2.resize(tiny, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR), (5, 5)
            )
    for poly in masks:
        pts = np.array([[x * w, y * h] for x, y in poly], np.int32)
        cv2.fillPoly(out, [pts], (0, 0, 0))
    return out


def render_snapshot(
    frame: np.ndarray,
    event: CameraEvent,
    privacy_masks: Sequence[Sequence[Point]] = (),
    blur_boxes: Sequence[Box] = (),
    boxes: Sequence[Box] | None = None,
) -> np.ndarray:
    """Privacy first (masks are applied last so no box or label is drawn over them); ``boxes``
    are the objects in this frame (default: the event's boxes at its start)."""
    img = apply_privacy(frame, (), blur_boxes)
    for x1, y1, x2, y2 in event.boxes if boxes is None else boxes:
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), (0, 0, 255), 2)
    text = f"{event.rule} {event.zone or ''} {event.label} {event.score:.2f}"
    cv2.putText(img, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 2)
    return apply_privacy(img, privacy_masks)


def write_snapshot(media_dir: Path, event: CameraEvent, image: np.ndarray) -> Path:
    """JPEG under media_dir/<camera>/<YYYYMMDD>/<event id>.jpg, written atomically."""
    day = event.started_at.strftime("%Y%m%d")
    path = media_dir / event.camera / day / f"{event.id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise OSError("JPEG encoding failed")
    tmp = path.with_suffix(".part")
    tmp.write_bytes(buf.tobytes())
    tmp.replace(path)
    return path


def prune_media(media_dir: Path, keep_days: float, now: float | None = None) -> int:
    """Delete snapshots older than ``keep_days``; return how many were removed."""
    limit = (now or time.time()) - keep_days * 86_400
    removed = 0
    for p in media_dir.glob("*/*/*.jpg"):
        if p.stat().st_mtime < limit:
            p.unlink(missing_ok=True)
            removed += 1
    for d in sorted(media_dir.glob("*/*"), reverse=True):
        if d.is_dir() and not any(d.iterdir()):
            d.rmdir()
    return removed
