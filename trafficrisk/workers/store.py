"""Everything the fleet keeps in Redis, behind one class, with every key named here.

The Redis client is handed in (a `redis.Redis` with bytes responses); this module
imports no redis itself so that it stays plain Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from trafficrisk.messages import Alert, Camera, CameraStatus, FrameResult, RiskLevel

PREFIX = "tr:"
CAMERAS_KEY = PREFIX + "cameras"
STATUS_KEY = PREFIX + "camera_status"
ALERTS_KEY = PREFIX + "alerts"
DROPPED_KEY = PREFIX + "frames_dropped"
CAMERAS_FILE_KEY = PREFIX + "cameras_file"
LLM_OUTCOMES_KEY = PREFIX + "llm_outcomes"
WEBHOOKS_KEY = PREFIX + "webhooks"
LLM_TIMINGS_KEPT = 10_000
# A camera's tracks outlive a short pause of its frames, not a restart of the fleet.
TRACKS_TTL_S = 60

Outcome = TypeVar("Outcome")

# For each camera: forget stale frames in flight; if there is room, take the next
# sequence number and mark that frame in flight, else count a backpressure drop.
_RESERVE = """
local now, ttl, limit, prefix = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local seqs, dropped = {}, 0
for i = 5, #ARGV do
  local camera = ARGV[i]
  local flights = prefix .. 'inflight:' .. camera
  redis.call('ZREMRANGEBYSCORE', flights, '-inf', now - ttl)
  if redis.call('ZCARD', flights) < limit then
    local seq = redis.call('INCR', prefix .. 'seq:' .. camera)
    redis.call('ZADD', flights, now, camera .. ':' .. seq)
    redis.call('EXPIRE', flights, ttl)
    seqs[#seqs + 1] = seq
  else
    seqs[#seqs + 1] = 0
    dropped = dropped + 1
  end
end
if dropped > 0 then redis.call('HINCRBY', prefix .. 'frames_dropped', 'backpressure', dropped) end
return seqs
"""

# Replace the latest result only with a newer frame of the same camera, atomically,
# so that results finishing out of order never move "latest" backwards.
# A frame's result, once: a redelivered aggregate task (same frame id) changes nothing.
# KEYS: latest, history stream, saved frames. ARGV: seq, result, frame id, history
# length, saved frames kept. Returns 1 when it became the camera's latest, 0 when a
# newer one is there, -1 for a redelivery.
_SAVE_RESULT = """
if redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[3]) == 0 then return -1 end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[5]) - 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'seq', ARGV[1], 'result', ARGV[2])
local current = redis.call('HGET', KEYS[1], 'seq')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'result', ARGV[2])
return 1
"""


def frame_key(camera_id: str, seq: int) -> str:
    return f"{PREFIX}frame:{camera_id}:{seq}"


def crop_key(frame_id: str, group_id: str) -> str:
    return f"{PREFIX}crop:{frame_id}:{group_id}"


def in_flight_key(camera_id: str) -> str:
    return f"{PREFIX}inflight:{camera_id}"


def burst_key(camera_id: str) -> str:
    return f"{PREFIX}burst:{camera_id}"


def tracks_key(camera_id: str) -> str:
    return f"{PREFIX}tracks:{camera_id}"


def llm_waits_key(high_priority: bool) -> str:
    return f"{PREFIX}llm_waits:{'high' if high_priority else 'low'}"


def llm_turnarounds_key(high_priority: bool) -> str:
    return f"{PREFIX}llm_turnarounds:{'high' if high_priority else 'low'}"


def latest_key(camera_id: str) -> str:
    return f"{PREFIX}latest:{camera_id}"


def history_key(camera_id: str) -> str:
    return f"{PREFIX}history:{camera_id}"


def saved_key(camera_id: str) -> str:
    return f"{PREFIX}saved:{camera_id}"


class Store:
    def __init__(self, client: Any, *, frame_ttl_s: int = 120, history_length: int = 1000,
                 alerts_length: int = 5000) -> None:
        self.client = client
        self.frame_ttl_s = frame_ttl_s
        self.history_length = history_length
        self.alerts_length = alerts_length
        self._save_result = client.register_script(_SAVE_RESULT)
        self._reserve = client.register_script(_RESERVE)

    # Frames and crops: short-lived JPEG blobs that only their key travels for.
    def put_frame(self, camera_id: str, seq: int, jpeg: bytes) -> str:
        return self.put_frames([(camera_id, seq, jpeg)])[0]

    def put_crop(self, frame_id: str, group_id: str, jpeg: bytes) -> str:
        key = crop_key(frame_id, group_id)
        self.client.set(key, jpeg, ex=self.frame_ttl_s)
        return key

    def get_blob(self, key: str) -> bytes | None:
        blob: bytes | None = self.client.get(key)
        return blob

    # Backpressure: frames of a camera between capture and aggregate, by frame id. Entries
    # older than a frame's TTL are forgotten, so a lost task cannot block a camera for good.
    def reserve_frames(self, camera_ids: list[str], now: float, limit: int) -> dict[str, int]:
        """A new sequence number per camera with room in flight, else 0 (counted as dropped).

        One round trip for a whole beat, however many cameras are due in it.
        """
        seqs = self._reserve(args=[now, self.frame_ttl_s, limit, PREFIX, *camera_ids])
        return dict(zip(camera_ids, (int(s) for s in seqs), strict=True))

    def put_frames(self, frames: list[tuple[str, int, bytes]]) -> list[str]:
        """Store JPEGs as (camera, seq, jpeg), in one round trip; their keys."""
        pipe = self.client.pipeline(transaction=False)
        keys = [frame_key(camera_id, seq) for camera_id, seq, _ in frames]
        for key, (_, _, jpeg) in zip(keys, frames, strict=True):
            pipe.set(key, jpeg, ex=self.frame_ttl_s)
        pipe.execute()
        return keys

    def end_flight(self, camera_id: str, frame_id: str) -> None:
        self.client.zrem(in_flight_key(camera_id), frame_id)

    def count_dropped(self, reason: str, frames: int = 1) -> None:
        self.client.hincrby(DROPPED_KEY, reason, frames)

    def count_llm_outcome(self, outcome: str, tokens: int = 0) -> None:
        """One assessment's outcome, and the tokens it was billed (under the field `tokens`)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(LLM_OUTCOMES_KEY, outcome, 1)
            if tokens:
                pipe.hincrby(LLM_OUTCOMES_KEY, "tokens", tokens)
            pipe.execute()

    def count_webhook(self, outcome: str) -> None:
        """A webhook delivery's outcome: `delivered`, `retried` or `failed` (gave up)."""
        self.client.hincrby(WEBHOOKS_KEY, outcome, 1)

    def webhooks(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(WEBHOOKS_KEY).items()}

    def record_llm_timing(self, high_priority: bool, wait_s: float, turnaround_s: float) -> None:
        """The latest LLM timings per priority, for the dashboard and benchmarks: the wait
        (queued by detect to sent to the LLM) and the turnaround (queued to verdict)."""
        with self.client.pipeline(transaction=False) as pipe:
            for key, value in ((llm_waits_key(high_priority), wait_s),
                               (llm_turnarounds_key(high_priority), turnaround_s)):
                pipe.lpush(key, round(value, 4))
                pipe.ltrim(key, 0, LLM_TIMINGS_KEPT - 1)
            pipe.execute()

    def llm_waits(self, high_priority: bool) -> list[float]:
        """Newest first."""
        return [float(v) for v in self.client.lrange(llm_waits_key(high_priority), 0, -1)]

    def llm_turnarounds(self, high_priority: bool) -> list[float]:
        """Newest first."""
        return [float(v) for v in self.client.lrange(llm_turnarounds_key(high_priority), 0, -1)]

    def llm_outcomes(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(LLM_OUTCOMES_KEY).items()}

    def dropped(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(DROPPED_KEY).items()}

    # Burst: a camera with a possible conflict is sampled faster for a while.
    def start_burst(self, camera_id: str, seconds: float) -> None:
        self.client.set(burst_key(camera_id), b"1", px=int(seconds * 1000))

    def bursting(self, camera_ids: list[str]) -> set[str]:
        values = self.client.mget([burst_key(c) for c in camera_ids]) if camera_ids else []
        return {c for c, v in zip(camera_ids, values, strict=True) if v}

    # Cameras: the YAML file seeds them, the REST API edits them, capture follows them.
    def update_tracks(self, camera_id: str, update: Callable[[Any], tuple[Outcome, Any]]) -> Outcome:
        """Read, change and write the camera's tracker state as one step for all workers.

        `update(state) -> (outcome, new state or None to leave it)`; it may run again
        when another worker wrote the state meanwhile (optimistic locking).
        """
        key = tracks_key(camera_id)
        outcomes: list[Outcome] = []

        def attempt(pipe: Any) -> None:
            raw = pipe.get(key)
            outcome, new_state = update(json.loads(raw) if raw else None)
            outcomes[:] = [outcome]
            if new_state is not None:
                pipe.multi()
                pipe.set(key, json.dumps(new_state), ex=TRACKS_TTL_S)

        self.client.transaction(attempt, key)
        return outcomes[0]

    def list_cameras(self) -> list[Camera]:
        raw = self.client.hgetall(CAMERAS_KEY)
        return sorted((Camera.from_wire(v) for v in raw.values()), key=lambda c: c.id)

    def get_camera(self, camera_id: str) -> Camera | None:
        raw = self.client.hget(CAMERAS_KEY, camera_id)
        return Camera.from_wire(raw) if raw else None

    def put_camera(self, camera: Camera) -> None:
        self.client.hset(CAMERAS_KEY, camera.id, camera.model_dump_json())

    def delete_camera(self, camera_id: str) -> bool:
        removed = self.client.hdel(CAMERAS_KEY, camera_id)
        self.client.hdel(STATUS_KEY, camera_id)
        return bool(removed)

    def cameras_file_state(self, path: str) -> tuple[str | None, set[str]]:
        """The digest and camera ids of the cameras file as last applied."""
        raw = self.client.hget(CAMERAS_FILE_KEY, path)
        if raw is None:
            return None, set()
        state = json.loads(raw)
        return state["digest"], set(state["ids"])

    def save_cameras_file_state(self, path: str, digest: str, ids: set[str]) -> None:
        self.client.hset(CAMERAS_FILE_KEY, path, json.dumps({"digest": digest, "ids": sorted(ids)}))

    def put_status(self, status: CameraStatus) -> None:
        self.put_statuses([status])

    def put_statuses(self, statuses: list[CameraStatus]) -> None:
        self.client.hset(STATUS_KEY, mapping={s.camera_id: s.model_dump_json() for s in statuses})

    def statuses(self) -> dict[str, CameraStatus]:
        raw = self.client.hgetall(STATUS_KEY)
        return {k.decode(): CameraStatus.from_wire(v) for k, v in raw.items()}

    # Results: latest per camera, a capped history stream, alerts.
    def save_result(self, result: FrameResult) -> bool:
        """Store a result once; True when it became the camera's latest.

        The latest never goes back to an older frame, and a frame saved before (among
        the camera's last 4 x history length) is not saved again.
        """
        keys = [latest_key(result.camera_id), history_key(result.camera_id), saved_key(result.camera_id)]
        outcome = self._save_result(keys=keys, args=[result.seq, result.model_dump_json(), result.frame_id,
                                                     self.history_length, 4 * self.history_length])
        return int(outcome) == 1

    def latest(self, camera_id: str) -> FrameResult | None:
        raw = self.client.hget(latest_key(camera_id), "result")
        return FrameResult.from_wire(raw) if raw else None

    def history(self, camera_id: str, count: int = 50) -> list[FrameResult]:
        """The camera's latest results, newest frame first, whatever order they finished in."""
        entries = self.client.xrevrange(history_key(camera_id), count=count)
        results = [FrameResult.from_wire(fields[b"result"]) for _, fields in entries]
        return sorted(results, key=lambda result: result.seq, reverse=True)

    def add_alert(self, alert: Alert) -> bool:
        """Store an alert; False when that very alert was already there (a redelivery)."""
        added = self.client.zadd(ALERTS_KEY, {alert.model_dump_json(): alert.created_at})
        self.client.zremrangebyrank(ALERTS_KEY, 0, -self.alerts_length - 1)
        return bool(added)

    def alerts(self, *, camera_id: str | None = None, level: RiskLevel | None = None,
               since: float | None = None, limit: int = 100) -> list[Alert]:
        """Newest first, filtered by camera, minimum level and creation time."""
        low = since if since is not None else "-inf"
        raw = self.client.zrevrangebyscore(ALERTS_KEY, "+inf", low)
        alerts = (Alert.from_wire(item) for item in raw)
        chosen = [a for a in alerts
                  if (camera_id is None or a.camera_id == camera_id)
                  and (level is None or a.risk_level.rank >= level.rank)]
        return chosen[:limit]
