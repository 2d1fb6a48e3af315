"""Conflict events across frames: a pair's measures, frame by frame, through
`advance_conflicts` with the default thresholds (serious TTC 1.5 s, potential 3 s,
serious PET 1 s, potential 3 s, serious DRAC 3.4 m/s², 2 frames to confirm, ended after
1.5 s out of range).

Frames here are 0.25 s apart (seq n at n / 4 s): every time and difference is exact in
binary, so the 1.5 s end boundary is tested as it is written.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from trafficrisk.messages import ConflictEvent
from trafficrisk.workers.conflicts import Frame, PairObservation, Thresholds, advance_conflicts

LIMITS = Thresholds()
STEP_S = 0.25
# One frame's measures of the pair, or None: the pair is not in the frame at all.
Measures = dict[str, Any] | None


def pair(
    ttc: float | None = None,
    pet: float | None = None,
    drac: float | None = None,
    first: int = 1,
    second: int = 2,
    **changes: Any,
) -> PairObservation:
    """A car (track `first`) and a pedestrian (track `second`) measured in one frame."""
    fields: dict[str, Any] = {
        "first_track": first,
        "second_track": second,
        "first_label": "car",
        "second_label": "person",
        "kind": "vehicle-pedestrian",
        "conflict_type": "crossing",
        "ttc_s": ttc,
        "drac": drac,
        "closing_speed": 5.0,
        "pet_s": pet,
        "first_speed": 5.0,
        "second_speed": 1.2,
        "location": (1.0, 2.0),
        "image_point": (300.0, 400.0),
    }
    return PairObservation(**{**fields, **changes})


def frame(seq: int, camera: str = "cam") -> Frame:
    return Frame(camera, seq, seq * STEP_S, approximate=False)


def run(
    measures: list[Measures], start: int = 1, through_json: bool = False
) -> tuple[list[list[ConflictEvent]], dict[str, Any]]:
    """The frames' measures of one pair (seq `start` on); the events each frame reports, and
    the final state. `through_json`: the state is stored and read back as JSON between frames."""
    state: dict[str, Any] | None = None
    reported = []
    for seq, m in enumerate(measures, start=start):
        events, state = advance_conflicts(state, [] if m is None else [pair(**m)], frame(seq), LIMITS)
        reported.append(events)
        if through_json:
            state = json.loads(json.dumps(state))
    return reported, state or {}


def changes(reported: list[list[ConflictEvent]]) -> list[tuple[str, str] | None]:
    """Per frame, the (change, severity) of the pair's event, or None when none is reported."""
    out: list[tuple[str, str] | None] = []
    for events in reported:
        assert len(events) <= 1
        out.append((str(events[0].change), str(events[0].severity)) if events else None)
    return out


OPENED_P, OPENED_S = ("opened", "potential"), ("opened", "serious")
UPDATED_P, UPDATED_S = ("updated", "potential"), ("updated", "serious")
ESCALATED, ENDED_P = ("escalated", "serious"), ("ended", "potential")


