"""/metrics: Prometheus text, computed from Redis at scrape time.

Every process of the fleet writes its counts to Redis, so the web process can
report for all of them without a Prometheus multiprocess directory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trafficrisk.messages import AlertState, CameraState
from trafficrisk.queues import QUEUES
from trafficrisk.web.api import store
from trafficrisk.web.auth import metrics_auth_required
from trafficrisk.web.openapi import describe
from trafficrisk.workers.store import Store

blueprint = Blueprint("metrics", __name__)

# kombu keeps each priority band of a Redis queue in its own list: "q" for the
# default band and "q\x06\x16<n>" for the others.
_PRIORITY_SUFFIXES = ("", *(f"\x06\x16{n}" for n in range(1, 10)))


def nearest_rank(ordered: list[float], quantile: float) -> float:
    """The quantile of sorted, non-empty values by the nearest rank."""
    return ordered[min(len(ordered) - 1, int(quantile * len(ordered)))]


def queue_depth(client: Any, queue: str) -> int:
    pipe = client.pipeline()
    for suffix in _PRIORITY_SUFFIXES:
        pipe.llen(queue + suffix)
    return sum(cast(list[int], pipe.execute()))


class FleetCollector:
    def __init__(self, fleet_store: Store) -> None:
        self.store = fleet_store

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("queue_depth", "Messages waiting in a Celery queue", labels=["queue"])
        for queue in QUEUES:
            depth.add_metric([queue], queue_depth(self.store.client, queue))
        yield depth
        dropped = CounterMetricFamily("frames_dropped", "Frames sampled but never detected",
                                      labels=["reason"])
        for reason, count in sorted(self.store.dropped().items()):
            dropped.add_metric([reason], count)
        yield dropped
        # The ledger: offered = stored + dropped + in flight (docs/reliability.md).
        counts = self.store.frame_counts()
        yield CounterMetricFamily("frames_offered", "Frames sampled and offered for detection",
                                  value=counts["offered"])
        yield CounterMetricFamily("frames_stored", "Frames whose result was stored", value=counts["stored"])
        statuses = self.store.statuses().values()
        yield GaugeMetricFamily("cameras_online", "Cameras delivering frames",
                                value=sum(1 for s in statuses if s.state is CameraState.ONLINE))
        yield GaugeMetricFamily("cameras_configured", "Cameras configured",
                                value=len(self.store.list_cameras()))
        yield from self.collect_llm()
        yield from self.collect_alerts()

    def collect_alerts(self) -> Iterator[Metric]:
        alerts = GaugeMetricFamily("alerts", "Alerts kept, by state", labels=["state"])
        counts = self.store.alert_states()
        for state in AlertState:
            alerts.add_metric([state], counts.get(state, 0))
        yield alerts
        late = CounterMetricFamily("results_late", "Results that came after their minute had closed",
                                   labels=["camera"])
        for camera_id, count in sorted(self.store.late_results().items()):
            late.add_metric([camera_id], count)
        yield late
        webhooks = CounterMetricFamily("webhook_deliveries", "Webhook tries, by outcome", labels=["outcome"])
        for outcome in ("delivered", "retried", "failed"):
            webhooks.add_metric([outcome], self.store.webhooks().get(outcome, 0))
        yield webhooks

    def collect_llm(self) -> Iterator[Metric]:
        outcomes = self.store.llm_outcomes()
        requests = CounterMetricFamily("llm_requests", "Groups assessed, by outcome: llm (answered), cache, "
                                       "fallback (failed), shed (too old for llm.low)", labels=["outcome"])
        for outcome in ("llm", "cache", "fallback", "shed"):
            requests.add_metric([outcome], outcomes.get(outcome, 0))
        yield requests
        yield CounterMetricFamily("llm_cache_hits", "Groups answered from the scene cache",
                                  value=outcomes.get("cache", 0))
        yield CounterMetricFamily("llm_tokens", "Tokens billed by the LLM provider",
                                  value=outcomes.get("tokens", 0))
        latency = GaugeMetricFamily("llm_latency_seconds", "Queued by detect to verdict, over the latest "
                                    "assessments", labels=["priority", "quantile"])
        for high in (True, False):
            turnarounds = sorted(self.store.llm_turnarounds(high))
            for quantile in (0.5, 0.95):
                if turnarounds:
                    latency.add_metric(["high" if high else "low", str(quantile)],
                                       nearest_rank(turnarounds, quantile))
        yield latency


@blueprint.get("/metrics")
@metrics_auth_required
@describe(answer="text/plain")
def metrics() -> Response:
    """The fleet's Prometheus metrics, computed from Redis at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
