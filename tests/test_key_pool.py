"""The LLM key pool: limits shared through Redis, 429 cooldowns, refused keys, shedding."""

from __future__ import annotations

import logging
import threading
import time

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
    VerdictSource,
    Verification,
)
from trafficrisk.workers.assessment import AssessPolicy, assess
from trafficrisk.workers.key_pool import KeyLimits, KeyPool, NoKeyAvailable
from trafficrisk.workers.llm import LlmClient, LlmError
from trafficrisk.workers.store import Store

KEYS = ["sk-test-aaaa1111", "sk-test-bbbb2222"]
JPEG = (DATA / "dog.jpg").read_bytes()  # a frame; any JPEG does as a crop


def take(pool: KeyPool, count: int, *, high: bool = False, tokens: int = 100) -> int:
    """How many of `count` calls get a key at once (none waits)."""
    taken = 0
    for _ in range(count):
        try:
            pool.acquire(tokens, high=high, deadline=time.monotonic())
            taken += 1
        except NoKeyAvailable:
            pass
    return taken


@pytest.mark.parametrize(
    ("keys", "limits", "tokens", "calls", "taken"),
    [
        (KEYS[:1], KeyLimits(rpm=3, tpm=100_000, concurrency=100), 100, 5, 3),  # requests per minute
        (KEYS, KeyLimits(rpm=3, tpm=100_000, concurrency=100), 100, 8, 6),  # two keys, twice the room
        (KEYS[:1], KeyLimits(rpm=100, tpm=1000, concurrency=100), 400, 5, 2),  # tokens per minute
        (KEYS[:1], KeyLimits(rpm=100, tpm=100_000, concurrency=2), 100, 5, 2),  # in flight at once
    ],
)
def test_limits_hold(client: redis.Redis, keys: list[str], limits: KeyLimits, tokens: int, calls: int,
                     taken: int) -> None:
    assert take(KeyPool(client, keys, limits), calls, tokens=tokens) == taken


def test_released_calls_free_their_concurrency_and_settle_their_tokens(client: redis.Redis) -> None:
    pool = KeyPool(client, KEYS[:1], KeyLimits(rpm=100, tpm=1000, concurrency=1))
    lease = pool.acquire(900, high=False, deadline=time.monotonic())
    assert take(pool, 1) == 0  # in flight, and 900 of 1000 tokens booked
    pool.release(lease, tokens_used=200)  # the reply said 200
    assert take(pool, 1, tokens=700) == 1


@pytest.mark.parametrize(
    ("later_s", "tokens", "taken"),
    [
        (30, 200, 0),  # 900 of 1000 still in the window
        (30, 100, 1),
        (62, 1000, 1),  # the booking left the window and its tokens with it
        (62, 1001, 0),  # error row: more than a minute's tokens never fits
    ],
)
def test_tokens_leave_the_window_after_a_minute(client: redis.Redis, later_s: float, tokens: int,
                                                taken: int) -> None:
    now = [1_000_000.0]
    pool = KeyPool(client, KEYS[:1], KeyLimits(rpm=100, tpm=1000, concurrency=100), clock=lambda: now[0])
    pool.release(pool.acquire(900, high=False, deadline=time.monotonic()))
    now[0] += later_s
    assert take(pool, 1, tokens=tokens) == taken


@pytest.mark.parametrize(
    ("order", "taken"),
    [
        ([(False, 10), (True, 10)], [6, 4]),  # low stops at its 60 %; high still finds the rest
        ([(True, 5), (False, 10)], [5, 5]),  # high's own calls do not eat into low's share
        ([(True, 10), (False, 10)], [10, 0]),  # high may use it all
    ],
)
def test_high_priority_has_a_reserved_share(client: redis.Redis, order: list[tuple[bool, int]],
                                             taken: list[int]) -> None:
    pool = KeyPool(client, KEYS[:1], KeyLimits(rpm=10, tpm=100_000, concurrency=100), high_reserve=0.4)
    assert [take(pool, count, high=high) for high, count in order] == taken


def test_limits_hold_across_many_clients_at_once(redis_url: str, client: redis.Redis) -> None:
    limits = KeyLimits(rpm=25, tpm=1_000_000, concurrency=1000)
    taken: list[int] = []

    def worker() -> None:
        own = redis.Redis.from_url(redis_url)  # as a separate process would have
        taken.append(take(KeyPool(own, KEYS, limits), 10))
        own.close()

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(taken) == 50  # 120 tries, 2 keys x 25 a minute


