"""Scenario clips with exact ground truth in metres, for judging the conflict measures.

Road users move on the ground plane (metres) along scripted legs of constant
acceleration, seen by a pinhole camera of known height, tilt and focal length over
a real empty street (the median of vtest.avi's frames: the pedestrians walk away,
the road stays). Each is drawn as a real cut-out (the pickup and the bicycle of
dog.jpg, the bus and pedestrians of ultralytics' bus.jpg, darknet's person.jpg, a
van of vtest.avi) stretched over the image box of its 3D box, so the detector sees a
real road user of the right size in the right place. The truth is exact: each road
user's footprint, velocity and box in every frame; for every pair that can conflict,
the time to collision of their footprints per frame and the observed
post-encroachment time of their paths, by the definitions of docs/conflicts.md; the
conflicts that follow, with their kind, interval, minimum TTC, PET, maximum DRAC and
severity. The camera's homography is the clip's calibration.

    trafficrisk scenario near-miss --out var/scenarios   # near-miss.avi + near-miss.json
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import cache
from itertools import combinations
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from trafficrisk.workers import kinematics
from trafficrisk.workers.conflicts import Thresholds
from trafficrisk.workers.kinematics import Footprint, Trail, Vector
from trafficrisk.workers.road_users import CLASSES, pair_kind

ROOT = Path(__file__).resolve().parent.parent
BACKGROUND = ROOT / "data" / "vtest.avi"
FPS = 10.0
# Speeds a scripted road user must exceed to count as moving in the truth (docs/conflicts.md).
MOVING_MPS = 0.5
# Truth intervals of one pair closer than this in time are one encounter.
MERGE_S = 1.5


@dataclass(frozen=True)
class Camera:
    """A pinhole camera with no roll, `height_m` above flat ground, tilted down by `pitch_deg`.

    Ground coordinates: x to the right, y straight ahead from the point below the camera.
    """

    width: int = 768
    height: int = 576
    focal: float = 700.0
    height_m: float = 6.5
    pitch_deg: float = 24.6

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N x 3: x, y, height) as image points (N x 2)."""
        theta = math.radians(self.pitch_deg)
        s, c = math.sin(theta), math.cos(theta)
        r = np.asarray(points, dtype=np.float64) - np.array([0.0, 0.0, self.height_m])
        down = r @ np.array([0.0, -s, -c])
        ahead = r @ np.array([0.0, c, -s])
        return np.stack(
            [self.width / 2 + self.focal * r[:, 0] / ahead, self.height / 2 + self.focal * down / ahead],
            axis=1,
        )

    def sees(self, points: np.ndarray) -> bool:
        """Whether all the world points are well in front of the camera and near its view."""
        theta = math.radians(self.pitch_deg)
        r = np.asarray(points, dtype=np.float64) - np.array([0.0, 0.0, self.height_m])
        if (r @ np.array([0.0, math.cos(theta), -math.sin(theta)])).min() < 1.0:
            return False
        image = self.project(points)
        return bool(
            (image[:, 0] > -self.width).all()
            and (image[:, 0] < 2 * self.width).all()
            and (image[:, 1] > -self.height).all()
            and (image[:, 1] < 2 * self.height).all()
        )

    def ground_of(self, u: float, v: float) -> Vector:
        """Where the image point (u, v) lies on the ground."""
        theta = math.radians(self.pitch_deg)
        s, c = math.sin(theta), math.cos(theta)
        ray = (
            np.array([1.0, 0.0, 0.0]) * (u - self.width / 2) / self.focal
            + np.array([0.0, -s, -c]) * (v - self.height / 2) / self.focal
            + np.array([0.0, c, -s])
        )
        t = self.height_m / -ray[2]
        return float(t * ray[0]), float(t * ray[1])

    def calibration(self) -> dict[str, list[list[float]]]:
        """Four points on the road and where they lie: what a surveyor would measure."""
        ground = [[-6.0, 20.0], [6.0, 20.0], [4.0, 8.0], [-4.0, 8.0]]
        image = self.project(np.array([[x, y, 0.0] for x, y in ground]))
        return {
            "image_points": [[round(float(u), 2), round(float(v), 2)] for u, v in image],
            "ground_points": ground,
        }


