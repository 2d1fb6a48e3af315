"""Temporal patterns: one alert per match, cooldowns, and order-independence within the lateness."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted import (
    CAMERA,
    HIGH,
    STORY_ALERTS,
    STORY_PATTERNS,
    conflict_event,
    jittered,
    moved,
    scripted_result,
    scripted_story,
)

from trafficrisk.messages import SEQ_BLOCK, Alert, ConflictEvent, ConflictSeverity, FrameResult, RiskLevel
from trafficrisk.workers.patterns import (
    ConflictPattern,
    PatternEngine,
    PatternsError,
    RiskyGroup,
    load_patterns,
)

LATENESS_S = 10.0


def run(engine: PatternEngine, arrivals: list[FrameResult]) -> list[Alert]:
    state, alerts = None, []
    for result in arrivals:
        new, state = engine.advance(state, engine.frame_facts(result))
        alerts += new
    return alerts


STORY = scripted_story()


@pytest.mark.parametrize(
    ("arrivals", "alerts"),
    [
        (STORY, STORY_ALERTS),
        (list(reversed(STORY[:8])) + STORY[8:], STORY_ALERTS),  # the first 8 all at once, backwards
        (jittered(STORY, delay=8, duplicates=0, seed=1), STORY_ALERTS),
        (jittered(STORY, delay=8, duplicates=10, seed=2), STORY_ALERTS),
        (STORY + STORY, STORY_ALERTS),  # everything redelivered
        (moved(STORY, 7, after=16), STORY_ALERTS),  # 9 s late: waited for
        # 13 s late, beyond the lateness: frame 7 is lost to the patterns, high-frames matches at 9
        (moved(STORY, 7, after=20), STORY_ALERTS - {"cam:high-frames:7"} | {"cam:high-frames:9"}),
    ],
    ids=[
        "in-order",
        "burst-backwards",
        "jittered",
        "jittered-twice",
        "all-twice",
        "late-in-bound",
        "late-beyond-bound",
    ],
)
def test_story_raises_one_alert_per_pattern(arrivals: list[FrameResult], alerts: set[str]) -> None:
    raised = run(PatternEngine(STORY_PATTERNS, LATENESS_S), arrivals)
    assert sorted(a.alert_id for a in raised) == sorted(alerts)
    in_order = {a.alert_id: a for a in run(PatternEngine(STORY_PATTERNS, LATENESS_S), STORY)}
    for alert in raised:  # the very same alert, not just the same id
        if alert.alert_id in in_order:
            assert alert == in_order[alert.alert_id]


def test_alerts_carry_the_matching_group_and_its_reason() -> None:
    alerts = {a.pattern: a for a in run(PatternEngine(STORY_PATTERNS, LATENESS_S), STORY)}
    assert alerts["risky-group"].risk_level is RiskLevel.HIGH
    assert alerts["risky-group"].reason == "group 1 at high"
    assert alerts["risky-group"].group_id == "g1" and alerts["risky-group"].source == "llm"
    assert alerts["high-frames"].reason.startswith("3 frames at high or above within 10 s")
    assert alerts["lasting-group"].reason.startswith("together for 11 s")
    assert alerts["crosswalk-conflict"].reason == "person in crosswalk, car 1.5 s away"
    conflict = alerts["crosswalk-conflict"]
    assert conflict.source == "rules" and conflict.risk_level == "high"
    assert all(a.state == "open" and a.updated_at == a.created_at for a in alerts.values())


@pytest.mark.parametrize(
    ("high_at", "cooldown_s", "alerted_at"),
    [
        ([5, 20, 40], 30, [5, 40]),  # 20 is 15 s after 5: cooling down
        ([5, 20, 40], 10, [5, 20, 40]),
        ([5, 6, 7, 8], 0, [5, 6, 7, 8]),
        ([5, 34, 35], 30, [5, 35]),  # the cooldown runs from the last alert, not the last match
        ([], 30, []),
    ],
)
def test_cooldown(high_at: list[int], cooldown_s: float, alerted_at: list[int]) -> None:
    story = [scripted_result(seq, *([HIGH] if seq in high_at else [])) for seq in range(1, 45)]
    engine = PatternEngine([RiskyGroup(name="risky", cooldown_s=cooldown_s)], LATENESS_S)
    assert [a.alert_id for a in run(engine, story)] == [f"cam:risky:{seq}" for seq in alerted_at]


def test_a_camera_joining_late_waits_for_the_lateness_before_its_first_frame() -> None:
    engine = PatternEngine([RiskyGroup(name="risky", cooldown_s=0)], LATENESS_S)
    later = [scripted_result(seq, HIGH) for seq in range(100, 115)]
    state, alerts = None, []
    for result in later[:10]:  # its first frame is not seq 1: earlier frames may still come
        new, state = engine.advance(state, engine.frame_facts(result))
        alerts += new
    assert alerts == []
    new, state = engine.advance(state, engine.frame_facts(later[10]))
    assert [a.alert_id for a in new] == [f"cam:risky:{seq}" for seq in range(100, 111)]


@pytest.mark.parametrize(
    ("first", "runs_at_once"),
    [
        (1, True),  # a camera's first frame
        (SEQ_BLOCK * 1_000_000 + 1, True),  # its first after Redis restarted (workers/store.py)
        (SEQ_BLOCK * 1_000_000 + 2, False),  # joining late: frames before it may still come
        (SEQ_BLOCK * 1_000_000, False),
    ],
)
def test_a_run_of_numbers_starts_without_waiting(first: int, runs_at_once: bool) -> None:
    engine = PatternEngine([RiskyGroup(name="risky", cooldown_s=0)], LATENESS_S)
    alerts, _ = engine.advance(None, engine.frame_facts(scripted_result(first, HIGH)))
    assert [a.alert_id for a in alerts] == ([f"cam:risky:{first}"] if runs_at_once else [])


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("patterns:\n  - {name: busy, kind: level_frames, frames: 5, within_s: 20, level: medium}\n", None),
        ("patterns:\n  - {name: zebra, kind: zone_conflict, zone: zebra, ttc_s: 1.5, cameras: [n]}\n", None),
        ("patterns: []\n", None),
        ("cameras: []\n", "expected a top-level `patterns:` list"),
        ("patterns:\n  - {name: x, kind: magic}\n", "patterns.0: Input tag 'magic' found using 'kind'"),
        ("patterns:\n  - {name: Bad Name, kind: risky_group}\n", "patterns.0.risky_group.name: String"),
        ("patterns:\n  - {name: x, kind: level_frames, frames: 0}\n", "patterns.0.level_frames.frames"),
        ("patterns:\n  - {name: x, kind: risky_group, level: extreme}\n", "patterns.0.risky_group.level"),
        ("patterns:\n  - {name: x, kind: risky_group, colour: red}\n", "Extra inputs are not permitted"),
        (
            "patterns:\n  - {name: x, kind: risky_group}\n  - {name: x, kind: level_frames}\n",
            "pattern names must be unique",
        ),
        ("patterns: [", "while parsing"),
    ],
)
def test_patterns_file(tmp_path: Path, text: str, error: str | None) -> None:
    path = tmp_path / "patterns.yaml"
    path.write_text(text)
    if error is None:
        patterns = load_patterns(path)
        assert len(patterns) == text.count("name:")
        return
    with pytest.raises(PatternsError) as raised:
        load_patterns(path)
    assert error in str(raised.value) and str(path) in str(raised.value)


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (RiskLevel.HIGH, ConflictSeverity.SERIOUS),
        (RiskLevel.MEDIUM, ConflictSeverity.POTENTIAL),
        (RiskLevel.LOW, ConflictSeverity.POTENTIAL),
    ],
)
def test_no_patterns_file_means_one_alert_per_conflict_at_the_alert_level(
    level: RiskLevel, severity: ConflictSeverity
) -> None:
    (pattern,) = load_patterns(None, level)
    assert (
        isinstance(pattern, ConflictPattern) and pattern.name == "conflict" and pattern.severity is severity
    )


def with_conflict(event: ConflictEvent | None, seq: int) -> FrameResult:
    return scripted_result(seq, conflicts=(event,) if event else ())


def conflict_story(**changes: object) -> list[FrameResult]:
    """Frames 20-35 of one camera with the scripted conflict (25-30, serious from 27),
    its fields changed as given."""
    return [
        with_conflict(e.model_copy(update=changes) if (e := conflict_event(seq)) else None, seq)
        for seq in range(20, 36)
    ]


@pytest.mark.parametrize(
    ("pattern", "story", "alerts"),
    [
        # serious only: one alert, at 27, whatever the frames in between
        (ConflictPattern(name="c"), conflict_story(), [("cam:c:7-8-25", 27, "high", False)]),
        # potential and up: opens at 25 at medium, escalated at 27 (same id, high), no more
        (
            ConflictPattern(name="c", severity=ConflictSeverity.POTENTIAL),
            conflict_story(),
            [("cam:c:7-8-25", 25, "medium", False), ("cam:c:7-8-25", 27, "high", True)],
        ),
        (
            ConflictPattern(name="c", kinds=("vehicle-pedestrian",)),
            conflict_story(),
            [("cam:c:7-8-25", 27, "high", False)],
        ),
        (
            ConflictPattern(name="c", kinds=("crossing",)),
            conflict_story(),
            [("cam:c:7-8-25", 27, "high", False)],
        ),
        (ConflictPattern(name="c", kinds=("rear-end",)), conflict_story(), []),
        (ConflictPattern(name="c", kinds=("vehicle-vehicle",)), conflict_story(), []),
        (
            ConflictPattern(name="c", zones=("crosswalk",)),
            conflict_story(zones=("crosswalk",)),
            [("cam:c:7-8-25", 27, "high", False)],
        ),
        (ConflictPattern(name="c", zones=("crosswalk",)), conflict_story(), []),  # not in the zone
        (ConflictPattern(name="c", classes=("truck", "bus")), conflict_story(), []),  # a car and a person
        (
            ConflictPattern(name="c", classes=("van",)),
            conflict_story(),
            [("cam:c:7-8-25", 27, "high", False)],
        ),
        # the conflict event twice over (a redelivery of every frame): still one alert
        (
            ConflictPattern(name="c"),
            conflict_story() + conflict_story(),
            [("cam:c:7-8-25", 27, "high", False)],
        ),
        # a second conflict of other tracks at the same time: an alert of its own, no cooldown
        (
            ConflictPattern(name="c"),
            [
                r.model_copy(
                    update={
                        "conflicts": (
                            *r.conflicts,
                            *(
                                c.model_copy(
                                    update={
                                        "conflict_id": "cam:9-10:25",
                                        "first_track": 9,
                                        "second_track": 10,
                                    }
                                )
                                for c in r.conflicts
                            ),
                        )
                    }
                )
                for r in conflict_story()
            ],
            [("cam:c:7-8-25", 27, "high", False), ("cam:c:9-10-25", 27, "high", False)],
        ),
    ],
    ids=[
        "serious",
        "potential-escalates",
        "kind",
        "type",
        "other-type",
        "other-kind",
        "zone",
        "not-in-zone",
        "classes",
        "alias",
        "redelivered",
        "two-at-once",
    ],
)
def test_one_alert_per_conflict_event(
    pattern: ConflictPattern, story: list[FrameResult], alerts: list[tuple[str, int, str, bool]]
) -> None:
    raised = run(PatternEngine([pattern], LATENESS_S), story)
    assert [(a.alert_id, a.seq, str(a.risk_level), a.escalated) for a in raised] == alerts
    for alert in raised:
        assert alert.conflict_id.endswith(":25") and alert.source == "rules"
        assert alert.reason.startswith(
            (
                "serious vehicle-pedestrian crossing conflict: min TTC 1.2 s",
                "potential vehicle-pedestrian crossing conflict: min TTC 2.4 s",
            )
        )


@pytest.mark.parametrize(
    ("seventh", "alerts_by_arrival"),
    [
        ("result", {8: ["cam:risky:8"]}),
        ("skipped", {8: ["cam:risky:8"]}),  # dropped before detection: nothing to wait for
        ("missing", {18: ["cam:risky:8"]}),  # lost: frame 8 waits the lateness for it
    ],
)
def test_frames_wait_only_for_frames_that_may_still_come(
    seventh: str, alerts_by_arrival: dict[int, list[str]]
) -> None:
    engine = PatternEngine([RiskyGroup(name="risky")], LATENESS_S)
    story = [scripted_result(seq, *([HIGH] if seq == 8 else [])) for seq in range(1, 20)]
    state, raised = None, {}
    for result in story:
        if result.seq == 7 and seventh != "result":
            if seventh == "skipped":
                state = engine.advance(state, engine.skipped_frame(CAMERA, 7, result.captured_at))[1]
            continue
        new, state = engine.advance(state, engine.frame_facts(result))
        if new:
            raised[result.seq] = [a.alert_id for a in new]
    assert raised == alerts_by_arrival


def relabelled(
    story: list[FrameResult], first: int, second: int, start: int, **changes: object
) -> list[FrameResult]:
    """The story's conflict as if its tracks were renumbered from frame `start` on (the
    tracker lost and found them), with other fields changed too."""
    out = []
    for result in story:
        if result.seq >= start and result.conflicts:
            event = result.conflicts[0].model_copy(
                update={
                    "conflict_id": f"cam:{first}-{second}:{start}",
                    "first_track": first,
                    "second_track": second,
                    **changes,
                }
            )
            result = result.model_copy(update={"conflicts": (event,)})
        out.append(result)
    return out


HERE = (3.0, 12.0)


@pytest.mark.parametrize(
    ("story", "alerts"),
    [
        # the same place: one encounter, one alert (at 27, serious), the new ids add none
        (relabelled(conflict_story(location=HERE), 9, 10, 28, location=HERE), [("cam:c:7-8-25", False)]),
        # 4 m away, within SAME_ENCOUNTER_M: still the same
        (
            relabelled(conflict_story(location=HERE), 9, 10, 28, location=(3.0, 16.0)),
            [("cam:c:7-8-25", False)],
        ),
        # 10 m away: another encounter, an alert of its own
        (
            relabelled(conflict_story(location=HERE), 9, 10, 28, location=(3.0, 22.0)),
            [("cam:c:7-8-25", False), ("cam:c:9-10-28", False)],
        ),
        # another kind at the same place: another encounter
        (
            relabelled(conflict_story(location=HERE), 9, 10, 28, location=HERE, kind="vehicle-vehicle"),
            [("cam:c:7-8-25", False), ("cam:c:9-10-28", False)],
        ),
        # no place known: nothing to tell them apart by, an alert each
        (relabelled(conflict_story(), 9, 10, 28), [("cam:c:7-8-25", False), ("cam:c:9-10-28", False)]),
    ],
    ids=["same-place", "near", "far", "other-kind", "no-place"],
)
def test_one_encounter_split_between_tracks_raises_one_alert(
    story: list[FrameResult], alerts: list[tuple[str, bool]]
) -> None:
    raised = run(PatternEngine([ConflictPattern(name="c")], LATENESS_S), story)
    assert [(a.alert_id, a.escalated) for a in raised] == alerts


def test_an_encounter_split_between_tracks_escalates_its_first_alert() -> None:
    """Potential under tracks 7-8, serious only once renumbered 9-10: the first alert escalates."""
    story = relabelled(
        conflict_story(location=HERE, severity=ConflictSeverity.POTENTIAL),
        9,
        10,
        27,
        location=HERE,
        severity=ConflictSeverity.SERIOUS,
    )
    pattern = ConflictPattern(name="c", severity=ConflictSeverity.POTENTIAL)
    raised = run(PatternEngine([pattern], LATENESS_S), story)
    assert [(a.alert_id, str(a.risk_level), a.escalated) for a in raised] == [
        ("cam:c:7-8-25", "medium", False),
        ("cam:c:7-8-25", "high", True),
    ]
