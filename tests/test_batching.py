"""The micro-batchers: one for the detect worker's model, one for the assess worker's LLM calls;
and conflicts queued together sent to the assess worker in tasks that share an LLM request."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import redis

from conftest import ROOT, LlmSim, start_worker, stop_all, wait_for, worker_env
from trafficrisk.messages import (
    Assessment,
    AssessRequest,
    Box,
    ConflictChange,
    ConflictEvent,
    ConflictSeverity,
    Detection,
    EncounterFrame,
    VerdictSource,
    Verification,
)
from trafficrisk.queues import LLM_LOW_QUEUE
from trafficrisk.workers.batching import BatchedDetector, LeaderBatcher, MicroBatcher
from trafficrisk.workers.llm_batching import frame_batches
from trafficrisk.workers.store import Store

Batcher = MicroBatcher[int, int] | LeaderBatcher[int, int]
BATCHERS = [MicroBatcher, LeaderBatcher]


def doubled(items: Sequence[int]) -> list[int]:
    if -1 in items:
        raise ValueError("bad item -1")
    if -2 in items:
        return []  # a process function that loses results
    time.sleep(0.01)
    return [2 * item for item in items]


def submit_together(batcher: Batcher, items: list[int]) -> list[int | str]:
    """Submit from one thread per item, all at once; each result or error message."""
    results: list[int | str] = [0] * len(items)
    start = threading.Barrier(len(items))

    def call(index: int) -> None:
        start.wait()
        try:
            results[index] = batcher.run(items[index])
        except Exception as error:
            results[index] = str(error)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(items))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return results


@pytest.mark.slow  # waits out real batch windows of up to 0.5 s
@pytest.mark.parametrize(
    ("max_batch", "max_wait_s", "items", "results", "largest_batch"),
    [
        (4, 0.5, [1, 2, 3, 4], [2, 4, 6, 8], 4),  # a full batch goes at once
        (4, 0.05, [1, 2], [2, 4], 2),  # a partial one goes after the wait
        (2, 0.5, [1, 2, 3, 4, 5], [2, 4, 6, 8, 10], 2),  # never more than max_batch
        (1, 0.0, [1, 2, 3], [2, 4, 6], 1),
        (8, 0.5, [1, -1, 3], ["bad item -1"] * 3, 3),  # one failure: every caller of the batch hears it
        (8, 0.5, [5, -2], ["batch of 2 gave 0 results"] * 2, 2),
    ],
)
@pytest.mark.parametrize("kind", BATCHERS)
def test_batches_form_and_results_come_back_in_order(
    kind: type[Batcher], max_batch: int, max_wait_s: float, items: list[int], results: list[int | str],
    largest_batch: int
) -> None:
    batcher = kind(doubled, max_batch=max_batch, max_wait_s=max_wait_s)
    try:
        assert submit_together(batcher, items) == results
        assert max(batcher.batch_sizes) == largest_batch
        assert sum(batcher.batch_sizes) == len(items)
        assert batcher.run(21) == 42  # a failed batch does not stop the batcher
    finally:
        if isinstance(batcher, MicroBatcher):
            batcher.close()


def test_leader_batches_run_at_the_same_time() -> None:
    """Each batch runs on its first caller's thread: slow calls overlap, as unbatched ones would."""
    running, most = [0], [0]
    lock = threading.Lock()

    def slow(items: Sequence[int]) -> list[int]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.3)
        with lock:
            running[0] -= 1
        return list(items)

    batcher = LeaderBatcher(slow, max_batch=2, max_wait_s=0.05)
    assert sorted(submit_together(batcher, list(range(8))), key=str) == list(range(8))
    assert batcher.batch_sizes == [2, 2, 2, 2]
    assert most[0] == 4  # a MicroBatcher would have run them one after another


class OneAtATime:
    """A detector that, like an OpenCV DNN net, must not run on two threads at once: it
    counts the calls that overlapped and labels each image by its own first pixel."""

    name = "one-at-a-time"

    def __init__(self) -> None:
        self.running, self.overlapped, self.lock = 0, 0, threading.Lock()

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        with self.lock:
            self.running += 1
            self.overlapped += self.running > 1
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        return [[Detection(label=str(int(image[0, 0, 0])), confidence=0.9, box=Box(x1=0, y1=0, x2=1, y2=1))]
                for image in images]


@pytest.mark.parametrize("max_batch", [1, 4])
def test_a_batched_detector_runs_its_model_on_one_thread(max_batch: int) -> None:
    inner = OneAtATime()
    detector = BatchedDetector(inner, max_batch=max_batch, max_wait_s=0.01)
    images = [np.full((4, 4, 3), n, dtype=np.uint8) for n in range(16)]
    try:
        with ThreadPoolExecutor(8) as pool:  # a detect worker's task threads
            labels = list(pool.map(lambda image: detector.detect([image])[0][0].label, images))
    finally:
        detector.close()
    assert inner.overlapped == 0
    assert labels == [str(n) for n in range(16)]  # each frame its own boxes