CAMERA = Camera()


@dataclass(frozen=True)
class Sprite:
    source: str  # dog.jpg, bus.jpg, person.jpg or vtest.avi
    box: tuple[int, int, int, int]  # where the road user is in that image (the SSD's box)
    label: str  # what the detector calls it: its class in the truth
    faces_right: bool = True  # a side view: flipped for road users moving to the left


SPRITES = {
    "pickup": Sprite("dog.jpg", (451, 79, 694, 167), "car", faces_right=False),
    "bicycle": Sprite("dog.jpg", (77, 134, 549, 409), "bicycle"),
    "bus": Sprite("bus.jpg", (5, 213, 810, 758), "bus"),
    "van": Sprite("vtest.avi", (644, 41, 723, 100), "car"),
    "walker": Sprite("bus.jpg", (53, 394, 228, 898), "person"),
    "walker2": Sprite("bus.jpg", (225, 407, 356, 862), "person"),
    "walker3": Sprite("person.jpg", (186, 100, 271, 373), "person"),
}
# Heights of the 3D boxes, metres.
HEIGHTS = {"person": 1.7, "car": 1.6, "bus": 3.0, "truck": 3.0, "bicycle": 1.1, "motorcycle": 1.3}


@dataclass(frozen=True)
class Leg:
    """A stretch of constant acceleration along one heading (degrees: 0 = +x, 90 = +y)."""

    seconds: float
    heading_deg: float
    speed_from: float
    speed_to: float | None = None  # None: constant speed

    @property
    def end_speed(self) -> float:
        return self.speed_from if self.speed_to is None else self.speed_to


@dataclass(frozen=True)
class Actor:
    name: str
    sprite: str
    start: Vector  # footprint centre at time 0, metres
    legs: tuple[Leg, ...]  # after the last one, it stands where it got to
    height_m: float | None = None

    @property
    def label(self) -> str:
        return SPRITES[self.sprite].label

    @property
    def size(self) -> tuple[float, float, float]:
        cls = CLASSES[self.label]
        return cls.length_m, cls.width_m, self.height_m or HEIGHTS[self.label]

    def state(self, t: float) -> tuple[Vector, Vector, Vector]:
        """Footprint centre, velocity and heading (unit) at time t."""
        x, y = self.start
        began = 0.0
        heading = _direction(self.legs[0].heading_deg)
        for leg in self.legs:
            heading = _direction(leg.heading_deg)
            span = min(t - began, leg.seconds)
            accel = (leg.end_speed - leg.speed_from) / leg.seconds
            if span < leg.seconds:
                speed = leg.speed_from + accel * max(span, 0.0)
                travelled = leg.speed_from * span + accel * span * span / 2
                return (
                    (x + heading[0] * travelled, y + heading[1] * travelled),
                    (heading[0] * speed, heading[1] * speed),
                    heading,
                )
            travelled = (leg.speed_from + leg.end_speed) / 2 * leg.seconds
            x, y = x + heading[0] * travelled, y + heading[1] * travelled
            began += leg.seconds
        return (x, y), (0.0, 0.0), heading

    def footprint(self, t: float) -> Footprint:
        centre, _, heading = self.state(t)
        length, width, _ = self.size
        return Footprint(centre, heading, length, width)

    def box(self, t: float, camera: Camera = CAMERA) -> tuple[float, float, float, float] | None:
        """The image box of its 3D box; None when it is not in front of the camera."""
        corners = self.footprint(t).corners()
        height = self.size[2]
        points = np.vstack(
            [np.hstack([corners, np.zeros((4, 1))]), np.hstack([corners, np.full((4, 1), height)])]
        )
        if not camera.sees(points):
            return None
        image = camera.project(points)
        return (
            float(image[:, 0].min()),
            float(image[:, 1].min()),
            float(image[:, 0].max()),
            float(image[:, 1].max()),
        )


