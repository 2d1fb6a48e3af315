"""The project's OpenAI-compatible LLM simulator, for tests and benchmarks.

    trafficrisk llm-sim --port 8001 --latency-min 2 --latency-max 10 --error-rate 0.05

One asyncio loop, so hundreds of slow requests in flight cost next to nothing. It
answers chat completions with a conflict verification derived from the prompt (one per
"Conflict k:" section for a batch): the level from the conflict's severity, the
verification from the first of --verify's rules whose text the conflict's context holds
(`vehicle-vehicle=rejected;crossing=confirmed`), else `confirmed`, after a latency drawn uniformly
or lognormally (--latency-distribution), a little longer per extra image. It injects
HTTP 500s, hangs (timeouts) and malformed replies at configurable rates, enforces a
per-key requests-per-minute limit (429 with Retry-After), refuses listed keys (401),
and reports what it saw at GET /sim/report. POST /sim/config changes its behaviour at
run time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import re
import time
import uuid
from collections import Counter, deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from aiohttp import web

from trafficrisk.messages import RiskLevel, Verdict, Verification

_SEVERITY = re.compile(r"\bA (serious|potential) ")
_CONFLICT = re.compile(r"^Conflict (\d+):$", re.MULTILINE)
TOKENS_PER_IMAGE = 85


LATENCY_DISTRIBUTIONS = ("uniform", "lognormal")
LEVELS = tuple(level.value for level in RiskLevel)
VERIFICATIONS = tuple(str(v) for v in Verification if v is not Verification.UNVERIFIED)


@dataclass
class SimConfig:
    latency_min: float = 2.0
    latency_max: float = 10.0
    # uniform between min and max; lognormal: median sqrt(min * max), 90 % between min and
    # max, a long tail above (capped at 3 * max), as hosted models answer; never under min.
    latency_distribution: str = "uniform"
    latency_per_extra_image: float = 0.1  # a multi-image request takes this much longer per image
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    malformed_rate: float = 0.0
    hang_s: float = 600.0
    reason: str = ""  # given: every verdict's reason, as a hostile model might write it
    risk_level: str = ""  # given: every verdict's risk level
    # `text=verification` rules, `;` apart: the first whose text the conflict's context holds
    verify: str = ""
    rpm_per_key: float = 0.0  # 0: no limit; else requests over it get 429 with Retry-After
    retry_after_s: float = 5.0

    def update(self, changes: dict[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown setting {unknown[0]!r}; known: {', '.join(sorted(names))}")
        for name, value in changes.items():
            setattr(self, name, type(getattr(self, name))(value))
        if self.risk_level and self.risk_level not in LEVELS:
            raise ValueError(f"risk_level must be one of {', '.join(LEVELS)}")
        verify_rules(self.verify)  # ValueError for a bad rule
        if self.latency_distribution not in LATENCY_DISTRIBUTIONS:
            raise ValueError(f"latency_distribution must be one of {', '.join(LATENCY_DISTRIBUTIONS)}")

    def draw_latency(self, rng: random.Random, images: int) -> float:
        if self.latency_distribution == "lognormal":
            low, high = max(self.latency_min, 1e-3), max(self.latency_max, self.latency_min, 1e-3)
            sigma = math.log(high / low) / (2 * 1.645)
            base = min(max(rng.lognormvariate(math.log(math.sqrt(low * high)), sigma), low), 3 * high)
        else:
            base = rng.uniform(self.latency_min, self.latency_max)
        return base * (1 + self.latency_per_extra_image * max(0, images - 1))


@dataclass
class SimReport:
    requests: int = 0
    in_flight: int = 0
    concurrent_peak: int = 0
    errors_500: int = 0
    timeouts: int = 0
    malformed: int = 0
    rejected_400: int = 0
    rejected_401: int = 0
    rejected_429: int = 0  # requests over a key's limit: a client that honours the limits sees none
    per_key: Counter[str] = field(default_factory=Counter)
    per_minute: Counter[int] = field(default_factory=Counter)
    per_key_minute: Counter[tuple[str, int]] = field(default_factory=Counter)

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        data["per_key"] = dict(self.per_key)
        data["per_minute"] = {str(k): v for k, v in sorted(self.per_minute.items())}
        by_key: dict[str, dict[str, int]] = {}
        for (key, minute), count in sorted(self.per_key_minute.items()):
            by_key.setdefault(key, {})[str(minute)] = count
        data["per_key_minute"] = by_key
        return data


def mask_key(authorization: str) -> str:
    key = authorization.removeprefix("Bearer ").strip()
    return f"...{key[-4:]}" if key else "(none)"


def verify_rules(rules: str) -> list[tuple[str, Verification]]:
    """`text=verification;...` as (text, verification) pairs; ValueError for a bad one."""
    parsed = []
    for rule in filter(None, (r.strip() for r in rules.split(";"))):
        text, _, verdict = rule.rpartition("=")
        if not text or verdict not in VERIFICATIONS:
            raise ValueError(f"verify rule {rule!r}: expected TEXT=one of {', '.join(VERIFICATIONS)}")
        parsed.append((text, Verification(verdict)))
    return parsed


def verdict_for(text: str, config: SimConfig | None = None) -> Verdict:
    """A plausible, deterministic verdict on one conflict's context: a serious conflict is
    `high`, a potential one `medium` (unless the config sets the level); the verification
    is the first matching rule's, else confirmed; the config's reason, if any, stands in
    for the model's (tests put hostile text there)."""
    config = config or SimConfig()
    match = _SEVERITY.search(text)
    severity = match.group(1) if match else "unknown"
    level = {"serious": RiskLevel.HIGH, "potential": RiskLevel.MEDIUM}.get(severity, RiskLevel.LOW)
    verification = next((v for needle, v in verify_rules(config.verify) if needle in text),
                        Verification.CONFIRMED)
    return Verdict(risk_level=RiskLevel(config.risk_level) if config.risk_level else level,
                   risk_type="simulated conflict", confidence=0.8, verification=verification,
                   reason=config.reason or f"simulated: {verification} {severity} conflict")


