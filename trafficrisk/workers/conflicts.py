"""Conflict events: one record per encounter of two tracks, across the frames it lasts.

A pair is *in range* in a frame when its time to collision is at most the potential
threshold, or when its observed post-encroachment time, measured in that frame, is.
An event opens once the pair has been in range for `confirm_frames` frames in a row
(one frame is enough for a PET: it is measured once, from whole paths), keeps the
extremes of its measures while it lasts, and ends when the pair has been out of range
for `end_after_s` seconds of event time. It is serious once a TTC or a DRAC has been
past the serious threshold for `confirm_frames` frames in a row, or its PET is: a
single frame's jitter does not make a serious conflict. Thresholds and their sources
are in docs/conflicts.md.

The engine's state is plain JSON, kept with the camera's tracks; frames are applied in
capture order, once each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trafficrisk.messages import ConflictChange, ConflictEvent, ConflictSeverity

State = dict[str, Any]


@dataclass(frozen=True)
class Thresholds:
    """Severity thresholds (docs/conflicts.md gives the sources), all configurable."""

    serious_ttc_s: float = 1.5
    potential_ttc_s: float = 3.0
    serious_pet_s: float = 1.0
    potential_pet_s: float = 3.0
    serious_drac: float = 3.4  # m/s², the AASHTO comfortable-braking limit
    confirm_frames: int = 2
    end_after_s: float = 1.5
    verify_potential_after_s: float = 3.0


@dataclass(frozen=True)
class PairObservation:
    """What one frame measured of a pair of confirmed tracks (first_track < second_track)."""

    first_track: int
    second_track: int
    first_label: str
    second_label: str
    kind: str  # vehicle-pedestrian | vehicle-vehicle
    conflict_type: str  # crossing | rear-end | head-on
    ttc_s: float | None
    drac: float | None
    closing_speed: float
    pet_s: float | None  # measured in this frame (the second road user just arrived)
    first_speed: float
    second_speed: float
    location: tuple[float, float]
    image_point: tuple[float, float]
    zones: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return f"{self.first_track}-{self.second_track}"


@dataclass(frozen=True)
class Frame:
    camera_id: str
    seq: int
    at: float
    approximate: bool

    @property
    def frame_id(self) -> str:
        return f"{self.camera_id}:{self.seq}"


def in_range(pair: PairObservation, limits: Thresholds) -> bool:
    return (pair.ttc_s is not None and pair.ttc_s <= limits.potential_ttc_s) or (
        pair.pet_s is not None and pair.pet_s <= limits.potential_pet_s
    )


def advance_conflicts(
    state: State | None, pairs: list[PairObservation], frame: Frame, limits: Thresholds
) -> tuple[list[ConflictEvent], State]:
    """Apply one frame's pair measures; the camera's confirmed events as it leaves them
    (open ones, and those it ended), and the new state."""
    records: dict[str, Any] = dict((state or {}).get("open", {}))
    seen = set()
    for pair in pairs:
        record = records.get(pair.key)
        if record is None and not in_range(pair, limits):
            continue
        record = _observed(record or _new(pair, frame), pair, frame, limits)
        records[pair.key] = record
        seen.add(pair.key)
    events, kept = [], {}
    for key, record in records.items():
        if key not in seen:
            record = {**record, "event": {**record["event"], "change": ConflictChange.UPDATED}}
        ended = frame.at - record["in_range_at"] > limits.end_after_s
        if ended:
            record = {**record, "event": {**record["event"], "change": ConflictChange.ENDED}}
        if record["confirmed"]:
            record = _asked(record, frame, limits, ended)
            events.append(ConflictEvent.from_wire(record["event"]))
        if not ended:
            kept[key] = record
    return events, {"open": kept}


def _asked(record: dict[str, Any], frame: Frame, limits: Thresholds, ending: bool) -> dict[str, Any]:
    """The record with `to_verify` set on the version that asks for the LLM's verification:
    a serious event at once; a potential one once it has lasted `verify_potential_after_s`,
    or as it ends (by then its whole encounter is in view). Once per severity: one call an
    event, or two when it turns serious after its potential verification."""
    event = record["event"]
    rank = ConflictSeverity(event["severity"]).rank
    asked = record.get("asked", -1)
    lasted = frame.at - event["start_at"] >= limits.verify_potential_after_s
    wanted = rank > asked and (rank == ConflictSeverity.SERIOUS.rank or lasted or ending)
    return {**record, "asked": max(asked, rank) if wanted else asked, "event": {**event, "to_verify": wanted}}


def _new(pair: PairObservation, frame: Frame) -> dict[str, Any]:
    event = {
        "conflict_id": f"{frame.camera_id}:{pair.key}:{frame.seq}",
        "camera_id": frame.camera_id,
        "first_track": pair.first_track,
        "second_track": pair.second_track,
        "first_label": pair.first_label,
        "second_label": pair.second_label,
        "kind": pair.kind,
        "conflict_type": pair.conflict_type,
        "severity": ConflictSeverity.POTENTIAL,
        "change": ConflictChange.OPENED,
        "start_at": frame.at,
        "end_at": frame.at,
        "start_frame": frame.frame_id,
        "last_frame": frame.frame_id,
        "updated_seq": frame.seq,
        "approximate": frame.approximate,
    }
    return {"event": event, "confirmed": False, "streak": 0, "ttcs": [], "dracs": [], "in_range_at": frame.at}


def _observed(
    record: dict[str, Any], pair: PairObservation, frame: Frame, limits: Thresholds
) -> dict[str, Any]:
    """The record moved on by one frame's measures of its pair."""
    event = dict(record["event"])
    ranged = in_range(pair, limits)
    keep = limits.confirm_frames
    ttcs = [*record["ttcs"], pair.ttc_s][-keep:]
    dracs = [*record["dracs"], pair.drac][-keep:]
    streak = record["streak"] + 1 if ranged else 0
    event.update(
        updated_seq=frame.seq,
        approximate=event["approximate"] or frame.approximate,
        max_speed_mps=round(max(event.get("max_speed_mps", 0.0), pair.first_speed, pair.second_speed), 2),
        zones=tuple(sorted(set(event.get("zones", ())) | set(pair.zones))),
    )
    if ranged:
        event.update(end_at=frame.at, last_frame=frame.frame_id)
    critical = False
    held = _held(ttcs, limits.confirm_frames)
    if held is not None and (event.get("min_ttc_s") is None or held < event["min_ttc_s"]):
        event.update(
            min_ttc_s=round(held, 3),
            min_ttc_at=frame.at,
            min_ttc_frame=frame.frame_id,
            closing_speed=round(pair.closing_speed, 2),
        )
        critical = True
    if pair.pet_s is not None and (event.get("pet_s") is None or pair.pet_s < event["pet_s"]):
        event.update(pet_s=round(pair.pet_s, 3), pet_at=frame.at, pet_frame=frame.frame_id)
        critical = critical or event.get("min_ttc_s") is None
    if pair.drac is not None and (event.get("max_drac") is None or pair.drac > event["max_drac"]):
        event["max_drac"] = round(pair.drac, 2)
    if critical:
        event.update(
            first_speed_mps=round(pair.first_speed, 2),
            second_speed_mps=round(pair.second_speed, 2),
            location=_rounded(pair.location, 2),
            image_point=_rounded(pair.image_point, 1),
            conflict_type=pair.conflict_type,
        )
    severity = _severity(event, ttcs, dracs, limits)
    confirmed = record["confirmed"] or streak >= keep or (pair.pet_s is not None and ranged)
    if not record["confirmed"]:
        change = ConflictChange.OPENED
    elif severity.rank > ConflictSeverity(event["severity"]).rank:
        change = ConflictChange.ESCALATED
    else:
        change = ConflictChange.UPDATED
    event.update(severity=severity, change=change)
    return {
        **record,  # what it asked for verification, too
        "event": event,
        "confirmed": confirmed,
        "streak": streak,
        "ttcs": ttcs,
        "dracs": dracs,
        "in_range_at": frame.at if ranged else record["in_range_at"],
    }


