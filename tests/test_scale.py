"""The automatic scale: an approximate ground plane fitted from the pedestrians a camera sees.

Pedestrian boxes are made by a synthetic pinhole camera (`trafficrisk.scenario.Camera`)
with no tilt, for which the model is exact: a person 1.7 m tall whose feet are at image
row v is h = f 1.7 / Y pixels tall, with v - v_h = f H / Y, so h = (1.7 / H)(v - v_h); a
pixel across the row there is H / (v - v_h) metres, and the ground lies f H / (v - v_h)
metres ahead. The camera is 6.5 m up with a 700 px focal length in a 768 x 576 frame:
its horizon is the middle row, 288. A view may keep only the frame's lower half (rows
288 on: a shift lens), whose horizon is then its top row, where the fit's prior puts it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from trafficrisk.messages import Box, Detection
from trafficrisk.scenario import Camera
from trafficrisk.workers.scale import (
    FOCAL_PER_WIDTH,
    HEIGHTS_PER_BAND,
    PRIOR_CAMERA_HEIGHT_M,
    WALKERS_KEPT,
    Samples,
    add_sightings,
    fit,
)
from trafficrisk.workers.tracking import Track

PERSON_M = (0.5, 1.7)  # across, tall


@dataclass(frozen=True)
class View:
    """A zero-tilt camera's frame from row `top` down."""

    camera: Camera
    top: int = 0

    @property
    def width(self) -> int:
        return self.camera.width

    @property
    def height(self) -> int:
        return self.camera.height - self.top

    @property
    def horizon(self) -> float:
        return self.camera.height / 2 - self.top

    def image(self, x: float, y: float, z: float = 0.0) -> tuple[float, float]:
        u, v = self.camera.project(np.array([[x, y, z]]))[0]
        return float(u), float(v) - self.top

    def person(self, x: float, y: float) -> Box:
        (u1, v1), (u2, v2) = (
            self.image(x - PERSON_M[0] / 2, y, PERSON_M[1]),
            self.image(x + PERSON_M[0] / 2, y),
        )
        return Box(x1=u1, y1=v1, x2=u2, y2=v2)

    def inside(self, box: Box) -> bool:
        return box.x1 >= 4 and box.y1 >= 4 and box.x2 <= self.width - 4 and box.y2 <= self.height - 4

    def metres_per_pixel(self, v: float) -> float:
        return self.camera.height_m / (v - self.horizon)

    def ahead(self, v: float) -> float:
        return self.camera.focal * self.camera.height_m / (v - self.horizon)

    def rows(self) -> list[float]:
        """Rows a quarter, half, three quarters and 95% of the way from the horizon down."""
        return [self.horizon + (self.height - self.horizon) * f for f in (0.25, 0.5, 0.75, 0.95)]


MIDDLE = View(Camera(focal=700.0, height_m=6.5, pitch_deg=0.0))  # horizon at row 288
TOP = View(Camera(focal=700.0, height_m=6.5, pitch_deg=0.0), top=288)  # horizon at row 0
LONG_LENS = View(Camera(focal=900.0, height_m=6.5, pitch_deg=0.0), top=288)  # not the prior's 668 px


def sighting(
    view: View, x: float, y: float, walking: float = 0.0, along: str = "y"
) -> tuple[Detection, Track]:
    """A pedestrian at (x, y) on the ground, seen for 0.8 s (5 points 0.2 s apart) walking at
    `walking` m/s along the ground's x or y (negative: left, or towards the camera)."""
    box = view.person(x, y)
    trail = []
    for k in range(5):
        back = walking * 0.2 * (4 - k)  # where it was, 0.8 s to 0 s ago
        u, v = view.image(x - back, y) if along == "x" else view.image(x, y - back)
        trail.append((0.2 * k, u, v))
    detection = Detection(label="person", confidence=0.9, box=box)
    track = Track(
        track_id=1,
        label="person",
        box=(box.x1, box.y1, box.x2, box.y2),
        seen_at=0.8,
        hits=5,
        trail=tuple(trail),
    )
    return detection, track


def crowd(view: View, walking: float = 0.0, along: str = "y", seed: int = 3) -> Samples:
    """Pedestrians at 200 places from 15 to 120 m ahead, 3 m either side, in a shuffled order,
    each frame with one of them; with `walking`, every other one walks the other way."""
    places = [(x, y) for y in np.geomspace(15, 120, 40) for x in (-3.0, -1.0, 0.0, 1.0, 3.0)]
    np.random.default_rng(seed).shuffle(places)
    samples = None
    for i, (x, y) in enumerate(places):
        if not view.inside(view.person(x, y)):
            continue
        detection, track = sighting(view, x, y, walking * (1 if i % 2 else -1), along)
        samples = add_sightings(samples, (detection,), (track,), view.width, view.height)
    assert samples is not None
    return samples