@pytest.mark.parametrize(
    ("measures", "expected"),
    [
        # one frame in range is a spike: nothing opens, the frames after it are out of range
        ([{"ttc": 2.0}, {"ttc": 5.0}, {"ttc": 6.0}], [None, None, None]),
        ([{"ttc": 2.0}, None, None], [None, None, None]),
        # two in a row open a potential event in the second
        ([{"ttc": 2.5}, {"ttc": 2.0}], [None, OPENED_P]),
        # boundaries: a TTC of exactly 3 s is in range, 3.01 s is not
        ([{"ttc": 3.0}, {"ttc": 3.0}], [None, OPENED_P]),
        ([{"ttc": 3.01}, {"ttc": 3.01}], [None, None]),
        # in range, out, in again: never two in a row
        ([{"ttc": 2.0}, {"ttc": 4.0}, {"ttc": 2.0}, {"ttc": 4.0}], [None, None, None, None]),
        # TTC <= 1.5 s in two frames in a row makes it serious: [2.0, 1.4] is not, [1.4, 1.2] is
        ([{"ttc": 2.5}, {"ttc": 2.0}, {"ttc": 1.4}, {"ttc": 1.2}], [None, OPENED_P, UPDATED_P, ESCALATED]),
        # ... and it stays serious when the TTC rises again
        ([{"ttc": 1.4}, {"ttc": 1.2}, {"ttc": 2.5}], [None, OPENED_S, UPDATED_S]),
        ([{"ttc": 1.5}, {"ttc": 1.5}], [None, OPENED_S]),  # exactly the serious threshold
        # a TTC under 1.5 s every other frame is single-frame jitter: never serious
        (
            [{"ttc": 2.5}, {"ttc": 1.4}, {"ttc": 2.0}, {"ttc": 1.3}, {"ttc": 2.2}],
            [None, OPENED_P, UPDATED_P, UPDATED_P, UPDATED_P],
        ),
        # a PET within 3 s opens at once (measured once, from whole paths); within 1 s it is serious
        ([{"pet": 2.5}], [OPENED_P]),
        ([{"pet": 3.0}], [OPENED_P]),
        ([{"pet": 3.01}], [None]),
        ([{"pet": 0.8}], [OPENED_S]),
        ([{"pet": 1.0}], [OPENED_S]),
        # a serious PET arriving in an open potential event escalates it at once
        ([{"ttc": 2.5}, {"ttc": 2.5}, {"ttc": 2.8, "pet": 0.6}], [None, OPENED_P, ESCALATED]),
        # DRAC >= 3.4 m/s² in two frames in a row makes it serious; 3.5 then 3.3 does not
        ([{"ttc": 2.5, "drac": 3.5}, {"ttc": 2.0, "drac": 3.4}], [None, OPENED_S]),
        ([{"ttc": 2.5, "drac": 3.5}, {"ttc": 2.0, "drac": 3.3}], [None, OPENED_P]),
        # a frame with no DRAC breaks the DRAC streak: [3.5, None], then [None, 3.6]
        (
            [{"ttc": 2.5, "drac": 3.5}, {"ttc": 2.0, "drac": None}, {"ttc": 2.0, "drac": 3.6}],
            [None, OPENED_P, UPDATED_P],
        ),
    ],
)
def test_events_open_and_escalate(measures: list[Measures], expected: list[tuple[str, str] | None]) -> None:
    reported, _ = run(measures)
    assert changes(reported) == expected


# In range in frames 1 and 2 (the last at 0.5 s), then out of range: the event lasts while
# the frame time less 0.5 s is at most 1.5 s (up to seq 8, at 2.0 s), and ends at seq 9
# (2.25 - 0.5 = 1.75 s > 1.5 s). It is reported once ended, then gone.
OPEN_THEN_QUIET: list[Measures] = [{"ttc": 2.0}, {"ttc": 2.0}]


@pytest.mark.parametrize(
    ("after", "ended_at"),
    [
        ([{"ttc": None}] * 8, 9),  # the pair still seen, with no TTC
        ([None] * 8, 9),  # the pair gone from the frame
        ([{"ttc": 4.0}] * 8, 9),  # seen, out of range
        # back in range at seq 8 (2.0 s): the same event goes on; last in range 2.0 s, so it
        # ends at the first frame past 3.5 s: seq 15 (3.75 s)
        ([None] * 5 + [{"ttc": 2.5}] + [None] * 8, 15),
    ],
)
def test_events_end_after_1_5_s_out_of_range(after: list[Measures], ended_at: int) -> None:
    reported, state = run(OPEN_THEN_QUIET + after)
    ids = {e.conflict_id for events in reported for e in events}
    assert ids == {"cam:1-2:1"}  # one encounter, one event
    ended = [seq for seq, events in enumerate(reported, start=1) if events and not events[0].is_open]
    assert ended == [ended_at]  # reported ended once
    assert all(events for events in reported[1 : ended_at - 1])  # reported every frame while open
    assert reported[ended_at:] == [[]] * (len(reported) - ended_at)  # then gone
    assert state == {"open": {}}


