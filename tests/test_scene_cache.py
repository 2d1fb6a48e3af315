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
    ConflictChange,
    ConflictEvent,
    ConflictSeverity,
    EncounterFrame,
    RiskLevel,
    Verdict,
    VerdictSource,
    Verification,
)
from trafficrisk.workers.assessment import AssessPolicy, assess
from trafficrisk.workers.llm import LlmClient
from trafficrisk.workers.scene_cache import MAX_ENTRIES, SceneCache, difference_hash, geometry_signature

DOG_JPEG = (DATA / "dog.jpg").read_bytes()
DOG = cv2.imread(str(DATA / "dog.jpg"))
LLM = Verdict(risk_level=RiskLevel.HIGH, risk_type="near miss", confidence=0.9, reason="the truck is close",
              source=VerdictSource.LLM, verification=Verification.REJECTED)
EVENT = ConflictEvent(
    conflict_id="cam1:1-2:10", camera_id="cam1", first_track=1, second_track=2, first_label="person",
    second_label="car", kind="vehicle-pedestrian", conflict_type="crossing",
    severity=ConflictSeverity.POTENTIAL, change=ConflictChange.OPENED, start_at=1000.0, end_at=1002.0,
    start_frame="cam1:10", last_frame="cam1:20", updated_seq=20, min_ttc_s=2.0, min_ttc_frame="cam1:15",
    first_speed_mps=1.4, second_speed_mps=5.0, to_verify=True,
)


def jpeg(image: np.ndarray) -> bytes:
    return bytes(cv2.imencode(".jpg", image)[1])


def conflict(**fields: object) -> ConflictEvent:
    """EVENT with these fields changed (another version of it, or another conflict)."""
    return EVENT.model_copy(update=fields)


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
    ("looked_up", "image", "hit"),
    [
        (EVENT, jpeg(DOG), True),
        (EVENT, jpeg(cv2.convertScaleAbs(DOG, alpha=1.0, beta=12)), True),
        # Tracks lost and found: another conflict event of the same scene and measures.
        (conflict(conflict_id="cam1:7-8:30", first_track=7, second_track=8, min_ttc_s=2.4), jpeg(DOG), True),
        (conflict(first_label="car", second_label="person"), jpeg(DOG), True),  # the pair in either order
        (conflict(change=ConflictChange.ENDED, updated_seq=25), jpeg(DOG), True),  # a later version
        (conflict(camera_id="cam2"), jpeg(DOG), False),  # never across cameras
        (conflict(min_ttc_s=1.0), jpeg(DOG), False),  # the time to collision got serious
        (conflict(severity=ConflictSeverity.SERIOUS), jpeg(DOG), False),
        (conflict(second_label="bus"), jpeg(DOG), False),
        (conflict(conflict_type="rear-end"), jpeg(DOG), False),
        (conflict(kind="vehicle-vehicle"), jpeg(DOG), False),
        (conflict(pet_s=0.5), jpeg(DOG), False),  # a PET now, and a close one
        (conflict(min_ttc_s=None), jpeg(DOG), False),
        (EVENT, jpeg(cv2.flip(DOG, 1)), False),  # another scene
        (EVENT, b"not a jpeg", False),  # error row: nothing to fingerprint
    ],
)
def test_lookup(client: redis.Redis, looked_up: ConflictEvent, image: bytes, hit: bool) -> None:
    cache = SceneCache(client, ttl_s=60)
    cache.store(EVENT, jpeg(DOG), LLM)
    found = cache.lookup(looked_up, image)
    assert (found is not None) is hit
    if found is not None:
        assert found.source is VerdictSource.CACHE
        assert (found.risk_level, found.reason, found.verification) == (LLM.risk_level, LLM.reason,
                                                                        LLM.verification)


def test_an_image_that_is_no_jpeg_is_not_stored(client: redis.Redis) -> None:
    SceneCache(client, ttl_s=60).store(EVENT, b"not a jpeg", LLM)
    assert client.keys("tr:llmcache:*") == []


