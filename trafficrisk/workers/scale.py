"""The approximate ground plane of an uncalibrated camera, fitted from its pedestrians.

A person is about `PERSON_HEIGHT_M` tall. For a camera with no roll looking at flat
ground, a standing person's box height grows linearly with the image row of their
feet, from zero at the horizon: h = k (v - v_h). The fit of h against v over the
pedestrians seen gives the horizon row v_h and the camera's height above the ground,
H = PERSON_HEIGHT_M / k (divided by the cosine of its tilt, which the fit cannot
tell). A ground point then lies across the image at X = H (u - c) / (v - v_h), with c
the image's middle column, and along the line of sight at Y = F / (v - v_h), where
F = f H needs the focal length f in pixels, which no still box gives. Walking
pedestrians give it: their speeds on the ground are about `WALKING_SPEED_MPS`
whichever way they walk, so the depth scale is the one that makes those who walk
towards or away from the camera as fast as that (their median). Until enough are
seen, f is a typical CCTV lens (a field of view of about 60 degrees); with no
pedestrians at all, a typical mounting (`PRIOR_CAMERA_HEIGHT_M`, horizon at the top).

The result is a homography like a calibration's, marked `approximate`, and refined
with every pedestrian the camera sees. Samples are kept per camera as plain JSON (in
Redis, next to the tracks): recent box heights per band of rows, and recent walkers.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from trafficrisk.messages import Detection
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.road_users import is_pedestrian
from trafficrisk.workers.tracking import Track

PERSON_HEIGHT_M = 1.7
WALKING_SPEED_MPS = 1.35
ROW_BAND_PX = 16
HEIGHTS_PER_BAND = 15
WALKERS_KEPT = 60
# A walker counts towards the depth scale once this share of its speed is along the line of sight.
DEPTH_SHARE = 0.6
PRIOR_WALKERS = 5  # how much the lens prior weighs against measured walkers
FOCAL_PER_WIDTH = 0.87  # f = 0.87 x image width: a 60-degree field of view
PRIOR_CAMERA_HEIGHT_M = 6.0
MIN_SPAN_PX = 96  # rows the pedestrians must span for their horizon alone to be fitted
PRIOR_HORIZON_ROW = 0.0  # with no pedestrians, or few: the horizon at the image's top
PRIOR_WEIGHT = 3.0  # ... weighing as much as three sightings in one band of rows
BORDER_PX = 3  # a box touching the image's edge is cut off: its height says nothing
CONFIRMED_HITS = 3

Samples = dict[str, Any]


@dataclass(frozen=True)
class Scale:
    """The fitted plane and how it was got, for the dashboard."""

    plane: GroundPlane
    source: str  # "pedestrians" (fitted), or "prior" (none seen yet: a typical mounting)
    sightings: int  # pedestrian boxes the fit rests on
    walkers: int  # walking pedestrians that set the depth scale
    horizon_row: float | None
    camera_height_m: float | None

    def to_json(self, width: int, height: int) -> dict[str, Any]:
        rows = [round(height * f) for f in (0.25, 0.5, 0.75, 0.95)]
        across = {str(r): round(self.plane.metres_per_pixel((width / 2, r)), 4) for r in rows}
        return {
            "approximate": True,
            "source": self.source,
            "sightings": self.sightings,
            "walkers": self.walkers,
            "horizon_row": None if self.horizon_row is None else float(self.horizon_row),
            "camera_height_m": None if self.camera_height_m is None else float(self.camera_height_m),
            "metres_per_pixel_across": across,
            "matrix": [[round(float(v), 6) for v in row] for row in self.plane.matrix],
        }


def add_sightings(
    samples: Samples | None,
    detections: tuple[Detection, ...],
    tracks: tuple[Track | None, ...],
    width: int,
    height: int,
) -> Samples:
    """The samples with this frame's confirmed, whole pedestrians added."""
    samples = copy.deepcopy({"bands": {}, "walkers": [], "sightings": 0, **(samples or {})})
    for detection, track in zip(detections, tracks, strict=True):
        if track is None or track.hits < CONFIRMED_HITS or not is_pedestrian(detection.label):
            continue
        box = detection.box
        if (
            box.x1 < BORDER_PX
            or box.y1 < BORDER_PX
            or box.x2 > width - BORDER_PX
            or box.y2 > height - BORDER_PX
        ):
            continue
        if not 0.15 <= box.width / box.height <= 0.75:  # not a standing person's shape
            continue
        band = str(int(box.y2 // ROW_BAND_PX))
        kept = samples["bands"].setdefault(band, [])
        kept.append([round(box.y2, 1), round(box.height, 1)])
        del kept[:-HEIGHTS_PER_BAND]
        samples["sightings"] += 1
        walker = _walker(track)
        if walker is not None:
            samples["walkers"] = [*samples["walkers"], walker][-WALKERS_KEPT:]
    return samples


def _walker(track: Track) -> list[float] | None:
    """The image position and velocity (px/s) of a pedestrian over its last second."""
    trail = np.asarray([p for p in track.trail if track.trail[-1][0] - p[0] <= 1.0])
    if len(trail) < CONFIRMED_HITS or np.ptp(trail[:, 0]) < 0.3:
        return None
    t = trail[:, 0] - trail[:, 0].mean()
    du, dv = (t[:, None] * (trail[:, 1:] - trail[:, 1:].mean(axis=0))).sum(axis=0) / (t * t).sum()
    u, v = trail[-1, 1], trail[-1, 2]
    return [round(float(u), 1), round(float(v), 1), round(float(du), 2), round(float(dv), 2)]


def fit(samples: Samples | None, width: int, height: int) -> Scale:
    """The approximate plane from the samples (a prior one when there are none).

    The line of box heights against rows is fitted through the bands' medians. When
    they span fewer than `MIN_SPAN_PX` rows (or make no sense: heights that shrink down
    the image) one more point joins them, of weight `PRIOR_WEIGHT`: height zero at the
    top row, a typical horizon, so that pedestrians seen in one band of rows lean on it
    rather than on a horizon extrapolated from a handful of boxes.
    """
    samples = samples or {}
    rows = [
        (np.median([v for v, _ in kept]), np.median([h for _, h in kept]), len(kept))
        for kept in samples.get("bands", {}).values()
        if kept
    ]
    centre, focal = width / 2, FOCAL_PER_WIDTH * width
    if not rows:
        return _perspective(centre, PRIOR_HORIZON_ROW, PRIOR_CAMERA_HEIGHT_M, focal, "prior", 0, [])
    v, h, n = (np.array(column, dtype=np.float64) for column in zip(*rows, strict=True))
    horizon, k = _line(v, h, n, with_prior=bool(np.ptp(v) < MIN_SPAN_PX))
    if not (k > 0 and horizon < v.min() - ROW_BAND_PX):
        horizon, k = _line(v, h, n, with_prior=True)
    if not (k > 0 and horizon < v.min() - ROW_BAND_PX):  # heights that do not grow down the image
        horizon = PRIOR_HORIZON_ROW
        k = float(np.average(h / (v - horizon), weights=n))
    return _perspective(
        centre,
        float(horizon),
        PERSON_HEIGHT_M / k,
        focal,
        "pedestrians",
        int(n.sum()),
        samples.get("walkers", []),
    )


def _line(v: np.ndarray, h: np.ndarray, n: np.ndarray, with_prior: bool) -> tuple[float, float]:
    """The horizon row and slope of box heights against rows, weighted by sightings."""
    if with_prior:
        v, h, n = np.append(v, PRIOR_HORIZON_ROW), np.append(h, 0.0), np.append(n, PRIOR_WEIGHT)
    if len(v) < 2:
        return math.inf, 0.0
    k, b = np.polyfit(v, h, 1, w=np.sqrt(n))
    return (-b / k if k > 0 else math.inf), float(k)


def _perspective(
    centre: float,
    horizon: float,
    camera_height: float,
    focal: float,
    source: str,
    sightings: int,
    walkers: list[list[float]],
) -> Scale:
    estimates = []
    for u, v, du, dv in walkers:
        below = v - horizon
        if below <= 1:
            continue
        across = camera_height * (du / below - (u - centre) * dv / below**2)
        depth_rate = camera_height * abs(dv) / below**2  # metres per second per unit of f
        if depth_rate * focal >= DEPTH_SHARE * WALKING_SPEED_MPS and abs(across) < WALKING_SPEED_MPS:
            estimates.append(math.sqrt(WALKING_SPEED_MPS**2 - across**2) / depth_rate)
    focal = _blend(focal, estimates, 0.3 * focal, 3.0 * focal)
    depth = focal * camera_height
    matrix = np.array(
        [[camera_height, 0.0, -camera_height * centre], [0.0, 0.0, depth], [0.0, 1.0, -horizon]]
    )
    fitted = source != "prior"
    return Scale(
        GroundPlane(matrix, approximate=True),
        source,
        sightings,
        len(estimates),
        round(horizon, 1) if fitted else None,
        round(camera_height, 2) if fitted else None,
    )


def _blend(prior: float, estimates: list[float], low: float, high: float) -> float:
    """The median of the estimates, pulled towards the prior while they are few, within bounds."""
    if not estimates:
        return prior
    n = len(estimates)
    value = (n * float(np.median(estimates)) + PRIOR_WALKERS * prior) / (n + PRIOR_WALKERS)
    return min(max(value, low), high)