def test_an_unconfirmed_spike_is_forgotten_without_a_word() -> None:
    # In range once at seq 1 (0.25 s); out of range for more than 1.5 s by seq 8 (2.0 s).
    spike: list[Measures] = [{"ttc": 2.0}, *[{"ttc": None}] * 7]
    reported, state = run(spike)
    assert reported == [[]] * 8
    assert state == {"open": {}}


def test_the_event_keeps_its_extremes() -> None:
    measures: list[Measures] = [
        {"ttc": 2.5, "drac": 1.0, "closing_speed": 4.0},
        {"ttc": 1.23456, "drac": 2.5, "closing_speed": 5.0},  # a one-frame dip
        {"ttc": 1.6, "drac": 2.0, "pet": 2.0, "closing_speed": 6.0, "first_speed": 7.0,
         "location": (3.333, 4.444)},
        {"ttc": 2.8, "drac": 1.5, "pet": 2.5},
        {"ttc": None, "pet": None, "first_speed": 9.0},
    ]
    reported, _ = run(measures)
    event = reported[-1][0]
    # the minimum TTC is the least of the TTCs held over two frames in a row (the larger of
    # each pair): 2.5 (frames 1-2), 1.6 (2-3), 2.8 (3-4): 1.6, at frame 3, with what frame 3
    # measured; the dip to 1.23 in frame 2 alone sets nothing
    assert (event.min_ttc_s, event.min_ttc_frame, event.min_ttc_at) == (1.6, "cam:3", 0.75)
    assert event.closing_speed == 6.0
    assert (event.first_speed_mps, event.location) == (7.0, (3.33, 4.44))  # at the minimum TTC
    assert event.max_drac == 2.5  # the largest of 1.0, 2.5, 2.0, 1.5
    assert (event.pet_s, event.pet_frame, event.pet_at) == (2.0, "cam:3", 0.75)  # the lower PET kept
    assert event.max_speed_mps == 9.0  # the fastest of either, in any frame
    # the interval: first frame in range to last frame in range (seq 4, not 5)
    assert (event.start_at, event.start_frame) == (0.25, "cam:1")
    assert (event.end_at, event.last_frame) == (1.0, "cam:4")
    assert event.updated_seq == 5
    assert event.frames == ("cam:1", "cam:3", "cam:4")
    # one TTC under 1.5 s (never two in a row) and a PET of 2 s: potential only
    assert event.severity == "potential"


@pytest.mark.parametrize(
    ("camera", "first", "second", "start", "conflict_id"),
    [
        ("cam", 1, 2, 1, "cam:1-2:1"),
        ("north-gate", 3, 11, 40, "north-gate:3-11:40"),  # the seq of its first frame in range
        ("c_7", 12, 13, 1000, "c_7:12-13:1000"),
    ],
)
def test_conflict_ids(camera: str, first: int, second: int, start: int, conflict_id: str) -> None:
    state = None
    for seq in (start, start + 1):
        events, state = advance_conflicts(
            state, [pair(2.0, first=first, second=second)], frame(seq, camera), LIMITS
        )
    (event,) = events
    assert event.conflict_id == conflict_id
    assert (event.camera_id, event.first_track, event.second_track) == (camera, first, second)
    assert event.start_frame == f"{camera}:{start}"


