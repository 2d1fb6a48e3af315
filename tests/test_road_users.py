"""The road-user vocabulary: canonical classes, the aliases models use, families, pair kinds
and footprints, with unknown names as error rows."""

from __future__ import annotations

import pytest

from trafficrisk.workers.road_users import (
    ALIASES,
    CANONICAL_LABELS,
    CLASSES,
    VEHICLES,
    VULNERABLE,
    canonical_label,
    family,
    is_pedestrian,
    is_vehicle,
    is_vulnerable,
    pair_kind,
    road_user,
    same_family,
)


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("person", "person"),
        ("Pedestrian", "person"),  # lower-cased
        ("  people ", "person"),  # stripped
        ("Lorry", "truck"),
        ("pickup_truck", "truck"),  # '_' removed: "pickuptruck"
        ("Pick-up Truck", "truck"),  # '-' and ' ' removed: "pickuptruck"
        ("motor bike", "motorcycle"),  # "motorbike"
        ("Tuk-Tuk", "motorcycle"),  # "tuktuk"
        ("bick", "bicycle"),  # a misspelling seen in a real checkpoint
        ("SUV", "car"),
        ("van", "car"),
        ("minibus", "bus"),
        ("coach", "bus"),
        # not road users
        ("dog", None),
        ("traffic light", None),
        ("", None),
        ("person2", None),  # a digit is not separator noise
        ("car.", None),
    ],
)
def test_canonical_label(name: str, label: str | None) -> None:
    assert canonical_label(name) == label


def test_every_alias_names_a_canonical_class() -> None:
    assert set(ALIASES.values()) == set(CANONICAL_LABELS)
    assert all(canonical_label(alias) == label for alias, label in ALIASES.items())


def test_vehicles_and_vulnerable_road_users() -> None:
    # A bicycle and a motorcycle are both: wheels on the road, nothing around the rider.
    assert CANONICAL_LABELS == ("person", "bicycle", "motorcycle", "car", "bus", "truck")
    assert VEHICLES == ("bicycle", "motorcycle", "car", "bus", "truck")
    assert VULNERABLE == ("person", "bicycle", "motorcycle")


# label -> is_vehicle, is_vulnerable, is_pedestrian, family, footprint (length, width) in metres
@pytest.mark.parametrize(
    ("label", "vehicle", "vulnerable", "pedestrian", "group", "footprint"),
    [
        ("person", False, True, True, "person", (0.5, 0.5)),
        ("bicycle", True, True, False, "two-wheeler", (1.8, 0.6)),
        ("motorcycle", True, True, False, "two-wheeler", (1.8, 0.6)),
        ("car", True, False, False, "vehicle", (4.5, 1.8)),
        ("bus", True, False, False, "vehicle", (12.0, 2.55)),
        ("truck", True, False, False, "vehicle", (8.0, 2.5)),
        # aliases take their class's properties
        ("Lorry", True, False, False, "vehicle", (8.0, 2.5)),
        ("scooter", True, True, False, "two-wheeler", (1.8, 0.6)),
        ("People", False, True, True, "person", (0.5, 0.5)),
        ("mini-van", True, False, False, "vehicle", (4.5, 1.8)),
        # error rows: not road users; the family of an unknown name is the name itself
        ("dog", False, False, False, "dog", KeyError),
        ("", False, False, False, "", KeyError),
    ],
)
def test_class_properties(
    label: str,
    vehicle: bool,
    vulnerable: bool,
    pedestrian: bool,
    group: str,
    footprint: tuple[float, float] | type[Exception],
) -> None:
    assert is_vehicle(label) is vehicle
    assert is_vulnerable(label) is vulnerable
    assert is_pedestrian(label) is pedestrian
    assert family(label) == group
    if isinstance(footprint, type):
        with pytest.raises(footprint, match="is not a road-user class"):
            road_user(label)
        return
    cls = road_user(label)
    assert (cls.length_m, cls.width_m) == footprint
    assert cls is CLASSES[canonical_label(label) or ""]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("car", "truck", True),  # a pickup is a car in one frame and a truck in the next
        ("pickup", "bus", True),
        ("Lorry", "car", True),
        ("bicycle", "motorcycle", True),
        ("bike", "moped", True),
        ("person", "pedestrian", True),
        ("bicycle", "person", False),  # a cyclist is not a pedestrian
        ("car", "bicycle", False),
        ("car", "person", False),
        ("dog", "dog", True),  # unknown names: compared as given
        ("dog", "cat", False),
        ("dog", "person", False),
    ],
)
def test_same_family(a: str, b: str, same: bool) -> None:
    assert same_family(a, b) is same
    assert same_family(b, a) is same


@pytest.mark.parametrize(
    ("a", "b", "kind"),
    [
        ("car", "person", "vehicle-pedestrian"),
        ("bus", "pedestrian", "vehicle-pedestrian"),
        ("bicycle", "person", "vehicle-pedestrian"),  # a bicycle is a vehicle
        ("Lorry", "people", "vehicle-pedestrian"),
        ("car", "bicycle", "vehicle-vehicle"),  # and vulnerable, still a vehicle-vehicle conflict
        ("bicycle", "motorcycle", "vehicle-vehicle"),
        ("truck", "bus", "vehicle-vehicle"),
        ("car", "car", "vehicle-vehicle"),
        # no traffic conflict: pedestrians alone, or something that is not a road user
        ("person", "person", None),
        ("pedestrian", "people", None),
        ("car", "dog", None),
        ("dog", "person", None),
        ("dog", "dog", None),
    ],
)
def test_pair_kind(a: str, b: str, kind: str | None) -> None:
    assert pair_kind(a, b) == kind
    assert pair_kind(b, a) == kind
