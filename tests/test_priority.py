"""llm.high before llm.low: a real assess worker, started with both queues full."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from conftest import DATA, LlmSim, start_worker, stop_all, wait_for, worker_env
from trafficrisk.messages import (
    Assessment,
    AssessRequest,
    Box,
    ConflictChange,
    ConflictEvent,
    ConflictSeverity,
    EncounterFrame,
    VerdictSource,
)
from trafficrisk.queues import LLM_HIGH_QUEUE, LLM_LOW_QUEUE
from trafficrisk.workers.store import Store

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow


def request(n: int, high: bool, frame_key: str) -> dict[str, object]:
    """Conflict `c:<n>` to verify, serious (and sent to llm.high) when `high`."""
    event = ConflictEvent(
        conflict_id=f"c:{n}", camera_id="c", first_track=2 * n, second_track=2 * n + 1, first_label="car",
        second_label="person", kind="vehicle-pedestrian", conflict_type="crossing",
        severity=ConflictSeverity.SERIOUS if high else ConflictSeverity.POTENTIAL,
        change=ConflictChange.OPENED, start_at=time.time() - 1, end_at=time.time(), start_frame="c:1",
        last_frame="c:5", updated_seq=5, min_ttc_s=1.0 if high else 2.5, min_ttc_frame="c:5", to_verify=True,
    )
    frame = EncounterFrame(frame_id="c:5", frame_key=frame_key, moment="now", offset_s=1.0)
    return AssessRequest(conflict=event, frames=(frame,), box=Box(x1=50, y1=50, x2=300, y2=300), width=768,
                         height=576, high_priority=high, queued_at=time.time()).to_wire()


def test_high_priority_work_is_served_first(producer: Celery, redis_url: str, tmp_path: Path) -> None:
    assert LLM_HIGH_QUEUE < LLM_LOW_QUEUE  # the broker serves a worker's queues in name order
    frame = Store(redis.Redis.from_url(redis_url)).put_frame("c", 5, (DATA / "dog.jpg").read_bytes())
    low = [producer.send_task("trafficrisk.assess", args=[request(n, False, frame)], queue=LLM_LOW_QUEUE)
           for n in range(6)]
    high = [producer.send_task("trafficrisk.assess", args=[request(n, True, frame)], queue=LLM_HIGH_QUEUE)
            for n in range(6, 12)]
    sim = LlmSim("--latency-min", "0.01", "--latency-max", "0.02")
    env = worker_env(redis_url=redis_url, llm_base_url=sim.url, llm_api_keys="sk-test-0001",
                     llm_concurrency="1", llm_cache_ttl_s="0")
    log = tmp_path / "assess.log"
    procs = {"assess": start_worker("assess", env, log)}
    try:
        wait_for(lambda: all(r.ready() for r in low + high), 60, "every assessment", log.read_text)
        done = {r.id: AsyncResult(r.id, app=producer).date_done for r in low + high}
        assessments = [Assessment.from_wire(r.get(timeout=1)) for r in high + low]
        requests = sim.report()["requests"]
    finally:
        stop_all(procs)
        sim.stop()
    assert max(done[r.id] for r in high) < min(done[r.id] for r in low)
    # Each one a verification by the LLM, of its own conflict.
    assert [a.conflict_id for a in assessments] == [f"c:{n}" for n in [*range(6, 12), *range(6)]]
    assert [a.high_priority for a in assessments] == [True] * 6 + [False] * 6
    assert {a.verdict.source for a in assessments} == {VerdictSource.LLM} and requests == 12
