"""GET /api/system: the fleet's health at a glance, for the dashboard's system panel.

Everything comes from Redis, where every process of the fleet writes its counts, except
the live workers, which answer a Celery ping, sent through a Celery app of its own that
only knows the broker (no task modules, no engines).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from celery import Celery
from flask import Blueprint, current_app, jsonify

from trafficrisk.queues import QUEUES
from trafficrisk.settings import Settings
from trafficrisk.web.api import store
from trafficrisk.web.auth import api_auth_required
from trafficrisk.web.bodies import SystemReport
from trafficrisk.web.metrics import nearest_rank, queue_depth
from trafficrisk.web.openapi import describe
from trafficrisk.workers.key_pool import KeyLimits, KeyPool

log = logging.getLogger(__name__)
blueprint = Blueprint("system", __name__, url_prefix="/api")
# /healthz, for load balancers and liveness probes: no credential, nothing but up or down.
probes = Blueprint("probes", __name__)
HEALTH_TIMEOUT_S = 2.0  # under a probe's usual 5 s: a stuck Redis reads as down, not as a hang

PING_TIMEOUT_S = 1.0
# A ping waits its whole timeout for answers: ask at most this often, whoever asks.
PING_CACHE_S = 5.0
QUANTILES = {"p50": 0.5, "p95": 0.95}


@dataclass(frozen=True)
class WorkerSighting:
    names: list[str]
    checked_at: float
    error: str | None = None


class WorkerProbe:
    """Which Celery workers answer a ping, asked at most every `cache_s` seconds."""

    def __init__(self, redis_url: str, *, timeout_s: float = PING_TIMEOUT_S,
                 cache_s: float = PING_CACHE_S) -> None:
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._last: WorkerSighting | None = None
        self._lock = threading.Lock()
        # Knows the broker and nothing else: no tasks, no engines imported.
        self._celery = Celery("trafficrisk-web", broker=redis_url, set_as_current=False)
        self._celery.conf.update(accept_content=["json"], task_serializer="json")

    def workers(self) -> WorkerSighting:
        last = self._last
        if self._is_fresh(last):
            return cast(WorkerSighting, last)
        # One ping at a time; whoever finds one under way takes the last answer (the very
        # first callers wait for it).
        if not self._lock.acquire(blocking=last is None):
            return cast(WorkerSighting, last)
        try:
            if not self._is_fresh(self._last):
                self._last = self._ping()
            return cast(WorkerSighting, self._last)
        finally:
            self._lock.release()

    def _is_fresh(self, sighting: WorkerSighting | None) -> bool:
        return sighting is not None and time.time() - sighting.checked_at < self.cache_s

    def _ping(self) -> WorkerSighting:
        try:
            replies = self._celery.control.ping(timeout=self.timeout_s)
        except Exception as error:  # the panel says so; the page must not break
            log.warning("worker ping failed: %s", type(error).__name__)
            return WorkerSighting([], time.time(), f"ping failed: {type(error).__name__}")
        names = sorted(name for reply in replies for name in reply)
        return WorkerSighting(names, time.time())


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    """p50 and p95 of the values (the nearest rank), and how many there were."""
    ordered = sorted(values)
    figures: dict[str, float | int | None] = {"count": len(ordered)}
    for name, quantile in QUANTILES.items():
        figures[name] = nearest_rank(ordered, quantile) if ordered else None
    return figures


def cache_hit_rate(outcomes: dict[str, int]) -> float | None:
    """Answers from the scene cache among all answers; None before the first."""
    answered = outcomes.get("cache", 0) + outcomes.get("llm", 0)
    return round(outcomes.get("cache", 0) / answered, 4) if answered else None


def key_states(settings: Settings) -> list[dict[str, Any]]:
    """Each LLM key, masked, with what Redis holds on it (read only: nothing is booked)."""
    keys = [k.get_secret_value() for k in settings.llm_api_keys]
    if not keys:
        return []
    limits = KeyLimits(settings.llm_rpm_per_key, settings.llm_tpm_per_key, settings.llm_concurrency_per_key)
    pool = KeyPool(store().client, keys, limits)
    return [{"key": s.masked, "state": s.state, "detail": s.detail,
             "requests_last_minute": s.requests_last_minute, "in_flight": s.in_flight,
             "rpm_limit": limits.rpm} for s in pool.states()]


def worker_probe() -> WorkerProbe:
    return cast(WorkerProbe, current_app.extensions["trafficrisk.worker_probe"])


@blueprint.get("/system")
@api_auth_required
@describe(answer=SystemReport)
def system() -> Any:
    """The fleet at a glance: queue depths, live workers (a Celery ping, at most every 5 s), the
    LLM's latency, outcomes and keys (masked), dropped frames and webhook deliveries."""
    settings: Settings = current_app.extensions["trafficrisk.settings"]
    fleet_store = store()
    sighting = worker_probe().workers()
    outcomes, webhooks = fleet_store.llm_outcomes(), fleet_store.webhooks()
    return jsonify(
        queues={queue: queue_depth(fleet_store.client, queue) for queue in QUEUES},
        workers={"alive": sighting.names, "count": len(sighting.names), "checked_at": sighting.checked_at,
                 "error": sighting.error},
        llm={"enabled": settings.is_llm_enabled,
             "latency_s": {priority: quantiles(fleet_store.llm_turnarounds(priority == "high"))
                           for priority in ("high", "low")},
             "outcomes": {k: v for k, v in outcomes.items() if k != "tokens"},
             "tokens": outcomes.get("tokens", 0),
             "cache_hit_rate": cache_hit_rate(outcomes)},
        keys=key_states(settings),
        dropped_frames=fleet_store.dropped(),
        webhooks={outcome: webhooks.get(outcome, 0)
                  for outcome in ("delivered", "retried", "failed")},
    )


@probes.get("/healthz")
def healthz() -> Any:
    try:
        current_app.extensions["trafficrisk.health_client"].ping()
    except redis.RedisError:
        return jsonify(status="unavailable"), 503
    return jsonify(status="ok")
