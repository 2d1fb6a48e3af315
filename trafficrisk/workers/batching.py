"""Micro-batching: frames from many task threads go through the model together.

A detect worker runs its tasks on threads; each thread hands its decoded frame to
the batcher and waits. One thread runs the model on whatever has gathered: up to
`max_batch` frames, or fewer once the first has waited `max_wait_s`. On a GPU one
batch of 8 costs little more than one frame; on a CPU it costs about the same as 8
frames one by one, so the wait is short and a lone frame never waits long.
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