def _held(ttcs: list[float | None], frames: int) -> float | None:
    """The TTC held over the last `frames` frames in a row (the largest of them): the
    event's minimum TTC is the least of these, so one frame's jitter does not set it."""
    recent = ttcs[-frames:]
    if len(recent) < frames or any(t is None for t in recent):
        return None
    return max(t for t in recent if t is not None)


def _severity(
    event: dict[str, Any], ttcs: list[float | None], dracs: list[float | None], limits: Thresholds
) -> ConflictSeverity:
    if ConflictSeverity(event["severity"]) is ConflictSeverity.SERIOUS:
        return ConflictSeverity.SERIOUS  # an event never becomes less serious than it was
    full = len(ttcs) >= limits.confirm_frames
    sustained_ttc = full and all(t is not None and t <= limits.serious_ttc_s for t in ttcs)
    sustained_drac = full and all(d is not None and d >= limits.serious_drac for d in dracs)
    close_pet = event.get("pet_s") is not None and event["pet_s"] <= limits.serious_pet_s
    return (
        ConflictSeverity.SERIOUS
        if sustained_ttc or sustained_drac or close_pet
        else ConflictSeverity.POTENTIAL
    )


def _rounded(point: tuple[float, float], digits: int) -> tuple[float, float]:
    return round(point[0], digits), round(point[1], digits)