def used(view: View) -> int:
    return sum(view.inside(view.person(x, y)) for y in np.geomspace(15, 120, 40) for x in (-3, -1, 0, 1, 3))


@pytest.mark.parametrize("view", [MIDDLE, TOP], ids=["horizon mid-frame", "horizon at the top row"])
def test_the_automatic_scale_recovers_the_cameras_metres_per_pixel(view: View) -> None:
    samples = crowd(view)
    assert samples["sightings"] == used(view)
    scale = fit(samples, view.width, view.height)
    # the fit rests on the heights kept: the latest HEIGHTS_PER_BAND of each band of rows
    kept = sum(len(heights) for heights in samples["bands"].values())
    assert (scale.source, scale.sightings, scale.walkers) == ("pedestrians", kept, 0)
    assert scale.plane.approximate
    assert scale.horizon_row == pytest.approx(view.horizon, abs=3)
    assert scale.camera_height_m == pytest.approx(6.5, rel=0.03)
    for v in view.rows():  # e.g. mid-frame: 6.5 / (360 - 288) = 0.090 ... 6.5 / (562 - 288) = 0.024
        for u in (view.width / 2, view.width / 4):
            assert scale.plane.metres_per_pixel((u, v)) == pytest.approx(view.metres_per_pixel(v), rel=0.03)


@pytest.mark.parametrize(
    ("view", "walking", "along", "walkers", "focal"),
    [
        # walking towards and away from the camera at 1.35 m/s: the depth scale is theirs, the
        # median blended with the prior as 5 more walkers: (60 * 900 + 5 * 668) / 65 = 882.2
        (LONG_LENS, 1.35, "y", WALKERS_KEPT, 900.0),
        # the same at the prior's focal length
        (TOP, 1.35, "y", WALKERS_KEPT, 700.0),
        # walking across: nothing along the line of sight, so the lens stays the prior's
        (LONG_LENS, 1.35, "x", 0, FOCAL_PER_WIDTH * 768),
        # standing: no walkers, the prior's lens
        (LONG_LENS, 0.0, "y", 0, FOCAL_PER_WIDTH * 768),
    ],
)
def test_walkers_set_the_depth_scale(
    view: View, walking: float, along: str, walkers: int, focal: float
) -> None:
    scale = fit(crowd(view, walking, along), view.width, view.height)
    assert scale.walkers == walkers
    near, far = view.rows()[3], view.rows()[0]
    ahead = scale.plane.to_ground((view.width / 2, far))[1] - scale.plane.to_ground((view.width / 2, near))[1]
    # e.g. the long lens: 900 * 6.5 * (1 / 72 - 1 / 273.6) = 59.87 m between the two rows
    truth = view.ahead(far) - view.ahead(near)
    assert ahead == pytest.approx(truth * focal / view.camera.focal, rel=0.03)


# --- which boxes count --------------------------------------------------------------------------

# A person's box well inside a 768 x 576 frame: 20 x 60 px, feet at row 360 (band 360 // 16 = 22).
GOOD = (380.0, 300.0, 400.0, 360.0)