def _direction(degrees: float) -> Vector:
    return math.cos(math.radians(degrees)), math.sin(math.radians(degrees))


def walk(seconds: float, heading_deg: float, speed: float = 1.4) -> tuple[Leg, ...]:
    return (Leg(seconds, heading_deg, speed),)


def still(seconds: float = 1.0, heading_deg: float = 0.0) -> tuple[Leg, ...]:
    return (Leg(seconds, heading_deg, 0.0),)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    seconds: float
    actors: tuple[Actor, ...]
    safe: bool  # nothing dangerous is scripted
    bystanders: tuple[Actor, ...] = field(default=())

    @property
    def everyone(self) -> tuple[Actor, ...]:
        return (*self.actors, *self.bystanders)


# The road across the image (docs/scenarios.png shows the ground grid): the eastbound
# lane runs from (-16, 18.4) at a heading of -17 degrees (to the right and nearer); the
# westbound lane is 2.6 m further from the camera. A side road leaves near (6, 20) at
# 63 degrees. The grass in front of the road is pavement for pedestrians.
EAST = -17.0
WEST = 163.0
SIDE = 246.0


def east(s: float) -> Vector:
    """The eastbound lane's centre, `s` metres from where it enters the view."""
    return -16.0 + s * math.cos(math.radians(EAST)), 18.4 + s * math.sin(math.radians(EAST))


def side(s: float) -> Vector:
    """The side road's centre, `s` metres from the far end of the view, towards the junction."""
    return 14.5 + s * math.cos(math.radians(SIDE)), 38.0 + s * math.sin(math.radians(SIDE))


def west(s: float) -> Vector:
    """The westbound lane's centre (2.6 m beyond the eastbound one), `s` metres from the
    right of the view."""
    x, y = east(30.0 - s)
    return x + 2.6 * math.sin(math.radians(-EAST)), y + 2.6 * math.cos(math.radians(EAST))


BYSTANDERS = (  # on the grass in front, one across the view and one to and fro
    Actor("bystander-1", "walker2", (-8.0, 7.4), walk(20, 10, 0.8)),
    Actor("bystander-2", "walker3", (-4.5, 6.8), (Leg(2.5, 85, 1.2), Leg(2.5, 265, 1.2), Leg(20, 85, 1.2))),
)


def _beside(point: Vector, metres: float) -> Vector:
    """`metres` to the far side of a point of the eastbound lane (negative: the near side)."""
    return point[0] + metres * math.sin(math.radians(-EAST)), point[1] + metres * math.cos(math.radians(EAST))