def test_a_lone_item_goes_alone_once_it_has_waited() -> None:
    batcher = MicroBatcher(doubled, max_batch=64, max_wait_s=0.05)
    try:
        assert batcher.submit(3).result(timeout=5) == 6  # the batch of 64 never fills
    finally:
        batcher.close()
    assert batcher.batch_sizes == [1]


@pytest.mark.parametrize("kind", BATCHERS)
@pytest.mark.parametrize(("max_batch", "max_wait_s"), [(0, 0.01), (4, -1.0)])
def test_bad_limits_are_refused(kind: type[Batcher], max_batch: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError, match="max_batch must be >= 1"):
        kind(doubled, max_batch=max_batch, max_wait_s=max_wait_s)


def test_a_closed_batcher_refuses_work() -> None:
    batcher = MicroBatcher(doubled, max_batch=2, max_wait_s=0.01)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.run(1)


Kind = Literal["vehicle-pedestrian", "vehicle-vehicle"]


def assess_request(n: int, high: bool, frame_key: str = "missing",
                   kind: Kind = "vehicle-pedestrian") -> AssessRequest:
    """Conflict `c:<n>` (serious when `high`) to verify from one frame, its JPEG under `frame_key`."""
    event = ConflictEvent(
        conflict_id=f"c:{n}", camera_id="c", first_track=2 * n, second_track=2 * n + 1, first_label="car",
        second_label="car" if kind == "vehicle-vehicle" else "person", kind=kind,
        conflict_type="crossing", severity=ConflictSeverity.SERIOUS if high else ConflictSeverity.POTENTIAL,
        change=ConflictChange.OPENED, start_at=time.time() - 1, end_at=time.time(), start_frame="c:1",
        last_frame="c:5", updated_seq=5, min_ttc_s=1.0 if high else 2.5, min_ttc_frame="c:5", to_verify=True,
    )
    frame = EncounterFrame(frame_id="c:5", frame_key=frame_key, moment="now", offset_s=1.0)
    return AssessRequest(conflict=event, frames=(frame,), box=Box(x1=50, y1=50, x2=300, y2=300), width=768,
                         height=576, high_priority=high, queued_at=time.time())


@pytest.mark.parametrize(
    ("priorities", "max_batch", "batches"),
    [
        ([], 4, []),
        ([False, False, False], 4, [["c:0", "c:1", "c:2"]]),
        ([False, True, False, True], 4, [["c:1", "c:3"], ["c:0", "c:2"]]),  # high first, never mixed
        ([False] * 5, 2, [["c:0", "c:1"], ["c:2", "c:3"], ["c:4"]]),
        ([True, False], 1, [["c:0"], ["c:1"]]),  # batching off: a task a conflict
        ([True] * 3, 16, [["c:0", "c:1", "c:2"]]),
    ],
)
def test_conflicts_queued_together_go_in_tasks_of_one_priority(priorities: list[bool], max_batch: int,
                                                               batches: list[list[str]]) -> None:
    requests = [assess_request(n, high) for n, high in enumerate(priorities)]
    assert [[r.conflict_id for r in batch] for batch in frame_batches(requests, max_batch)] == batches


@pytest.mark.slow
def test_conflicts_queued_together_share_one_llm_request_in_a_real_assess_worker(
    redis_url: str, producer: Any, tmp_path: Path
) -> None:
    store = Store(redis.Redis.from_url(redis_url))
    frame = store.put_frame("c", 5, (ROOT / "data" / "dog.jpg").read_bytes())
    kinds: list[Kind] = ["vehicle-pedestrian", "vehicle-vehicle", "vehicle-pedestrian"]
    requests = [assess_request(n, False, frame, kind).to_wire() for n, kind in enumerate(kinds)]
    sim = LlmSim("--latency-min", "0.05", "--latency-max", "0.1", "--verify", "vehicle-vehicle=rejected")
    env = worker_env(redis_url=redis_url, llm_base_url=sim.url, llm_api_keys="sk-test-0001",
                     llm_batch_size="4", llm_cache_ttl_s="0")
    log = tmp_path / "assess.log"
    procs = {"assess": start_worker("assess", env, log)}
    try:
        sent = producer.send_task("trafficrisk.assess_many", args=[requests], queue=LLM_LOW_QUEUE)
        wait_for(sent.ready, 60, "the conflicts' assessments", log.read_text)
        assessments = [Assessment.from_wire(a) for a in sent.get(timeout=1)]
        report = sim.report()
    finally:
        stop_all(procs)
        sim.stop()
    assert [a.conflict_id for a in assessments] == ["c:0", "c:1", "c:2"]
    assert {a.verdict.source for a in assessments} == {VerdictSource.LLM}
    # Each conflict its own verdict from the one reply: the rule rejects only the second.
    assert [a.verdict.verification for a in assessments] == [
        Verification.CONFIRMED, Verification.REJECTED, Verification.CONFIRMED]
    assert report["requests"] == 1  # three conflicts, one multi-image request
    assert store.llm_outcomes()["llm"] == 3
