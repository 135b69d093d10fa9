"""Motion gating: a cheap running-average background at low resolution decides when the detector
runs, as in Frigate. Also the per-frame statistics the tampering rule needs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

Point = tuple[float, float]


@dataclass(frozen=True)
class MotionResult:
    """Motion found in one frame; boxes are in full-frame pixels."""

    boxes: list[tuple[int, int, int, int]]
    changed: float  # fraction of (unmasked) pixels that differ from the background
    brightness: float  # mean grey level, 0..255
    contrast: float  # grey standard deviation
    sharpness: float  # variance of the Laplacian (a covered or defocused lens has little)

    @property
    def moving(self) -> bool:
        return bool(self.boxes)


@dataclass
class MotionDetector:
    """Running-average background model on a small grey image, with optional masks.

    ``masks`` are polygons in frame fractions where motion is ignored (trees, a clock, a road
    outside the area of interest)."""

    width: int = 160
    threshold: int = 25
    min_area: float = 0.0005  # fraction of the small frame a blob must cover
    alpha: float = 0.05  # background learning rate
    masks: Sequence[Sequence[Point]] = ()
    _bg: np.ndarray | None = field(default=None, init=False, repr=False)
    _mask: np.ndarray | None = field(default=None, init=False, repr=False)
    _scale: float = field(default=1.0, init=False)

    def _small(self, frame: np.ndarray) -> np.ndarray:
        h, w = frame.shape[:2]
        self._scale = w / self.width
        sh = max(1, round(h / self._scale))
        # Linear shrink then blur: INTER_AREA costs more than the rest of the motion step.
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        small = cv2.resize(grey, (self.width, sh), interpolation=cv2.INTER_LINEAR)
        return cv2.GaussianBlur(small, (5, 5), 0)

    def _build_mask(self, shape: tuple[int, int]) -> np.ndarray:
        mask = np.full(shape, 255, np.uint8)
        h, w = shape
        for poly in self.masks:
            pts = np.array([[x * w, y * h] for x, y in poly], np.int32)
            cv2.fillPoly(mask, [pts], 0)
        return mask

    def reset(self) -> None:
        self._bg = None

    def update(self, frame: np.ndarray) -> MotionResult:
        small = self._small(frame)
        if self._mask is None or self._mask.shape != small.shape:
            self._mask = self._build_mask(small.shape)
        lap = cv2.Laplacian(small, cv2.CV_32F)
        stats = (float(small.mean()), float(small.std()), float(lap.var()))
        if self._bg is None or self._bg.shape != small.shape:
            self._bg = small.astype(np.float32)
            return MotionResult([], 0.0, *stats)
        diff = cv2.absdiff(small, cv2.convertScaleAbs(self._bg))
        _, binary = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        binary = cv2.bitwise_and(binary, self._mask)
        binary = cv2.dilate(binary, None, iterations=2)
        usable = max(1, int(np.count_nonzero(self._mask)))
        changed = float(np.count_nonzero(binary)) / usable
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_px = self.min_area * small.shape[0] * small.shape[1]
        boxes = []
        for c in contours:
            if cv2.contourArea(c) < min_px:
                continue
            x, y, w, h = cv2.boundingRect(c)
            s = self._scale
            boxes.append((int(x * s), int(y * s), int((x + w) * s), int((y + h) * s)))
        cv2.accumulateWeighted(small, self._bg, self.alpha)
        return MotionResult(boxes, changed, *stats)
