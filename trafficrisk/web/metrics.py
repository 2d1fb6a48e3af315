"""/metrics: Prometheus text, computed from Redis at scrape time."""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, Response
from prometheus_client import CollectorRegistry, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from trafficrisk.messages import CameraState
from trafficrisk.queues import QUEUES
from trafficrisk.web.api import store
from trafficrisk.web.auth import api_auth_required

blueprint = Blueprint("metrics", __name__)

# kombu keeps each priority band of a Redis queue in its own list: "q" for the
# default band and "q\x06\x16<n>" for the others.
_PRIORITY_SUFFIXES = ("", *tuple(f"\x06\x16{n}" for n in range(1, 10)))


def queue_depth(client: Any, queue: str) -> int:
    pipe = client.pipeline()
    for suffix in _PRIORITY_SUFFIXES:
        pipe.llen(queue + suffix)
    return sum(cast(list[int], pipe.execute()))


@blueprint.get("/metrics")
@api_auth_required
def metrics() -> Response:
    registry = CollectorRegistry()
    depth = Gauge("queue_depth", "Messages waiting in a Celery queue", ["queue"], registry=registry)
    for queue in QUEUES:
        depth.labels(queue=queue).set(queue_depth(store().client, queue))
    online = Gauge("cameras_online", "Cameras currently delivering frames", registry=registry)
    online.set(sum(1 for s in store().statuses().values() if s.state is CameraState.ONLINE))
    cameras = Gauge("cameras_configured", "Cameras configured", registry=registry)
    cameras.set(len(store().list_cameras()))
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
