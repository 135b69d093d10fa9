"""The real model on real footage (vtest.avi), and the `ioc detect` contract end to end."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from analytics.vision.detector import MODELS_DIR, load_detector
from tests.vision.conftest import run_ioc

# Hand-labelled centres of the people and vehicles visible in four frames of vtest.avi (label,
# x, y in frame pixels). Checked by eye on the frames; boxes are never asserted, only that some
# detection of the right class covers each centre.
LABELS: dict[int, list[tuple[str, int, int]]] = {
    0: [("person", 515, 195), ("person", 265, 265), ("person", 660, 280)],
    100: [
        ("person", 362, 238), ("person", 392, 215), ("person", 505, 185),
        ("person", 528, 185), ("person", 603, 193), ("person", 438, 195), ("person", 229, 78),
    ],
    200: [
        ("person", 95, 185), ("person", 235, 230), ("person", 502, 183), ("person", 632, 318),
        ("person", 722, 300), ("person", 687, 125), ("person", 711, 128),
    ],
    300: [
        ("person", 202, 200), ("person", 255, 190), ("person", 311, 190), ("person", 330, 255),
        ("person", 596, 195), ("person", 631, 195),
    ],
}  # fmt: skip
VEHICLES = [("vehicle", 688, 70), ("vehicle", 750, 72)]  # the parked van and car, every frame
VEHICLE_LABELS = {"car", "truck", "bus"}


def covered(dets: list, label: str, x: int, y: int, min_score: float) -> bool:
    ok = VEHICLE_LABELS if label == "vehicle" else {label}
    return any(
        d.label in ok
        and d.score >= min_score
        and d.box[0] <= x <= d.box[2]
        and d.box[1] <= y <= d.box[3]
        for d in dets
    )


def labelled_frames(vtest: Path) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(vtest), cv2.CAP_FFMPEG)
    out, index = {}, 0
    while len(out) < len(LABELS):
        ok, frame = cap.read()
        assert ok, "vtest.avi ended early"
        if index in LABELS:
            out[index] = frame
        index += 1
    cap.release()
    return out


@pytest.mark.parametrize(("card", "min_recall"), [("nanodet-m-416-coco", 0.85),
                                                  ("nanodet-m-320-coco", 0.75),
                                                  ("nanodet-m-256-coco", 0.75)])  # fmt: skip
def test_recall_on_labelled_frames(vtest: Path, card: str, min_recall: float) -> None:
    detector = load_detector(MODELS_DIR / f"{card}.yaml", threads=2)
    hits = total = 0
    for index, frame in labelled_frames(vtest).items():
        dets = detector.detect(frame)
        people = LABELS[index]
        for label, x, y in people + VEHICLES:
            total += 1
            hits += covered(dets, label, x, y, 0.35)
    assert total >= 20
    print(f"{card}: recall {hits}/{total}")
    assert hits / total >= min_recall, f"recall {hits}/{total}"


def test_detect_contract_on_real_footage(clip: Path, tmp_path: Path) -> None:
    res = run_ioc("detect", str(clip), "--json", "--media", str(tmp_path / "media"))
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    *events, last = lines
    summary = last["summary"]
    assert summary["frames_read"] == 120
    assert 0 < summary["frames_detected"] <= summary["frames_processed"] <= 120
    assert summary["fps"] > 0
    assert len(events) >= 3
    for ev in events:
        assert {"camera", "rule", "zone", "label", "start_s", "end_s", "max_count", "score",
                "track_ids"} <= ev.keys()  # fmt: skip
        assert ev["rule"] == "intrusion" and ev["zone"] == "frame"
        assert 0 <= ev["start_s"] <= ev["end_s"] <= 12.0
        assert Path(ev["snapshot"]).is_file()
    assert "person" in {ev["label"] for ev in events}
    assert any(ev["label"] in VEHICLE_LABELS for ev in events), "parked van/car not reported"
    per_track = Counter(t for ev in events for t in ev["track_ids"])
    assert max(per_track.values()) == 1, f"duplicate events for a track: {per_track}"


def test_still_scene_gives_no_events(still_clip: Path) -> None:
    res = run_ioc("detect", str(still_clip), "--json", "--no-snapshots")
    assert res.returncode == 0, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert len(lines) == 1
    assert lines[0]["summary"]["frames_read"] == 80
    assert lines[0]["summary"]["frames_detected"] == 0


def test_site_zones_and_rules(clip: Path, tmp_path: Path) -> None:
    site = yaml.safe_load((Path(__file__).parents[2] / "sites" / "iahdrai.yaml").read_text())
    cam = {
        "id": "cam-test", "org_unit": site["org_units"][0]["id"], "name": "Lối đi", "url": "x",
        "zones": [
            {"id": "walk", "name": "Lối đi", "points": [[0, 0.2], [1, 0.2], [1, 0.75], [0, 0.75]]},
            {"id": "mid", "name": "Giữa", "kind": "line", "points": [[0.5, 0], [0.5, 1]]},
        ],
        "rules": [
            {"kind": "crowding", "zone": "walk", "min_count": 3, "min_duration_s": 2},
            {"kind": "line_crossing", "zone": "mid"},
        ],
        "privacy_masks": [[[0, 0], [0.4, 0], [0.4, 0.15], [0, 0.15]]],
    }  # fmt: skip
    site["cameras"] = [cam]
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True))
    res = run_ioc("detect", str(clip), "--site", str(path), "--camera", "cam-test", "--json",
                  "--media", str(tmp_path / "m"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    *events, last = [json.loads(x) for x in res.stdout.splitlines()]
    rules = Counter(ev["rule"] for ev in events)
    assert rules["crowding"] >= 1
    crowd = next(ev for ev in events if ev["rule"] == "crowding")
    assert crowd["max_count"] >= 3 and len(crowd["track_ids"]) >= 3
    assert sum(last["summary"]["line_counts"].values()) == rules["line_crossing"]
    # The privacy mask is black in the stored snapshot.
    img = cv2.imread(crowd["snapshot"])
    h, w = img.shape[:2]
    assert img[int(h * 0.02) : int(h * 0.13), int(w * 0.02) : int(w * 0.38)].max() < 30


@pytest.mark.parametrize("case", ["missing", "broken", "bad_card"])
def test_bad_model_gives_one_line(clip: Path, tmp_path: Path, case: str) -> None:
    model = tmp_path / "m.onnx"
    if case == "broken":
        model.write_bytes(b"\x08\x07 not an onnx graph at all" * 50)
    card = tmp_path / "card.yaml"
    body = {
        "name": "x",
        "file": str(model),
        "format": "yolov8",
        "input": {"width": 64, "height": 64},
    }
    if case == "bad_card":
        body["format"] = "yolov99"
    card.write_text(yaml.safe_dump(body))
    res = run_ioc("detect", str(clip), "--model", str(card), "--json")
    assert res.returncode != 0
    err = res.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert {"missing": "missing", "broken": "cannot be loaded", "bad_card": "format"}[case] in err


def test_unreadable_streams_give_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.avi"
    junk.write_bytes(b"RIFF....AVI this is not a video" * 100)
    for source in (str(junk), str(tmp_path / "nothing.mp4")):
        res = run_ioc("detect", source, "--json")
        err = res.stderr.strip()
        assert res.returncode != 0 and err.startswith("error: ") and "\n" not in err, err


def test_malformed_zone_polygon_gives_one_line(clip: Path, tmp_path: Path) -> None:
    site = yaml.safe_load((Path(__file__).parents[2] / "sites" / "iahdrai.yaml").read_text())
    bowtie = [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]
    site["cameras"] = [{"id": "c1", "org_unit": site["org_units"][0]["id"], "name": "c", "url": "x",
                        "zones": [{"id": "z", "name": "z", "points": bowtie}],
                        "rules": [{"kind": "intrusion", "zone": "z"}]}]  # fmt: skip
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True))
    res = run_ioc("detect", str(clip), "--site", str(path), "--camera", "c1", "--json")
    err = res.stderr.strip()
    assert res.returncode == 2 and err.startswith("error: ") and "\n" not in err
    assert "zone z" in err and "cross" in err
