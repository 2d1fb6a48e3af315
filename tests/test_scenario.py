"""Scenario clips: their ground truth, and the tracks and rules judged against it."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from trafficrisk.messages import Box, Detection, RiskLevel
from trafficrisk.scenario import SCENARIOS, Scenario, conflicts, frames, write
from trafficrisk.workers.analysis import build_groups
from trafficrisk.workers.detection import load_detector
from trafficrisk.workers.tracking import TrackerState, track_frame

RANK = {level: rank for rank, level in enumerate(RiskLevel)}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # truck 249.5 px wide, pedestrian 38.2: reach 143.9 px. The truck stops at 2.0 s
        # at x 360, 240.4 px from him, closing at 200 px/s: (240.4 - 143.9) / 200 = 0.48 s.
        ("near-miss", [("truck", "pedestrian", 0.0, 2.0, 0.48)]),
        ("crossing", [("truck", "van", 0.0, 1.2, 0.79)]),
        ("parallel", []),
        ("parked", []),
    ],
)
def test_truth_conflicts(name: str, expected: list[tuple[str, str, float, float, float]]) -> None:
    found = [(c.first, c.second, c.start, c.end, round(c.min_ttc_s, 2)) for c in conflicts(SCENARIOS[name])]
    assert found == expected


def judged(scenario: Scenario) -> list[tuple[float, dict[str, int], list]]:
    """Each frame's truth boxes through the tracker and the rules: (time, actor -> track id, groups)."""
    state, seen = TrackerState(), []
    for seq, (t, _, boxes) in enumerate(frames(scenario), start=1):
        detections = [Detection(label=b["label"], confidence=0.9, box=Box(x1=b["box"][0], y1=b["box"][1],
                                                                          x2=b["box"][2], y2=b["box"][3]))
                      for b in boxes]
        tracked = track_frame(state, detections, seq, t)
        state = tracked.state or state
        ids = {b["actor"]: d.track_id for b, d in zip(boxes, tracked.detections, strict=True)}
        seen.append((t, ids, list(build_groups(tracked.detections))))
    return seen


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_rules_flag_every_conflict_and_nothing_on_safe_clips(name: str) -> None:
    scenario = SCENARIOS[name]
    seen = judged(scenario)
    worst = max((RANK[g.rules_verdict.risk_level] for _, _, groups in seen for g in groups), default=0)
    if scenario.safe:
        assert worst <= RANK[RiskLevel.LOW]
        return
    for conflict in conflicts(scenario):
        during = [groups for t, _, groups in seen if conflict.start <= t <= conflict.end]
        flagged = [g for groups in during for g in groups
                   if RANK[g.rules_verdict.risk_level] >= RANK[RiskLevel.MEDIUM]]
        ttcs = [p.ttc_s for g in flagged for p in g.pairs if p.ttc_s is not None]
        assert flagged, f"{conflict} not flagged"
        assert min(ttcs) == pytest.approx(conflict.min_ttc_s, rel=0.3)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_actor_keeps_one_track_id(name: str) -> None:
    ids: dict[str, set[int | None]] = {}
    for _, actor_ids, _ in judged(SCENARIOS[name]):
        for actor, track_id in actor_ids.items():
            ids.setdefault(actor, set()).add(track_id)
    assert all(len(found) == 1 and None not in found for found in ids.values()), ids
    assert len({i for found in ids.values() for i in found}) == len(ids)


def test_the_tool_writes_a_clip_and_its_truth(tmp_path: Path) -> None:
    clip, truth_file = write(SCENARIOS["near-miss"], tmp_path)
    capture = cv2.VideoCapture(str(clip))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    ok, image = capture.read()
    capture.release()
    truth = json.loads(truth_file.read_text())
    assert ok and image.shape == (576, 768, 3)
    assert count == len(truth["frames"]) == 50
    assert truth["conflicts"][0]["first"] == "truck" and not truth["safe"]
    assert {b["actor"] for b in truth["frames"][20]["boxes"]} == {"truck", "pedestrian"}


def test_a_real_detector_on_the_clip_flags_the_near_miss() -> None:
    """SSD (the offline detector) on the rendered frames, not the truth boxes: the truck and
    the pedestrian it drives at are found, tracked and flagged with the true TTC."""
    detector = load_detector("ssd", "cpu", 0.35)
    scenario = SCENARIOS["near-miss"]
    (conflict,) = conflicts(scenario)
    state, ttcs = TrackerState(), []
    for seq, (t, image, _) in enumerate(frames(scenario), start=1):
        tracked = track_frame(state, detector.detect([image])[0], seq, t)
        state = tracked.state or state
        found = tracked.detections
        for group in build_groups(found):
            level = RANK[group.rules_verdict.risk_level]
            if not conflict.start <= t <= conflict.end or level < RANK[RiskLevel.MEDIUM]:
                continue
            ttcs += [p.ttc_s for p in group.pairs if p.ttc_s is not None
                     and {found[p.first].label, found[p.second].label} & {"car", "truck"}
                     and any(is_scripted_pedestrian(found[i]) for i in (p.first, p.second))]
    assert ttcs, "the near miss was not flagged"
    assert min(ttcs) == pytest.approx(conflict.min_ttc_s, rel=0.3)


def is_scripted_pedestrian(d: Detection) -> bool:
    """The scenario's pedestrian, not one of vtest.avi's own further up the frame."""
    return d.label == "person" and 560 < (d.box.x1 + d.box.x2) / 2 < 640 and d.box.y2 > 400
