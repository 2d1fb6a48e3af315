"""One frame through the detect stage: decode, detect, group, score, crop.

Plain Python over a Detector; the detect task feeds it a JPEG from Redis and
decides what to do with the groups the gate flags.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from trafficrisk.messages import Box, Detection, Group, LineCrossing, Zone
from trafficrisk.workers.detection import Detector
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.grouping import find_groups
from trafficrisk.workers.interaction import measure_pairs, with_speeds
from trafficrisk.workers.rules import LlmGate, converging_pairs, score_group
from trafficrisk.workers.tracking import FrameTracker
from trafficrisk.workers.zones import crossings, zones_of

CROP_PADDING = 0.15



class FrameDecodeError(ValueError):
    """The bytes under a frame key are not a JPEG we can decode."""


@dataclass(frozen=True)
class FrameAnalysis:
    detections: tuple[Detection, ...]
    groups: tuple[Group, ...]
    # Crops (JPEG) of the groups the gate sends to the LLM, by group id.
    crops: dict[str, bytes] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    crossings: tuple[LineCrossing, ...] = ()


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


def build_groups(detections: tuple[Detection, ...], plane: GroundPlane | None = None) -> tuple[Group, ...]:
    pairs = measure_pairs(detections, plane)
    groups = []
    for number, members in enumerate(find_groups(detections, converging=converging_pairs(pairs))):
        inside = set(members)
        own_pairs = tuple(p for p in pairs if p.first in inside and p.second in inside)
        prescore, verdict = score_group(detections, members, own_pairs)
        groups.append(Group(
            group_id=f"g{number}",
            members=tuple(members),
            labels=tuple(detections[i].label for i in members),
            box=Box.union([detections[i].box for i in members]),
            prescore=prescore,
            rules_verdict=verdict,
            pairs=own_pairs,
        ))
    return tuple(groups)


class FrameAnalyzer:
    def __init__(self, detector: Detector, gate: LlmGate, jpeg_quality: int = 85) -> None:
        self.detector = detector
        self.gate = gate
        self.jpeg_quality = jpeg_quality

    def analyze(self, jpeg: bytes, *, want_crops: bool, track: FrameTracker | None = None,
                plane: GroundPlane | None = None, zones: tuple[Zone, ...] = ()) -> FrameAnalysis:
        """Detections and groups of one frame; crops only when an LLM will see them.

        `track` adds track ids and velocities to the detections (it needs the
        camera's shared tracker state, which the caller holds); `plane` turns pair
        measures into metres; `zones` give zone membership and line crossings.
        """
        started = time.perf_counter()
        image = decode_jpeg(jpeg)
        decoded = time.perf_counter()
        detections = tuple(self.detector.detect([image])[0])
        inferred = time.perf_counter()
        previous: dict[int, tuple[float, float]] = {}
        if track is not None:
            detections, previous = track(detections)
        if zones:
            detections = tuple(d.model_copy(update={"zones": zones_of(d, zones)}) for d in detections)
        if plane is not None:
            detections = with_speeds(detections, plane)
        groups = build_groups(detections, plane)
        crops = {}
        if want_crops:
            crops = {g.group_id: encode_jpeg(crop_box(image, g.box), self.jpeg_quality)
                     for g in groups if self.gate.wants_llm(g.prescore)}
        crossed = tuple(crossings(detections, previous, zones))
        finished = time.perf_counter()
        timings = {
            "decode_s": round(decoded - started, 4),
            "inference_s": round(inferred - decoded, 4),
            "postprocess_s": round(finished - inferred, 4),
        }
        return FrameAnalysis(detections, groups, crops, timings, crossed)
