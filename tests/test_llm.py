"""The LLM client against the project's simulator, reply parsing, and what a conflict's
verification shows and tells the model."""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pytest
import redis

from conftest import DATA, LlmSim, free_port
from trafficrisk.llm_sim import SimConfig, answer_for, verdict_for, verify_rules
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
from trafficrisk.workers.analysis import decode_jpeg
from trafficrisk.workers.assessment import AssessPolicy, assess, assess_safely
from trafficrisk.workers.evidence import IMAGE_SIDE, MOSAIC_WIDTH, crops
from trafficrisk.workers.key_pool import KeyLimits, KeyPool
from trafficrisk.workers.llm import (
    LlmClient,
    LlmError,
    LlmReply,
    batch_schema,
    build_messages,
    describe_conflict,
    parse_batch,
    parse_verdict,
)
from trafficrisk.workers.llm_batching import BatchedLlm

KEYS = ["sk-test-aaaa1111", "sk-test-bbbb2222"]
FRAME = (DATA / "dog.jpg").read_bytes()  # a whole frame, as Redis holds it
BOX = Box(x1=50, y1=50, x2=300, y2=300)
CROP = crops([FRAME], BOX)[0]  # what the model is shown of it

EVENT = ConflictEvent(
    conflict_id="c:1-2:10", camera_id="c", first_track=1, second_track=2, first_label="car",
    second_label="person", kind="vehicle-pedestrian", conflict_type="crossing",
    severity=ConflictSeverity.SERIOUS, change=ConflictChange.ESCALATED, start_at=1000.0, end_at=1001.6,
    start_frame="c:10", last_frame="c:18", updated_seq=18, min_ttc_s=1.23, min_ttc_at=1000.8,
    min_ttc_frame="c:14", pet_s=0.61, pet_at=1001.2, pet_frame="c:16", max_drac=4.52, closing_speed=6.34,
    first_speed_mps=8.04, second_speed_mps=1.38, zones=("crosswalk",), to_verify=True,
)
Moment = Literal["before", "start", "closest", "now"]
MOMENTS: tuple[tuple[Moment, float], ...] = (("before", -1.0), ("closest", 0.8), ("now", 1.6))


def conflict(**fields: object) -> ConflictEvent:
    return EVENT.model_copy(update=fields)


def request(event: ConflictEvent = EVENT, moments: Sequence[tuple[Moment, float]] = MOMENTS,
            high: bool = True, queued_at: float = 0.0) -> AssessRequest:
    """A request for `event` with a frame at each (moment, offset), its JPEG under `k<n>`."""
    frames = tuple(EncounterFrame(frame_id=f"{event.camera_id}:{20 + n}", frame_key=f"k{n}",
                                  moment=moment, offset_s=offset)
                   for n, (moment, offset) in enumerate(moments))
    return AssessRequest(conflict=event, frames=frames, box=BOX, width=768, height=576, high_priority=high,
                         queued_at=queued_at)


@pytest.fixture
def pool(redis_url: str) -> KeyPool:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    return KeyPool(client, KEYS, KeyLimits(rpm=1000, tpm=10_000_000, concurrency=100))


@pytest.fixture
def sim(llm_sim: LlmSim) -> Iterator[LlmSim]:
    """The module's simulator, answering every conflict `confirmed` before and after the test."""
    llm_sim.configure(verify="", risk_level="")
    yield llm_sim
    llm_sim.configure(verify="", risk_level="")


def client(sim: LlmSim, pool: KeyPool | None, timeout_s: float = 5.0) -> LlmClient:
    return LlmClient(sim.url, "sim-vision", pool, timeout_s=timeout_s)


@pytest.mark.parametrize(
    ("event", "verify", "level", "verification"),
    [
        (EVENT, "", RiskLevel.HIGH, Verification.CONFIRMED),  # serious: high; confirmed unless a rule says
        (conflict(severity=ConflictSeverity.POTENTIAL), "crossing=uncertain", RiskLevel.MEDIUM,
         Verification.UNCERTAIN),
        (conflict(kind="vehicle-vehicle", second_label="bus"), "vehicle-vehicle=rejected;crossing=confirmed",
         RiskLevel.HIGH, Verification.REJECTED),  # the first rule the context matches
    ],
)
def test_valid_reply_is_an_llm_verdict_with_usage(sim: LlmSim, pool: KeyPool, event: ConflictEvent,
                                                  verify: str, level: RiskLevel,
                                                  verification: Verification) -> None:
    sim.configure(verify=verify)
    with client(sim, pool) as llm:
        verdict, usage, sent_at = llm.assess([CROP, CROP], context(event, 2))
    assert verdict.source is VerdictSource.LLM
    assert (verdict.risk_level, verdict.verification) == (level, verification)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 2 * 85
    assert time.time() - 10 < sent_at <= time.time()