def answer_for(text: str, config: SimConfig | None = None) -> str:
    """The reply's content: one verdict, or for a batch ("Conflict k:" sections) one per conflict."""
    sections = _CONFLICT.split(text)
    if len(sections) == 1:
        return verdict_for(text, config).model_dump_json(exclude={"source"})
    numbers, texts = sections[1::2], sections[2::2]
    verdicts = [{"conflict": int(number), **verdict_for(section, config).model_dump(mode="json",
                                                                                     exclude={"source"})}
                for number, section in zip(numbers, texts, strict=True)]
    return json.dumps({"verdicts": verdicts})


def _prompt_parts(body: dict[str, Any]) -> tuple[str, str, int]:
    """All text of the request, the user's part of it (what the rules read: the
    instructions would match any of them) and its number of images."""
    texts, user, images = [], [], 0
    for message in body["messages"]:
        content = message.get("content")
        parts = content if isinstance(content, list) else [{"type": "text", "text": content}]
        for part in parts:
            if part.get("type") == "image_url":
                images += 1
            else:
                texts.append(str(part.get("text", "")))
                if message.get("role") != "system":
                    user.append(texts[-1])
    return "\n".join(texts), "\n".join(user), images


def _completion(model: str, content: str, prompt_tokens: int) -> dict[str, Any]:
    completion_tokens = max(1, len(content) // 4)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


class Simulator:
    def __init__(self, config: SimConfig, seed: int | None = None,
                 refused_keys: frozenset[str] = frozenset()) -> None:
        self.config = config
        self.report = SimReport()
        self.random = random.Random(seed)
        self.refused_keys = refused_keys  # answered 401, as a revoked key would be
        self.recent: dict[str, deque[float]] = {}  # per key: times of accepted requests, last minute

    def _over_limit(self, key: str) -> float | None:
        """Seconds until `key` may call again when it is over its per-minute limit, else None."""
        if self.config.rpm_per_key <= 0:
            return None
        now = time.monotonic()
        times = self.recent.setdefault(key, deque())
        while times and times[0] <= now - 60:
            times.popleft()
        if len(times) >= self.config.rpm_per_key:
            return times[0] + 60 - now
        times.append(now)
        return None

    async def chat(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            text, context, images = _prompt_parts(body)
            model = str(body["model"])
        except (ValueError, KeyError, TypeError, AttributeError):
            self.report.rejected_400 += 1
            return web.json_response({"error": {"message": "body must be JSON with model and messages"}},
                                     status=400)
        if images == 0:
            self.report.rejected_400 += 1
            return web.json_response({"error": {"message": "no image_url in the messages"}}, status=400)
        key = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if key in self.refused_keys:
            self.report.rejected_401 += 1
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        wait = self._over_limit(key)
        if wait is not None:
            self.report.rejected_429 += 1
            return web.json_response({"error": {"message": "rate limit reached"}}, status=429,
                                     headers={"Retry-After": f"{max(wait, self.config.retry_after_s):.0f}"})
        self._count(request)
        self.report.in_flight += 1
        self.report.concurrent_peak = max(self.report.concurrent_peak, self.report.in_flight)
        try:
            return await self._answer(model, text, context, images)
        finally:
            self.report.in_flight -= 1

    def _count(self, request: web.Request) -> None:
        self.report.requests += 1
        key, minute = mask_key(request.headers.get("Authorization", "")), int(time.time() // 60)
        self.report.per_key[key] += 1
        self.report.per_minute[minute] += 1
        self.report.per_key_minute[key, minute] += 1

    async def _answer(self, model: str, text: str, context: str, images: int) -> web.Response:
        config, draw = self.config, self.random.random()
        await asyncio.sleep(config.draw_latency(self.random, images))
        if draw < config.error_rate:
            self.report.errors_500 += 1
            return web.json_response({"error": {"message": "simulated server error"}}, status=500)
        draw -= config.error_rate
        if draw < config.timeout_rate:
            self.report.timeouts += 1
            await asyncio.sleep(config.hang_s)
            return web.json_response({"error": {"message": "simulated hang ended"}}, status=504)
        draw -= config.timeout_rate
        content = answer_for(context, config)
        if draw < config.malformed_rate:
            self.report.malformed += 1
            content = "Sure! Here is my assessment: the risk is " + content[:20]
        prompt_tokens = len(text) // 4 + TOKENS_PER_IMAGE * images
        return web.json_response(_completion(model, content, prompt_tokens))

    async def models(self, _: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "sim-vision", "object": "model"}]})

    async def set_config(self, request: web.Request) -> web.Response:
        try:
            self.config.update(await request.json())
        except (ValueError, TypeError) as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(asdict(self.config))

    async def get_report(self, _: web.Request) -> web.Response:
        return web.json_response(self.report.as_json())

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/sim/config", self.set_config)
        app.router.add_get("/sim/report", self.get_report)
        return app


async def serve(simulator: Simulator, host: str, port: int) -> None:
    runner = web.AppRunner(simulator.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"READY http://{host}:{bound}/v1", flush=True)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="trafficrisk llm-sim", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    defaults = SimConfig()
    for name in ("latency_min", "latency_max", "latency_per_extra_image", "error_rate", "timeout_rate",
                 "malformed_rate", "hang_s", "rpm_per_key", "retry_after_s"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name))
    parser.add_argument("--latency-distribution", choices=LATENCY_DISTRIBUTIONS,
                        default=defaults.latency_distribution)
    parser.add_argument("--reason", default="", help="every verdict's reason (for tests of hostile replies)")
    parser.add_argument("--risk-level", default="", choices=["", *LEVELS], help="every verdict's risk level")
    parser.add_argument("--verify", default="", help="TEXT=VERIFICATION rules, ';' apart; else confirmed")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--refuse-keys", default="", help="comma-separated keys answered with 401")
    args = parser.parse_args(argv)
    config = SimConfig(**{f.name: getattr(args, f.name) for f in fields(SimConfig)})
    refused = frozenset(k for k in args.refuse_keys.split(",") if k)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(Simulator(config, args.seed, refused), args.host, args.port))


if __name__ == "__main__":
    main()
