"""One conflict's verification: the LLM's verdict when it answers, the rules' (as a fallback,
`unverified`) when not.

Never raises: a chord fires only when every header task succeeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trafficrisk.messages import Assessment, AssessRequest, Verdict
from trafficrisk.workers.evidence import crops, mosaic
from trafficrisk.workers.llm import Judge, LlmError, NoKeyInTime, describe_conflict, fallback_verdict
from trafficrisk.workers.scene_cache import SceneCache
from trafficrisk.workers.verification import rules_verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssessPolicy:
    low_max_age_s: float = 30.0
    multi_image: bool = True  # the frames as several images; False: side by side in one


def _assessment(request: AssessRequest, verdict: Verdict, **fields: object) -> Assessment:
    conflict = request.conflict
    return Assessment(
        conflict_id=conflict.conflict_id,
        camera_id=conflict.camera_id,
        severity=conflict.severity,
        verdict=verdict,
        queued_at=request.queued_at,
        high_priority=request.high_priority,
        **fields,
    )


def assess(
    request: AssessRequest,
    frames: Sequence[bytes | None],
    client: Judge | None,
    policy: AssessPolicy = AssessPolicy(),
    now: float | None = None,
    cache: SceneCache | None = None,
) -> Assessment:
    """The verdict on one conflict from its frames (JPEGs; None where one expired)."""
    conflict_id = request.conflict_id
    if client is None:
        return _fallback(request, "no LLM configured")
    waited = (now or time.time()) - request.queued_at
    low = not request.high_priority and request.queued_at > 0
    if low and waited > policy.low_max_age_s:
        log.info("conflict %s: shed after %.1f s in llm.low", conflict_id, waited)
        return _shed(request, f"shed: waited {waited:.0f} s in llm.low")
    shown = [frame for frame, jpeg in zip(request.frames, frames, strict=True) if jpeg]
    try:
        images = crops(frames, request.box)
    except ValueError as error:  # a box outside its frames, or a frame that is no JPEG
        return _fallback(request, f"frames unusable: {error}")
    if not images:
        return _fallback(request, "frames expired before verification")
    if not policy.multi_image:
        images = [mosaic(images)]
    cached = cache.lookup(request.conflict, images[-1]) if cache else None
    if cached is not None:
        return _assessment(request, cached)
    started = time.perf_counter()
    # Low work waits for a key only until it would be shed anyway: a thread held longer
    # is a thread high-priority work cannot have.
    key_wait_s = policy.low_max_age_s - waited if low else None
    try:
        context = describe_conflict(request, shown, len(images))
        reply = client.assess(images, context, high=request.high_priority, key_wait_s=key_wait_s)
    except NoKeyInTime as error:
        if low:
            log.info("conflict %s: shed, no key in time: %s", conflict_id, error.reason)
            return _shed(request, f"shed: no LLM key had room within {policy.low_max_age_s:g} s in llm.low")
        log.warning("conflict %s: LLM failed: %s", conflict_id, error.reason)
        return _fallback(request, error.reason, time.perf_counter() - started)
    except LlmError as error:
        log.warning("conflict %s: LLM failed: %s", conflict_id, error.reason)
        return _fallback(request, error.reason, time.perf_counter() - started)
    if cache is not None:
        cache.store(request.conflict, images[-1], reply.verdict)
    waited_s = reply.sent_at - request.queued_at if request.queued_at else 0.0
    return _assessment(
        request,
        reply.verdict,
        tokens=int(reply.usage.get("total_tokens") or 0),
        latency_s=round(time.perf_counter() - started, 4),
        wait_s=round(max(0.0, waited_s), 4),
    )


def _shed(request: AssessRequest, reason: str) -> Assessment:
    return _fallback(request, reason).model_copy(update={"shed": True})


def _fallback(request: AssessRequest, reason: str, latency_s: float = 0.0) -> Assessment:
    verdict = fallback_verdict(rules_verdict(request.conflict), reason)
    return _assessment(request, verdict, latency_s=round(latency_s, 4), error=reason)


def assess_safely(
    request: AssessRequest,
    load_blob: Callable[[str], bytes | None],
    client: Judge | None,
    policy: AssessPolicy = AssessPolicy(),
    cache: SceneCache | None = None,
) -> Assessment:
    """`assess`, with anything unexpected (Redis down, a bug) turned into a fallback."""
    try:
        frames = [load_blob(frame.frame_key) for frame in request.frames]
        return assess(request, frames, client, policy, cache=cache)
    except Exception as error:
        log.exception("conflict %s: assessment failed", request.conflict_id)
        return _fallback(request, f"internal error: {type(error).__name__}")