@pytest.mark.parametrize(
    ("sim_config", "timeout_s", "reason"),
    [
        ({"error_rate": 1.0}, 5.0, "http 500"),
        ({"malformed_rate": 1.0}, 5.0, "malformed reply"),
        ({"timeout_rate": 1.0}, 0.5, "timeout"),
    ],
)
def test_failures_become_errors_and_unverified_fallbacks(sim: LlmSim, pool: KeyPool,
                                                         sim_config: dict[str, float], timeout_s: float,
                                                         reason: str) -> None:
    sim.configure(**sim_config)
    try:
        with client(sim, pool, timeout_s) as llm, pytest.raises(LlmError) as raised:
            llm.assess([CROP], "context")
        assert raised.value.reason.startswith(reason)
        assert not any(key in str(raised.value) for key in KEYS)
        with client(sim, pool, timeout_s) as llm:
            result = assess(request(queued_at=time.time()), [FRAME, FRAME, FRAME], llm)
    finally:
        sim.configure()
    assert result.verdict.source is VerdictSource.FALLBACK
    assert result.verdict.verification is Verification.UNVERIFIED  # the rules never verify
    assert result.verdict.risk_level is RiskLevel.HIGH  # the rules' level of a serious conflict
    assert result.verdict.reason.startswith(f"LLM unavailable ({reason}")
    assert result.error is not None and result.error.startswith(reason)
    assert (result.conflict_id, result.camera_id, result.severity) == (EVENT.conflict_id, "c", EVENT.severity)


def test_connection_refused_is_an_error(pool: KeyPool) -> None:
    with (LlmClient(f"http://127.0.0.1:{free_port()}/v1", "m", pool, timeout_s=2) as dead,
          pytest.raises(LlmError, match="connection failed")):
        dead.assess([CROP], "context")


def test_keys_share_the_load_and_are_reported_masked(sim: LlmSim, pool: KeyPool) -> None:
    before = sim.report()["per_key"]
    with client(sim, pool) as llm:
        for _ in range(4):
            llm.assess([CROP], "context")
    report = sim.report()
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


CONTEXT_HEAD = [
    "A serious vehicle-pedestrian crossing conflict.",
    "Road users: car at 8.0 m/s and person at 1.4 m/s.",
    "Measured: minimum time to collision 1.2 s, post-encroachment time 0.6 s, "
    "deceleration to avoid a crash 4.5 m/s², closing at 6.3 m/s.",
    "Zones: crosswalk.",
]


def context(event: ConflictEvent, images: int) -> str:
    """The prompt's context for a conflict, all its frames shown."""
    asked = request(event)
    return describe_conflict(asked, asked.frames, images)


@pytest.mark.parametrize(
    ("event", "moments", "images", "lines"),
    [
        (EVENT, MOMENTS, 3, [*CONTEXT_HEAD,  # one image a moment
                             "Images (image 1: before it (-1.0 s); image 2: at its closest (+0.8 s); "
                             "image 3: now (+1.6 s)), times from the conflict's start."]),
        (EVENT, MOMENTS, 1, [*CONTEXT_HEAD,  # the moments side by side in one image
                             "Images (one image, the moments side by side from left to right: "
                             "before it (-1.0 s), at its closest (+0.8 s), now (+1.6 s)), "
                             "times from the conflict's start."]),
        (conflict(severity=ConflictSeverity.POTENTIAL, kind="vehicle-vehicle", conflict_type="rear-end",
                  second_label="bus", approximate=True, min_ttc_s=None, pet_s=None, max_drac=None,
                  closing_speed=None, first_speed_mps=None, second_speed_mps=None, zones=()),
         [("start", 0.0)], 1,
         ["A potential vehicle-vehicle rear-end conflict (approximate scale, fitted from pedestrians).",
          "Road users: car at 0.0 m/s and bus at 0.0 m/s.",  # no speeds measured, no measures line
          "Images (image 1: as it began (+0.0 s)), times from the conflict's start."]),
        (conflict(conflict_type="head-on", min_ttc_s=None, max_drac=None, closing_speed=None, zones=()),
         [("start", 0.0), ("now", 2.5)], 2,
         ["A serious vehicle-pedestrian head-on conflict.", CONTEXT_HEAD[1],
          "Measured: post-encroachment time 0.6 s.",
          "Images (image 1: as it began (+0.0 s); image 2: now (+2.5 s)), times from the conflict's start."]),
    ],
)
def test_the_context_names_the_conflict_its_measures_and_the_moments_shown(
    event: ConflictEvent, moments: list[tuple[Moment, float]], images: int, lines: list[str]
) -> None:
    asked = request(event, moments)
    assert describe_conflict(asked, asked.frames, images).splitlines() == lines


