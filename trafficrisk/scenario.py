"""Scenario clips with ground truth, for developing and testing tracking and conflict rules.

Real road users cut out of real photos (the pickup truck of dog.jpg, the bus and a
pedestrian of ultralytics' bus.jpg, a parked van of vtest.avi) move along scripted
paths over real footage (vtest.avi). Each actor moves at a constant velocity per
segment, so the truth is exact: its box in every frame, and for every pair of a
vehicle with anyone the time-to-collision at each frame, from which come the
conflict intervals (TTC under 3 s) and their minimum TTC.

    trafficrisk scenario near-miss --out var/scenarios   # clip.avi + truth.json
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trafficrisk.workers.kinematics import time_to_collision
from trafficrisk.workers.rules import POTENTIAL_TTC_S, VEHICLES

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND = ROOT / "data" / "vtest.avi"
FPS = 10.0


@dataclass(frozen=True)
class Sprite:
    source: str  # "dog.jpg", "bus.jpg" or "vtest.avi"
    box: tuple[int, int, int, int]  # where the road user is in that image
    label: str


# Boxes found by the SSD detector on these images (see tests/test_scenario.py).
SPRITES = {
    "truck": Sprite("dog.jpg", (450, 79, 694, 167), "truck"),
    "bus": Sprite("bus.jpg", (5, 213, 810, 758), "bus"),
    "person": Sprite("bus.jpg", (53, 394, 228, 898), "person"),
    "van": Sprite("vtest.avi", (644, 41, 723, 100), "car"),
}


@dataclass(frozen=True)
class Segment:
    until: float  # seconds from the start of the clip
    velocity: tuple[float, float]  # of the ground point, px/s


@dataclass(frozen=True)
class Actor:
    name: str
    sprite: str
    height: float  # px
    start: tuple[float, float]  # ground point (bottom centre) at time 0
    segments: tuple[Segment, ...]  # the last one lasts to the end

    @property
    def label(self) -> str:
        return SPRITES[self.sprite].label

    def state(self, t: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """Ground point and velocity at time t."""
        x, y = self.start
        began = 0.0
        for segment in self.segments:
            span = min(t, segment.until) - began
            if span <= 0:
                return (x, y), segment.velocity
            x, y = x + segment.velocity[0] * span, y + segment.velocity[1] * span
            began = segment.until
            if t <= segment.until:
                return (x, y), segment.velocity
        return (x, y), self.segments[-1].velocity

    def box(self, t: float) -> tuple[float, float, float, float]:
        (x, y), _ = self.state(t)
        sx1, sy1, sx2, sy2 = SPRITES[self.sprite].box
        width = self.height * (sx2 - sx1) / (sy2 - sy1)
        return x - width / 2, y - self.height, x + width / 2, y


@dataclass(frozen=True)
class Scenario:
    name: str
    seconds: float
    actors: tuple[Actor, ...]
    safe: bool  # no conflict is scripted


def _forever(vx: float, vy: float = 0.0) -> tuple[Segment, ...]:
    return (Segment(1e9, (vx, vy)),)


SCENARIOS = {
    # A truck heads for a pedestrian crossing its lane and stops short of him.
    "near-miss": Scenario("near-miss", 5.0, (
        Actor("truck", "truck", 90, (-40, 470), (Segment(2.0, (200, 0)), Segment(1e9, (0, 0)))),
        Actor("pedestrian", "person", 110, (600, 440), _forever(0, 8)),
    ), safe=False),
    # A van and a truck on crossing paths; the van brakes to a stop in time.
    "crossing": Scenario("crossing", 5.0, (
        Actor("truck", "truck", 80, (-60, 520), _forever(180)),
        Actor("van", "van", 90, (420, 180), (Segment(1.2, (0, 110)), Segment(1e9, (0, 0)))),
    ), safe=False),
    # A truck drives along the road while a pedestrian walks the same way far ahead of it.
    "parallel": Scenario("parallel", 5.0, (
        Actor("truck", "truck", 90, (-40, 520), _forever(120)),
        Actor("pedestrian", "person", 100, (500, 330), _forever(40)),
    ), safe=True),
    # A parked van; a pedestrian walks past it on the pavement, away from it.
    "parked": Scenario("parked", 5.0, (
        Actor("van", "van", 100, (150, 500), _forever(0)),
        Actor("pedestrian", "person", 100, (400, 380), _forever(60, -10)),
    ), safe=True),
}


@dataclass(frozen=True)
class Conflict:
    first: str
    second: str
    start: float
    end: float
    min_ttc_s: float


def truth_ttc(a: Actor, b: Actor, t: float) -> float | None:
    (p1, v1), (p2, v2) = a.state(t), b.state(t)
    reach = (_width(a) + _width(b)) / 2
    return time_to_collision(p1, v1, p2, v2, reach)


def _width(actor: Actor) -> float:
    x1, _, x2, _ = actor.box(0.0)
    return x2 - x1


def conflicts(scenario: Scenario, fps: float = FPS) -> list[Conflict]:
    """Intervals in which a pair with a vehicle has a TTC under 3 s, with their minimum TTC."""
    found = []
    times = [n / fps for n in range(int(scenario.seconds * fps))]
    for a, b in combinations(scenario.actors, 2):
        if a.label not in VEHICLES and b.label not in VEHICLES:
            continue
        run: list[tuple[float, float]] = []
        for t in [*times, None]:
            ttc = truth_ttc(a, b, t) if t is not None else None
            if t is not None and ttc is not None and ttc <= POTENTIAL_TTC_S:
                run.append((t, ttc))
            elif run:
                found.append(Conflict(a.name, b.name, run[0][0], run[-1][0], min(v for _, v in run)))
                run = []
    return found


def _source_image(name: str) -> np.ndarray:
    image: np.ndarray | None
    if name == "vtest.avi":
        capture = cv2.VideoCapture(str(BACKGROUND))
        image = capture.read()[1]
        capture.release()
    else:
        folder = ROOT / "data" if name == "dog.jpg" else _ultralytics_assets()
        image = cv2.imread(str(folder / name))
    if image is None:
        raise FileNotFoundError(f"scenario source image {name} not found")
    return image


def _ultralytics_assets() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("bus.jpg ships with ultralytics: pip install 'trafficrisk[yolo]'")
    return Path(spec.submodule_search_locations[0]) / "assets"


def _cutouts(scenario: Scenario) -> dict[str, np.ndarray]:
    cutouts = {}
    for actor in scenario.actors:
        sprite = SPRITES[actor.sprite]
        x1, y1, x2, y2 = sprite.box
        cutouts[actor.name] = _source_image(sprite.source)[y1:y2, x1:x2]
    return cutouts


def _paste(frame: np.ndarray, cutout: np.ndarray, box: tuple[float, float, float, float]) -> None:
    x1, y1, x2, y2 = (round(v) for v in box)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    resized = cv2.resize(cutout, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
    height, width = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if cx2 > cx1 and cy2 > cy1:
        frame[cy1:cy2, cx1:cx2] = resized[cy1 - y1:cy2 - y1, cx1 - x1:cx2 - x1]


TruthBox = dict[str, Any]  # {"actor", "label", "box": [x1, y1, x2, y2]}


def frames(scenario: Scenario, fps: float = FPS) -> Iterator[tuple[float, np.ndarray, list[TruthBox]]]:
    """(time, image, truth boxes) for every frame; actors drawn far to near."""
    cutouts = _cutouts(scenario)
    background = cv2.VideoCapture(str(BACKGROUND))
    try:
        for n in range(int(scenario.seconds * fps)):
            t = n / fps
            ok, image = background.read()
            if not ok:
                raise RuntimeError(f"{BACKGROUND} ended before {scenario.seconds} s")
            boxes = []
            for actor in sorted(scenario.actors, key=lambda a: a.state(t)[0][1]):
                box = actor.box(t)
                _paste(image, cutouts[actor.name], box)
                clipped = _clip(box, image.shape)
                if clipped is not None:
                    boxes.append({"actor": actor.name, "label": actor.label, "box": clipped})
            yield t, image, boxes
    finally:
        background.release()


def _clip(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> list[float] | None:
    height, width = shape[:2]
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
    return [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)] if x2 - x1 > 4 and y2 - y1 > 4 else None


def write(scenario: Scenario, folder: Path, fps: float = FPS) -> tuple[Path, Path]:
    """The clip (MJPG in AVI) and its ground truth (JSON) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    clip, truth_file = folder / f"{scenario.name}.avi", folder / f"{scenario.name}.json"
    writer: cv2.VideoWriter | None = None
    truth_frames = []
    for t, image, boxes in frames(scenario, fps):
        if writer is None:
            writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), fps,
                                     (image.shape[1], image.shape[0]))
        writer.write(image)
        truth_frames.append({"time": t, "boxes": boxes})
    if writer is not None:
        writer.release()
    truth = {"scenario": scenario.name, "fps": fps, "safe": scenario.safe,
             "conflicts": [asdict(c) for c in conflicts(scenario, fps)], "frames": truth_frames}
    truth_file.write_text(json.dumps(truth, indent=1))
    return clip, truth_file
