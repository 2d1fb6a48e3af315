"""Aggregation stores a camera's results as if they had come once, in order.

Frame results finish out of order (several detect and assess workers) and twice (a
redelivered task). Latest, history, per-minute windows and alerts must not show it,
within the allowed lateness. Against a real Redis, and through a real aggregate worker.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from scripted import (
    CAMERA,
    START,
    STORY_ALERTS,
    STORY_PATTERNS,
    conflict_event,
    jittered,
    moved,
    patterns_yaml,
    scripted_story,
)

from conftest import BEFORE_THE_FLOOR, SAMPLE_VIDEO, start_worker, stop_all, wait_for, worker_env
from trafficrisk.messages import Alert, Assessment, FrameRef, FrameResult, RiskLevel, Verdict, Verification
from trafficrisk.queues import AGGREGATE_QUEUE, DETECT_QUEUE
from trafficrisk.workers.aggregation import record_result
from trafficrisk.workers.patterns import PatternEngine
from trafficrisk.workers.store import Store, frame_key, opening_key, patterns_key

LATENESS_S = 10.0
STORY = scripted_story()
FIRST_MINUTE, NEXT_MINUTE = START - 20, START + 40  # frames 1..39 and 40..45


@pytest.fixture
def store(client: Any) -> Store:
    return Store(client, lateness_s=LATENESS_S)


def deliver(store: Store, arrivals: list[FrameResult]) -> None:
    engine = PatternEngine(STORY_PATTERNS, LATENESS_S)
    for result in arrivals:
        record_result(store, engine, result, now=START + 100)


def snapshot(store: Store) -> dict[str, Any]:
    latest = store.latest(CAMERA)
    return {
        "latest": latest.seq if latest else None,
        "history": [r.seq for r in store.history(CAMERA, 100)],
        "minutes": [m.to_wire() for m in store.minutes([CAMERA], FIRST_MINUTE, NEXT_MINUTE)],
        "alerts": sorted((a.to_wire() for a in store.alerts()), key=lambda a: a["alert_id"]),
        "late": store.late_results(),
    }


@pytest.mark.parametrize(
    "arrivals",
    [
        list(reversed(STORY[:8])) + STORY[8:],
        jittered(STORY, delay=8, duplicates=0, seed=3),
        jittered(STORY, delay=8, duplicates=15, seed=4),
        STORY + list(reversed(STORY)),
        moved(STORY, 39, after=45),  # the last frame of a minute, 6 s late: still counts
    ],
    ids=["burst-backwards", "jittered", "jittered-twice", "all-twice", "late-in-bound"],
)
def test_out_of_order_and_twice_is_as_if_once_in_order(store: Store, arrivals: list[FrameResult]) -> None:
    deliver(store, STORY)
    in_order = snapshot(store)
    store.client.flushdb()
    deliver(store, arrivals)
    assert snapshot(store) == in_order
    assert in_order["latest"] == 45 and in_order["history"] == list(range(45, 0, -1))
    assert {a["alert_id"] for a in in_order["alerts"]} == STORY_ALERTS
    first, after = in_order["minutes"]
    assert (first["frames"], after["frames"]) == (39, 6)
    assert first["levels"] == {"none": 16, "low": 0, "medium": 19, "high": 4} and first["alerts"] == 5
    assert first["classes"] == {"car": 12, "person": 42}


@pytest.mark.parametrize(
    ("late_after", "counted_in_first", "late"),
    [
        (None, 39, {}),
        (44, 39, {}),  # watermark 5 s past the minute's end: open
        (49, 39, {}),  # 9 s past: open
        (50, 38, {CAMERA: 1}),  # 10 s past, the lateness: closed
        (55, 38, {CAMERA: 1}),
    ],
)
def test_a_late_result_counts_in_its_minute_within_the_lateness(store: Store, late_after: int | None,
                                                                   counted_in_first: int,
                                                                   late: dict[str, int]) -> None:
    story = scripted_story(frames=55)
    deliver(store, story if late_after is None else moved(story, 39, after=late_after))
    first, after = store.minutes([CAMERA], FIRST_MINUTE, NEXT_MINUTE)
    assert (first.frames, after.frames) == (counted_in_first, 16)
    assert store.late_results() == late
    assert [r.seq for r in store.history(CAMERA, 100)] == list(range(55, 0, -1))  # stored all the same
    latest = store.latest(CAMERA)
    assert latest is not None and latest.seq == 55


def test_minutes_sum_cameras_and_fill_gaps(store: Store) -> None:
    deliver(store, scripted_story(frames=3))
    deliver(store, [r.model_copy(update={"camera_id": "other", "frame_id": f"other:{r.seq}"})
                    for r in scripted_story(frames=2)])
    minutes = store.minutes([CAMERA, "other"], FIRST_MINUTE - 60, NEXT_MINUTE)
    assert [m.start for m in minutes] == [FIRST_MINUTE - 60, FIRST_MINUTE, NEXT_MINUTE]
    assert [m.frames for m in minutes] == [0, 5, 0]
    assert minutes[1].levels[RiskLevel.MEDIUM] == 5


# Through a real aggregate worker process: four task threads take the results in any order.

def sample_jpeg() -> bytes:
    capture = cv2.VideoCapture(str(SAMPLE_VIDEO))
    ok, image = capture.read()
    capture.release()
    assert ok
    return bytes(cv2.imencode(".jpg", image)[1])


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Real detect (no model: no detections), aggregate and alerts (clips) worker processes;
    yields their logs."""
    patterns = tmp_path / "patterns.yaml"
    patterns.write_text(patterns_yaml(STORY_PATTERNS))
    env = worker_env(redis_url=redis_url, lateness_s=str(LATENESS_S), clip_before_s="2", clip_after_s="1",
                     model="none", detect_batch_size="1", patterns_file=str(patterns))
    roles = ("detect", "aggregate", "alerts")
    procs = {role: start_worker(role, env, tmp_path / f"{role}.log") for role in roles}

    def logs() -> str:
        return "\n".join(f"--- {role}\n{(tmp_path / f'{role}.log').read_text()[-3000:]}" for role in procs)

    try:
        wait_for(lambda: all(" ready." in (tmp_path / f"{role}.log").read_text() for role in procs), 60,
                 "the workers", logs)
        yield logs
    finally:
        stop_all(procs)


