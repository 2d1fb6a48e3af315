"""assess: a conflict's verification by the LLM (or several conflicts' together); always
returns, so the chord always fires."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

from trafficrisk.messages import Assessment, AssessRequest
from trafficrisk.runtime import get_redis, get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.workers.assessment import AssessPolicy, assess_safely
from trafficrisk.workers.key_pool import KeyLimits, KeyPool
from trafficrisk.workers.llm import Judge, LlmClient
from trafficrisk.workers.llm_batching import BatchedLlm
from trafficrisk.workers.scene_cache import SceneCache

log = logging.getLogger(__name__)


_client_lock = threading.Lock()


def get_llm_client() -> Judge | None:
    """The process's one client: task threads asking at once on first use must not each
    build their own (each would batch and pool connections alone)."""
    with _client_lock:
        return _build_llm_client()


@cache
def _build_llm_client() -> Judge | None:
    settings = get_settings()
    if settings.llm_base_url is None:
        return None
    keys = [key.get_secret_value() for key in settings.llm_api_keys]
    limits = KeyLimits(settings.llm_rpm_per_key, settings.llm_tpm_per_key, settings.llm_concurrency_per_key)
    pool = KeyPool(get_redis(), keys, limits, high_reserve=settings.llm_high_reserve,
                   lease_s=settings.llm_timeout_s + 5) if keys else None
    client = LlmClient(settings.llm_base_url, settings.llm_model, pool, settings.llm_timeout_s,
                       settings.llm_max_tokens)
    if settings.llm_batch_size > 1:
        return BatchedLlm(client, settings.llm_batch_size, settings.llm_batch_wait_ms / 1000)
    return client


@cache
def get_scene_cache() -> SceneCache:
    return SceneCache(get_redis(), get_settings().llm_cache_ttl_s)


# Acknowledged when taken, not when done: a model call may outlast the visibility timeout
# (its message would be delivered again while still running), and a lost one costs
# nothing, since the conflict's claim lapses and the next frame of its camera asks again
# (docs/verification.md).
@app.task(name="trafficrisk.assess", acks_late=False)
def assess_conflict(request: dict[str, Any]) -> dict[str, Any]:
    return assess_and_count(AssessRequest.from_wire(request)).to_wire()


@app.task(name="trafficrisk.assess_many", acks_late=False)
def assess_conflicts(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conflicts queued together: with LLM batching on they share one request, however
    many assess processes there are (one task reaches one process)."""
    parsed = [AssessRequest.from_wire(request) for request in requests]
    with ThreadPoolExecutor(max_workers=len(parsed), thread_name_prefix="assess-many") as pool:
        return [a.to_wire() for a in pool.map(assess_and_count, parsed)]


def assess_and_count(request: AssessRequest) -> Assessment:
    settings = get_settings()
    policy = AssessPolicy(low_max_age_s=settings.llm_low_max_age_s, multi_image=settings.llm_multi_image)
    store = get_store()
    assessment = assess_safely(request, store.get_blob, get_llm_client(), policy, get_scene_cache())
    store.count_llm_outcome(assessment.outcome, assessment.tokens)
    if assessment.outcome == "llm":
        store.record_llm_timing(request.high_priority, assessment.wait_s, time.time() - request.queued_at)
    return assessment
