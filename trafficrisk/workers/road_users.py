"""The road-user vocabulary, defined once: canonical classes, the names models use for
them, their families, which are vehicles and which are vulnerable, and their footprints.

A bicycle is both a vehicle (it has wheels and rides the road: a car and a bicycle make a
vehicle-vehicle conflict) and a vulnerable road user (nothing protects its rider).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RoadUserClass:
    label: str
    family: str  # detectors waver within a family (a pickup is a car, then a truck)
    is_vehicle: bool
    is_vulnerable: bool
    length_m: float  # the footprint on the ground: along the heading
    width_m: float  # and across it


# Footprints are typical sizes: a family car 4.5 x 1.8 m, a rigid truck 8 x 2.5 m (pickups,
# which COCO also calls trucks, are 5.3 x 2.0), a city bus 12 x 2.55 m, a bicycle or a
# motorcycle 1.8 x 0.6 m, a person 0.5 m across.
CLASSES = {
    c.label: c
    for c in (
        RoadUserClass("person", "person", is_vehicle=False, is_vulnerable=True, length_m=0.5, width_m=0.5),
        RoadUserClass(
            "bicycle", "two-wheeler", is_vehicle=True, is_vulnerable=True, length_m=1.8, width_m=0.6
        ),
        RoadUserClass(
            "motorcycle", "two-wheeler", is_vehicle=True, is_vulnerable=True, length_m=1.8, width_m=0.6
        ),
        RoadUserClass("car", "vehicle", is_vehicle=True, is_vulnerable=False, length_m=4.5, width_m=1.8),
        RoadUserClass("bus", "vehicle", is_vehicle=True, is_vulnerable=False, length_m=12.0, width_m=2.55),
        RoadUserClass("truck", "vehicle", is_vehicle=True, is_vulnerable=False, length_m=8.0, width_m=2.5),
    )
}
CANONICAL_LABELS = tuple(CLASSES)
VEHICLES = tuple(label for label, c in CLASSES.items() if c.is_vehicle)
VULNERABLE = tuple(label for label, c in CLASSES.items() if c.is_vulnerable)

# Class names seen in real checkpoints, normalised (lower case, no spaces, '_' or '-').
ALIASES: dict[str, str] = {
    **{name: name for name in CANONICAL_LABELS},
    "pedestrian": "person",
    "people": "person",
    "persons": "person",
    "bike": "bicycle",
    "bick": "bicycle",
    "cycle": "bicycle",
    "bicycles": "bicycle",
    "motorbike": "motorcycle",
    "motor": "motorcycle",
    "moped": "motorcycle",
    "scooter": "motorcycle",
    "tuktuk": "motorcycle",
    "autorickshaw": "motorcycle",
    "motorcycles": "motorcycle",
    "van": "car",
    "suv": "car",
    "taxi": "car",
    "cars": "car",
    "minivan": "car",
    "minibus": "bus",
    "coach": "bus",
    "buses": "bus",
    "lorry": "truck",
    "pickup": "truck",
    "pickuptruck": "truck",
    "trucks": "truck",
}


def canonical_label(name: str) -> str | None:
    """The canonical label for a model's class name (`Lorry`, `bick`), or None for classes
    that are not road users."""
    return ALIASES.get(re.sub(r"[\s_\-]+", "", name.strip().lower()))


def road_user(label: str) -> RoadUserClass:
    """The class of a label, aliases included; KeyError for what is not a road user."""
    canonical = canonical_label(label)
    if canonical is None:
        raise KeyError(f"{label!r} is not a road-user class")
    return CLASSES[canonical]


def is_vehicle(label: str) -> bool:
    canonical = canonical_label(label)
    return canonical is not None and CLASSES[canonical].is_vehicle


def is_vulnerable(label: str) -> bool:
    canonical = canonical_label(label)
    return canonical is not None and CLASSES[canonical].is_vulnerable


def is_pedestrian(label: str) -> bool:
    return canonical_label(label) == "person"


def family(label: str) -> str:
    canonical = canonical_label(label)
    return CLASSES[canonical].family if canonical else label


def same_family(a: str, b: str) -> bool:
    return family(a) == family(b)


def pair_kind(a: str, b: str) -> str | None:
    """`vehicle-pedestrian` or `vehicle-vehicle`; None for pairs that make no traffic
    conflict (two pedestrians)."""
    if is_vehicle(a) and is_vehicle(b):
        return "vehicle-vehicle"
    if (is_vehicle(a) and is_pedestrian(b)) or (is_pedestrian(a) and is_vehicle(b)):
        return "vehicle-pedestrian"
    return None
