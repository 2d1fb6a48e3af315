"""The Redis store against a real redis-server."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis
from scripted import HIGH, conflict_event, scripted_result

from trafficrisk.messages import (
    SEQ_BLOCK,
    Alert,
    AlertState,
    Camera,
    CameraState,
    CameraStatus,
    ConflictSeverity,
    FrameResult,
    RiskLevel,
    Verdict,
    VerdictSource,
    Verification,
    starts_run,
)
from trafficrisk.workers.patterns import ConflictPattern, PatternEngine, RiskyGroup
from trafficrisk.workers.store import SEQ_FLOOR_SINCE, Store, seq_floor


@pytest.fixture
def store(redis_url: str) -> Store:
    return Store(redis.Redis.from_url(redis_url), frame_ttl_s=5, history_length=10, alerts_length=3)


def result(seq: int, camera_id: str = "cam") -> FrameResult:
    return FrameResult(camera_id=camera_id, frame_id=f"{camera_id}:{seq}", seq=seq, captured_at=1000.0 + seq,
                       processed_at=1000.5 + seq, width=640, height=480, detector="test", llm_enabled=False,
                       detections=(), groups=(), risk_level=RiskLevel.NONE)


def alert(n: int, camera_id: str = "cam", level: RiskLevel = RiskLevel.HIGH) -> Alert:
    return Alert(alert_id=f"{camera_id}:{n}:g0", camera_id=camera_id, frame_id=f"{camera_id}:{n}",
                 created_at=1000.0 + n, risk_level=level, risk_type="t", reason="r", source="rules",
                 group_id="g0")


@pytest.mark.parametrize(
    ("arrival", "latest"),
    [([1, 2, 3], 3), ([3, 1, 2], 3), ([2, 2, 1], 2), ([5], 5)],
)
def test_latest_never_moves_back(store: Store, arrival: list[int], latest: int) -> None:
    for seq in arrival:
        store.save_result(result(seq))
    found = store.latest("cam")
    assert found is not None and found.seq == latest


@pytest.mark.parametrize(
    "arrival",
    [
        [1, 2, 3, 4, 5],
        [3, 1, 2, 5, 4],  # finished out of order
        [1, 2, 2, 3, 4, 5, 5],  # redelivered
        [5, 3, 5, 1, 4, 2, 3, 1],  # both
    ],
)
def test_results_out_of_order_and_twice_are_as_if_once_in_order(store: Store, arrival: list[int]) -> None:
    became_latest = [store.save_result(result(seq)).is_latest for seq in arrival]
    latest = store.latest("cam")
    assert latest is not None and latest.seq == 5
    assert [r.seq for r in store.history("cam")] == [5, 4, 3, 2, 1]
    seen: set[int] = set()
    for seq, became in zip(arrival, became_latest, strict=True):  # only a new, newest frame moves latest
        assert became == (seq not in seen and seq > max(seen, default=0))
        seen.add(seq)


def test_history_is_capped_and_newest_first(store: Store) -> None:
    for seq in range(300):
        store.save_result(result(seq))
    history = store.history("cam", count=500)
    assert history[0].seq == 299
    assert len(history) < 300  # approximate trimming keeps it near history_length


def test_alert_filters_and_redelivery(store: Store) -> None:
    assert store.add_alert(alert(1, level=RiskLevel.MEDIUM), now=1010)
    assert store.add_alert(alert(2, camera_id="other"), now=1010)
    assert not store.add_alert(alert(2, camera_id="other"), now=1010)  # the same alert again
    assert [a.alert_id for a in store.alerts()] == ["other:2:g0", "cam:1:g0"]
    assert [a.camera_id for a in store.alerts(camera_id="cam")] == ["cam"]
    assert [a.camera_id for a in store.alerts(level=RiskLevel.HIGH)] == ["other"]
    assert store.alerts(since=1001.5)[0].alert_id == "other:2:g0"
    assert len(store.alerts(since=1001.5)) == 1
    store.change_alert_state("cam:1:g0", AlertState.ACKNOWLEDGED, now=1020)
    assert [a.alert_id for a in store.alerts(state=AlertState.OPEN)] == ["other:2:g0"]


def test_alerts_are_capped_with_their_evidence(store: Store) -> None:
    for n in range(6):
        store.add_alert(alert(n), now=1010)
        store.put_evidence(alert(n), "frame", b"jpeg")
    assert [a.frame_id for a in store.alerts()] == ["cam:5", "cam:4", "cam:3"]
    assert store.evidence("cam:2:g0", "frame") is None and store.get_alert("cam:2:g0") is None
    assert store.alerts()[0].evidence == ("frame",)


def test_alerts_past_their_retention_go(store: Store) -> None:
    store.evidence_retention_s = 100
    store.add_alert(alert(1), now=1050)
    store.add_alert(alert(60), now=1150)  # alert 1, created at 1001, is past 100 s; alert 60 is not
    assert [a.frame_id for a in store.alerts()] == ["cam:60"]


def test_only_the_newest_alerts_keep_evidence(store: Store) -> None:
    store.evidence_alerts = 2
    for n in range(3):
        store.add_alert(alert(n), now=1010)
        store.put_evidence(alert(n), "crop", b"crop")
        store.put_evidence(alert(n), "clip", b"clip")
    assert [a.evidence for a in store.alerts()] == [("crop", "clip"), ("crop", "clip"), ()]
    assert store.evidence("cam:1:g0", "clip") == b"clip"


@pytest.mark.parametrize(
    ("steps", "states"),
    [
        (["acknowledged", "resolved"], ["acknowledged", "resolved"]),
        (["resolved"], ["resolved"]),
        (["acknowledged", "acknowledged"], ["acknowledged", "acknowledged"]),  # a second click: no change
        (["open"], ["open"]),
        (["resolved", "acknowledged"], ["resolved", "error"]),
        (["acknowledged", "open"], ["acknowledged", "error"]),
        (["resolved", "resolved"], ["resolved", "error"]),
    ],
)
def test_alert_lifecycle(store: Store, steps: list[str], states: list[str]) -> None:
    store.add_alert(alert(1), now=1010)
    for n, (step, expected) in enumerate(zip(steps, states, strict=True)):
        if expected == "error":
            with pytest.raises(ValueError, match="cannot become"):
                store.change_alert_state("cam:1:g0", AlertState(step), now=2000 + n)
            continue
        changed = store.change_alert_state("cam:1:g0", AlertState(step), now=2000 + n)
        assert changed is not None and changed.state == expected and changed.updated_at == 2000 + n
        assert store.get_alert("cam:1:g0") == changed
    assert store.change_alert_state("cam:9:g0", AlertState.RESOLVED, now=2000) is None


def test_cameras_and_statuses(store: Store) -> None:
    store.put_camera(Camera(id="b", url="x"))
    store.put_camera(Camera(id="a", url="y", sample_fps=2))
    assert [c.id for c in store.list_cameras()] == ["a", "b"]
    store.put_status(CameraStatus(camera_id="a", state=CameraState.ONLINE, updated_at=time.time()))
    assert store.statuses()["a"].state is CameraState.ONLINE
    assert store.delete_camera("a")
    assert not store.delete_camera("a")
    assert "a" not in store.statuses()
    assert store.get_camera("a") is None


def test_frames_expire(store: Store) -> None:
    key = store.put_frame("cam", 7, b"jpeg")
    assert store.get_blob(key) == b"jpeg"
    assert 0 < store.client.ttl(key) <= 5
    assert store.get_blob("tr:frame:none:1") is None


def test_backpressure_caps_frames_in_flight(store: Store) -> None:
    now = 1000.0
    assert store.reserve_frames(["a", "b"], now, limit=2) == {"a": 1, "b": 1}
    assert store.reserve_frames(["a"], now, limit=2) == {"a": 2}
    assert store.reserve_frames(["a", "b"], now, limit=2) == {"a": 0, "b": 2}  # a is full
    assert store.dropped() == {"backpressure": 1}
    assert store.end_flight("a", "a:1")  # aggregate finished a frame
    assert store.reserve_frames(["a"], now, limit=2) == {"a": 3}
    # A frame lost on the way counts as lost after the flight timeout (20 s by default).
    assert store.reserve_frames(["b"], now + 31, limit=2) == {"b": 3}
    assert store.dropped() == {"backpressure": 1, "lost": 2}


# Each frame offered counts once, at its first outcome: offered = stored + dropped + in flight.
# (steps, then offered, stored, dropped, in flight); a step is reserve N frames of camera a
# at time t, with `unpublished` frames from a Redis outage, or end a frame's flight.
LEDGER = [
    ("stored", [("reserve", 0, 0), ("store", "a:1")], 1, 1, {}, 0),
    ("dropped", [("reserve", 0, 0), ("drop", "a:1", "corrupt")], 1, 0, {"corrupt": 1}, 0),
    ("redelivered result counts once", [("reserve", 0, 0), ("store", "a:1"), ("store", "a:1")], 1, 1, {}, 0),
    ("stored after a drop counts once", [("reserve", 0, 0), ("drop", "a:1", "expired"), ("store", "a:1")],
     1, 0, {"expired": 1}, 0),
    ("in flight", [("reserve", 0, 0), ("reserve", 0, 0)], 2, 0, {}, 2),
    ("backpressure", [("reserve", 0, 0), ("reserve", 0, 0), ("reserve", 0, 0)], 3, 0, {"backpressure": 1}, 2),
    ("lost after the timeout", [("reserve", 0, 0), ("reserve", 31, 0)], 2, 0, {"lost": 1}, 1),
    ("a lost frame's late result counts nothing", [("reserve", 0, 0), ("reserve", 31, 0), ("store", "a:1")],
     2, 0, {"lost": 1}, 1),
    ("unpublished during an outage", [("reserve", 0, 5)], 6, 0, {"unpublished": 5}, 1),
    ("a frame never offered counts nothing", [("store", "a:9")], 0, 0, {}, 0),
]


@pytest.mark.parametrize(("steps", "offered", "stored", "dropped", "flying"), [row[1:] for row in LEDGER],
                         ids=[row[0] for row in LEDGER])
def test_frame_ledger(store: Store, steps: list[tuple[Any, ...]], offered: int, stored: int,
                      dropped: dict[str, int], flying: int) -> None:
    for step in steps:
        if step[0] == "reserve":
            store.reserve_frames(["a"], 1000.0 + step[1], limit=2, unpublished=step[2])
        else:
            store.end_flight("a", step[1], dropped=step[2] if step[0] == "drop" else None)
    assert store.frame_counts() == {"offered": offered, "stored": stored}
    assert store.dropped() == dropped
    assert store.frames_in_flight(["a"]) == flying
    assert offered == stored + sum(dropped.values()) + flying


# What Redis did between two beats, and whether the camera's numbers go on by one.
RESTARTS = [
    ("nothing", None, True),
    ("restarted from an old save", "restore", False),
    ("restarted without its data", "flush", False),
]


@pytest.mark.parametrize(("restart", "consecutive"), [row[1:] for row in RESTARTS],
                         ids=[row[0] for row in RESTARTS])
def test_frame_numbers_never_repeat(store: Store, restart: str | None, consecutive: bool) -> None:
    now = time.time()
    given = [store.reserve_frames(["a"], now, limit=99)["a"] for _ in range(10)]
    assert starts_run(given[0])  # a first start counts as a restart: a run begins
    assert given == list(range(given[0], given[0] + 10))
    if restart == "restore":  # the save had the numbers up to the third; its run id was another
        store.client.set("tr:seq:a", given[2])
        store.client.set("tr:redis_run", "before")
    elif restart == "flush":
        store.client.flushall()
    after = store.reserve_frames(["a"], now + 1, limit=99)["a"]
    assert after > given[-1]
    assert (after == given[-1] + 1) == consecutive
    assert starts_run(after) != consecutive


@pytest.mark.parametrize(
    ("now", "floor"),
    [
        (SEQ_FLOOR_SINCE - 1, 0),  # before 2026 (the tests' early clocks): numbers from 1
        (SEQ_FLOOR_SINCE, SEQ_BLOCK),
        (SEQ_FLOOR_SINCE + 0.9, SEQ_BLOCK),  # within the same second: the same floor
        (SEQ_FLOOR_SINCE + 1, 2 * SEQ_BLOCK),
        (SEQ_FLOOR_SINCE + 86400 * 365, (86400 * 365 + 1) * SEQ_BLOCK),
    ],
)
def test_seq_floor(now: float, floor: int) -> None:
    assert seq_floor(now) == floor
    # above every number a camera sampling at 15 fps got from a floor a second or more before
    for later_s in (1, 60, 86400):
        assert seq_floor(now + later_s) > seq_floor(now) + 15 * later_s


def test_bursts(store: Store) -> None:
    store.start_burst("a", 0.3)
    assert store.bursting(["a", "b"]) == {"a"}
    time.sleep(0.4)
    assert store.bursting(["a", "b"]) == set()
    assert store.bursting([]) == set()


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ({"limit": 3}, [449, 448, 447]),
        ({"camera_id": "rare", "limit": 3}, [300, 150, 0]),  # found across pages
        ({"camera_id": "rare", "limit": 100}, [300, 150, 0]),
        ({"camera_id": "rare", "since": 1100.0}, [300, 150]),
        ({"camera_id": "none"}, []),
    ],
)
def test_alerts_are_read_a_page_at_a_time(redis_url: str, query: dict[str, Any], found: list[int]) -> None:
    store = Store(redis.Redis.from_url(redis_url), alerts_length=1000)
    for n in range(450):
        store.add_alert(alert(n, camera_id="rare" if n % 150 == 0 else "busy"), now=1500)
    assert [int(a.frame_id.split(":")[1]) for a in store.alerts(**query)] == found


def test_new_alerts_wait_to_be_opened_and_a_stopped_opener_loses_none(store: Store) -> None:
    engine = PatternEngine([RiskyGroup(name="risky", cooldown_s=0)], lateness_s=0)
    for seq in (1, 2):
        frame = engine.frame_facts(scripted_result(seq, HIGH))
        store.advance_patterns("cam", lambda state, frame=frame: engine.advance(state, frame), now=1_000_100)
    first = store.claim_alerts_to_open("cam", lease_s=0.3)
    assert [a.alert_id for a in first] == ["cam:risky:1", "cam:risky:2"]
    assert store.claim_alerts_to_open("cam") == []  # another worker is opening them
    store.alert_opened(first[0])
    time.sleep(0.4)  # the opener stopped before finishing alert 2: its lease runs out
    assert [a.alert_id for a in store.claim_alerts_to_open("cam")] == ["cam:risky:2"]
    store.alert_opened(first[1])
    time.sleep(0.4)
    assert store.claim_alerts_to_open("cam") == []


# ---------------------------------------------------------------- verification
def verdict(verification: Verification, source: VerdictSource = VerdictSource.LLM) -> Verdict:
    return Verdict(risk_level=RiskLevel.HIGH, risk_type="t", confidence=0.9,
                   reason=f"{verification} by {source}", source=source, verification=verification)


POTENTIAL_LLM = (ConflictSeverity.POTENTIAL, verdict(Verification.CONFIRMED))
SERIOUS_LLM = (ConflictSeverity.SERIOUS, verdict(Verification.REJECTED))
SERIOUS_FALLBACK = (ConflictSeverity.SERIOUS, verdict(Verification.UNVERIFIED, VerdictSource.FALLBACK))


@pytest.mark.parametrize(
    ("arrivals", "kept"),
    [
        ([POTENTIAL_LLM], [True]),
        ([POTENTIAL_LLM, SERIOUS_LLM], [True, True]),  # a graver severity's verdict wins
        ([SERIOUS_LLM, POTENTIAL_LLM], [True, False]),  # a late, lesser one does not take it back
        ([SERIOUS_LLM, SERIOUS_FALLBACK], [True, False]),  # a redelivery's failed call keeps the LLM's
        ([SERIOUS_FALLBACK, SERIOUS_LLM], [True, True]),
        ([SERIOUS_LLM, SERIOUS_LLM], [True, True]),  # a redelivery: the same again
    ],
    ids=["one", "graver-wins", "lesser-late", "fallback-late", "llm-after-fallback", "twice"],
)
def test_a_conflicts_weightiest_verdict_is_kept(
    store: Store, arrivals: list[tuple[ConflictSeverity, Verdict]], kept: list[bool]
) -> None:
    event = conflict_event(27)
    assert event is not None
    store.save_conflicts([event], now=1000.0)
    outcomes = [store.save_verdict(event.conflict_id, v, severity) for severity, v in arrivals]
    assert [o is not None for o in outcomes] == kept
    winner = [v for (_, v), ok in zip(arrivals, kept, strict=True) if ok][-1]
    stored = store.get_conflict(event.conflict_id)
    assert stored is not None and stored.verdict == winner
    newer = event.model_copy(update={"updated_seq": 28})
    store.save_conflicts([newer], now=1000.0)  # a new version keeps the verdict
    assert (again := store.get_conflict(event.conflict_id)) is not None and again.verdict == winner
    assert store.conflicts()[0].verdict == winner


def test_a_verdict_for_a_conflict_that_is_gone_is_dropped(store: Store) -> None:
    assert store.save_verdict("cam:1-2:3", verdict(Verification.CONFIRMED), ConflictSeverity.SERIOUS) is None


@pytest.mark.parametrize(("verify", "asks", "waiting"), [(True, True, 1), (True, False, 0), (False, True, 0)])
def test_conflicts_that_ask_wait_to_be_queued(store: Store, verify: bool, asks: bool, waiting: int) -> None:
    event = conflict_event(27)
    assert event is not None
    store.save_conflicts([event.model_copy(update={"to_verify": asks})], now=1000.0, verify=verify)
    first = store.claim_verifications(event.camera_id, lease_s=0.3)
    assert len(first) == waiting
    assert store.claim_verifications(event.camera_id) == []  # leased to the first worker
    if waiting:
        time.sleep(0.4)  # that worker stopped before queueing it: it comes back
        (again,) = store.claim_verifications(event.camera_id)
        store.verification_queued(again)
        time.sleep(0.4)
    assert store.claim_verifications(event.camera_id) == []


def conflict_alerts(store: Store, verified_before: Verdict | None) -> list[Alert]:
    """The story's conflict through the built-in pattern, with a verdict stored before
    its alert (or none); the alerts it raised."""
    engine = PatternEngine([ConflictPattern(name="conflict")], lateness_s=0)
    event = conflict_event(27)
    assert event is not None
    store.save_conflicts([event], now=1000.0)
    if verified_before is not None:
        store.save_verdict(event.conflict_id, verified_before, ConflictSeverity.SERIOUS)
    frame = engine.frame_facts(scripted_result(27, conflicts=(event,)))
    return store.advance_patterns("cam", lambda state: engine.advance(state, frame), now=1_000_100)


@pytest.mark.parametrize(
    ("verification", "resolve", "state"),
    [
        (Verification.CONFIRMED, True, AlertState.OPEN),
        (Verification.UNCERTAIN, True, AlertState.OPEN),
        (Verification.REJECTED, True, AlertState.RESOLVED),
        (Verification.REJECTED, False, AlertState.OPEN),
        (Verification.UNVERIFIED, True, AlertState.OPEN),  # the LLM failed: the reason, no change
    ],
)
@pytest.mark.parametrize("verdict_first", [False, True], ids=["alert-first", "verdict-first"])
def test_a_verdict_reaches_the_conflicts_alert_in_either_order(
    redis_url: str, verification: Verification, resolve: bool, state: AlertState, verdict_first: bool
) -> None:
    store = Store(redis.Redis.from_url(redis_url), resolve_rejected=resolve)
    given = verdict(verification, VerdictSource.FALLBACK if verification is Verification.UNVERIFIED else
                    VerdictSource.LLM)
    (raised,) = conflict_alerts(store, given if verdict_first else None)
    assert raised.conflicts == ("cam:7-8:25",)
    if not verdict_first:
        assert raised.verification is Verification.UNVERIFIED and raised.verdict is None
        event = store.save_verdict("cam:7-8:25", given, ConflictSeverity.SERIOUS)
        assert event is not None
        ((_, opened),) = store.verify_alerts(event, now=1_000_200)
        assert not opened  # still waiting to be opened: it goes out verified when it does
    stored = store.get_alert(raised.alert_id)
    assert stored is not None
    assert (stored.verification, stored.state, stored.verdict) == (verification, state, given)


@pytest.mark.parametrize(
    ("wait_s", "verified_first", "age_s", "claimed"),
    [(0.0, False, 0.0, True), (5.0, False, 1.0, False), (5.0, False, 6.0, True), (5.0, True, 1.0, True)],
    ids=["no-wait", "waiting", "waited-enough", "verified"],
)
def test_alerts_held_for_their_verdict(
    store: Store, wait_s: float, verified_first: bool, age_s: float, claimed: bool
) -> None:
    (raised,) = conflict_alerts(store, verdict(Verification.CONFIRMED) if verified_first else None)
    found = store.claim_alerts_to_open("cam", now=raised.created_at + age_s, wait_s=wait_s)
    assert [a.alert_id for a in found] == ([raised.alert_id] if claimed else [])
    if not claimed:  # not leased meanwhile: a later task opens it once it may
        (later,) = store.claim_alerts_to_open("cam", now=raised.created_at + wait_s, wait_s=wait_s)
        assert later.alert_id == raised.alert_id


def test_alerts_filtered_by_verification(store: Store) -> None:
    (raised,) = conflict_alerts(store, verdict(Verification.REJECTED))
    other = alert(1).model_copy(update={"created_at": 1_000_050.0})
    store.add_alert(other, now=1_000_100)  # not a conflict's: nothing to verify
    assert [a.alert_id for a in store.alerts(verification=Verification.REJECTED)] == [raised.alert_id]
    assert store.alerts(verification=Verification.CONFIRMED) == []
    assert len(store.alerts()) == 2
