"""Per-process shared clients built from the settings, each made once on first use."""

from __future__ import annotations

from functools import cache

import redis

from trafficrisk.connections import REDIS_OPTIONS, redis_client
from trafficrisk.events import EventBus
from trafficrisk.messages import RiskLevel
from trafficrisk.settings import Settings, get_settings
from trafficrisk.workers.conflicts import Thresholds
from trafficrisk.workers.patterns import PatternEngine, load_patterns
from trafficrisk.workers.store import Store


@cache
def get_redis() -> redis.Redis:
    return redis_client(get_settings().redis_url)


@cache
def get_store() -> Store:
    return Store.from_settings(get_redis(), get_settings())


@cache
def get_events() -> EventBus:
    return EventBus(get_settings().redis_url, REDIS_OPTIONS)


@cache
def get_pattern_engine() -> PatternEngine:
    settings = get_settings()
    patterns = load_patterns(settings.patterns_file, RiskLevel(settings.alert_level))
    return PatternEngine(patterns, settings.lateness_s)


@cache
def get_thresholds() -> Thresholds:
    settings = get_settings()
    return thresholds_from(settings)


def thresholds_from(settings: Settings) -> Thresholds:
    return Thresholds(
        serious_ttc_s=settings.serious_ttc_s,
        potential_ttc_s=settings.potential_ttc_s,
        serious_pet_s=settings.serious_pet_s,
        potential_pet_s=settings.potential_pet_s,
        serious_drac=settings.serious_drac,
        confirm_frames=settings.conflict_confirm_frames,
        end_after_s=settings.conflict_end_s,
        verify_potential_after_s=settings.verify_potential_after_s,
    )
