"""Temporal patterns over a camera's frame results, and the alerts they raise.

Each pattern kind looks at one frame at a time (`fact`) and keeps a little state
across frames (`step`). The `PatternEngine` feeds a camera's frames to the patterns
in capture order, whatever order their results finish in: a result that arrives
early waits for the frames before it, for at most the allowed lateness of event
time. So the same frames raise the same alerts, delivered in any order or twice.
A pattern's alerts are spaced by its cooldown, in event time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from trafficrisk.messages import (
    Alert,
    AssessedGroup,
    ConflictEvent,
    ConflictSeverity,
    FrameResult,
    RiskLevel,
    VerdictSource,
    Verification,
    starts_run,
)
from trafficrisk.workers.road_users import VEHICLES, canonical_label
from trafficrisk.workers.rules import describe

# What a pattern saw in one frame that may raise an alert: the group and verdict it shows.
Detail = dict[str, Any]
# A camera's state for the engine, or a pattern's: plain JSON, kept in Redis between frames.
State = dict[str, Any]


def _detail(
    group: AssessedGroup,
    level: RiskLevel | None = None,
    risk_type: str | None = None,
    reason: str | None = None,
    source: VerdictSource | None = None,
) -> Detail:
    verdict = group.verdict
    return {
        "group_id": group.group.group_id,
        "risk_level": str(level or verdict.risk_level),
        "risk_type": risk_type or verdict.risk_type,
        "reason": reason or verdict.reason,
        "source": str(source or verdict.source),
    }


def _riskiest(groups: list[AssessedGroup]) -> AssessedGroup | None:
    return max(groups, key=lambda g: g.verdict.risk_level.rank, default=None)


def _at_least(result: FrameResult, level: RiskLevel) -> list[AssessedGroup]:
    return [g for g in result.groups if g.verdict.risk_level.rank >= level.rank]


class PatternBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")
    cooldown_s: float = Field(30.0, ge=0)
    cameras: tuple[str, ...] = ()  # empty: every camera

    def applies_to(self, camera_id: str) -> bool:
        return not self.cameras or camera_id in self.cameras

    def fact(self, result: FrameResult) -> Any:
        """What this frame means to the pattern (JSON-safe), or None for nothing."""
        raise NotImplementedError

    def step(self, state: State, t: float, fact: Any) -> Detail | list[Detail] | None:
        """Advance the state by one frame at capture time t; a detail (or several) when it matches."""
        raise NotImplementedError


class RiskyGroup(PatternBase):
    """A group judged at `level` or above."""

    kind: Literal["risky_group"] = "risky_group"
    level: RiskLevel = RiskLevel.HIGH

    def fact(self, result: FrameResult) -> Detail | None:
        group = _riskiest(_at_least(result, self.level))
        return _detail(group) if group else None

    def step(self, state: State, t: float, fact: Detail | None) -> Detail | None:
        return fact


class LevelFrames(PatternBase):
    """`frames` frames at `level` or above within `within_s` seconds."""

    kind: Literal["level_frames"] = "level_frames"
    level: RiskLevel = RiskLevel.HIGH
    frames: int = Field(3, ge=1)
    within_s: float = Field(10.0, gt=0)

    def fact(self, result: FrameResult) -> Detail | None:
        group = _riskiest(_at_least(result, self.level))
        if group is None:
            return None
        summary = f"{self.frames} frames at {self.level} or above within {self.within_s:g} s"
        return _detail(group, reason=f"{summary}: {group.verdict.reason}")

    def step(self, state: State, t: float, fact: Detail | None) -> Detail | None:
        times = [seen for seen in state.get("times", []) if t - seen < self.within_s]
        if fact is not None:
            times.append(t)
        state["times"] = times
        return fact if fact is not None and len(times) >= self.frames else None


class LastingGroup(PatternBase):
    """The same road users (by track) grouped at `level` or above for over `duration_s`."""

    kind: Literal["lasting_group"] = "lasting_group"
    level: RiskLevel = RiskLevel.MEDIUM
    duration_s: float = Field(10.0, gt=0)
    max_gap_s: float = Field(3.0, gt=0)  # unseen for longer, the group has ended

    def fact(self, result: FrameResult) -> list[tuple[str, Detail]]:
        seen = []
        for group in _at_least(result, self.level):
            members = group.group.members
            tracks = sorted(t for i in members if (t := result.detections[i].track_id) is not None)
            if len(tracks) == len(members):
                seen.append(("-".join(map(str, tracks)), _detail(group)))
        return seen

    def step(self, state: State, t: float, fact: list[list[Any]]) -> Detail | None:
        groups = {key: span for key, span in state.get("groups", {}).items() if t - span[1] <= self.max_gap_s}
        matched = None
        for key, detail in fact:
            first, _, alerted = groups.get(key, (t, t, False))
            groups[key] = [first, t, alerted]
            if not alerted and t - first > self.duration_s:
                groups[key][2] = True  # once per lasting group, however long it lasts
                reason = f"together for {t - first:.0f} s: {detail['reason']}"
                matched = matched or {**detail, "reason": reason, "risk_type": "lasting interaction"}
        state["groups"] = groups
        return matched


class ZoneConflict(PatternBase):
    """A pedestrian inside `zone` while a vehicle approaches it with time-to-collision under `ttc_s`."""

    kind: Literal["zone_conflict"] = "zone_conflict"
    zone: str = "crosswalk"
    ttc_s: float = Field(2.0, gt=0)
    level: RiskLevel = RiskLevel.HIGH
    pedestrians: tuple[str, ...] = ("person",)
    vehicles: tuple[str, ...] = VEHICLES

    def fact(self, result: FrameResult) -> Detail | None:
        for group in result.groups:
            for pair in group.group.pairs:
                if pair.ttc_s is None or pair.ttc_s >= self.ttc_s:
                    continue
                for walker, other in ((pair.first, pair.second), (pair.second, pair.first)):
                    if self._is_conflict(result, walker, other):
                        reason = (
                            f"{result.detections[walker].label} in {self.zone}, "
                            f"{result.detections[other].label} {pair.ttc_s:.1f} s away"
                        )
                        return _detail(
                            group, self.level, f"{self.zone} conflict", reason, VerdictSource.RULES
                        )
        return None

    def _is_conflict(self, result: FrameResult, walker: int, other: int) -> bool:
        pedestrian, vehicle = result.detections[walker], result.detections[other]
        return (
            pedestrian.label in self.pedestrians
            and self.zone in pedestrian.zones
            and canonical_label(vehicle.label) in {canonical_label(v) for v in self.vehicles}
        )

    def step(self, state: State, t: float, fact: Detail | None) -> Detail | None:
        return fact


# A conflict's alert is remembered this long after its event was last seen (event time).
CONFLICT_MEMORY_S = 300.0


class ConflictPattern(PatternBase):
    """A conflict event at `severity` or worse: one alert per event, updated (escalated)
    when the event turns more serious. Optionally only of some `kinds` (vehicle-pedestrian,
    vehicle-vehicle, crossing, rear-end, head-on), in some `zones`, with some `classes`."""

    kind: Literal["conflict"] = "conflict"
    severity: ConflictSeverity = ConflictSeverity.SERIOUS
    kinds: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()
    cooldown_s: float = Field(0.0, ge=0)  # one alert per event already: none needed

    def _wants(self, event: ConflictEvent) -> bool:
        labels = {canonical_label(event.first_label), canonical_label(event.second_label)}
        return (
            event.severity.rank >= self.severity.rank
            and (not self.kinds or bool({event.kind, event.conflict_type} & set(self.kinds)))
            and (not self.zones or bool(set(event.zones) & set(self.zones)))
            and (not self.classes or bool(labels & {canonical_label(c) for c in self.classes}))
        )

    def fact(self, result: FrameResult) -> list[Detail]:
        found = []
        for event in result.conflicts:
            if not event.is_open or not self._wants(event):
                continue
            serious = event.severity is ConflictSeverity.SERIOUS
            risk_type = f"{event.kind} {event.conflict_type} conflict"
            found.append(
                {
                    "group_id": _group_of(result, event),
                    "conflict_id": event.conflict_id,
                    "severity": event.severity.rank,
                    "risk_level": str(RiskLevel.HIGH if serious else RiskLevel.MEDIUM),
                    "risk_type": risk_type,
                    "reason": f"{event.severity} {risk_type}: {describe(event)}"[:400],
                    "source": str(VerdictSource.RULES),
                    "where": list(event.location) if event.location else None,
                    "conflicts": [event.conflict_id],
                    "verification": str(Verification.UNVERIFIED),
                }
            )
        return found

    def step(self, state: State, t: float, fact: list[Detail]) -> list[Detail]:
        alerted = {
            cid: seen for cid, seen in state.get("alerted", {}).items() if t - seen["t"] <= CONFLICT_MEMORY_S
        }
        matched = []
        for detail in fact:
            known = alerted.get(detail["conflict_id"]) or _same_encounter(alerted, detail, t)
            alert_of = known["alert_of"] if known else detail["conflict_id"]
            if known is None or detail["severity"] > known["severity"]:
                matched.append({**detail, "conflict_id": alert_of, "escalated": known is not None})
            alerted[detail["conflict_id"]] = {
                "severity": max(detail["severity"], known["severity"] if known else 0),
                "t": t,
                "where": detail["where"],
                "kind": detail["risk_type"],
                "alert_of": alert_of,
            }
            if known is not None:  # the encounter's first event, when this one is another of it
                known["severity"] = alerted[detail["conflict_id"]]["severity"]
        state["alerted"] = alerted
        return matched


# A new conflict event this close in time and space to one already alerted on, of the
# same kind, is taken for the same encounter (a track lost and found again makes a new
# pair of track ids): it escalates that alert rather than raising another.
SAME_ENCOUNTER_S = 3.0
SAME_ENCOUNTER_M = 5.0


def _same_encounter(alerted: dict[str, Any], detail: Detail, t: float) -> dict[str, Any] | None:
    where = detail["where"]
    if where is None:
        return None
    for seen in alerted.values():
        if (
            seen["kind"] == detail["risk_type"]
            and seen["where"] is not None
            and t - seen["t"] <= SAME_ENCOUNTER_S
            and math.dist(where, seen["where"]) <= SAME_ENCOUNTER_M
        ):
            return seen
    return None


def _group_of(result: FrameResult, event: ConflictEvent) -> str:
    """The frame's group that holds the conflict's two road users: its crop is the evidence."""
    for group in result.groups:
        tracks = {result.detections[i].track_id for i in group.group.members}
        if {event.first_track, event.second_track} <= tracks:
            return group.group.group_id
    return ""


Pattern = Annotated[
    RiskyGroup | LevelFrames | LastingGroup | ZoneConflict | ConflictPattern, Field(discriminator="kind")
]
_PATTERNS = TypeAdapter(list[Pattern])


class PatternsError(ValueError):
    """A patterns file that cannot be used; the message names the file and the culprit."""


def default_patterns(alert_level: RiskLevel = RiskLevel.HIGH) -> list[PatternBase]:
    """One alert per conflict event: serious ones (`TRAFFICRISK_ALERT_LEVEL=high`), or
    potential ones too (`medium` or `low`), escalated when they turn serious."""
    severity = ConflictSeverity.SERIOUS if alert_level is RiskLevel.HIGH else ConflictSeverity.POTENTIAL
    return [ConflictPattern(name="conflict", severity=severity)]


def parse_patterns(data: Any, source: str = "patterns") -> list[PatternBase]:
    items = data.get("patterns") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise PatternsError(f"{source}: expected a top-level `patterns:` list")
    try:
        patterns: list[PatternBase] = list(_PATTERNS.validate_python(items))
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise PatternsError(f"{source}: patterns.{where}: {first['msg']}") from None
    names = [p.name for p in patterns]
    if len(names) != len(set(names)):
        raise PatternsError(f"{source}: pattern names must be unique, got {names}")
    return patterns


def load_patterns(path: Path | None, alert_level: RiskLevel = RiskLevel.HIGH) -> list[PatternBase]:
    """The patterns of a YAML file, or the built-in ones when no file is given."""
    if path is None:
        return default_patterns(alert_level)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PatternsError(f"{path}: {error}") from None
    return parse_patterns(data, str(path))


def _alert(frame: dict[str, Any], pattern: PatternBase, detail: Detail) -> Alert:
    """The alert of a match; one of a conflict event is named after the event, not the frame."""
    camera_id, seq, t = frame["camera_id"], frame["seq"], frame["t"]
    fields = {k: v for k, v in detail.items() if k not in ("severity", "where")}
    event = fields.get("conflict_id", "")
    name = event.split(":", 1)[1].replace(":", "-") if event else str(seq)
    return Alert(
        alert_id=f"{camera_id}:{pattern.name}:{name}",
        camera_id=camera_id,
        frame_id=f"{camera_id}:{seq}",
        created_at=t,
        updated_at=t,
        pattern=pattern.name,
        **fields,
    )


class PatternEngine:
    """Feeds one camera's frames to the patterns in capture order, `lateness_s` at most late.

    The state is plain JSON (kept in Redis between tasks):
    `{"next": seq or None, "watermark": newest capture time, "pending": {seq: frame},
    "patterns": {name: state}}`.
    """

    def __init__(self, patterns: list[PatternBase], lateness_s: float) -> None:
        self.patterns = patterns
        self.lateness_s = lateness_s

    def frame_facts(self, result: FrameResult) -> dict[str, Any]:
        """The frame as the patterns need it later: small, JSON-safe."""
        facts = {p.name: p.fact(result) for p in self.patterns if p.applies_to(result.camera_id)}
        # Through JSON now, as in the state, so a frame runs the same waiting or not.
        frame: dict[str, Any] = json.loads(
            json.dumps(
                {"camera_id": result.camera_id, "seq": result.seq, "t": result.captured_at, "facts": facts}
            )
        )
        return frame

    @staticmethod
    def skipped_frame(camera_id: str, seq: int, captured_at: float) -> dict[str, Any]:
        """A frame that will have no result (dropped before detection): frames after it
        need not wait for it."""
        return {"camera_id": camera_id, "seq": seq, "t": captured_at, "facts": {}}

    def advance(self, state: State | None, frame: dict[str, Any]) -> tuple[list[Alert], State]:
        """Take one frame (from `frame_facts`); the alerts of every frame it lets run."""
        state = state or {"next": None, "watermark": frame["t"], "pending": {}, "patterns": {}}
        seq = frame["seq"]
        if (state["next"] is not None and seq < state["next"]) or str(seq) in state["pending"]:
            return [], state  # a redelivery, or later than the lateness allows
        state["pending"][str(seq)] = frame
        state["watermark"] = max(state["watermark"], frame["t"])
        alerts = []
        while (ready := self._next_ready(state)) is not None:
            alerts += self._run(state, state["pending"].pop(str(ready)))
            state["next"] = ready + 1
        return alerts, state

    def _next_ready(self, state: State) -> int | None:
        """The next frame to run: the one expected, else the earliest waiting one once the
        frames before it are too late to wait for (or it starts a run of numbers: a camera's
        first frame, or its first after Redis restarted)."""
        pending = state["pending"]
        if not pending:
            return None
        if state["next"] is not None and str(state["next"]) in pending:
            return int(state["next"])
        earliest = min(int(seq) for seq in pending)
        waited = state["watermark"] - pending[str(earliest)]["t"]
        return earliest if starts_run(earliest) or waited >= self.lateness_s else None

    def _run(self, state: State, frame: dict[str, Any]) -> list[Alert]:
        alerts = []
        for pattern in self.patterns:
            if pattern.name not in frame["facts"]:
                continue
            pattern_state = state["patterns"].setdefault(pattern.name, {})
            matched = pattern.step(pattern_state, frame["t"], frame["facts"][pattern.name])
            for detail in matched if isinstance(matched, list) else [matched] if matched else []:
                last = pattern_state.get("last_alert_t")
                if detail.get("escalated") or last is None or frame["t"] - last >= pattern.cooldown_s:
                    pattern_state["last_alert_t"] = frame["t"]
                    alerts.append(_alert(frame, pattern, detail))
        return alerts
