"""Micro-batching: work from many task threads goes through a model or an API together.

A detect worker runs its tasks on threads; each thread hands its decoded frame to
the batcher and waits. One thread runs the model on whatever has gathered: up to
`max_batch` frames, or fewer once the first has waited `max_wait_s`. On a GPU one
batch of 8 costs little more than one frame; on a CPU it costs about the same as 8
frames one by one, so the wait is short and a lone frame never waits long.

An assess worker's threads mostly wait on the LLM API: there each batch is sent by
the first thread that joined it (`LeaderBatcher`), so batches overlap.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

import numpy as np

from trafficrisk.messages import Detection
from trafficrisk.workers.detection import Detector

Item = TypeVar("Item")
Result = TypeVar("Result")

log = logging.getLogger(__name__)


class BatcherClosed(RuntimeError):
    """The batcher was closed before this item was processed."""


class MicroBatcher(Generic[Item, Result]):
    """Runs `process(items) -> results` (one result per item, in order) on batches."""

    def __init__(self, process: Callable[[Sequence[Item]], Sequence[Result]], *,
                 max_batch: int, max_wait_s: float, name: str = "batcher") -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, not {max_batch}, {max_wait_s}")
        self._process = process
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._waiting: list[tuple[Item, Future[Result]]] = []
        self._first_at = 0.0
        self._changed = threading.Condition()
        self._closed = False
        self.batch_sizes: list[int] = []  # recent batch sizes, for timings and tests
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Item) -> Future[Result]:
        future: Future[Result] = Future()
        with self._changed:
            if self._closed:
                raise BatcherClosed("batcher is closed")
            if not self._waiting:
                self._first_at = time.monotonic()
            self._waiting.append((item, future))
            self._changed.notify_all()
        return future

    def run(self, item: Item) -> Result:
        """Process one item in the next batch and wait for its result."""
        return self.submit(item).result()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join(10)

    def _next_batch(self) -> list[tuple[Item, Future[Result]]]:
        with self._changed:
            while True:
                if self._waiting and (len(self._waiting) >= self.max_batch or self._closed):
                    break
                if self._closed:
                    return []
                timeout = None
                if self._waiting:
                    timeout = self._first_at + self.max_wait_s - time.monotonic()
                    if timeout <= 0:
                        break
                self._changed.wait(timeout)
            batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
            self._first_at = time.monotonic()
            return batch

    def _run(self) -> None:
        while batch := self._next_batch():
            self.batch_sizes = [*self.batch_sizes[-99:], len(batch)]
            try:
                results = self._process([item for item, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"batch of {len(batch)} gave {len(results)} results")
            except Exception as error:  # each waiting caller gets the error, the batcher goes on
                log.exception("batch of %d failed", len(batch))
                for _, future in batch:
                    future.set_exception(error)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)


class _Gathering(Generic[Item, Result]):
    def __init__(self) -> None:
        self.items: list[Item] = []
        self.futures: list[Future[Result]] = []
        self.full = threading.Event()


class LeaderBatcher(Generic[Item, Result]):
    """Runs `process(items) -> results` on batches, each on the thread of its first caller.

    For calls that mostly wait (a remote API): every batch runs at once on a thread
    that was waiting anyway, so batches overlap as single calls do, and no thread of
    the batcher's own holds them up. A batch closes at `max_batch` items or once its
    first caller has waited `max_wait_s`.
    """

    def __init__(self, process: Callable[[Sequence[Item]], Sequence[Result]], *,
                 max_batch: int, max_wait_s: float) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0, not {max_batch}, {max_wait_s}")
        self._process = process
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self._open: _Gathering[Item, Result] | None = None
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []  # recent batch sizes, for timings and tests

    def run(self, item: Item) -> Result:
        """Process `item` in a batch and return its result (or raise the batch's error)."""
        future: Future[Result] = Future()
        with self._lock:
            gathering, leader = self._open, self._open is None
            if gathering is None:
                gathering = self._open = _Gathering()
            gathering.items.append(item)
            gathering.futures.append(future)
            if len(gathering.items) >= self.max_batch:
                self._open = None
                gathering.full.set()
        if leader:
            self._lead(gathering)
        return future.result()

    def _lead(self, gathering: _Gathering[Item, Result]) -> None:
        gathering.full.wait(self.max_wait_s)
        with self._lock:
            if self._open is gathering:
                self._open = None
        self.batch_sizes = [*self.batch_sizes[-99:], len(gathering.items)]
        try:
            results = self._process(gathering.items)
            if len(results) != len(gathering.items):
                raise RuntimeError(f"batch of {len(gathering.items)} gave {len(results)} results")
        except Exception as error:  # every caller of the batch gets the error
            for future in gathering.futures:
                future.set_exception(error)
            return
        for future, result in zip(gathering.futures, results, strict=True):
            future.set_result(result)


class BatchedDetector:
    """A Detector whose calls, from any number of threads, share the wrapped one's batches."""

    def __init__(self, detector: Detector, max_batch: int, max_wait_s: float) -> None:
        self.inner = detector
        self.name = detector.name
        self._batcher: MicroBatcher[np.ndarray, list[Detection]] = MicroBatcher(
            detector.detect, max_batch=max_batch, max_wait_s=max_wait_s, name="detect-batcher")

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Detection]]:
        futures = [self._batcher.submit(image) for image in images]
        return [future.result() for future in futures]

    @property
    def batch_sizes(self) -> list[int]:
        return self._batcher.batch_sizes

    def close(self) -> None:
        self._batcher.close()