def test_a_cooling_key_is_skipped_and_a_disabled_one_never_comes_back(client: redis.Redis) -> None:
    pool = KeyPool(client, KEYS, KeyLimits(rpm=100, tpm=100_000, concurrency=100))
    first = pool.acquire(10, high=True, deadline=time.monotonic())
    pool.cool_down(first, 30)
    second = pool.acquire(10, high=True, deadline=time.monotonic())
    assert second.key != first.key
    pool.disable(second, "http 401")
    with pytest.raises(NoKeyAvailable, match="rate limited"):
        pool.acquire(10, high=True, deadline=time.monotonic() + 0.3)
    states = {s.masked: (s.state, s.detail) for s in pool.states()}
    assert states == {f"...{first.key[-4:]}": ("cooling", "30 s left"),
                      f"...{second.key[-4:]}": ("disabled", "http 401")}
    pool.disable(first, "http 403")
    with pytest.raises(NoKeyAvailable, match="every LLM key is disabled"):
        pool.acquire(10, high=True, deadline=time.monotonic() + 5)


@pytest.mark.slow
def test_a_429_storm_cools_keys_for_every_worker(client: redis.Redis) -> None:
    """The provider allows 2 calls a minute per key while the pool was told 1000: after the
    first 429 on each key no further call reaches the provider until Retry-After."""
    sim = LlmSim("--latency-min", "0.01", "--latency-max", "0.02", "--rpm-per-key", "2",
                 "--retry-after-s", "30")
    pool = KeyPool(client, KEYS, KeyLimits(rpm=1000, tpm=10_000_000, concurrency=100))
    outcomes = []
    try:
        with LlmClient(sim.url, "sim", pool, timeout_s=2) as llm:
            for _ in range(10):
                try:
                    llm.assess([JPEG], "context")
                    outcomes.append("ok")
                except LlmError as error:
                    outcomes.append(error.reason)
        report = sim.report()
    finally:
        sim.stop()
    assert outcomes[:4] == ["ok"] * 4
    assert all(o.startswith("rate limited") for o in outcomes[4:]), outcomes
    assert (report["requests"], report["rejected_429"]) == (4, 2)  # one 429 per key, then silence
    assert {s.state for s in pool.states()} == {"cooling"}


