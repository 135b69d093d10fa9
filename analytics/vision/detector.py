"""Object detection with ONNX Runtime, driven by a small model card (YAML) so that the default
NanoDet and user-supplied YOLO exports share one interface."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from analytics.vision import decoders
from core.errors import ConfigError, IOCError

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
DEFAULT_CARD = MODELS_DIR / "nanodet-m-416-coco.yaml"

COCO80 = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic_light",
    "fire_hydrant",
    "stop_sign",
    "parking_meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports_ball",
    "kite",
    "baseball_bat",
    "baseball_glove",
    "skateboard",
    "surfboard",
    "tennis_racket",
    "bottle",
    "wine_glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot_dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted_plant",
    "bed",
    "dining_table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell_phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy_bear",
    "hair_drier",
    "toothbrush",
]
VEHICLES = frozenset({"bicycle", "car", "motorcycle", "bus", "truck"})


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(gt=0, le=4096)
    height: int = Field(gt=0, le=4096)
    name: str | None = None


class ModelCard(BaseModel):
    """What a detector needs to know about a model file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    version: str = "0"
    file: str
    sha256: str | None = None
    format: Literal["nanodet", "yolov8", "yolov5"]
    input: InputSpec
    channels: Literal["bgr", "rgb"] = "bgr"
    scale: float = 1.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    letterbox: bool = False
    # Run a model exported with a static input at the card's (smaller) input size instead, by
    # rewriting the input shape when loading. Needs the `onnx` package; fine for NanoDet, whose
    # grids follow the input.
    reshape_input: bool = False
    nms_iou: float = Field(0.5, gt=0, le=1)
    licence: str = ""
    classes: list[str] | Literal["coco80"] = "coco80"
    path: Path | None = Field(None, exclude=True)

    @property
    def class_names(self) -> list[str]:
        return list(COCO80) if self.classes == "coco80" else list(self.classes)

    @property
    def model_path(self) -> Path:
        p = Path(self.file)
        return p if p.is_absolute() or self.path is None else self.path.parent / p


def load_card(path: Path | str) -> ModelCard:
    """Read a model card; ConfigError naming the bad key."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"model card {path}: cannot be read ({exc.strerror})") from None
    except yaml.YAMLError:
        raise ConfigError(f"model card {path}: not valid YAML") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model card {path}: expected a mapping")
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"model card {path}: {loc}: {err['msg']}") from None
    return card.model_copy(update={"path": path})


@dataclass(frozen=True)
class Detection:
    """One object in frame pixels."""

    box: tuple[float, float, float, float]
    score: float
    label: str

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


@dataclass
class Transform:
    """How model-input pixels map back to frame pixels."""

    sx: float
    sy: float
    dx: float = 0.0
    dy: float = 0.0

    def to_frame(self, boxes: np.ndarray, frame_w: int, frame_h: int) -> np.ndarray:
        out = boxes.copy()
        out[:, [0, 2]] = (out[:, [0, 2]] - self.dx) / self.sx
        out[:, [1, 3]] = (out[:, [1, 3]] - self.dy) / self.sy
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, frame_w)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, frame_h)
        return out


def preprocess(frame: np.ndarray, card: ModelCard) -> tuple[np.ndarray, Transform]:
    """Resize (or letterbox), reorder channels and normalise a BGR frame into NCHW float32."""
    import cv2

    h, w = frame.shape[:2]
    iw, ih = card.input.width, card.input.height
    if card.letterbox:
        r = min(iw / w, ih / h)
        nw, nh = round(w * r), round(h * r)
        canvas = np.full((ih, iw, 3), 114, np.uint8)
        dx, dy = (iw - nw) // 2, (ih - nh) // 2
        canvas[dy : dy + nh, dx : dx + nw] = cv2.resize(frame, (nw, nh))
        img, tf = canvas, Transform(r, r, dx, dy)
    else:
        img, tf = cv2.resize(frame, (iw, ih)), Transform(iw / w, ih / h)
    if card.channels == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    # OpenCV's per-channel arithmetic is several times faster than numpy broadcasting here.
    x = img.astype(np.float32)
    if card.scale != 1.0:
        x = cv2.multiply(x, (card.scale, card.scale, card.scale, 1.0))
    x = cv2.subtract(x, (*card.mean, 0.0))
    x = cv2.multiply(x, (*(1.0 / s for s in card.std), 1.0))
    return np.stack(cv2.split(x))[None], tf


def _with_input_size(data: bytes, width: int, height: int, path: Path) -> bytes:
    """The serialized model with its first input's H and W set and output shapes left open."""
    try:
        import onnx
    except ImportError:
        raise IOCError(
            f"model card for {path}: reshape_input needs the onnx package (pip install onnx)"
        ) from None
    try:
        model = onnx.load_from_string(data)
    except Exception:  # protobuf decode errors are untyped
        raise IOCError(f"model file {path} cannot be loaded: not an ONNX model") from None
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise IOCError(f"model file {path}: reshape_input needs an NCHW input")
    dims[2].dim_value, dims[3].dim_value = height, width
    del model.graph.value_info[:]
    for out in model.graph.output:
        for d in out.type.tensor_type.shape.dim:
            d.dim_param = "n"
    return model.SerializeToString()


