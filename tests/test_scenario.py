"""Scenario clips: the camera, the scripted motion, the exact truth, the clip writer, and a
real detector finding the scripted road users in the rendered frames."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from trafficrisk.scenario import (
    CAMERA,
    SCENARIOS,
    Actor,
    Leg,
    Scenario,
    conflicts,
    frames,
    truth_measures,
    write,
)
from trafficrisk.workers.detection import load_detector
from trafficrisk.workers.ground_plane import GroundPlane


@pytest.mark.parametrize("point", [(0.0, 10.0), (-5.0, 20.0), (4.0, 8.0), (12.0, 35.0)])
def test_the_camera_projects_the_ground_and_back(point: tuple[float, float]) -> None:
    u, v = CAMERA.project(np.array([[*point, 0.0]]))[0]
    assert CAMERA.ground_of(u, v) == pytest.approx(point, abs=1e-6)
    # the calibration it gives is its own homography
    plane = GroundPlane.from_points(**CAMERA.calibration())
    assert plane.to_ground((u, v)) == pytest.approx(point, abs=1e-3)


def test_a_leg_of_constant_acceleration() -> None:
    # 2 s at 10 m/s along +x, then braking to a stop in 2 s: 20 m + 10 m, standing after
    actor = Actor("car", "pickup", (0.0, 10.0), (Leg(2.0, 0, 10.0), Leg(2.0, 0, 10.0, 0.0)))
    assert actor.state(1.0)[0] == pytest.approx((10.0, 10.0))
    assert actor.state(3.0)[0] == pytest.approx((27.5, 10.0)) and actor.state(3.0)[1] == pytest.approx((5, 0))
    assert actor.state(9.0)[0] == pytest.approx((30.0, 10.0)) and actor.state(9.0)[1] == (0.0, 0.0)


@pytest.mark.parametrize(
    ("speed", "gap", "ttc"),
    [
        # a car (4.5 m long) driving straight away from the camera at `speed` towards a
        # pedestrian (0.5 m) standing `gap` metres beyond its front: TTC = gap / speed (the
        # car's centre starts gap + 2.25 + 0.25 m from hers)
        (10.0, 17.5, 1.75),
        (5.0, 7.5, 1.5),
        (0.3, 3.0, None),  # creeping below the moving speed: no conflict of a stationary vehicle
    ],
)
def test_truth_ttc_by_hand(speed: float, gap: float, ttc: float | None) -> None:
    car = Actor("car", "pickup", (0.0, 10.0), (Leg(10.0, 90, speed),))
    person = Actor("pedestrian", "walker", (0.0, 10.0 + gap + 2.5), (Leg(10.0, 90, 0.0),))
    measured, _ = truth_measures(car, person, 0.0)
    assert measured == (None if ttc is None else pytest.approx(ttc))


# What the truth says of each clip: (pair, kind, conflict type, severity, min TTC, PET).
TRUTH = {
    "near-miss": [("car", "pedestrian", "vehicle-pedestrian", "crossing", "serious", 1.09, None)],
    "crossing": [("car", "other", "vehicle-vehicle", "crossing", "serious", 1.19, None)],
    "braking": [("car", "pedestrian", "vehicle-pedestrian", "crossing", "serious", 0.70, None)],
    "close-behind": [("car", "pedestrian", "vehicle-pedestrian", "crossing", "serious", None, 0.72)],
    "step-out": [("car", "pedestrian", "vehicle-pedestrian", "crossing", "serious", 1.02, None)],
    "crossing-after": [("car", "pedestrian", "vehicle-pedestrian", "crossing", "potential", None, 2.0)],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_truth_conflicts(name: str) -> None:
    scenario = SCENARIOS[name]
    found = [
        (
            c.first,
            c.second,
            c.kind,
            c.conflict_type,
            c.severity,
            None if c.min_ttc_s is None else round(c.min_ttc_s, 2),
            None if c.pet_s is None else round(c.pet_s, 2),
        )
        for c in conflicts(scenario)
    ]
    assert found == TRUTH.get(name, [])
    assert scenario.safe is (name not in TRUTH)


@pytest.mark.slow
def test_the_tool_writes_a_clip_and_its_truth(tmp_path: Path) -> None:
    clip, truth_file = write(SCENARIOS["near-miss"], tmp_path)
    capture = cv2.VideoCapture(str(clip))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, image = capture.read()
    capture.release()
    truth = json.loads(truth_file.read_text())
    assert ok and image.shape == (576, 768, 3)
    assert count == len(truth["frames"]) == 80
    assert truth["conflicts"][0]["first"] == "car" and not truth["safe"]
    assert {b["actor"] for b in truth["frames"][20]["boxes"]} >= {"car", "pedestrian", "bystander-2"}
    assert truth["calibration"] == CAMERA.calibration() and truth["digest"]


def iou(a: list[float], b: tuple[float, float, float, float]) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "actor", "label"),
    [
        ("near-miss", "car", {"car", "truck"}),
        ("near-miss", "pedestrian", {"person"}),
        ("crossing", "other", {"car", "truck"}),
    ],
)
def test_a_real_detector_finds_the_scripted_road_users(name: str, actor: str, label: set[str]) -> None:
    """SSD (the offline detector) on the rendered frames finds each scripted road user where
    the truth puts it, in most frames it is wholly in view."""
    detector = load_detector("ssd", "cpu", 0.35)
    seen = found = 0
    for n, (_, image, boxes) in enumerate(frames(SCENARIOS[name])):
        box = next((b["box"] for b in boxes if b["actor"] == actor), None)
        if n % 2 or box is None or box[0] <= 0 or box[2] >= 768:
            continue
        seen += 1
        found += any(
            d.label in label and iou(box, (d.box.x1, d.box.y1, d.box.x2, d.box.y2)) >= 0.5
            for d in detector.detect([image])[0]
        )
    assert seen >= 10 and found / seen >= 0.8, (found, seen)


def test_scripts_are_exact_in_metres() -> None:
    """A scripted speed is the speed of the footprint on the ground, whatever it looks like."""
    scenario = Scenario(
        "straight", "", 2.0, (Actor("car", "pickup", (-5.0, 15.0), (Leg(2.0, -17, 6.0),)),), safe=True
    )
    (car,) = scenario.actors
    (x0, y0), (x1, y1) = car.state(0.0)[0], car.state(1.0)[0]
    assert math.hypot(x1 - x0, y1 - y0) == pytest.approx(6.0)