def test_a_refused_key_is_disabled_and_the_call_goes_on_another(client: redis.Redis,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    sim = LlmSim("--latency-min", "0.01", "--latency-max", "0.02", "--refuse-keys", KEYS[0])
    pool = KeyPool(client, KEYS, KeyLimits(rpm=1000, tpm=10_000_000, concurrency=100))
    try:
        with caplog.at_level(logging.INFO), LlmClient(sim.url, "sim", pool, timeout_s=2) as llm:
            verdicts = [llm.assess([JPEG], "context").verdict for _ in range(4)]
        report = sim.report()
    finally:
        sim.stop()
    assert [v.source for v in verdicts] == [VerdictSource.LLM] * 4
    assert report["rejected_401"] == 1
    assert [(s.masked, s.state) for s in pool.states()] == [("...1111", "disabled"), ("...2222", "ok")]
    assert "...1111" in caplog.text and not any(key in caplog.text for key in KEYS)


EVENT = ConflictEvent(
    conflict_id="c:1-2:10", camera_id="c", first_track=1, second_track=2, first_label="car",
    second_label="person", kind="vehicle-pedestrian", conflict_type="crossing",
    severity=ConflictSeverity.POTENTIAL, change=ConflictChange.OPENED, start_at=1000.0, end_at=1001.0,
    start_frame="c:10", last_frame="c:15", updated_seq=15, min_ttc_s=2.4, min_ttc_frame="c:15",
    first_speed_mps=6.0, second_speed_mps=1.4, to_verify=True,
)


def conflict_request(high: bool, queued_at: float) -> AssessRequest:
    """A conflict to verify from one frame (its JPEG under `k`), serious when `high`."""
    severity = ConflictSeverity.SERIOUS if high else ConflictSeverity.POTENTIAL
    frame = EncounterFrame(frame_id="c:15", frame_key="k", moment="now", offset_s=1.0)
    return AssessRequest(conflict=EVENT.model_copy(update={"severity": severity}), frames=(frame,),
                         box=Box(x1=50, y1=50, x2=300, y2=300), width=768, height=576, high_priority=high,
                         queued_at=queued_at)


@pytest.mark.parametrize(
    ("high", "waited_s", "source", "shed"),
    [
        (False, 45.0, VerdictSource.FALLBACK, True),  # low and too old: the rules verdict, no call
        (False, 5.0, VerdictSource.LLM, False),
        (True, 45.0, VerdictSource.LLM, False),  # high priority is never shed
    ],
)
def test_old_low_priority_work_is_shed(llm_sim: LlmSim, client: redis.Redis, high: bool, waited_s: float,
                                       source: VerdictSource, shed: bool) -> None:
    llm_sim.configure()
    pool = KeyPool(client, KEYS, KeyLimits(rpm=1000, tpm=10_000_000, concurrency=100))
    request = conflict_request(high, time.time() - waited_s)
    before = llm_sim.report()["requests"]
    with LlmClient(llm_sim.url, "sim", pool, timeout_s=5) as llm:
        result = assess(request, [JPEG], llm, AssessPolicy(low_max_age_s=30))
    assert (result.verdict.source, result.shed) == (source, shed)
    assert result.verdict.verification is (Verification.UNVERIFIED if shed else Verification.CONFIRMED)
    assert result.verdict.risk_level is (RiskLevel.HIGH if high else RiskLevel.MEDIUM)  # by its severity
    assert (result.conflict_id, result.high_priority, result.queued_at) == (EVENT.conflict_id, high,
                                                                            request.queued_at)
    assert llm_sim.report()["requests"] - before == (0 if shed else 1)
    assert (result.tokens > 0) is not shed  # a call's billed tokens are kept
    assert result.wait_s == (0.0 if shed else pytest.approx(waited_s, abs=2.0))
    if shed:
        assert result.verdict.reason.startswith("LLM unavailable (shed: waited 45 s in llm.low)")
        assert result.outcome == "shed"


def test_outcomes_and_billed_tokens_are_counted(client: redis.Redis) -> None:
    store = Store(client)
    for outcome, tokens in [("llm", 400), ("llm", 350), ("shed", 0), ("fallback", 0)]:
        store.count_llm_outcome(outcome, tokens)
    assert store.llm_outcomes() == {"llm": 2, "tokens": 750, "shed": 1, "fallback": 1}
    for wait in (0.5, 1.5):
        store.record_llm_timing(True, wait, wait + 3)
    store.record_llm_timing(False, 9.0, 11.0)
    assert (store.llm_waits(True), store.llm_waits(False)) == ([1.5, 0.5], [9.0])
    assert (store.llm_turnarounds(True), store.llm_turnarounds(False)) == ([4.5, 3.5], [11.0])


@pytest.mark.slow
@pytest.mark.timeout(15)  # the call's own timeout is 120 s: only the low-priority bound ends it sooner
@pytest.mark.parametrize(
    ("high", "shed", "reason"),
    [
        (False, True, "LLM unavailable (shed: no LLM key had room within 30 s in llm.low)"),
        (True, False, "LLM unavailable (rate limited: no key had room in time)"),
    ],
)
def test_low_priority_work_waits_for_a_key_only_until_it_would_be_shed(
    llm_sim: LlmSim, client: redis.Redis, high: bool, shed: bool, reason: str
) -> None:
    pool = KeyPool(client, KEYS[:1], KeyLimits(rpm=1, tpm=10_000_000, concurrency=100))
    take(pool, 1, high=True)  # the key's one call a minute is gone
    waited = 27.0 if not high else 0.0
    request = conflict_request(high, time.time() - waited)
    timeout = 120.0 if not high else 2.0
    with LlmClient(llm_sim.url, "sim", pool, timeout_s=timeout) as llm:
        result = assess(request, [JPEG], llm, AssessPolicy(low_max_age_s=30))
    assert (result.verdict.source, result.shed) == (VerdictSource.FALLBACK, shed)
    assert result.verdict.verification is Verification.UNVERIFIED
    assert result.verdict.reason.startswith(reason)
