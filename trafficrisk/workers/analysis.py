"""One frame through the detect stage: decode, detect, the camera's scene, group.

Plain Python over a Detector; the detect task feeds it a JPEG from Redis and the
camera's scene step (the shared state in Redis), `trafficrisk evaluate` a JPEG of a
clip's frame and a scene kept in memory, and both get the same analysis.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np

from trafficrisk.messages import (
    AssessedGroup,
    Box,
    ConflictEvent,
    Detection,
    FrameRef,
    FrameResult,
    Group,
    LineCrossing,
    RiskLevel,
)
from trafficrisk.workers.detection import Detector
from trafficrisk.workers.rules import build_groups
from trafficrisk.workers.scene import SceneStep

CROP_PADDING = 0.15


class FrameDecodeError(ValueError):
    """The bytes under a frame key are not a JPEG we can decode."""


@dataclass(frozen=True)
class FrameAnalysis:
    detections: tuple[Detection, ...]
    groups: tuple[Group, ...]
    timings: dict[str, float] = field(default_factory=dict)
    crossings: tuple[LineCrossing, ...] = ()
    conflicts: tuple[ConflictEvent, ...] = ()
    scale: Literal["calibrated", "approximate"] = "approximate"

    def to_result(self, ref: FrameRef, detector: str, llm_enabled: bool, queue_wait_s: float) -> FrameResult:
        """The frame's result with the rules' verdicts (the LLM verifies conflicts, not frames)."""
        return FrameResult(
            camera_id=ref.camera_id,
            frame_id=ref.frame_id,
            seq=ref.seq,
            captured_at=ref.captured_at,
            processed_at=time.time(),
            width=ref.width,
            height=ref.height,
            detector=detector,
            llm_enabled=llm_enabled,
            detections=self.detections,
            groups=tuple(AssessedGroup(group=g, verdict=g.rules_verdict) for g in self.groups),
            risk_level=RiskLevel.highest([g.rules_verdict.risk_level for g in self.groups]),
            crossings=self.crossings,
            conflicts=self.conflicts,
            scale=self.scale,
            timings={"queue_wait_s": queue_wait_s, **self.timings},
        )


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FrameDecodeError("frame bytes are not a decodable image")
    return image


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return bytes(buffer)


def crop_box(image: np.ndarray, box: Box, padding: float = CROP_PADDING) -> np.ndarray:
    """The box plus some context around it, clipped to the image."""
    height, width = image.shape[:2]
    pad_x, pad_y = box.width * padding, box.height * padding
    x1, y1 = max(0, int(box.x1 - pad_x)), max(0, int(box.y1 - pad_y))
    x2, y2 = min(width, int(box.x2 + pad_x) + 1), min(height, int(box.y2 + pad_y) + 1)
    return image[y1:y2, x1:x2]


class FrameAnalyzer:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def analyze(self, jpeg: bytes, *, scene: SceneStep) -> FrameAnalysis:
        """Detections, the scene they make and its groups."""
        started = time.perf_counter()
        image = decode_jpeg(jpeg)
        decoded = time.perf_counter()
        detections = tuple(self.detector.detect([image])[0])
        inferred = time.perf_counter()
        seen = scene(detections)
        groups = build_groups(seen.detections, seen.pairs, seen.conflicts)
        finished = time.perf_counter()
        timings = {
            "decode_s": round(decoded - started, 4),
            "inference_s": round(inferred - decoded, 4),
            "postprocess_s": round(finished - inferred, 4),
        }
        return FrameAnalysis(seen.detections, groups, timings, seen.crossings, seen.conflicts, seen.scale)