@pytest.mark.slow
def test_a_real_worker_takes_shuffled_redelivered_results_as_if_in_order(
        client: Any, producer: Any, workers: Callable[[], str]) -> None:
    start = (time.time() // 60) * 60 - 100  # recent, so nothing is past its retention
    story = scripted_story(start=start)
    store = Store(client, lateness_s=LATENESS_S)
    store.put_frames([(CAMERA, r.seq, sample_jpeg()) for r in story])
    for result in jittered(story, delay=6, duplicates=10, seed=5):
        producer.send_task("trafficrisk.aggregate", args=[result.to_wire()], queue=AGGREGATE_QUEUE)
    logs = workers
    wait_for(lambda: len(store.history(CAMERA, 100)) == 45, 60, "all 45 results", logs)
    alerts = wait_for(lambda: len(a := store.alerts()) == 5 and a, 30, "five alerts", logs)
    assert {a.alert_id for a in alerts} == STORY_ALERTS
    assert [r.seq for r in store.history(CAMERA, 100)] == list(range(45, 0, -1))
    minutes = store.minutes([CAMERA], start + 20, start + 80)
    assert [m.frames for m in minutes] == [39, 6] and minutes[0].alerts == 5

    def with_clips() -> list[Alert] | None:
        alerts = store.alerts()
        return alerts if all("clip" in a.evidence for a in alerts) else None

    for alert in wait_for(with_clips, 60, "a clip for every alert", logs):
        assert alert.evidence == ("frame", "crop", "clip")
        crop = cv2.imdecode(np.frombuffer(store.evidence(alert.alert_id, "crop") or b"", np.uint8),
                            cv2.IMREAD_COLOR)
        assert crop is not None and 0 < crop.shape[1] < 768  # the group's box, not the frame
        clip = store.evidence(alert.alert_id, "clip") or b""
        assert clip[:4] == b"\x1a\x45\xdf\xa3"  # EBML: a WebM file
    assert client.smembers(opening_key(CAMERA)) == set()  # every alert opened, none left waiting


@pytest.mark.slow
def test_a_frame_detect_drops_holds_up_no_pattern(client: Any, producer: Any,
                                                   workers: Callable[[], str]) -> None:
    store, now, jpeg = Store(client), time.time(), sample_jpeg()
    # offered as capture offers them, so the ledger has them in flight
    # (at a time before the frame-number floor, workers/store.py: numbers from 1)
    seqs = [store.reserve_frames(["drops"], BEFORE_THE_FLOOR, 8)["drops"] for _ in range(8)]
    assert seqs == list(range(1, 9))
    refs = [FrameRef(camera_id="drops", seq=seq, captured_at=now + seq / 5, frame_key=frame_key("drops", seq),
                     width=768, height=576) for seq in range(1, 9)]
    store.put_frames([("drops", ref.seq, jpeg) for ref in refs if ref.seq != 5])  # frame 5 expired
    for ref in refs:
        producer.send_task("trafficrisk.detect", args=[ref.to_wire()], queue=DETECT_QUEUE)
    wait_for(lambda: len(store.history("drops", 20)) == 7, 60, "results of the 7 frames left", workers)
    # Frames 6-8 came 0.2-0.6 s after the lost one, far inside the 10 s lateness: had the
    # patterns not been told, they would still be waiting for frame 5.
    state = wait_for(lambda: (raw := client.get(patterns_key("drops"))) and json.loads(raw)["next"] == 9
                     and json.loads(raw), 30, "the patterns past frame 8", workers)
    assert state["pending"] == {}
    assert store.dropped() == {"expired": 1}


@pytest.mark.slow
def test_record_verdicts_takes_assessments_as_one_list_or_one_each(client: Any, producer: Any,
                                                                   workers: Callable[[], str]) -> None:
    store, now = Store(client), time.time()
    events = []
    for n in range(3):
        event = conflict_event(27, start=now, camera_id="nested")
        assert event is not None
        events.append(event.model_copy(update={"conflict_id": f"nested:7-8:{n}"}))
    store.save_conflicts(events, now)
    verifications = [Verification.CONFIRMED, Verification.REJECTED, Verification.UNCERTAIN]
    assessments = [
        Assessment(conflict_id=e.conflict_id, camera_id="nested", severity=e.severity,
                   verdict=Verdict(risk_level=RiskLevel.HIGH, risk_type="t", confidence=0.9,
                                   reason=f"llm: {v}", verification=v)).to_wire()
        for e, v in zip(events, verifications, strict=True)
    ]
    # the first two came back together (assess_many), the third alone (assess)
    producer.send_task("trafficrisk.record_verdicts", args=[[assessments[:2], assessments[2]]],
                       queue=AGGREGATE_QUEUE)

    def verdicts() -> list[Verdict] | None:
        stored = [store.get_conflict(e.conflict_id) for e in events]
        found = [c.verdict for c in stored if c is not None and c.verdict is not None]
        return found if len(found) == len(events) else None

    found = wait_for(verdicts, 30, "the three verdicts", workers)
    assert [v.verification for v in found] == verifications
    assert [v.reason for v in found] == [f"llm: {v}" for v in verifications]


@pytest.mark.parametrize(
    ("arrivals", "frames_returned"),
    [
        ([1, 2, 3], [1, 2, 3]),  # each save returns its minute's counts so far
        ([1, 1, 2], [1, None, 2]),  # a redelivery counts nothing and returns none
        ([38, 50, 39, 51], [1, None, None, None]),  # 50 and 51 fall in the next minute; 39 came too late
    ],
)
def test_a_save_returns_its_minutes_counts(store: Store, arrivals: list[int],
                                           frames_returned: list[int | None]) -> None:
    story = {r.seq: r for r in scripted_story(frames=55)}
    returned = [store.save_result(story[seq]).minute for seq in arrivals]
    first = FIRST_MINUTE
    assert [m.frames if m and m.start == first else None for m in returned] == frames_returned
    assert [m for m in returned if m and m.start == first][-1] == store.minutes([CAMERA], first, first)[0]
