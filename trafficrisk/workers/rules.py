"""The kinematic rules: a pre-score per group, the verdict that stands without an LLM,
and the gate that decides which groups are worth an LLM call, at which priority."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from trafficrisk.messages import Detection, PairMeasure, RiskLevel, Verdict, VerdictSource
from trafficrisk.workers.grouping import DEFAULT_PROXIMITY, normalized_gap

VULNERABLE = frozenset({"person", "bicycle", "motorcycle"})
VEHICLES = frozenset({"car", "bus", "truck"})

# Score thresholds for levels: below 0.2 none, below 0.4 low, below 0.7 medium.
_LEVEL_FLOORS = ((0.7, RiskLevel.HIGH), (0.4, RiskLevel.MEDIUM), (0.2, RiskLevel.LOW))


# Time-to-collision thresholds from the surrogate-safety literature: under 1.5 s a
# serious conflict, under 3 s a potential one. Pairs under CONVERGING_TTC_S form a
# group however far apart they are.
SERIOUS_TTC_S = 1.5
POTENTIAL_TTC_S = 3.0
CONVERGING_TTC_S = POTENTIAL_TTC_S


@dataclass(frozen=True)
class PairKind:
    base: float
    weight: float
    overlap_bonus: float
    risk_type: str
    serious_ttc_score: float  # what a TTC under SERIOUS_TTC_S scores
    potential_ttc_score: float  # and under POTENTIAL_TTC_S


# From one still frame, proximity alone never reaches `high`: a pedestrian passing a
# parked van looks the same as one about to be hit. `high` needs motion (a short
# time-to-collision from the tracks) or the LLM's eyes. Vehicles overlapping in the image are
# usually parked side by side, so only vehicle-with-vulnerable pairs get a bonus.
_VEHICLE_VULNERABLE = PairKind(0.3, 0.35, 0.04, "vehicle-pedestrian proximity", 0.8, 0.55)
_VEHICLE_VEHICLE = PairKind(0.1, 0.25, 0.0, "vehicle-vehicle proximity", 0.7, 0.45)
_VULNERABLE_ONLY = PairKind(0.05, 0.2, 0.0, "crowding", 0.3, 0.2)


def _pair_kind(a: str, b: str) -> PairKind | None:
    kinds = {a in VEHICLES, b in VEHICLES}
    if kinds == {True, False} and (a in VULNERABLE or b in VULNERABLE):
        return _VEHICLE_VULNERABLE
    if kinds == {True}:
        return _VEHICLE_VEHICLE
    if a in VULNERABLE and b in VULNERABLE:
        return _VULNERABLE_ONLY
    return None


def _overlaps(a: Detection, b: Detection) -> bool:
    return a.box.x1 < b.box.x2 and b.box.x1 < a.box.x2 and a.box.y1 < b.box.y2 and b.box.y1 < a.box.y2


def level_for(score: float) -> RiskLevel:
    return next((level for floor, level in _LEVEL_FLOORS if score >= floor), RiskLevel.NONE)


def _ttc_score(kind: PairKind, ttc_s: float | None) -> float:
    if ttc_s is None or ttc_s > POTENTIAL_TTC_S:
        return 0.0
    return kind.serious_ttc_score if ttc_s <= SERIOUS_TTC_S else kind.potential_ttc_score


def converging_pairs(pairs: Sequence[PairMeasure]) -> list[tuple[int, int]]:
    return [(p.first, p.second) for p in pairs if p.ttc_s is not None and p.ttc_s <= CONVERGING_TTC_S]


def score_group(detections: Sequence[Detection], members: Sequence[int],
                pairs: Sequence[PairMeasure] = ()) -> tuple[float, Verdict]:
    """The pre-score (0..1) of a group and the rules verdict that follows from it.

    Proximity alone gives at most `medium`; a short time-to-collision between a
    vehicle and someone vulnerable (or another vehicle) gives `high`.
    """
    ttcs = {(p.first, p.second): p.ttc_s for p in pairs}
    best, best_kind, best_ttc = 0.0, _VULNERABLE_ONLY, None
    for i, j in combinations(sorted(members), 2):
        a, b = detections[i], detections[j]
        kind = _pair_kind(a.label, b.label)
        if kind is None:
            continue
        closeness = max(0.0, 1.0 - normalized_gap(a, b) / DEFAULT_PROXIMITY)
        score = kind.base + kind.weight * closeness + (kind.overlap_bonus if _overlaps(a, b) else 0.0)
        ttc = ttcs.get((i, j))
        score = max(score, _ttc_score(kind, ttc))
        if score > best:
            best, best_kind, best_ttc = score, kind, ttc
    score = round(min(best, 1.0), 3)
    level = level_for(score)
    evidence = "distance and classes only" if best_ttc is None else f"time to collision {best_ttc:.1f} s"
    verdict = Verdict(
        risk_level=level,
        risk_type=best_kind.risk_type if level is not RiskLevel.NONE else "none",
        confidence=0.5,
        reason=f"rules: {best_kind.risk_type}, pre-score {score:.2f} from {evidence}",
        source=VerdictSource.RULES,
    )
    return score, verdict


@dataclass(frozen=True)
class LlmGate:
    """Which groups are worth an LLM call, and which of those jump the queue."""

    min_score: float = 0.4
    high_priority_score: float = 0.6

    def wants_llm(self, prescore: float) -> bool:
        return prescore >= self.min_score

    def is_high_priority(self, prescore: float) -> bool:
        return prescore >= self.high_priority_score