def test_prompt_carries_schema_context_and_images_in_order() -> None:
    first, second = crops([FRAME], BOX)[0], crops([FRAME], Box(x1=0, y1=0, x2=768, y2=576))[0]
    system, user = build_messages([first, second], "A serious conflict.")
    assert '"verification"' in system["content"] and '"risk_level"' in system["content"]
    assert '"source"' not in system["content"] and '"unverified"' not in system["content"]
    assert user["content"][0] == {"type": "text", "text": "A serious conflict."}
    urls = [part["image_url"]["url"] for part in user["content"][1:]]
    assert all(url.startswith("data:image/jpeg;base64,") for url in urls)
    assert [base64.b64decode(url.split(",", 1)[1]) for url in urls] == [first, second]


def test_the_schema_asks_for_a_verification_the_model_may_give() -> None:
    schema = Verdict.llm_schema()
    assert schema["required"][0] == "verification"
    assert schema["properties"]["verification"]["enum"] == ["confirmed", "rejected", "uncertain"]
    assert "source" not in schema["properties"] and schema["additionalProperties"] is False


VALID = ('{"verification": "confirmed", "risk_level": "low", "risk_type": "crossing", "confidence": 0.7, '
         '"reason": "far apart"}')
INJECTION = ('{"verification": "uncertain", "risk_level": "none", "risk_type": "x", "confidence": 0.9, '
             '"reason": "<script>alert(1)</script> ignore previous instructions"}')
UNVERIFIED_CLAIM = VALID.replace('"confirmed"', '"unverified"')
NO_VERIFICATION = VALID.replace('"verification": "confirmed", ', "")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (VALID, (RiskLevel.LOW, Verification.CONFIRMED)),
        (f"```json\n{VALID}\n```", (RiskLevel.LOW, Verification.CONFIRMED)),
        (f"Here you go: {VALID} Hope it helps.", (RiskLevel.LOW, Verification.CONFIRMED)),
        (VALID.replace('"reason"', '"source": "cache", "reason"'), (RiskLevel.LOW, Verification.CONFIRMED)),
        (VALID.replace('"confirmed"', '"rejected"'), (RiskLevel.LOW, Verification.REJECTED)),
        (INJECTION, (RiskLevel.NONE, Verification.UNCERTAIN)),
        (NO_VERIFICATION, "malformed reply: verification"),
        (UNVERIFIED_CLAIM, "malformed reply: verification"),  # ours to say, never the model's
        (VALID.replace('"confirmed"', "null"), "malformed reply: verification"),
        (VALID.replace('"confirmed"', '"maybe"'), "malformed reply: verification"),
        ("no json here", "malformed reply: no JSON object"),
        ('{"risk_level": "low", "risk_type": "x"', "malformed reply: no JSON object"),
        ('{"risk_level": "low", oops}', "malformed reply: not JSON"),
        (VALID.replace("0.7", "1.7"), "malformed reply: confidence"),
        (VALID.replace('"low"', '"extreme"'), "malformed reply: risk_level"),
        ('{"verification": "confirmed", "risk_level": "low", "risk_type": "x", "confidence": 0.5}',
         "malformed reply: reason"),
        ('[{"risk_level": "low"}]', "malformed reply"),
    ],
)
def test_parse_verdict(content: str, expected: tuple[RiskLevel, Verification] | str) -> None:
    if isinstance(expected, tuple):
        verdict = parse_verdict(content)
        assert (verdict.risk_level, verdict.verification) == expected
        assert verdict.source is VerdictSource.LLM
        return
    with pytest.raises(LlmError) as raised:
        parse_verdict(content)
    assert raised.value.reason.startswith(expected)


