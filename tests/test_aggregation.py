"""Merging assessments into a frame's result."""

from __future__ import annotations

import pytest

from trafficrisk.messages import (
    AssessedGroup,
    Assessment,
    Box,
    FrameResult,
    Group,
    RiskLevel,
    Verdict,
    VerdictSource,
)
from trafficrisk.workers.aggregation import merge_assessments


def verdict(level: RiskLevel, source: VerdictSource = VerdictSource.RULES) -> Verdict:
    return Verdict(risk_level=level, risk_type="t", confidence=0.5, reason=f"{source} says {level}",
                   source=source)


def group(group_id: str, level: RiskLevel) -> AssessedGroup:
    g = Group(group_id=group_id, members=(0, 1), labels=("person", "car"),
              box=Box(x1=0, y1=0, x2=10, y2=10), prescore=0.5, rules_verdict=verdict(level))
    return AssessedGroup(group=g, verdict=g.rules_verdict)


def draft(*groups: AssessedGroup) -> FrameResult:
    return FrameResult(camera_id="cam", frame_id="cam:7", seq=7, captured_at=1000.0, processed_at=1000.1,
                       width=640, height=480, detector="test", llm_enabled=True, detections=(),
                       groups=groups, risk_level=RiskLevel.highest([g.verdict.risk_level for g in groups]))


@pytest.mark.parametrize(
    ("rules_levels", "assessed", "final_levels", "frame_level"),
    [
        ([], {}, [], RiskLevel.NONE),
        ([RiskLevel.LOW], {}, [RiskLevel.LOW], RiskLevel.LOW),
        ([RiskLevel.MEDIUM], {"g0": RiskLevel.HIGH}, [RiskLevel.HIGH], RiskLevel.HIGH),
        ([RiskLevel.HIGH, RiskLevel.LOW], {"g0": RiskLevel.NONE}, [RiskLevel.NONE, RiskLevel.LOW],
         RiskLevel.LOW),
        ([RiskLevel.LOW], {"unknown": RiskLevel.HIGH}, [RiskLevel.LOW], RiskLevel.LOW),
    ],
)
def test_merge_assessments(rules_levels: list[RiskLevel], assessed: dict[str, RiskLevel],
                           final_levels: list[RiskLevel], frame_level: RiskLevel) -> None:
    base = draft(*(group(f"g{i}", level) for i, level in enumerate(rules_levels)))
    assessments = [Assessment(group_id=g, verdict=verdict(level, VerdictSource.LLM), latency_s=2.5)
                   for g, level in assessed.items()]
    merged = merge_assessments(base, assessments)
    assert [g.verdict.risk_level for g in merged.groups] == final_levels
    assert merged.risk_level is frame_level
    assert merged.timings["total_s"] > 0
    assert ("llm_s" in merged.timings) is bool(assessments)
