"""assess: one group's LLM verdict; always returns, so the chord always fires."""

from __future__ import annotations

import logging
import time
from functools import cache
from typing import Any

from trafficrisk.messages import AssessRequest
from trafficrisk.runtime import get_redis, get_store
from trafficrisk.settings import get_settings
from trafficrisk.tasks.app import app
from trafficrisk.workers.assessment import AssessPolicy, assess_safely
from trafficrisk.workers.key_pool import KeyLimits, KeyPool
from trafficrisk.workers.llm import Judge, LlmClient
from trafficrisk.workers.llm_batching import BatchedLlm
from trafficrisk.workers.scene_cache import SceneCache

log = logging.getLogger(__name__)


@cache
def get_llm_client() -> Judge | None:
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


@app.task(name="trafficrisk.assess")
def assess_group(request: dict[str, Any]) -> dict[str, Any]:
    parsed = AssessRequest.from_wire(request)
    policy = AssessPolicy(low_max_age_s=get_settings().llm_low_max_age_s)
    assessment = assess_safely(parsed, get_store().get_blob, get_llm_client(), policy, get_scene_cache())
    store = get_store()
    store.count_llm_outcome(assessment.outcome, assessment.tokens)
    if assessment.outcome == "llm":
        store.record_llm_timing(parsed.high_priority, assessment.wait_s, time.time() - parsed.queued_at)
    return assessment.to_wire()
