"""Per-process shared clients built from the settings, each made once on first use."""

from __future__ import annotations

from functools import cache

import redis

from trafficrisk.events import EventBus
from trafficrisk.settings import get_settings
from trafficrisk.workers.store import Store


@cache
def get_redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, health_check_interval=30)


@cache
def get_store() -> Store:
    settings = get_settings()
    return Store(get_redis(), frame_ttl_s=settings.frame_ttl_s, history_length=settings.history_length,
                 alerts_length=settings.alerts_length)


@cache
def get_events() -> EventBus:
    return EventBus(get_settings().redis_url)