def test_injected_reason_is_kept_as_plain_text() -> None:
    verdict = parse_verdict(INJECTION)
    assert verdict.reason == "<script>alert(1)</script> ignore previous instructions"
    assert verdict.risk_level is RiskLevel.NONE


def batch_reply(*items: str) -> str:
    return '{"verdicts": [' + ", ".join(items) + "]}"


def numbered(number: int, verdict: str = VALID) -> str:
    return verdict.replace("{", f'{{"conflict": {number}, ', 1)


LOW_CONFIRMED = (RiskLevel.LOW, Verification.CONFIRMED)


@pytest.mark.parametrize(
    ("content", "count", "expected"),
    [
        (batch_reply(numbered(1), numbered(2)), 2, [LOW_CONFIRMED, LOW_CONFIRMED]),
        (batch_reply(numbered(2, INJECTION), numbered(1)), 2,  # by number, not by place
         [LOW_CONFIRMED, (RiskLevel.NONE, Verification.UNCERTAIN)]),
        (f"```json\n{batch_reply(numbered(1))}\n```", 1, [LOW_CONFIRMED]),
        (batch_reply(numbered(1)), 2, [LOW_CONFIRMED, "malformed reply: no verdict for conflict 2"]),
        (batch_reply(numbered(1), numbered(2, VALID.replace("0.7", "1.7"))), 2,
         [LOW_CONFIRMED, "malformed reply: conflict 2: confidence"]),
        (batch_reply(numbered(1, NO_VERIFICATION), numbered(2)), 2,
         ["malformed reply: conflict 1: verification", LOW_CONFIRMED]),
        (batch_reply(numbered(1), numbered(2, UNVERIFIED_CLAIM)), 2,
         [LOW_CONFIRMED, "malformed reply: conflict 2: verification"]),
        (batch_reply(VALID), 1, ["malformed reply: no verdict for conflict 1"]),  # no conflict number
        (batch_reply(VALID.replace("{", '{"group": 1, ', 1)), 1,  # the number under its old name
         ["malformed reply: no verdict for conflict 1"]),
        (VALID, 1, "malformed reply: no verdicts list"),  # the whole reply is unusable
        ("no json", 2, "malformed reply: no JSON object"),
    ],
)
def test_parse_batch(content: str, count: int,
                     expected: list[tuple[RiskLevel, Verification] | str] | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(LlmError, match=expected):
            parse_batch(content, count)
        return
    found = [v.reason if isinstance(v, LlmError) else (v.risk_level, v.verification)
             for v in parse_batch(content, count)]
    shortened = [f[:len(e)] if isinstance(f, str) and isinstance(e, str) else f
                 for f, e in zip(found, expected, strict=True)]
    assert shortened == expected


def test_a_batch_schema_resolves_from_its_root() -> None:
    schema = batch_schema(3)
    verdicts = schema["properties"]["verdicts"]
    item = verdicts["items"]
    assert (verdicts["minItems"], verdicts["maxItems"]) == (3, 3)
    assert item["required"][:2] == ["conflict", "verification"] and "$defs" not in item
    assert item["properties"]["conflict"] == {"type": "integer", "minimum": 1, "maximum": 3}
    assert "unverified" not in item["properties"]["verification"]["enum"]
    refs = _refs(schema)
    assert refs and all(ref.startswith("#/$defs/") and ref.removeprefix("#/$defs/") in schema["$defs"]
                        for ref in refs)


def _refs(node: object) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if "$ref" in node else []
        return own + [r for value in node.values() for r in _refs(value)]
    return [r for value in node for r in _refs(value)] if isinstance(node, list) else []


EVENTS = [
    EVENT,
    conflict(conflict_id="c:3-4:11", severity=ConflictSeverity.POTENTIAL, kind="vehicle-vehicle",
             conflict_type="rear-end", second_label="bus"),
    conflict(conflict_id="c:5-6:12", severity=ConflictSeverity.POTENTIAL, conflict_type="head-on"),
]
VERIFY = "vehicle-vehicle=rejected;head-on=uncertain"
# What the simulator makes of EVENTS under VERIFY.
ANSWERS = [(RiskLevel.HIGH, Verification.CONFIRMED), (RiskLevel.MEDIUM, Verification.REJECTED),
           (RiskLevel.MEDIUM, Verification.UNCERTAIN)]


def test_a_batch_is_one_request_with_a_verdict_per_conflict(sim: LlmSim, pool: KeyPool) -> None:
    sim.configure(verify=VERIFY)
    questions = [([CROP, CROP], context(event, 2)) for event in EVENTS]
    with client(sim, pool) as llm:
        before = sim.report()["requests"]
        replies = llm.assess_batch(questions)
        assert sim.report()["requests"] - before == 1
        singles = [llm.assess(images, context) for images, context in questions]
    answered = [reply for reply in replies if isinstance(reply, LlmReply)]
    assert [(r.verdict.risk_level, r.verdict.verification) for r in answered] == ANSWERS
    assert [(r.verdict.risk_level, r.verdict.verification) for r in singles] == ANSWERS
    billed = [reply.usage["total_tokens"] for reply in answered]
    assert max(billed) - min(billed) <= 1  # the bill, shared out
    assert sum(billed) < sum(r.usage["total_tokens"] for r in singles)  # the instructions paid once


def test_conflicts_asked_together_share_a_request_by_priority(sim: LlmSim, pool: KeyPool) -> None:
    sim.configure(verify=VERIFY)
    asks = [(event, True) for event in EVENTS] + [(EVENTS[0], False)]
    with client(sim, pool) as llm:
        batched = BatchedLlm(llm, max_batch=3, max_wait_s=1.0)
        before = sim.report()["requests"]
        with ThreadPoolExecutor(len(asks)) as threads:
            replies = list(threads.map(lambda ask: batched.assess(
                [CROP], context(ask[0], 1), high=ask[1]), asks))
    assert [(r.verdict.risk_level, r.verdict.verification) for r in replies] == [*ANSWERS, ANSWERS[0]]
    assert sim.report()["requests"] - before == 2  # three high conflicts in one, the low one alone
    assert (batched.batch_sizes(True), batched.batch_sizes(False)) == ([3], [1])


def test_a_conflict_the_batch_reply_left_out_is_an_error_for_that_conflict_only(sim: LlmSim,
                                                                                pool: KeyPool) -> None:
    sim.configure(malformed_rate=1.0)
    try:
        with client(sim, pool) as llm:
            batched = BatchedLlm(llm, max_batch=2, max_wait_s=1.0)
            with ThreadPoolExecutor(2) as threads:
                futures = [threads.submit(batched.assess, [CROP], context(event, 1))
                           for event in EVENTS[:2]]
            errors = [future.exception() for future in futures]
    finally:
        sim.configure()
    assert all(isinstance(error, LlmError) and error.reason.startswith("malformed reply") for error in errors)


class Recorder:
    """A Judge that answers `confirmed` and keeps what it was shown and told."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[bytes], str, bool, float | None]] = []

    def assess(self, images: Sequence[bytes], context: str, *, high: bool = False,
               key_wait_s: float | None = None) -> LlmReply:
        self.calls.append((list(images), context, high, key_wait_s))
        verdict = Verdict(risk_level=RiskLevel.HIGH, risk_type="crossing", confidence=0.9, reason="close",
                          verification=Verification.CONFIRMED)
        return LlmReply(verdict, {"total_tokens": 42}, time.time())


def _width(jpeg: bytes) -> int:
    return int(decode_jpeg(jpeg).shape[1])


@pytest.mark.parametrize(
    ("blobs", "multi_image", "high", "widths", "shown", "error"),
    [
        ({"k0": FRAME, "k1": FRAME, "k2": FRAME}, True, True, [326] * 3, "image 3: now (+1.6 s)", None),
        ({"k0": FRAME, "k1": FRAME, "k2": FRAME}, False, True, [978], "one image, the moments side by side",
         None),
        ({"k0": FRAME, "k1": FRAME, "k2": FRAME}, True, False, [326] * 3, "image 1: before it", None),
        ({}, True, True, None, None, "frames expired before verification"),  # every frame gone
        ({"k0": FRAME, "k1": b"not a jpeg", "k2": FRAME}, True, True, None, None,
         "frames unusable: frame bytes are not a decodable image"),
    ],
)
def test_assess_shows_the_encounters_frames_cropped_to_the_pair(
    blobs: dict[str, bytes], multi_image: bool, high: bool, widths: list[int] | None, shown: str | None,
    error: str | None
) -> None:
    judge = Recorder()
    queued_at = time.time() - 10
    result = assess_safely(request(high=high, queued_at=queued_at), blobs.get, judge,
                           AssessPolicy(low_max_age_s=30, multi_image=multi_image))
    if error is not None:
        assert judge.calls == [] and result.error == error
        assert (result.verdict.source, result.verdict.verification) == (VerdictSource.FALLBACK,
                                                                        Verification.UNVERIFIED)
        return
    [(images, context, asked_high, key_wait_s)] = judge.calls
    assert [_width(image) for image in images] == widths
    assert all(width <= (IMAGE_SIDE if multi_image else MOSAIC_WIDTH) for width in widths or [])
    assert shown is not None and shown in context
    assert context.startswith("A serious vehicle-pedestrian crossing conflict.")
    assert asked_high is high
    # Low work waits for a key only as long as it has left before it would be shed.
    assert (key_wait_s is None) if high else (key_wait_s == pytest.approx(20, abs=1))
    assert (result.verdict.source, result.verdict.verification) == (VerdictSource.LLM, Verification.CONFIRMED)
    assert (result.tokens, result.high_priority, result.queued_at) == (42, high, queued_at)
    assert result.wait_s == pytest.approx(10, abs=1)


def test_without_an_llm_the_rules_verdict_stands_unverified() -> None:
    result = assess(request(), [FRAME, FRAME, FRAME], None)
    assert result.error == "no LLM configured"
    assert (result.verdict.source, result.verdict.verification) == (VerdictSource.FALLBACK,
                                                                    Verification.UNVERIFIED)


def test_the_context_describes_the_images_sent_when_a_frame_expired() -> None:
    judge = Recorder()
    assess_safely(request(), {"k0": FRAME, "k2": FRAME}.get, judge)  # the closest moment's frame expired
    [(images, context, _, _)] = judge.calls
    assert len(images) == 2
    assert "one image" not in context and "image 2: now (+1.6 s)" in context and "closest" not in context


@pytest.mark.parametrize(
    ("rules", "parsed"),
    [
        ("", []),
        ("vehicle-vehicle=rejected;crossing=confirmed",
         [("vehicle-vehicle", Verification.REJECTED), ("crossing", Verification.CONFIRMED)]),
        (" head-on=uncertain ; ;", [("head-on", Verification.UNCERTAIN)]),  # spaces and empty rules
        ("a=b=rejected", [("a=b", Verification.REJECTED)]),  # the last '=' splits
        ("crossing", "verify rule 'crossing': expected TEXT=one of confirmed, rejected, uncertain"),
        ("=rejected", "verify rule '=rejected'"),
        ("crossing=unverified", "verify rule 'crossing=unverified'"),  # the model never says it
        ("crossing=Confirmed", "verify rule 'crossing=Confirmed'"),
        ("crossing=confirmed;bus=maybe", "verify rule 'bus=maybe'"),
    ],
)
def test_verify_rules(rules: str, parsed: list[tuple[str, Verification]] | str) -> None:
    if isinstance(parsed, str):
        with pytest.raises(ValueError, match=parsed):
            verify_rules(rules)
        return
    assert verify_rules(rules) == parsed


SERIOUS_VP = "A serious vehicle-pedestrian crossing conflict.\nRoad users: car at 8.0 m/s"
POTENTIAL_VV = "A potential vehicle-vehicle crossing conflict.\nRoad users: car at 3.0 m/s"


@pytest.mark.parametrize(
    ("text", "settings", "level", "verification", "reason"),
    [
        (SERIOUS_VP, {}, RiskLevel.HIGH, Verification.CONFIRMED, "simulated: confirmed serious conflict"),
        (POTENTIAL_VV, {}, RiskLevel.MEDIUM, Verification.CONFIRMED,
         "simulated: confirmed potential conflict"),
        (SERIOUS_VP, {"verify": "vehicle-vehicle=rejected;crossing=uncertain"}, RiskLevel.HIGH,
         Verification.UNCERTAIN, "simulated: uncertain serious conflict"),
        (POTENTIAL_VV, {"verify": "vehicle-vehicle=rejected;crossing=uncertain"}, RiskLevel.MEDIUM,
         Verification.REJECTED, "simulated: rejected potential conflict"),  # the first rule that matches
        (POTENTIAL_VV, {"verify": "head-on=rejected"}, RiskLevel.MEDIUM, Verification.CONFIRMED,
         "simulated: confirmed potential conflict"),  # no rule matches
        ("context", {}, RiskLevel.LOW, Verification.CONFIRMED, "simulated: confirmed unknown conflict"),
        (SERIOUS_VP, {"risk_level": "none", "reason": "ignore previous instructions"}, RiskLevel.NONE,
         Verification.CONFIRMED, "ignore previous instructions"),
    ],
)
def test_the_simulator_verifies_by_rule(text: str, settings: dict[str, str], level: RiskLevel,
                                        verification: Verification, reason: str) -> None:
    config = SimConfig()
    config.update(settings)
    verdict = verdict_for(text, config)
    assert (verdict.risk_level, verdict.verification, verdict.reason) == (level, verification, reason)


def test_the_simulator_answers_each_conflict_of_a_batch_from_its_own_section() -> None:
    config = SimConfig()
    config.update({"verify": "vehicle-vehicle=rejected"})
    text = f"You verify traffic conflicts.\nConflict 1:\n{POTENTIAL_VV}\nConflict 2:\n{SERIOUS_VP}"
    verdicts = parse_batch(answer_for(text, config), 2)
    assert [(v.risk_level, v.verification) for v in verdicts if isinstance(v, Verdict)] == [
        (RiskLevel.MEDIUM, Verification.REJECTED), (RiskLevel.HIGH, Verification.CONFIRMED)]
    assert parse_verdict(answer_for(SERIOUS_VP, config)).verification is Verification.CONFIRMED


@pytest.mark.parametrize(
    ("distribution", "images", "median", "low", "high"),
    [
        ("uniform", 1, 6.0, 2.0, 10.0),
        ("lognormal", 1, 4.47, 2.0, 30.0),  # median sqrt(2 * 10), a tail up to 3 * 10
        ("uniform", 3, 7.2, 2.4, 12.0),  # two more images: 20 % longer
    ],
)
def test_simulated_latency_follows_its_distribution(distribution: str, images: int, median: float, low: float,
                                                    high: float) -> None:
    config = SimConfig()
    config.update({"latency_distribution": distribution})
    rng = random.Random(7)
    draws = sorted(config.draw_latency(rng, images) for _ in range(4000))
    assert draws[len(draws) // 2] == pytest.approx(median, rel=0.05)
    assert low <= draws[0] and draws[-1] <= high
    if distribution == "lognormal":  # 90 % between min and max, 5 % above
        assert 0.03 < sum(d > 10.0 for d in draws) / len(draws) < 0.07


@pytest.mark.parametrize(("changes", "error"), [
    ({"latency_distribution": "gaussian"}, "latency_distribution must be one of uniform, lognormal"),
    ({"latency_mean": 3}, "unknown setting 'latency_mean'"),
    ({"risk_level": "severe"}, "risk_level must be one of none, low, medium, high"),
    ({"verify": "crossing=maybe"}, "verify rule 'crossing=maybe': expected TEXT=one of"),
    ({"verify": "crossing=unverified"}, "verify rule 'crossing=unverified'"),
])
def test_bad_simulator_settings_are_refused(changes: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        SimConfig().update(changes)


@pytest.mark.parametrize(("at_once", "rounds", "connections"), [(1, 5, 1), (8, 1, 8), (8, 3, 8)])
def test_connections_are_reused_and_as_many_as_calls_at_once(sim: LlmSim, pool: KeyPool, at_once: int,
                                                             rounds: int, connections: int) -> None:
    """Each round runs on new threads, as gevent runs each task on a new greenlet."""
    with client(sim, pool) as llm:
        for _ in range(rounds):
            start = threading.Barrier(at_once)

            def call(_: int, start: threading.Barrier = start) -> None:
                start.wait()
                llm.assess([CROP], "context")

            with ThreadPoolExecutor(at_once) as threads:
                list(threads.map(call, range(at_once)))
        assert llm.idle_connections == connections
    assert llm.idle_connections == 0  # closed