def _scenarios() -> dict[str, Scenario]:
    return {
        s.name: s
        for s in (
            Scenario(
                "near-miss",
                "a car brakes for a pedestrian crossing slowly in front of it",
                8.0,
                (
                    Actor("car", "pickup", east(10), (Leg(0.4, EAST, 5.0), Leg(2.0, EAST, 5.0, 0.0))),
                    Actor("pedestrian", "walker", _beside(east(21), 1.2), walk(8.0, EAST - 90, 0.7)),
                ),
                safe=False,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "crossing",
                "a car pulls out across the road and stops just short of a passing car",
                8.0,
                (
                    Actor("car", "pickup", east(10), walk(8.0, EAST, 4.0)),
                    Actor(
                        "other",
                        "pickup",
                        _beside(east(16), 6.0),
                        (Leg(1.0, -50, 3.0), Leg(0.8, -50, 3.0, 0.0)),
                    ),
                ),
                safe=False,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "braking",
                "a car brakes hard for a pedestrian standing in its lane",
                8.0,
                (
                    Actor("car", "pickup", east(10), (Leg(0.5, EAST, 6.5), Leg(1.4, EAST, 6.5, 0.0))),
                    Actor("pedestrian", "walker", east(21.5), still(8.0, 90)),
                ),
                safe=False,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "close-behind",
                "a pedestrian steps into the road just behind a passing car",
                8.0,
                (
                    Actor("car", "pickup", east(10), walk(8.0, EAST, 6.0)),
                    Actor(
                        "pedestrian",
                        "walker",
                        _beside(east(18), 4.0),
                        (*still(0.4, EAST - 90), *walk(8.0, EAST - 90, 1.4)),
                    ),
                ),
                safe=False,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "step-out",
                "a pedestrian steps off the grass into the road; the car brakes",
                8.0,
                (
                    Actor("car", "pickup", east(10), (Leg(0.6, EAST, 5.0), Leg(1.5, EAST, 5.0, 0.0))),
                    Actor("pedestrian", "walker3", _beside(east(21), -2.5), walk(8.0, EAST + 90, 1.2)),
                ),
                safe=False,
                bystanders=BYSTANDERS[:1],
            ),
            Scenario(
                "crossing-after",
                "a pedestrian crosses two seconds behind a passing car: a potential conflict, no alert",
                8.0,
                (
                    Actor("car", "pickup", east(10), walk(8.0, EAST, 6.0)),
                    Actor(
                        "pedestrian",
                        "walker",
                        _beside(east(18), 4.0),
                        (*still(1.7, EAST - 90), *walk(8.0, EAST - 90, 1.4)),
                    ),
                ),
                safe=False,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "parallel",
                "a car drives along the road; a pedestrian walks the same way on the grass",
                8.0,
                (
                    Actor("car", "pickup", east(0), walk(8.0, EAST, 7.0)),
                    Actor("pedestrian", "walker", (-7.0, 11.5), walk(8.0, EAST, 1.4)),
                ),
                safe=True,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "parked",
                "pedestrians walk past a parked car, half a metre from its side",
                8.0,
                (
                    Actor("car", "pickup", east(14), still(8.0, EAST)),
                    Actor("pedestrian", "walker", (-6.0, 13.7), walk(8.0, EAST, 1.4)),
                    Actor("pedestrian-2", "walker3", (5.0, 10.3), walk(8.0, WEST, 1.3)),
                ),
                safe=True,
                bystanders=BYSTANDERS[:1],
            ),
            Scenario(
                "arrive-park",
                "a car arrives, slows down and parks at the kerb",
                8.0,
                (
                    Actor("car", "pickup", east(-2), (Leg(1.5, EAST, 7.0), Leg(3.0, EAST, 7.0, 0.0))),
                    Actor("pedestrian", "walker", (-5.0, 10.5), walk(8.0, EAST, 1.3)),
                ),
                safe=True,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "leave",
                "a parked car drives away with nobody near",
                8.0,
                (
                    Actor(
                        "car",
                        "pickup",
                        east(8),
                        (*still(2.0, EAST), Leg(3.0, EAST, 0.0, 5.0), Leg(3.0, EAST, 5.0)),
                    ),
                ),
                safe=True,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "side-by-side",
                "two cars parked side by side; pedestrians walk round them",
                8.0,
                (
                    Actor("car", "pickup", east(12), still(8.0, EAST)),
                    Actor("car-2", "pickup", west(16), still(8.0, WEST)),
                    Actor("pedestrian", "walker", (-8.0, 12.0), walk(8.0, EAST + 5, 1.4)),
                ),
                safe=True,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "behind",
                "a pedestrian crosses the road well after a car has passed",
                8.0,
                (
                    Actor("car", "pickup", east(10), walk(8.0, EAST, 6.0)),
                    Actor(
                        "pedestrian",
                        "walker",
                        _beside(east(18), 4.0),
                        (*still(3.6, EAST - 90), *walk(8.0, EAST - 90, 1.4)),
                    ),
                ),
                safe=True,
                bystanders=BYSTANDERS,
            ),
            Scenario(
                "following",
                "two cars in one lane at the same speed, two seconds apart",
                8.0,
                (
                    Actor("lead", "pickup", east(12), walk(8.0, EAST, 6.0)),
                    Actor("follower", "pickup", east(0), walk(8.0, EAST, 6.0)),
                ),
                safe=True,
                bystanders=BYSTANDERS,
            ),
        )
    }


