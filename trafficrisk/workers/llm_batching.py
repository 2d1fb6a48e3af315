"""Conflicts verified together: several conflicts' images in one LLM request, one verdict each.

Assess threads that want a verdict at about the same moment (the conflicts one frame
opened, or of frames a moment apart) join one batch; its first thread waits up to
`max_wait_s` for up to `max_batch` conflicts, sends them as one multi-image request
and hands each thread its own verdict. A batch is one request against the key's
requests per minute and pays the instructions once, for backends that take
several images in a prompt. High and low priority never share a batch: low work
must not ride on the headroom kept for high.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

from trafficrisk.messages import AssessRequest
from trafficrisk.workers.batching import LeaderBatcher
from trafficrisk.workers.llm import LlmClient, LlmError, LlmReply


@dataclass(frozen=True)
class Question:
    images: tuple[bytes, ...]
    context: str
    key_wait_s: float | None


class BatchedLlm:
    """An `LlmClient` whose calls from concurrent threads go out in batches."""

    def __init__(self, client: LlmClient, max_batch: int, max_wait_s: float) -> None:
        self.client = client
        self._batchers = {high: LeaderBatcher[Question, LlmReply | LlmError](
            partial(self._ask, high), max_batch=max_batch, max_wait_s=max_wait_s) for high in (True, False)}

    def assess(self, images: Sequence[bytes], context: str, *, high: bool = False,
               key_wait_s: float | None = None) -> LlmReply:
        reply = self._batchers[high].run(Question(tuple(images), context, key_wait_s))
        if isinstance(reply, LlmError):
            raise reply
        return reply

    def _ask(self, high: bool, questions: Sequence[Question]) -> list[LlmReply | LlmError]:
        if len(questions) == 1:  # a lone conflict goes as a plain call
            only = questions[0]
            return [self.client.assess(only.images, only.context, high=high, key_wait_s=only.key_wait_s)]
        waits = [q.key_wait_s for q in questions if q.key_wait_s is not None]
        return self.client.assess_batch([(q.images, q.context) for q in questions], high=high,
                                        key_wait_s=min(waits) if waits else None)

    def batch_sizes(self, high: bool) -> list[int]:
        return self._batchers[high].batch_sizes


def frame_batches(requests: Sequence[AssessRequest], max_batch: int) -> list[list[AssessRequest]]:
    """Conflicts queued together as assess tasks: high and low apart, up to `max_batch` a
    task, in order. One task reaches one assess process, so its conflicts can share a
    request there."""
    batches = []
    for high in (True, False):
        same = [r for r in requests if r.high_priority is high]
        batches += [same[i:i + max_batch] for i in range(0, len(same), max_batch)]
    return batches
