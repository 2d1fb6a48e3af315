"""Camera leases: how any number of capture processes split the cameras.

A process reads a camera only while it holds that camera's lease, a Redis key with a
TTL that it renews at every sync. Each process heartbeats into a shared sorted set,
so all of them know how many are alive and take a fair share (ceil(cameras /
processes)), preferring cameras in a per-process pseudo-random order (rendezvous
hashing) so they rarely contend for the same one. When a process dies its leases
run out and the others pick its cameras up; when one joins, the others release
their surplus. The Redis client is handed in.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from trafficrisk.workers.store import PREFIX

PROCESSES_KEY = PREFIX + "capture:processes"

# Renew or release only a lease we still hold: another process may own it by now.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def lease_key(camera_id: str) -> str:
    return f"{PREFIX}lease:{camera_id}"


def preference(owner: str, camera_ids: Iterable[str]) -> list[str]:
    """This owner's order of preference over cameras: stable, and different per owner."""
    return sorted(camera_ids, key=lambda c: hashlib.sha256(f"{owner}/{c}".encode()).digest())


def fair_share(cameras: int, processes: int) -> int:
    return math.ceil(cameras / max(processes, 1))


@dataclass(frozen=True)
class LeasePlan:
    release: list[str]  # held cameras to give up: surplus, or no longer wanted
    candidates: list[str]  # free-looking cameras to try, best first
    missing: int  # how many more this process should hold


def plan(owner: str, wanted: Collection[str], held: Collection[str], processes: int) -> LeasePlan:
    ranked = preference(owner, wanted)
    quota = fair_share(len(ranked), processes)
    keep = [c for c in ranked if c in held][:quota]
    return LeasePlan(release=sorted(set(held) - set(keep)),
                     candidates=[c for c in ranked if c not in held],
                     missing=quota - len(keep))


class CameraLeases:
    def __init__(self, client: Any, owner: str, lease_s: float) -> None:
        self.client = client
        self.owner = owner
        self.lease_ms = int(lease_s * 1000)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def heartbeat(self) -> int:
        """Mark this process alive; the number of capture processes alive now."""
        now = time.time()
        pipe = self.client.pipeline()
        pipe.zadd(PROCESSES_KEY, {self.owner: now})
        pipe.zremrangebyscore(PROCESSES_KEY, "-inf", now - self.lease_ms / 1000)
        pipe.zcard(PROCESSES_KEY)
        return int(pipe.execute()[-1])

    def renew(self, camera_ids: Iterable[str]) -> set[str]:
        """The cameras among these whose lease we still hold, renewed."""
        ids = list(camera_ids)
        renewed = [self._renew(keys=[lease_key(c)], args=[self.owner, self.lease_ms]) for c in ids]
        return {c for c, ok in zip(ids, renewed, strict=True) if ok}

    def acquire(self, camera_id: str) -> bool:
        return bool(self.client.set(lease_key(camera_id), self.owner, nx=True, px=self.lease_ms))

    def release(self, camera_id: str) -> None:
        self._release(keys=[lease_key(camera_id)], args=[self.owner])

    def leave(self) -> None:
        self.client.zrem(PROCESSES_KEY, self.owner)

    def owners(self, camera_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(camera_ids)
        values = self.client.mget([lease_key(c) for c in ids]) if ids else []
        return {c: v.decode() if v else None for c, v in zip(ids, values, strict=True)}