def test_pairs_are_events_of_their_own() -> None:
    # Tracks 1-2 in range twice; 1-3 once, then out: only 1-2 opens.
    state: dict[str, Any] = {}
    for seq, ttc13 in ((1, 2.0), (2, 5.0)):
        pairs = [pair(2.0), pair(ttc13, second=3)]
        events, state = advance_conflicts(state, pairs, frame(seq), LIMITS)
    assert [e.conflict_id for e in events] == ["cam:1-2:1"]
    assert set(state["open"]) == {"1-2", "1-3"}  # 1-3 is kept, unconfirmed, until 1.5 s pass


MEASURES_FOR_JSON: list[Measures] = [
    {"ttc": 2.8, "drac": 0.5},
    {"ttc": 2.1, "drac": 1.5, "zones": ("crosswalk",)},
    {"ttc": 1.4, "drac": 3.5},
    {"ttc": 1.2, "drac": 3.8, "pet": 2.2},
    None,
    {"ttc": None},
    *([None] * 6),
]


def test_the_state_survives_a_json_round_trip() -> None:
    plain, plain_state = run(MEASURES_FOR_JSON)
    stored, stored_state = run(MEASURES_FOR_JSON, through_json=True)
    assert stored == plain
    assert json.loads(json.dumps(plain_state)) == stored_state
    # every stage: opened at seq 2, escalated at seq 4 (TTCs [1.4, 1.2]), last in range at
    # seq 4 (1.0 s), ended at seq 11 (2.75 - 1.0 = 1.75 > 1.5; seq 10 gives exactly 1.5)
    ended = ("ended", "serious")
    assert changes(plain) == [None, OPENED_P, UPDATED_P, ESCALATED, *[UPDATED_S] * 6, ended, None]
    assert plain[1][0].zones == plain[-3][0].zones == ("crosswalk",)


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        # the engine makes events only of pairs that can conflict, of the three types
        ({"kind": "pedestrian-pedestrian"}, "kind"),
        ({"conflict_type": "sideswipe"}, "conflict_type"),
    ],
)
def test_pairs_that_make_no_event_are_refused(changed: dict[str, Any], message: str) -> None:
    state = None
    with pytest.raises(ValidationError, match=message):
        for seq in (1, 2):
            _, state = advance_conflicts(state, [pair(2.0, **changed)], frame(seq), LIMITS)


# Which versions ask for the LLM's verification (docs/verification.md), frames 0.25 s apart:
# a serious event at once; a potential one after 3 s (12 frames) or as it ends; one
# request per severity.
POTENTIAL = {"ttc": 2.5}
SERIOUS = {"ttc": 1.0}


@pytest.mark.parametrize(
    ("measures", "asking"),
    [
        # opens potential, turns serious a frame later: only the serious version asks
        ([POTENTIAL, POTENTIAL, SERIOUS, SERIOUS, SERIOUS], [4]),
        # serious from its first frames: asks as it opens, never again
        ([SERIOUS, SERIOUS, SERIOUS, SERIOUS], [2]),
        # potential for 3 s (start at frame 1, 3 s later is frame 13), then serious: two requests
        ([POTENTIAL] * 14 + [SERIOUS, SERIOUS], [13, 16]),
        # potential, then out of range until it ends (1.5 s later): asks at its end
        ([POTENTIAL, POTENTIAL, None, None, None, None, None, None, None], [9]),
        # never confirmed (one frame in range): never asks
        ([POTENTIAL, None, None, None, None, None, None, None, None], []),
        # a PET that is serious at once: asks on its only frame
        ([{"pet": 0.5}], [1]),
        # error row: a PET only potential, the event ends without a second frame: asks at its end
        ([{"pet": 2.0}, None, None, None, None, None, None, None], [8]),
    ],
    ids=["escalates-early", "serious-at-once", "potential-then-serious", "ends-potential",
         "unconfirmed", "serious-pet", "potential-pet-ends"],
)
def test_versions_that_ask_for_verification(measures: list[Measures], asking: list[int]) -> None:
    reported, _ = run(measures, through_json=True)
    asked = [seq for seq, events in enumerate(reported, start=1) for event in events if event.to_verify]
    assert asked == asking