SCENARIOS = _scenarios()


@dataclass(frozen=True)
class Conflict:
    """A truth conflict: one encounter of two scripted road users."""

    first: str
    second: str
    kind: str
    conflict_type: str
    start: float
    end: float
    min_ttc_s: float | None
    pet_s: float | None
    max_drac: float | None
    severity: str


def _moving(velocity: Vector) -> bool:
    return math.hypot(*velocity) > MOVING_MPS


def _conflict_type(a: Actor, b: Actor, t: float) -> str:
    (_, va, ha), (_, vb, hb) = a.state(t), b.state(t)
    if (a.label == "person" and not _moving(va)) or (b.label == "person" and not _moving(vb)):
        return "crossing"
    angle = kinematics.heading_angle(ha, hb)
    return "rear-end" if angle <= 30 else "head-on" if angle >= 150 else "crossing"


def in_view(actor: Actor, t: float, camera: Camera = CAMERA) -> bool:
    """Whether the camera sees the whole road user: the truth counts only what it sees."""
    box = actor.box(t, camera)
    return (
        box is not None and box[0] >= 0 and box[1] >= 0 and box[2] <= camera.width and box[3] <= camera.height
    )


def truth_measures(a: Actor, b: Actor, t: float) -> tuple[float | None, float | None]:
    """TTC and DRAC of a pair at time t, by the same rules as the detect stage: both in
    view, a vehicle of the pair moving, and the two closing in."""
    if not (in_view(a, t) and in_view(b, t)):
        return None, None
    (_, va, _), (_, vb, _) = a.state(t), b.state(t)
    vehicles = [(actor, v) for actor, v in ((a, va), (b, vb)) if CLASSES[actor.label].is_vehicle]
    if not any(_moving(v) for _, v in vehicles):
        return None, None
    fa, fb = a.footprint(t), b.footprint(t)
    if kinematics.closing_speed(fa, va, fb, vb) <= 0:
        return None, None
    ttc = kinematics.time_to_collision(fa, va, fb, vb)
    return ttc, kinematics.drac(fa, va, fb, vb) if ttc is not None else None


def truth_pet(a: Actor, b: Actor, seconds: float, step: float = 0.02) -> kinematics.Encroachment | None:
    """The observed PET of two whole scripted paths, when they cross (not follow)."""
    times = np.arange(0.0, seconds, step)
    if not any(
        _moving(actor.state(t)[1]) for actor in (a, b) for t in times if CLASSES[actor.label].is_vehicle
    ):
        return None

    def trail(actor: Actor) -> Trail:
        states = [actor.state(t) for t in times]
        length, width, _ = actor.size
        return Trail(times, np.array([s[0] for s in states]), np.array([s[2] for s in states]), length, width)

    found = kinematics.post_encroachment_time(trail(a), trail(b), -math.inf, -math.inf)
    if found is None or _conflict_type(a, b, found.entered_at) != "crossing":
        return None
    first, second = (a, b) if found.first == 0 else (b, a)
    if not (in_view(first, found.left_at) and in_view(second, found.entered_at)):
        return None
    return found


DEFAULT_THRESHOLDS = Thresholds()


