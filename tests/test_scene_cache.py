"""The per-camera scene cache: same scene, same camera, within the TTL, and nothing else."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import redis

from conftest import DATA, LlmSim
from trafficrisk.messages import (
    AssessRequest,
    Box,
    FrameRef,
    Group,
    PairMeasure,
    RiskLevel,
    Verdict,
    VerdictSource,
)
from trafficrisk.workers.assessment import assess
from trafficrisk.workers.llm import LlmClient
from trafficrisk.workers.scene_cache import MAX_ENTRIES, SceneCache, difference_hash

DOG = cv2.imread(str(DATA / "dog.jpg"))
RULES = Verdict(risk_level=RiskLevel.MEDIUM, risk_type="proximity", confidence=0.5, reason="rules",
                source=VerdictSource.RULES)
LLM = Verdict(risk_level=RiskLevel.HIGH, risk_type="near miss", confidence=0.9, reason="the truck is close",
              source=VerdictSource.LLM)


def jpeg(image: np.ndarray) -> bytes:
    return bytes(cv2.imencode(".jpg", image)[1])


def group(ttc_s: float | None = 2.0, labels: tuple[str, ...] = ("person", "car")) -> Group:
    pair = PairMeasure(first=0, second=1, gap_m=12.0, closing_speed=5.0, ttc_s=ttc_s)
    return Group(group_id="g0", members=(0, 1), labels=labels, box=Box(x1=0, y1=0, x2=9, y2=9), prescore=0.5,
                 rules_verdict=RULES, pairs=(pair,))


@pytest.mark.parametrize(
    ("other", "close"),
    [
        (DOG, True),
        (cv2.convertScaleAbs(DOG, alpha=1.0, beta=12), True),  # a little brighter
        (cv2.GaussianBlur(DOG, (5, 5), 0), True),  # a little softer
        (cv2.flip(DOG, 1), False),  # another scene
        (np.full_like(DOG, 128), False),
    ],
)
def test_difference_hash_tells_the_same_scene_from_another(other: np.ndarray, close: bool) -> None:
    a, b = difference_hash(jpeg(DOG)), difference_hash(jpeg(other))
    assert a is not None and b is not None
    assert ((a ^ b).bit_count() <= 6) is close


def test_difference_hash_of_bytes_that_are_no_image() -> None:
    assert difference_hash(b"not a jpeg") is None


@pytest.mark.parametrize(
    ("camera", "looked_up", "crop", "hit"),
    [
        ("cam1", group(), jpeg(DOG), True),
        ("cam1", group(), jpeg(cv2.convertScaleAbs(DOG, alpha=1.0, beta=12)), True),
        ("cam2", group(), jpeg(DOG), False),  # never across cameras
        ("cam1", group(ttc_s=1.0), jpeg(DOG), False),  # the conflict got serious
        ("cam1", group(labels=("person", "bus")), jpeg(DOG), False),
        ("cam1", group(), jpeg(cv2.flip(DOG, 1)), False),
    ],
)
def test_lookup(client: redis.Redis, camera: str, looked_up: Group, crop: bytes, hit: bool) -> None:
    cache = SceneCache(client, ttl_s=60)
    cache.store("cam1", group(), jpeg(DOG), LLM)
    found = cache.lookup(camera, looked_up, crop)
    assert (found is not None) is hit
    if found is not None:
        assert found.source is VerdictSource.CACHE
        assert (found.risk_level, found.reason) == (LLM.risk_level, LLM.reason)


@pytest.mark.parametrize(("age_s", "hit"), [(59.0, True), (61.0, False)])
def test_entries_are_answered_within_the_ttl_of_the_clock(client: redis.Redis, age_s: float,
                                                          hit: bool) -> None:
    now = [5000.0]
    cache = SceneCache(client, ttl_s=60, clock=lambda: now[0])
    cache.store("cam1", group(), jpeg(DOG), LLM)
    now[0] += age_s
    assert (cache.lookup("cam1", group(), jpeg(DOG)) is not None) is hit


def test_entries_expire_and_stay_bounded(client: redis.Redis) -> None:
    cache = SceneCache(client, ttl_s=0.5)
    cache.store("cam1", group(), jpeg(DOG), LLM)
    time.sleep(0.6)
    assert cache.lookup("cam1", group(), jpeg(DOG)) is None
    noise = np.random.default_rng(1)
    for _ in range(MAX_ENTRIES + 8):
        cache.store("cam1", group(), jpeg(noise.integers(0, 255, (64, 64, 3), dtype=np.uint8)), LLM)
    assert max(client.hlen(key) for key in client.keys("tr:llmcache:*")) == MAX_ENTRIES


def test_a_repeated_scene_is_answered_from_the_cache(llm_sim: LlmSim, client: redis.Redis) -> None:
    llm_sim.configure()
    frame = FrameRef(camera_id="cam1", seq=1, captured_at=time.time(), frame_key="k", width=640, height=480)
    request = AssessRequest(frame=frame, group=group(), crop_key="k", high_priority=True,
                            queued_at=time.time())
    cache = SceneCache(client, ttl_s=60)
    before = llm_sim.report()["requests"]
    with LlmClient(llm_sim.url, "sim", None, timeout_s=5) as llm:
        first = assess(request, jpeg(DOG), llm, cache=cache)
        second = assess(request, jpeg(DOG), llm, cache=cache)
    assert (first.outcome, second.outcome) == ("llm", "cache")
    assert second.verdict.risk_level is first.verdict.risk_level
    assert llm_sim.report()["requests"] - before == 1
