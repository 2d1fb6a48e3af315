"""One group's verdict: the LLM's when it answers, the rules' (as a fallback) when not.

Never raises: a chord fires only when every header task succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from trafficrisk.messages import Assessment, AssessRequest
from trafficrisk.workers.llm import Judge, LlmError, NoKeyInTime, describe_group, fallback_verdict
from trafficrisk.workers.scene_cache import SceneCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssessPolicy:
    low_max_age_s: float = 30.0


def assess(request: AssessRequest, crop: bytes | None, client: Judge | None,
           policy: AssessPolicy = AssessPolicy(), now: float | None = None,
           cache: SceneCache | None = None) -> Assessment:
    group, frame = request.group, request.frame
    if client is None:
        return Assessment(group_id=group.group_id, verdict=group.rules_verdict)
    waited = (now or time.time()) - request.queued_at
    low = not request.high_priority and request.queued_at > 0
    if low and waited > policy.low_max_age_s:
        log.info("frame %s group %s: shed after %.1f s in llm.low", frame.frame_id, group.group_id, waited)
        return _shed(request, f"shed: waited {waited:.0f} s in llm.low")
    if crop is None:
        return _fallback(request, "crop expired before assessment")
    cached = cache.lookup(frame.camera_id, group, crop) if cache else None
    if cached is not None:
        return Assessment(group_id=group.group_id, verdict=cached)
    started = time.perf_counter()
    # Low work waits for a key only until it would be shed anyway: a thread held longer
    # is a thread high-priority work cannot have.
    key_wait_s = policy.low_max_age_s - waited if low else None
    try:
        context = describe_group(group, frame.width, frame.height)
        reply = client.assess(crop, context, high=request.high_priority, key_wait_s=key_wait_s)
    except NoKeyInTime as error:
        if low:
            log.info("frame %s group %s: shed, no key in time: %s", frame.frame_id, group.group_id,
                     error.reason)
            return _shed(request, f"shed: no LLM key had room within {policy.low_max_age_s:g} s in llm.low")
        log.warning("frame %s group %s: LLM failed: %s", frame.frame_id, group.group_id, error.reason)
        return _fallback(request, error.reason, time.perf_counter() - started)
    except LlmError as error:
        log.warning("frame %s group %s: LLM failed: %s", frame.frame_id, group.group_id, error.reason)
        return _fallback(request, error.reason, time.perf_counter() - started)
    if cache is not None:
        cache.store(frame.camera_id, group, crop, reply.verdict)
    waited_s = reply.sent_at - request.queued_at if request.queued_at else 0.0
    return Assessment(group_id=group.group_id, verdict=reply.verdict,
                      tokens=int(reply.usage.get("total_tokens") or 0),
                      latency_s=round(time.perf_counter() - started, 4), wait_s=round(max(0.0, waited_s), 4))


def _shed(request: AssessRequest, reason: str) -> Assessment:
    return _fallback(request, reason).model_copy(update={"shed": True})


def _fallback(request: AssessRequest, reason: str, latency_s: float = 0.0) -> Assessment:
    group = request.group
    return Assessment(group_id=group.group_id, verdict=fallback_verdict(group.rules_verdict, reason),
                      latency_s=round(latency_s, 4), error=reason)


def assess_safely(request: AssessRequest, load_crop: Callable[[str], bytes | None],
                  client: Judge | None, policy: AssessPolicy = AssessPolicy(),
                  cache: SceneCache | None = None) -> Assessment:
    """`assess`, with anything unexpected (Redis down, a bug) turned into a fallback."""
    try:
        return assess(request, load_crop(request.crop_key), client, policy, cache=cache)
    except Exception as error:
        log.exception("frame %s group %s: assessment failed", request.frame.frame_id, request.group.group_id)
        return _fallback(request, f"internal error: {type(error).__name__}")