@dataclass
class Detector:
    """An ONNX Runtime session plus its card; ``detect`` maps a BGR frame to detections."""

    card: ModelCard
    threads: int = 1
    score_threshold: float = 0.3
    session: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import onnxruntime as ort

        path = self.card.model_path
        if not path.is_file():
            raise IOCError(f"model file {path} is missing: see models/README.md")
        data = path.read_bytes()
        if self.card.sha256 and hashlib.sha256(data).hexdigest() != self.card.sha256:
            raise IOCError(f"model file {path} does not match its card's sha256: file is damaged")
        if self.card.reshape_input:
            data = _with_input_size(data, self.card.input.width, self.card.input.height, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                data, sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else "unknown"
            raise IOCError(
                f"model file {path} cannot be loaded by ONNX Runtime: {reason}"
            ) from None
        inputs = self.session.get_inputs()
        self.input_name = self.card.input.name or inputs[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.names = self.card.class_names

    @property
    def model_name(self) -> str:
        return self.card.name

    @property
    def model_version(self) -> str:
        return self.card.version

    def infer(self, blob: np.ndarray) -> list[np.ndarray]:
        """Raw model outputs (what the benchmark calls the ceiling)."""
        return self.session.run(self.output_names, {self.input_name: blob})

    def decode(self, outputs: list[np.ndarray]) -> decoders.Decoded:
        c = self.card
        if c.format == "nanodet":
            named = dict(zip(self.output_names, outputs, strict=True))
            cls = [named[f"cls_s{s}"] for s in decoders.NANODET_STRIDES]
            reg = [named[f"reg_s{s}"] for s in decoders.NANODET_STRIDES]
            return decoders.decode_nanodet(
                cls, reg, c.input.width, c.input.height, self.score_threshold
            )
        if c.format == "yolov8":
            return decoders.decode_yolov8(outputs[0], self.score_threshold)
        return decoders.decode_yolov5(outputs[0], self.score_threshold)

    def detect(self, frame: np.ndarray) -> list[Detection]:
        blob, tf = preprocess(frame, self.card)
        boxes, scores, classes = self.decode(self.infer(blob))
        keep = decoders.nms(boxes, scores, classes, self.card.nms_iou)
        boxes = tf.to_frame(boxes[keep], frame.shape[1], frame.shape[0])
        out = []
        for b, s, k in zip(boxes, scores[keep], classes[keep], strict=True):
            label = self.names[k] if 0 <= k < len(self.names) else f"class_{k}"
            box = (float(b[0]), float(b[1]), float(b[2]), float(b[3]))
            out.append(Detection(box, float(s), label))
        return out


def load_detector(card_path: Path | str | None = None, threads: int = 1) -> Detector:
    return Detector(load_card(card_path or DEFAULT_CARD), threads=threads)
