"""`ioc bench detect`'s concurrent-camera measure, run very short: its shape and its stopping
rule, never its speed (figures belong to the benchmark, not to tests)."""

from __future__ import annotations

from pathlib import Path

from analytics.vision.bench import SUSTAINED_FPS, concurrent_cameras
from analytics.vision.detector import load_detector


def test_concurrent_cameras_stops_at_the_first_camera_count_that_falls_behind(clip: Path) -> None:
    res = concurrent_cameras(str(clip), load_detector(threads=1), seconds=1.0, max_cameras=2)
    runs = res["runs"]
    assert [r["cameras"] for r in runs] == list(range(1, len(runs) + 1))
    kept_up = [r["min_fps"] >= SUSTAINED_FPS for r in runs]
    # Every run but the last kept up; the last either fell behind or hit the maximum.
    assert all(kept_up[:-1]) and (not kept_up[-1] or len(runs) == 2)
    assert res["cameras_at_5fps"] == sum(kept_up)
    assert all(0 < r["min_fps"] <= r["median_fps"] <= 5.0 + 1e-6 for r in runs)
    assert all(0 <= r["detect_share"] <= 1 for r in runs)