def conflicts(
    scenario: Scenario, fps: float = FPS, limits: Thresholds = DEFAULT_THRESHOLDS
) -> list[Conflict]:
    """The truth: per pair that can conflict, encounters with a TTC (per frame) or a PET
    within the potential thresholds."""
    times = [n / fps for n in range(int(scenario.seconds * fps))]
    found = []
    for a, b in combinations(scenario.everyone, 2):
        kind = pair_kind(a.label, b.label)
        if kind is None:
            continue
        spans: list[dict[str, Any]] = []
        for t in times:
            ttc, drac = truth_measures(a, b, t)
            if ttc is not None and ttc <= limits.potential_ttc_s:
                spans.append({"start": t, "end": t, "ttc": ttc, "ttc_at": t, "drac": drac})
        pet = truth_pet(a, b, scenario.seconds)
        if pet is not None and pet.pet_s <= limits.potential_pet_s:
            spans.append({"start": pet.left_at, "end": pet.entered_at, "pet": pet.pet_s})
        for span in _merged(spans):
            found.append(_conflict(a, b, kind, span, limits))
    return sorted(found, key=lambda c: c.start)


def _merged(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: list[dict[str, Any]] = []
    for span in sorted(spans, key=lambda s: s["start"]):
        if merged and span["start"] - merged[-1]["end"] <= MERGE_S:
            last = merged[-1]
            last["end"] = max(last["end"], span["end"])
            for key, better in (("ttc", min), ("pet", min), ("drac", max)):
                values = [v for v in (last.get(key), span.get(key)) if v is not None]
                if values:
                    last[key] = better(values)
            if span.get("ttc") is not None and span["ttc"] == last["ttc"]:
                last["ttc_at"] = span["ttc_at"]
        else:
            merged.append(dict(span))
    return merged


def _conflict(a: Actor, b: Actor, kind: str, span: dict[str, Any], limits: Thresholds) -> Conflict:
    ttc, pet, drac = span.get("ttc"), span.get("pet"), span.get("drac")
    serious = (
        (ttc is not None and ttc <= limits.serious_ttc_s)
        or (pet is not None and pet <= limits.serious_pet_s)
        or (drac is not None and drac >= limits.serious_drac)
    )
    at = span.get("ttc_at", span["start"])
    return Conflict(
        a.name,
        b.name,
        kind,
        _conflict_type(a, b, at),
        round(span["start"], 2),
        round(span["end"], 2),
        None if ttc is None else round(ttc, 3),
        None if pet is None else round(pet, 3),
        None if drac is None else round(drac, 2),
        "serious" if serious else "potential",
    )


@cache
def empty_street() -> np.ndarray:
    """vtest.avi with its pedestrians gone: the per-pixel median of 80 of its frames."""
    capture = cv2.VideoCapture(str(BACKGROUND))
    frames = []
    index = 0
    while True:
        ok, image = capture.read()
        if not ok:
            break
        if index % 10 == 0:
            frames.append(image)
        index += 1
    capture.release()
    if not frames:
        raise FileNotFoundError(f"{BACKGROUND} has no frames")
    median: np.ndarray = np.median(np.stack(frames), axis=0).astype(np.uint8)
    return median


def _source_image(name: str) -> np.ndarray:
    image: np.ndarray | None
    if name == "vtest.avi":
        capture = cv2.VideoCapture(str(BACKGROUND))
        image = capture.read()[1]
        capture.release()
    else:
        folder = ROOT / "data" if name in ("dog.jpg", "person.jpg") else _ultralytics_assets()
        image = cv2.imread(str(folder / name))
    if image is None:
        raise FileNotFoundError(f"scenario source image {name} not found")
    return image


def _ultralytics_assets() -> Path:
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("bus.jpg ships with ultralytics: pip install 'trafficrisk[yolo]'")
    return Path(spec.submodule_search_locations[0]) / "assets"


@cache
def cutout(sprite_name: str) -> np.ndarray:
    sprite = SPRITES[sprite_name]
    x1, y1, x2, y2 = sprite.box
    image: np.ndarray = _source_image(sprite.source)[y1:y2, x1:x2].copy()
    return image


def _paste(frame: np.ndarray, image: np.ndarray, box: tuple[float, float, float, float]) -> None:
    x1, y1, x2, y2 = (round(v) for v in box)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    resized = cv2.resize(image, (x2 - x1, y2 - y1), interpolation=cv2.INTER_AREA)
    height, width = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
    if cx2 > cx1 and cy2 > cy1:
        frame[cy1:cy2, cx1:cx2] = resized[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1]


TruthBox = dict[str, Any]  # {"actor", "label", "box": [x1, y1, x2, y2], "ground", "speed_mps"}


def _drawn(actor: Actor, t: float, camera: Camera) -> np.ndarray:
    image = cutout(actor.sprite)
    sprite = SPRITES[actor.sprite]
    (_, _, heading) = actor.state(t)
    if sprite.label != "person":
        # A side view, turned to where the road user goes across the image.
        step = camera.project(
            np.array([[*actor.state(t)[0], 0.0], [*(np.add(actor.state(t)[0], heading)), 0.0]])
        )
        goes_right = step[1, 0] >= step[0, 0]
        if goes_right != sprite.faces_right:
            image = image[:, ::-1]
    return image


def frames(
    scenario: Scenario, fps: float = FPS, camera: Camera = CAMERA
) -> Iterator[tuple[float, np.ndarray, list[TruthBox]]]:
    """(time, image, truth boxes) for every frame; road users drawn far to near."""
    street = empty_street()
    for n in range(int(scenario.seconds * fps)):
        t = n / fps
        image = street.copy()
        boxes = []
        for actor in sorted(scenario.everyone, key=lambda a: -a.state(t)[0][1]):
            box = actor.box(t, camera)
            if box is None:
                continue
            _paste(image, _drawn(actor, t, camera), box)
            clipped = _clip(box, image.shape)
            if clipped is not None:
                centre, velocity, _ = actor.state(t)
                boxes.append(
                    {
                        "actor": actor.name,
                        "label": actor.label,
                        "box": clipped,
                        "ground": [round(centre[0], 3), round(centre[1], 3)],
                        "speed_mps": round(math.hypot(*velocity), 3),
                    }
                )
        yield t, image, boxes


def _clip(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> list[float] | None:
    height, width = shape[:2]
    x1, y1, x2, y2 = max(box[0], 0), max(box[1], 0), min(box[2], width), min(box[3], height)
    return [round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)] if x2 - x1 > 4 and y2 - y1 > 4 else None


def digest(scenario: Scenario, fps: float = FPS, camera: Camera = CAMERA) -> str:
    """Changes whenever the script, the camera or the truth's definitions do."""
    definitions = (Thresholds(), MOVING_MPS, MERGE_S, kinematics.LEFT_MARGIN_M)
    text = repr((scenario, fps, camera, SPRITES, HEIGHTS, CLASSES, definitions))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def truth(scenario: Scenario, fps: float = FPS, camera: Camera = CAMERA) -> dict[str, Any]:
    """The clip's ground truth as JSON (without the per-frame boxes)."""
    return {
        "scenario": scenario.name,
        "digest": digest(scenario, fps, camera),
        "description": scenario.description,
        "fps": fps,
        "seconds": scenario.seconds,
        "safe": scenario.safe,
        "camera": asdict(camera),
        "calibration": camera.calibration(),
        "actors": [{"name": a.name, "label": a.label} for a in scenario.everyone],
        "conflicts": [asdict(c) for c in conflicts(scenario, fps)],
    }


def write(scenario: Scenario, folder: Path, fps: float = FPS, camera: Camera = CAMERA) -> tuple[Path, Path]:
    """The clip (MJPG in AVI) and its ground truth (JSON) in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    clip, truth_file = folder / f"{scenario.name}.avi", folder / f"{scenario.name}.json"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), fps, (camera.width, camera.height))
    truth_frames = []
    for t, image, boxes in frames(scenario, fps, camera):
        writer.write(image)
        truth_frames.append({"time": round(t, 4), "boxes": boxes})
    writer.release()
    truth_file.write_text(json.dumps({**truth(scenario, fps, camera), "frames": truth_frames}, indent=1))
    return clip, truth_file