@pytest.mark.parametrize(
    ("corners", "label", "hits", "counted"),
    [
        (GOOD, "person", 3, True),
        (GOOD, "pedestrian", 5, True),  # an alias of person
        ((3.0, 3.0, 23.0, 63.0), "person", 5, True),  # 3 px from the edges: still whole
        (GOOD, "car", 5, False),  # not a pedestrian
        (GOOD, "person", 2, False),  # not confirmed yet
        (GOOD, "person", None, False),  # no track
        ((2.0, 300.0, 22.0, 360.0), "person", 5, False),  # cut by the left border
        ((746.0, 300.0, 766.0, 360.0), "person", 5, False),  # and the right one (768 - 3)
        ((380.0, 2.0, 400.0, 62.0), "person", 5, False),  # the top
        ((380.0, 514.0, 400.0, 574.0), "person", 5, False),  # the bottom (576 - 3)
        ((360.0, 300.0, 420.0, 360.0), "person", 5, False),  # square: not a standing person
        ((388.0, 300.0, 392.0, 360.0), "person", 5, False),  # 4 x 60: too thin (< 0.15)
        ((380.0, 300.0, 425.0, 360.0), "person", 5, True),  # 45 / 60 = 0.75: the widest counted
    ],
)
def test_only_whole_confirmed_pedestrians_are_sampled(
    corners: tuple[float, float, float, float], label: str, hits: int | None, counted: bool
) -> None:
    x1, y1, x2, y2 = corners
    detection = Detection(label=label, confidence=0.9, box=Box(x1=x1, y1=y1, x2=x2, y2=y2))
    track = None if hits is None else Track(track_id=1, label=label, box=corners, seen_at=0.0, hits=hits)
    samples = add_sightings(None, (detection,), (track,), 768, 576)
    assert samples["sightings"] == int(counted)
    assert samples["bands"] == ({str(int(y2 // 16)): [[y2, y2 - y1]]} if counted else {})
    assert samples["walkers"] == []  # a track without a trail is no walker


def test_a_band_keeps_its_latest_heights() -> None:
    samples = None
    for i in range(20):  # 20 boxes with feet at row 360, 60 to 79 px tall
        box = Box(x1=380, y1=300 - i, x2=400, y2=360)
        track = Track(track_id=1, label="person", box=(380, 300 - i, 400, 360), seen_at=0.0, hits=5)
        samples = add_sightings(
            samples, (Detection(label="person", confidence=0.9, box=box),), (track,), 768, 576
        )
    assert samples is not None
    assert samples["sightings"] == 20
    assert samples["bands"]["22"] == [[360.0, 60.0 + i] for i in range(20 - HEIGHTS_PER_BAND, 20)]


# --- fits on few or no pedestrians ----------------------------------------------------------------


@pytest.mark.parametrize("samples", [None, {}, {"bands": {}, "walkers": [], "sightings": 0}])
def test_no_pedestrians_give_the_prior(samples: Samples | None) -> None:
    scale = fit(samples, 768, 576)
    assert (scale.source, scale.sightings, scale.walkers) == ("prior", 0, 0)
    assert (scale.horizon_row, scale.camera_height_m) == (None, None)
    # a typical mounting: 6 m up, the horizon at the top row, a 60-degree lens (f = 0.87 * 768)
    assert scale.plane.metres_per_pixel((384, 288)) == pytest.approx(PRIOR_CAMERA_HEIGHT_M / 288)
    assert scale.plane.to_ground((384, 288)) == pytest.approx((0.0, 0.87 * 768 * 6 / 288))
    shown = scale.to_json(768, 576)
    assert shown["approximate"] is True and shown["source"] == "prior"
    assert shown["metres_per_pixel_across"]["288"] == round(6 / 288, 4)


def test_pedestrians_in_one_band_of_rows_lean_on_the_prior() -> None:
    # five people 21.46 m ahead: feet at 288 + 700 * 6.5 / 21.46 = 500, each 55.45 px tall
    y = 700 * 6.5 / (500 - 288)
    samples = None
    for x in (-3.0, -1.5, 0.0, 1.5, 3.0):
        detection, track = sighting(MIDDLE, x, y)
        samples = add_sightings(samples, (detection,), (track,), 768, 576)
    scale = fit(samples, 768, 576)
    h = 700 * 1.7 / y  # 55.45 px
    # the line through the prior's (0, 0) and the band's (500, 55.45): the horizon at the top
    # row, H = 1.7 * 500 / 55.45 = 15.3 m (the truth, 6.5 m, cannot be told from one band)
    assert (scale.source, scale.sightings, scale.horizon_row) == ("pedestrians", 5, 0.0)
    assert scale.camera_height_m == pytest.approx(1.7 * 500 / h, rel=0.005)  # heights kept to 0.1 px
    # where they stand the scale is right: a person's 1.7 m is h pixels, 1.7 / 55.45 = 0.0307 m
    assert scale.plane.metres_per_pixel((384, 500)) == pytest.approx(1.7 / h, rel=0.01)
    assert scale.plane.metres_per_pixel((384, 500)) == pytest.approx(MIDDLE.metres_per_pixel(500), rel=0.01)
    # and everywhere below the top row the plane is usable: finite, shrinking down the image
    across = [scale.plane.metres_per_pixel((384, v)) for v in (100, 300, 500, 570)]
    assert all(math.isfinite(m) and m > 0 for m in across) and across == sorted(across, reverse=True)


def test_heights_that_shrink_down_the_image_fall_back_to_the_prior_horizon() -> None:
    # 15 people 60 px tall at row 300 and 15 people 20 px tall at row 500: the line through
    # them and the prior's (0, 0) falls, so the horizon is the prior's, row 0, and the height
    # the mean of h / v: (60 / 300 + 20 / 500) / 2 = 0.12 px a row, H = 1.7 / 0.12 = 14.17 m
    samples = {
        "bands": {"18": [[300.0, 60.0]] * 15, "31": [[500.0, 20.0]] * 15},
        "walkers": [],
        "sightings": 30,
    }
    scale = fit(samples, 768, 576)
    assert (scale.source, scale.sightings, scale.horizon_row) == ("pedestrians", 30, 0.0)
    assert scale.camera_height_m == pytest.approx(1.7 / 0.12, abs=0.01)
    assert scale.plane.metres_per_pixel((384, 400)) == pytest.approx(1.7 / 0.12 / 400)
