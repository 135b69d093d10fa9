"""Evidence images: privacy masks blacked out, people blurred, boxes drawn, retention."""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np

from analytics.vision.events import CameraEvent, prune_media, render_snapshot, write_snapshot
from analytics.vision.motion import MotionDetector
from analytics.vision.rules import RuleEngine
from core.site import CameraRule


def textured(h: int = 240, w: int = 320, seed: int = 3) -> np.ndarray:
    """Random 8-pixel blocks: structure that survives the motion model's blur."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)


def test_snapshot_masks_blurs_and_is_written(tmp_path: Path) -> None:
    frame = textured()
    ev = CameraEvent("cam", "intrusion", "yard", "person", 1.0, boxes=[(200, 100, 260, 200)])
    mask = [[(0.0, 0.0), (0.25, 0.0), (0.25, 0.25), (0.0, 0.25)]]
    img = render_snapshot(frame, ev, mask, blur_boxes=[(200, 100, 260, 200)])
    assert img[5:55, 5:75].max() == 0  # masked area fully black
    inner = (slice(110, 190), slice(210, 250))
    assert img[inner].std() < frame[inner].std() / 2  # the person is blurred
    assert (img[100, 200:260] == (0, 0, 255)).all(axis=1).mean() > 0.8  # red box edge
    path = write_snapshot(tmp_path, ev, img)
    assert path.is_file() and path.parent.parent.name == "cam"
    assert cv2.imread(str(path)).shape == frame.shape


def test_prune_media_removes_only_old_files(tmp_path: Path) -> None:
    ev_old = CameraEvent("cam", "intrusion", "z", "person", 0.0)
    ev_new = CameraEvent("cam", "intrusion", "z", "person", 0.0)
    old = write_snapshot(tmp_path, ev_old, textured(20, 20))
    new = write_snapshot(tmp_path, ev_new, textured(20, 20))
    past = time.time() - 40 * 86_400
    os.utime(old, (past, past))
    assert prune_media(tmp_path, keep_days=30) == 1
    assert new.exists() and not old.exists()


def test_tampering_covered_lens_and_scene_change_on_frames() -> None:
    motion = MotionDetector()
    eng = RuleEngine("cam", [CameraRule(kind="tampering", debounce_s=1)], {}, 320, 240)
    scene = textured()
    other = textured(seed=11)
    grey = np.full((240, 320, 3), 128, np.uint8)  # a lens covered by a hand or tape
    labels = []
    frames = [scene] * 10 + [other] * 10 + [scene] * 5 + [grey] * 10
    for i, f in enumerate(frames):
        started, _ = eng.step(i * 0.2, [], motion.update(f))
        labels += [e.label for e in started]
    assert "scene_change" in labels and "covered" in labels
    assert labels.count("scene_change") == 1 and labels.count("covered") == 1
