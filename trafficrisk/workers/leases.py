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

# Each script handles all of a process's cameras in one round trip: under load, one
# call per camera was slow enough for leases to lapse before their renewal.
# Renew or release only leases we still hold: another process may own them by now.
_RENEW = """
local held = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    held[#held + 1] = i
  end
end
return held
"""
_RELEASE = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""
# Take up to ARGV[3] free leases, in the order given.
_ACQUIRE = """
local taken = {}
for i, key in ipairs(KEYS) do
  if #taken >= tonumber(ARGV[3]) then break end
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then taken[#taken + 1] = i end
end
return taken
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
        self._acquire = client.register_script(_ACQUIRE)

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
        held = self._renew(keys=[lease_key(c) for c in ids], args=[self.owner, self.lease_ms]) if ids else []
        return {ids[i - 1] for i in held}

    def acquire(self, camera_ids: Iterable[str], wanted: int) -> list[str]:
        """Up to `wanted` of these cameras whose lease was free, now ours."""
        ids = list(camera_ids)
        if not ids or wanted <= 0:
            return []
        taken = self._acquire(keys=[lease_key(c) for c in ids], args=[self.owner, self.lease_ms, wanted])
        return [ids[i - 1] for i in taken]

    def release(self, camera_ids: Iterable[str]) -> None:
        ids = list(camera_ids)
        if ids:
            self._release(keys=[lease_key(c) for c in ids], args=[self.owner])

    def leave(self) -> None:
        self.client.zrem(PROCESSES_KEY, self.owner)

    def owners(self, camera_ids: Iterable[str]) -> dict[str, str | None]:
        ids = list(camera_ids)
        values = self.client.mget([lease_key(c) for c in ids]) if ids else []
        return {c: v.decode() if v else None for c, v in zip(ids, values, strict=True)}
