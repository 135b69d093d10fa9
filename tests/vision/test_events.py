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


class ScriptedDetector:
    """Stands in for the model in a pure pipeline test: one person, a given score per frame."""

    model_name, model_version = "scripted", "1"

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.i = 0

    def detect(self, frame: np.ndarray) -> list:
        from analytics.vision.detector import Detection

        score = self.scores[self.i] if self.i < len(self.scores) else 0.0
        self.i += 1
        x = 60 + 4 * self.i  # walking right
        return [Detection((x, 60, x + 40, 160), score, "person")] if score > 0 else []


def test_snapshot_is_the_best_scoring_frame(tmp_path: Path) -> None:
    from analytics.vision.runner import Pipeline, default_camera

    # 0.2 s a frame; debounce 1 s, so the event starts at frame 5. The best frame before the
    # start is frame 2 (0.8); after the start, frame 9 (0.97) beats it.
    scores = [0.6, 0.6, 0.8, 0.62, 0.64, 0.66, 0.7, 0.72, 0.75, 0.97, 0.7, 0.6] + [0.0] * 20
    pipe = Pipeline(default_camera(), ScriptedDetector(scores), media_dir=tmp_path)  # type: ignore[arg-type]
    pipe.should_detect = lambda t, m: True  # type: ignore[method-assign]
    started, ended, at_start = [], [], {}
    for i in range(len(scores)):
        frame = np.full((240, 320, 3), min(250, 10 * i), np.uint8)  # frame i: grey 10 i
        s, e = pipe.process(frame, i * 0.2)
        for ev in s:
            at_start[ev.id] = (ev.detail["snapshot_s"], cv2.imread(ev.snapshot)[230, 5, 0])
        started += s
        ended += e
    assert len(started) == len(ended) == 1
    ev = ended[0]
    assert at_start[ev.id][0] == 0.4 and abs(int(at_start[ev.id][1]) - 20) <= 3
    assert ev.detail["snapshot_s"] == 1.8 and Path(ev.snapshot).is_file()
    img = cv2.imread(ev.snapshot)
    assert abs(int(img[230, 5, 0]) - 90) <= 3  # the file on disk is frame 9 now
    assert len(list(tmp_path.rglob("*.jpg"))) == 1  # rewritten in place, not a second file
    assert not pipe._best  # nothing kept once the event ended
