"""llm.high before llm.low: a real assess worker, started with both queues full."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from celery import Celery
from celery.result import AsyncResult

from conftest import LlmSim, start_worker, stop_all, wait_for, worker_env
from trafficrisk.messages import AssessRequest, Box, FrameRef, Group, RiskLevel, Verdict, VerdictSource
from trafficrisk.queues import LLM_HIGH_QUEUE, LLM_LOW_QUEUE

# Real processes (workers, servers, a browser): not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

RULES = Verdict(risk_level=RiskLevel.MEDIUM, risk_type="proximity", confidence=0.5, reason="rules",
                source=VerdictSource.RULES)


def request(n: int, high: bool) -> dict[str, object]:
    group = Group(group_id=f"g{n}", members=(0, 1), labels=("person", "car"), box=Box(x1=0, y1=0, x2=9, y2=9),
                  prescore=0.7 if high else 0.45, rules_verdict=RULES)
    frame = FrameRef(camera_id="c", seq=n, captured_at=time.time(), frame_key="k", width=64, height=48)
    return AssessRequest(frame=frame, group=group, crop_key="missing", high_priority=high,
                         queued_at=time.time()).to_wire()


def test_high_priority_work_is_served_first(producer: Celery, redis_url: str, tmp_path: Path) -> None:
    assert LLM_HIGH_QUEUE < LLM_LOW_QUEUE  # the broker serves a worker's queues in name order
    low = [producer.send_task("trafficrisk.assess", args=[request(n, False)], queue=LLM_LOW_QUEUE)
           for n in range(6)]
    high = [producer.send_task("trafficrisk.assess", args=[request(n, True)], queue=LLM_HIGH_QUEUE)
            for n in range(6, 12)]
    sim = LlmSim("--latency-min", "0.01", "--latency-max", "0.02")
    env = worker_env(redis_url=redis_url, llm_base_url=sim.url, llm_api_keys="sk-test-0001",
                     llm_concurrency="1")
    log = tmp_path / "assess.log"
    procs = {"assess": start_worker("assess", env, log)}
    try:
        wait_for(lambda: all(r.ready() for r in low + high), 60, "every assessment", log.read_text)
        done = {r.id: AsyncResult(r.id, app=producer).date_done for r in low + high}
    finally:
        stop_all(procs)
        sim.stop()
    assert max(done[r.id] for r in high) < min(done[r.id] for r in low)
