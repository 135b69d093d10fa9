"""Decoders on tiny ONNX graphs built with onnx.helper whose outputs are known, run through the
real Detector (ONNX Runtime, pre-processing, scaling back to the frame, NMS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from analytics.vision import decoders
from analytics.vision.detector import Detector, load_card


def constant_model(path: Path, outputs: dict[str, np.ndarray], size: int) -> Path:
    """A graph whose outputs are fixed tensors (plus 0 × the input, so the input is used)."""
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Mul", ["m", "zero"], ["z"]),
    ]
    inits = [numpy_helper.from_array(np.array(0, np.float32), "zero")]
    outs = []
    for name, value in outputs.items():
        inits.append(numpy_helper.from_array(value.astype(np.float32), f"{name}_c"))
        nodes.append(helper.make_node("Add", [f"{name}_c", "z"], [name]))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "tiny", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def card(tmp: Path, model: Path, fmt: str, size: int, **extra: object) -> Path:
    data = {
        "name": f"tiny-{fmt}",
        "version": "test",
        "file": str(model),
        "format": fmt,
        "input": {"width": size, "height": size},
        "classes": ["person", "car", "dog"],
        **extra,
    }
    p = tmp / f"{fmt}.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def frame(w: int, h: int) -> np.ndarray:
    return np.full((h, w, 3), 90, np.uint8)


def test_yolov8_layout_decodes_scales_and_suppresses(tmp_path: Path) -> None:
    # [1, 4 + 3 classes, 4 candidates]: cx, cy, w, h, then scores.
    cand = np.array(
        [
            [32, 32, 16, 16, 0.9, 0.0, 0.0],  # person at (24,24)-(40,40)
            [33, 32, 16, 16, 0.8, 0.0, 0.0],  # duplicate of it: suppressed by NMS
            [48, 16, 8, 12, 0.0, 0.7, 0.1],  # car
            [10, 10, 4, 4, 0.1, 0.1, 0.1],  # below the score threshold
        ],
        np.float32,
    )
    model = constant_model(tmp_path / "v8.onnx", {"output0": cand.T[None]}, 64)
    det = Detector(load_card(card(tmp_path, model, "yolov8", 64)), score_threshold=0.3)
    out = det.detect(frame(128, 128))  # frame twice the input: boxes double
    assert [d.label for d in out] == ["person", "car"]
    assert out[0].box == pytest.approx((48, 48, 80, 80), abs=0.01)
    assert out[0].score == pytest.approx(0.9)
    assert out[1].box == pytest.approx((88, 20, 104, 44), abs=0.01)


def test_yolov5_layout_multiplies_objectness(tmp_path: Path) -> None:
    cand = np.array(
        [
            [20, 20, 10, 10, 0.5, 0.9, 0.1, 0.0],  # 0.45 person
            [40, 40, 10, 10, 0.2, 0.1, 0.9, 0.0],  # 0.18 car: under 0.3
            [50, 10, 6, 6, 0.9, 0.0, 0.0, 0.8],  # 0.72 dog
        ],
        np.float32,
    )
    model = constant_model(tmp_path / "v5.onnx", {"output0": cand[None]}, 64)
    det = Detector(load_card(card(tmp_path, model, "yolov5", 64)), score_threshold=0.3)
    out = sorted(det.detect(frame(64, 64)), key=lambda d: d.label)
    assert [(d.label, round(d.score, 2)) for d in out] == [("dog", 0.72), ("person", 0.45)]
    assert out[1].box == pytest.approx((15, 15, 25, 25), abs=0.01)


def test_letterbox_maps_back_to_the_frame(tmp_path: Path) -> None:
    # 64×64 input, frame 128×64: scale 0.5, padded 16 px above and below.
    cand = np.array([[32, 32, 16, 16, 0.9, 0, 0]], np.float32)
    model = constant_model(tmp_path / "lb.onnx", {"output0": cand.T[None]}, 64)
    path = card(tmp_path, model, "yolov8", 64, letterbox=True, channels="rgb", scale=1 / 255)
    out = Detector(load_card(path)).detect(frame(128, 64))
    assert out[0].box == pytest.approx((48, 16, 80, 48), abs=0.01)


def test_nanodet_gfl_head(tmp_path: Path) -> None:
    size, reg_bins = 64, 8  # grids 8×8, 4×4, 2×2 ; 4 sides × 8 bins
    cls = {s: np.zeros((1, (size // s) ** 2, 3), np.float32) for s in (8, 16, 32)}
    reg = {s: np.zeros((1, (size // s) ** 2, 4 * reg_bins), np.float32) for s in (8, 16, 32)}
    # Stride 8, column 3, row 5: centre (28, 44). Distances peaked at bins 1, 2, 3, 2 (× 8 px).
    k = 5 * 8 + 3
    cls[8][0, k, 1] = 0.8  # a car
    for side, b in enumerate((1, 2, 3, 2)):
        reg[8][0, k, side * reg_bins + b] = 30.0  # softmax ≈ one-hot
    cls[32][0, 3, 0] = 0.2  # under the threshold: dropped
    outputs = {}
    for s in (8, 16, 32):
        outputs[f"cls_s{s}"], outputs[f"reg_s{s}"] = cls[s], reg[s]
    model = constant_model(tmp_path / "nd.onnx", outputs, size)
    det = Detector(load_card(card(tmp_path, model, "nanodet", size)), score_threshold=0.3)
    out = det.detect(frame(64, 64))
    assert len(out) == 1
    assert out[0].label == "car" and out[0].score == pytest.approx(0.8)
    assert out[0].box == pytest.approx((28 - 8, 44 - 16, 28 + 24, 44 + 16), abs=0.05)


def test_nms_is_class_wise() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    classes = np.array([0, 0, 1])
    assert decoders.nms(boxes, scores, classes, 0.5).tolist() == [0, 2]


def test_wrong_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="expected"):
        decoders.decode_yolov8(np.zeros((1, 3, 5), np.float32), 0.3)
