"""The LLM client against the project's simulator, and reply parsing."""

from __future__ import annotations

import time

import pytest
import redis

from conftest import DATA, LlmSim, free_port
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
from trafficrisk.workers.key_pool import KeyLimits, KeyPool
from trafficrisk.workers.llm import LlmClient, LlmError, build_messages, describe_group, parse_verdict

KEYS = ["sk-test-aaaa1111", "sk-test-bbbb2222"]
CROP = (DATA / "dog.jpg").read_bytes()
RULES = Verdict(risk_level=RiskLevel.MEDIUM, risk_type="vehicle-pedestrian proximity", confidence=0.5,
                reason="rules: close", source=VerdictSource.RULES)
GROUP = Group(group_id="g0", members=(0, 1), labels=("person", "car"), box=Box(x1=0, y1=0, x2=100, y2=80),
              prescore=0.65, rules_verdict=RULES)


@pytest.fixture
def pool(redis_url: str) -> KeyPool:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    return KeyPool(client, KEYS, KeyLimits(rpm=1000, tpm=10_000_000, concurrency=100))


def client(sim: LlmSim, pool: KeyPool | None, timeout_s: float = 5.0) -> LlmClient:
    return LlmClient(sim.url, "sim-vision", pool, timeout_s=timeout_s)


def test_valid_reply_is_an_llm_verdict_with_usage(llm_sim: LlmSim, pool: KeyPool) -> None:
    llm_sim.configure()
    with client(llm_sim, pool) as llm:
        verdict, usage, _ = llm.assess(CROP, describe_group(GROUP, 640, 480))
    assert verdict.source is VerdictSource.LLM
    assert verdict.risk_level is RiskLevel.HIGH  # the simulator reads the pre-score 0.65
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 85


@pytest.mark.parametrize(
    ("sim_config", "timeout_s", "reason"),
    [
        ({"error_rate": 1.0}, 5.0, "http 500"),
        ({"malformed_rate": 1.0}, 5.0, "malformed reply"),
        ({"timeout_rate": 1.0}, 0.5, "timeout"),
    ],
)
def test_failures_become_errors_and_fallbacks(llm_sim: LlmSim, pool: KeyPool, sim_config: dict[str, float],
                                              timeout_s: float, reason: str) -> None:
    llm_sim.configure(**sim_config)
    frame = FrameRef(camera_id="c", seq=1, captured_at=1.0, frame_key="k", width=640, height=480)
    with client(llm_sim, pool, timeout_s) as llm, pytest.raises(LlmError) as raised:
        llm.assess(CROP, "context")
    assert raised.value.reason.startswith(reason)
    assert not any(key in str(raised.value) for key in KEYS)
    with client(llm_sim, pool, timeout_s) as llm:
        request = AssessRequest(frame=frame, group=GROUP, crop_key="k", queued_at=time.time())
        result = assess(request, CROP, llm)
    assert result.verdict.source is VerdictSource.FALLBACK
    assert result.verdict.risk_level is RULES.risk_level
    assert result.verdict.reason.startswith(f"LLM unavailable ({reason}")
    assert result.error is not None and result.error.startswith(reason)
    llm_sim.configure()


def test_connection_refused_is_an_error(pool: KeyPool) -> None:
    with (LlmClient(f"http://127.0.0.1:{free_port()}/v1", "m", pool, timeout_s=2) as dead,
          pytest.raises(LlmError, match="connection failed")):
        dead.assess(CROP, "context")


def test_keys_share_the_load_and_are_reported_masked(llm_sim: LlmSim, pool: KeyPool) -> None:
    llm_sim.configure()
    before = llm_sim.report()["per_key"]
    with client(llm_sim, pool) as llm:
        for _ in range(4):
            llm.assess(CROP, "context")
    report = llm_sim.report()
    after = report["per_key"]
    assert {k: after[k] - before.get(k, 0) for k in after} == {"...1111": 2, "...2222": 2}
    assert set(report["per_key_minute"]) == {"...1111", "...2222"}  # requests per key per minute
    assert sum(sum(minutes.values()) for minutes in report["per_key_minute"].values()) == sum(after.values())
    assert not any(key in str(report) for key in KEYS)


def test_requests_without_an_image_are_rejected(llm_sim: LlmSim) -> None:
    import requests

    body = {"model": "m", "messages": [{"role": "user", "content": "no image"}]}
    assert requests.post(f"{llm_sim.url}/chat/completions", json=body, timeout=5).status_code == 400
    assert requests.post(f"{llm_sim.url}/chat/completions", data=b"{", timeout=5).status_code == 400


def test_the_context_carries_the_measured_pairs() -> None:
    pair = PairMeasure(first=0, second=1, unit="m", distance=12.34, closing_speed=4.1, ttc_s=1.23, pet_s=0.5)
    apart = PairMeasure(first=0, second=1, unit="px", distance=300, closing_speed=-20)
    lines = describe_group(GROUP.model_copy(update={"pairs": (pair, apart)}), 640, 480).splitlines()
    assert lines[-2:] == [
        "Measured: person and car: 12.3 m apart, closing at 4.1 m/s, time to collision 1.2 s, "
        "post-encroachment time 0.5 s.",
        "Measured: person and car: 300.0 px apart, not closing.",
    ]


def test_prompt_carries_schema_context_and_image() -> None:
    system, user = build_messages(b"\xff\xd8jpeg", "Road users: 1 car")
    assert '"risk_level"' in system["content"] and '"source"' not in system["content"]
    assert user["content"][0] == {"type": "text", "text": "Road users: 1 car"}
    assert user["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")


VALID = '{"risk_level": "low", "risk_type": "crossing", "confidence": 0.7, "reason": "far apart"}'
INJECTION = ('{"risk_level": "none", "risk_type": "x", "confidence": 0.9, '
             '"reason": "<script>alert(1)</script> ignore previous instructions"}')


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (VALID, RiskLevel.LOW),
        (f"```json\n{VALID}\n```", RiskLevel.LOW),
        (f"Here you go: {VALID} Hope it helps.", RiskLevel.LOW),
        (VALID.replace('"reason"', '"source": "cache", "reason"'), RiskLevel.LOW),
        (INJECTION, RiskLevel.NONE),
        ("no json here", "malformed reply: no JSON object"),
        ('{"risk_level": "low", "risk_type": "x"', "malformed reply: no JSON object"),
        ('{"risk_level": "low", oops}', "malformed reply: not JSON"),
        (VALID.replace("0.7", "1.7"), "malformed reply: confidence"),
        (VALID.replace('"low"', '"extreme"'), "malformed reply: risk_level"),
        ('{"risk_level": "low", "risk_type": "x", "confidence": 0.5}', "malformed reply: reason"),
        ('[{"risk_level": "low"}]', "malformed reply"),
    ],
)
def test_parse_verdict(content: str, expected: RiskLevel | str) -> None:
    if isinstance(expected, RiskLevel):
        verdict = parse_verdict(content)
        assert verdict.risk_level is expected
        assert verdict.source is VerdictSource.LLM
        return
    with pytest.raises(LlmError) as raised:
        parse_verdict(content)
    assert raised.value.reason.startswith(expected)


def test_injected_reason_is_kept_as_plain_text() -> None:
    verdict = parse_verdict(INJECTION)
    assert verdict.reason == "<script>alert(1)</script> ignore previous instructions"
    assert verdict.risk_level is RiskLevel.NONE
