"""Pure decoders from raw detector outputs to boxes, one per common export layout.

Every decoder returns ``(boxes, scores, classes)``: ``boxes`` float32 ``[N, 4]`` as x1, y1, x2, y2
in model-input pixels, before class-wise NMS. Keeping them pure lets tests feed known tensors.
"""

from __future__ import annotations

import numpy as np

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]

NANODET_STRIDES = (8, 16, 32)


def _empty() -> Decoded:
    return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def decode_nanodet(
    cls: list[np.ndarray],
    reg: list[np.ndarray],
    input_w: int,
    input_h: int,
    score_threshold: float,
    strides: tuple[int, ...] = NANODET_STRIDES,
) -> Decoded:
    """NanoDet (GFL head): per stride, ``cls`` is ``[1, cells, C]`` sigmoid scores and ``reg`` is
    ``[1, cells, 4·(R+1)]`` distance distributions (left, top, right, bottom), in grid order."""
    all_boxes, all_scores, all_classes = [], [], []
    for c, r, s in zip(cls, reg, strides, strict=True):
        c = c.reshape(-1, c.shape[-1])
        r = r.reshape(c.shape[0], 4, -1)
        grid_w = int(np.ceil(input_w / s))
        best = c.argmax(axis=1)
        score = c[np.arange(c.shape[0]), best]
        keep = np.nonzero(score >= score_threshold)[0]
        if keep.size == 0:
            continue
        bins = np.arange(r.shape[2], dtype=np.float32)
        dist = (_softmax(r[keep], axis=2) * bins).sum(axis=2) * s
        cx = (keep % grid_w + 0.5) * s
        cy = (keep // grid_w + 0.5) * s
        boxes = np.stack(
            [cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], axis=1
        )
        all_boxes.append(boxes)
        all_scores.append(score[keep])
        all_classes.append(best[keep])
    if not all_boxes:
        return _empty()
    return (
        np.concatenate(all_boxes).astype(np.float32),
        np.concatenate(all_scores).astype(np.float32),
        np.concatenate(all_classes).astype(np.int64),
    )


def _from_cxcywh(rows: np.ndarray, scores: np.ndarray, threshold: float) -> Decoded:
    best = scores.argmax(axis=1)
    score = scores[np.arange(scores.shape[0]), best]
    keep = score >= threshold
    cx, cy, w, h = (rows[keep, i] for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    return boxes.astype(np.float32), score[keep].astype(np.float32), best[keep].astype(np.int64)


def decode_yolov8(output: np.ndarray, score_threshold: float) -> Decoded:
    """YOLOv8/YOLO11: ``[1, 4 + C, N]``, rows cx, cy, w, h then class scores (no objectness)."""
    if output.ndim != 3 or output.shape[1] < 5:
        raise ValueError(f"expected [1, 4+C, N], got {list(output.shape)}")
    rows = output[0].T
    return _from_cxcywh(rows, rows[:, 4:], score_threshold)


def decode_yolov5(output: np.ndarray, score_threshold: float) -> Decoded:
    """YOLOv5: ``[1, N, 5 + C]``, columns cx, cy, w, h, objectness, class scores."""
    if output.ndim != 3 or output.shape[2] < 6:
        raise ValueError(f"expected [1, N, 5+C], got {list(output.shape)}")
    rows = output[0]
    return _from_cxcywh(rows, rows[:, 5:] * rows[:, 4:5], score_threshold)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` [N, 4] with every box of ``b`` [M, 4] (x1, y1, x2, y2)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(
    boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int = 300
) -> np.ndarray:
    """Class-wise non-maximum suppression; returns kept indices, best score first."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    # Offset boxes per class so boxes of different classes never overlap.
    offset = (classes.astype(np.float32) * (float(boxes.max()) + 1.0))[:, None]
    shifted = boxes + offset
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        i = int(order[0])
        keep.append(i)
        if order.size == 1:
            break
        ious = iou_matrix(shifted[i : i + 1], shifted[order[1:]])[0]
        order = order[1:][ious <= iou]
    return np.array(keep, np.int64)