@pytest.mark.parametrize(
    ("changes", "same"),
    [
        ({"first_label": "car", "second_label": "person"}, True),
        ({"min_ttc_s": 1.6, "pet_s": 1.1}, True),  # still on the potential side of both bands
        ({"severity": ConflictSeverity.POTENTIAL, "change": ConflictChange.UPDATED, "max_drac": 9.0}, True),
        ({"min_ttc_s": 1.5}, False),  # 1.5 s and under: serious
        ({"pet_s": 1.0}, False),
        ({"pet_s": None}, False),  # no PET is a band of its own
        ({"conflict_type": "head-on"}, False),
        ({"severity": ConflictSeverity.SERIOUS}, False),
    ],
)
def test_the_geometry_signature_buckets_the_measures(changes: dict[str, object], same: bool) -> None:
    base = conflict(pet_s=3.0)
    assert (geometry_signature(base.model_copy(update=changes)) == geometry_signature(base)) is same


@pytest.mark.parametrize(("age_s", "hit"), [(59.0, True), (61.0, False)])
def test_entries_are_answered_within_the_ttl_of_the_clock(client: redis.Redis, age_s: float,
                                                          hit: bool) -> None:
    now = [5000.0]
    cache = SceneCache(client, ttl_s=60, clock=lambda: now[0])
    cache.store(EVENT, jpeg(DOG), LLM)
    now[0] += age_s
    assert (cache.lookup(EVENT, jpeg(DOG)) is not None) is hit


def test_entries_expire_and_stay_bounded(client: redis.Redis) -> None:
    cache = SceneCache(client, ttl_s=0.5)
    cache.store(EVENT, jpeg(DOG), LLM)
    time.sleep(0.6)
    assert cache.lookup(EVENT, jpeg(DOG)) is None
    noise = np.random.default_rng(1)
    for _ in range(MAX_ENTRIES + 8):
        cache.store(EVENT, jpeg(noise.integers(0, 255, (64, 64, 3), dtype=np.uint8)), LLM)
    assert max(client.hlen(key) for key in client.keys("tr:llmcache:*")) == MAX_ENTRIES


def request(event: ConflictEvent) -> AssessRequest:
    frames = tuple(EncounterFrame(frame_id=f"{event.camera_id}:{seq}", frame_key=f"k{seq}", moment=moment,
                                  offset_s=offset)
                   for seq, moment, offset in ((10, "start", 0.0), (20, "now", 2.0)))
    return AssessRequest(conflict=event, frames=frames, box=Box(x1=50, y1=50, x2=300, y2=300), width=768,
                         height=576, high_priority=True, queued_at=time.time())


@pytest.mark.parametrize(
    ("second", "multi_image", "outcome", "requests"),
    [
        (EVENT, True, "cache", 1),
        (conflict(conflict_id="cam1:7-8:30", first_track=7, second_track=8), True, "cache", 1),  # found again
        (EVENT, False, "cache", 1),  # one mosaic image: its fingerprint
        (conflict(camera_id="cam2"), True, "llm", 2),  # another camera asks the LLM
        (conflict(severity=ConflictSeverity.SERIOUS, min_ttc_s=1.0), True, "llm", 2),  # it got serious
    ],
)
def test_a_repeated_scene_is_answered_from_the_cache(llm_sim: LlmSim, client: redis.Redis,
                                                     second: ConflictEvent, multi_image: bool, outcome: str,
                                                     requests: int) -> None:
    llm_sim.configure()
    cache = SceneCache(client, ttl_s=60)
    policy = AssessPolicy(multi_image=multi_image)
    frames = [DOG_JPEG, DOG_JPEG]
    before = llm_sim.report()["requests"]
    with LlmClient(llm_sim.url, "sim", None, timeout_s=5) as llm:
        first = assess(request(EVENT), frames, llm, policy, cache=cache)
        again = assess(request(second), frames, llm, policy, cache=cache)
    assert (first.outcome, again.outcome) == ("llm", outcome)
    assert again.conflict_id == second.conflict_id  # the verdict reused, for this conflict
    assert again.verdict.verification is Verification.CONFIRMED
    assert (again.tokens == 0) is (outcome == "cache")  # a cached verdict bills nothing
    assert llm_sim.report()["requests"] - before == requests
