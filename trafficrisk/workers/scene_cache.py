"""A per-camera cache of LLM verdicts for scenes seen a moment ago.

A fixed camera shows the same scene many times: a van parked by a pedestrian
crossing, measured into one conflict event after another as its tracks are lost and
found, gives nearly the same images each time. A verdict is reused when the new
conflict's images look the same (a 64-bit difference hash of the last within a few
bits) and its measures fall in the same coarse buckets (the classes, kind, type,
severity, and time-to-collision and PET bands). Entries live for a TTL and belong to
one camera: nothing is shared across cameras.

The Redis client is handed in: this module imports no redis.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from trafficrisk.messages import ConflictEvent, Verdict, VerdictSource

PREFIX = "tr:llmcache:"
MAX_DISTANCE_BITS = 6  # of 64: small shifts of light and pose, not another scene
MAX_ENTRIES = 32  # per camera and geometry bucket


def difference_hash(jpeg: bytes) -> int | None:
    """64-bit dHash: is each pixel of a 9x8 grey thumbnail brighter than its right neighbour."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_GRAYSCALE)
    if image is None:
        return None
    small = cv2.resize(image, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _band(seconds: float | None, serious: float) -> str:
    if seconds is None:
        return "none"
    return "serious" if seconds <= serious else "potential"


def geometry_signature(event: ConflictEvent) -> str:
    """Coarse enough that the same scene a moment later matches, fine enough that a change
    of risk does not."""
    parts = [
        ",".join(sorted((event.first_label, event.second_label))),
        event.kind,
        event.conflict_type,
        str(event.severity),
        _band(event.min_ttc_s, 1.5),
        _band(event.pet_s, 1.0),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


class SceneCache:
    def __init__(self, client: Any, ttl_s: float, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.clock = clock  # wall-clock seconds; a benchmark replaying video gives video time

    def _key(self, event: ConflictEvent) -> str:
        return f"{PREFIX}{event.camera_id}:{geometry_signature(event)}"

    def lookup(self, event: ConflictEvent, image: bytes) -> Verdict | None:
        """A verdict for a scene like this one on this camera, marked `source=cache`."""
        if self.ttl_s <= 0:
            return None
        fingerprint = difference_hash(image)
        if fingerprint is None:
            return None
        now = self.clock()
        best: tuple[int, Verdict] | None = None
        for raw_hash, raw in self.client.hgetall(self._key(event)).items():
            entry = json.loads(raw)
            distance = (int(raw_hash) ^ fingerprint).bit_count()
            if entry["at"] >= now - self.ttl_s and distance <= MAX_DISTANCE_BITS \
                    and (best is None or distance < best[0]):
                best = (distance, Verdict.model_validate(entry["verdict"]))
        return best[1].model_copy(update={"source": VerdictSource.CACHE}) if best else None

    def store(self, event: ConflictEvent, image: bytes, verdict: Verdict) -> None:
        if self.ttl_s <= 0:
            return
        fingerprint = difference_hash(image)
        if fingerprint is None:
            return
        key = self._key(event)
        entry = json.dumps({"at": self.clock(), "verdict": verdict.to_wire()})
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(key, str(fingerprint), entry)
            pipe.expire(key, int(self.ttl_s) + 1)
            pipe.hlen(key)
            size = pipe.execute()[-1]
        if size > MAX_ENTRIES:
            self._trim(key)

    def _trim(self, key: str) -> None:
        entries = sorted(self.client.hgetall(key).items(), key=lambda item: json.loads(item[1])["at"])
        stale = [field for field, _ in entries[:len(entries) - MAX_ENTRIES]]
        if stale:
            self.client.hdel(key, *stale)
