"""Everything the fleet keeps in Redis, behind one class, with every key named here.

The Redis client is handed in (a `redis.Redis` with bytes responses); this module
imports no redis itself so that it stays plain Python.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from trafficrisk.messages import (
    SEQ_BLOCK,
    Alert,
    AlertState,
    Camera,
    CameraStatus,
    ConflictEvent,
    ConflictSeverity,
    FrameResult,
    MinuteCounts,
    RiskLevel,
    Verdict,
    VerdictSource,
    Verification,
)
from trafficrisk.settings import Settings
from trafficrisk.workers.verification import is_held, verified
from trafficrisk.workers.windows import MINUTE_S, minute_counts, minute_start, minutes_between, window_counts

PREFIX = "tr:"
CAMERAS_KEY = PREFIX + "cameras"
STATUS_KEY = PREFIX + "camera_status"
ALERTS_KEY = PREFIX + "alerts"
DROPPED_KEY = PREFIX + "frames_dropped"
FRAMES_KEY = PREFIX + "frames"  # offered, stored: the frame ledger (see _RESERVE)
CAMERAS_FILE_KEY = PREFIX + "cameras_file"
LLM_OUTCOMES_KEY = PREFIX + "llm_outcomes"
LATE_RESULTS_KEY = PREFIX + "late_results"
EVIDENCE_KEY = PREFIX + "evidence"
EVIDENCE_KINDS = ("frame", "crop", "clip")
PAGE = 200  # records read at a time from a time index (alerts, conflicts)
# The clip is VP8 WebM (workers/evidence.py): Chromium and Firefox play it.
EVIDENCE_MIMETYPES = {"frame": "image/jpeg", "crop": "image/jpeg", "clip": "video/webm"}
WEBHOOKS_KEY = PREFIX + "webhooks"
LLM_TIMINGS_KEPT = 10_000
CONFLICTS_KEY = PREFIX + "conflicts"
# A camera's scene (tracks, open conflicts) outlives a short pause of its frames, not a
# restart of the fleet; its fitted scale is kept a month, refined as it goes.
SCENE_TTL_S = 60
SCALE_TTL_S = 30 * 86400
# A camera's pattern state (cooldowns, frames waiting for earlier ones) outlives a pause.
PATTERNS_TTL_S = 3600
# A worker opening an alert (evidence, events, webhooks) holds it this long; if it stops
# midway, a later task of the camera opens the alert again.
OPENING_LEASE_S = 60

Outcome = TypeVar("Outcome")
Kept = TypeVar("Kept")

# The frame ledger: every frame offered for detection is counted once, at its first
# outcome: stored (aggregate), dropped with a reason (backpressure, expired, corrupt, ...),
# or lost (no outcome within the flight timeout: its task died with a worker or with
# Redis). So offered = stored + dropped + in flight, and nothing vanishes uncounted.
# For each camera: frames in flight for longer than the timeout count as lost and free
# their slot; if there is room, take the next sequence number and mark that frame in
# flight, else count a backpressure drop. `unpublished` frames are those a capture
# process sampled while Redis did not answer: offered, and dropped.
# Frame numbers never repeat (messages.SEQ_BLOCK): when Redis's run id changed since the
# last beat (a restart, with its data or without; a first start counts as one), the
# floor rises to ARGV[6], and a camera whose count is not above it goes on at floor + 1.
_RESERVE = """
local now, timeout, limit, prefix, unpublished = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[4], tonumber(ARGV[5])  -- ARGV[6]: the floor, should Redis have restarted; then the cameras
local seqs, dropped, lost = {}, 0, 0
local floor = tonumber(redis.call('GET', prefix .. 'seq_floor') or 0)
local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
if redis.call('GET', prefix .. 'redis_run') ~= run then
  redis.call('SET', prefix .. 'redis_run', run)
  floor = math.max(floor, tonumber(ARGV[6]))
  redis.call('SET', prefix .. 'seq_floor', floor)
end
for i = 7, #ARGV do
  local camera = ARGV[i]
  local flights = prefix .. 'inflight:' .. camera
  lost = lost + redis.call('ZREMRANGEBYSCORE', flights, '-inf', now - timeout)
  if redis.call('ZCARD', flights) < limit then
    local seq = redis.call('INCR', prefix .. 'seq:' .. camera)
    if seq <= floor then
      seq = floor + 1
      redis.call('SET', prefix .. 'seq:' .. camera, seq)
    end
    redis.call('ZADD', flights, now, camera .. ':' .. seq)
    seqs[#seqs + 1] = seq
  else
    seqs[#seqs + 1] = 0
    dropped = dropped + 1
  end
end
redis.call('HINCRBY', prefix .. 'frames', 'offered', #ARGV - 6 + unpublished)
for reason, count in pairs({backpressure = dropped, lost = lost, unpublished = unpublished}) do
  if count > 0 then redis.call('HINCRBY', prefix .. 'frames_dropped', reason, count) end
end
return seqs
"""

# A frame's flight ends with its outcome, counted only if the frame was still in flight:
# a redelivered task, or one whose frame already counted as lost, counts nothing again.
# KEYS: the camera's frames in flight, the counts (frames or frames_dropped). ARGV: frame
# id, the field (`stored` or the drop reason).
_END_FLIGHT = """
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return 1
"""

# A frame's result, once: a redelivered aggregate task (same frame id) changes nothing.
# It joins the history, counts in its minute unless that minute has closed (the
# camera's newest capture time, its watermark, is past the minute's end by the
# lateness), and becomes the latest only if newer: results finishing out of order
# never move "latest" backwards.
# KEYS: latest, history stream, saved frames, watermark, the frame's minute, late counts.
# ARGV: seq, result, frame id, history length, saved frames kept, captured at, time the
# minute closes at, stats retention, camera id, then field and count pairs for the minute.
# Returns {-1 redelivery | 0 saved | 1 saved and now latest, 1 counted | 0 too late,
# the minute's fields and counts when counted}.
_SAVE_RESULT = """
if redis.call('ZADD', KEYS[3], 'NX', ARGV[1], ARGV[3]) == 0 then return {-1, 0, {}} end
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[5]) - 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'seq', ARGV[1], 'result', ARGV[2])
local watermark = tonumber(redis.call('GET', KEYS[4]) or ARGV[6])
local counted, minute = 0, {}
if tonumber(ARGV[7]) > watermark then
  for i = 10, #ARGV, 2 do redis.call('HINCRBY', KEYS[5], ARGV[i], ARGV[i + 1]) end
  redis.call('EXPIRE', KEYS[5], ARGV[8])
  counted, minute = 1, redis.call('HGETALL', KEYS[5])
else
  redis.call('HINCRBY', KEYS[6], ARGV[9], 1)
end
if tonumber(ARGV[6]) >= watermark then redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[8]) end
local current = redis.call('HGET', KEYS[1], 'seq')
if current and tonumber(current) >= tonumber(ARGV[1]) then return {0, counted, minute} end
redis.call('HSET', KEYS[1], 'seq', ARGV[1], 'result', ARGV[2])
return {1, counted, minute}
"""

# An alert, once (by id), counted in its minute; the oldest beyond the cap or the
# retention go, with their evidence.
# KEYS: alerts index, the alert, its minute. ARGV: id, alert, created at, cap, retention,
# stats retention, now, key prefix.
_ADD_ALERT = """
if not redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[5]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[3], 'alerts', 1)
redis.call('EXPIRE', KEYS[3], ARGV[6])
local gone = redis.call('ZRANGE', KEYS[1], 0, -tonumber(ARGV[4]) - 1)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[7]) - tonumber(ARGV[5]))) do
  gone[#gone + 1] = id
end
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[8] .. 'alert:' .. id)
  for _, kind in ipairs({'frame', 'crop', 'clip'}) do
    redis.call('DEL', ARGV[8] .. 'evidence:' .. id .. ':' .. kind)
  end
end
return 1
"""

# Evidence of the newest `cap` alerts only: it is the bulk of what alerts keep.
# KEYS: evidence index, the blob. ARGV: alert id, created at, blob, retention, cap, prefix.
_PUT_EVIDENCE = """
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -tonumber(ARGV[5]) - 1)) do
  redis.call('ZREM', KEYS[1], id)
  for _, kind in ipairs({'frame', 'crop', 'clip'}) do
    redis.call('DEL', ARGV[6] .. 'evidence:' .. id .. ':' .. kind)
  end
end
"""


# A conflict event's newest version, once: versions are ordered by the seq of the frame
# that made them, so a redelivered or late result never takes a record back. The
# oldest beyond the cap or the retention go.
# A version that asks for verification joins the camera's conflicts to verify.
# KEYS: index, the record, the camera's to-verify set. ARGV: id, event JSON, start time,
# seq, retention, cap, now, prefix, to verify (1 or 0).
# Returns 1 when this version was stored, 0 when a newer one was there.
_SAVE_CONFLICT = """
local current = redis.call('HGET', KEYS[2], 'seq')
if current and tonumber(current) >= tonumber(ARGV[4]) then return 0 end
redis.call('HSET', KEYS[2], 'seq', ARGV[4], 'event', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
if ARGV[9] == '1' then redis.call('SADD', KEYS[3], ARGV[1]) end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
local gone = redis.call('ZRANGE', KEYS[1], 0, -tonumber(ARGV[6]) - 1)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[7]) - tonumber(ARGV[5]))) do
  gone[#gone + 1] = id
end
for _, id in ipairs(gone) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[8] .. 'conflict:' .. id)
end
return 1
"""


# A conflict's verdict, unless a weightier one is there: a graver severity's, and at one
# severity the LLM's over a fallback (a failed call of a redelivered request).
# KEYS: the record. ARGV: verdict JSON, weight. Returns the event JSON, or nil.
_SAVE_VERDICT = """
local event = redis.call('HGET', KEYS[1], 'event')
if not event then return nil end
local weight = redis.call('HGET', KEYS[1], 'verdict_weight')
if weight and tonumber(weight) > tonumber(ARGV[2]) then return nil end
redis.call('HSET', KEYS[1], 'verdict', ARGV[1], 'verdict_weight', ARGV[2])
return event
"""


SEQ_FLOOR_SINCE = 1_767_225_600  # 2026-01-01 UTC


def seq_floor(now: float) -> int:
    """Above every frame number given before `now`: SEQ_BLOCK for each second since
    SEQ_FLOOR_SINCE, up to the next whole second (0 before then). A camera samples at
    most 15 frames a second, far fewer than SEQ_BLOCK; only two restarts that lose Redis's
    data within the same second share a floor. (Numbers reach 2**53, where JSON and Lua
    lose integers, in some 270,000 years.)"""
    if now < SEQ_FLOOR_SINCE:
        return 0
    return (int(now - SEQ_FLOOR_SINCE) + 1) * SEQ_BLOCK


def frame_key(camera_id: str, seq: int) -> str:
    return f"{PREFIX}frame:{camera_id}:{seq}"


def in_flight_key(camera_id: str) -> str:
    return f"{PREFIX}inflight:{camera_id}"


def burst_key(camera_id: str) -> str:
    return f"{PREFIX}burst:{camera_id}"


def scene_key(camera_id: str) -> str:
    return f"{PREFIX}scene:{camera_id}"


def scene_seq_key(camera_id: str) -> str:
    return f"{PREFIX}scene_seq:{camera_id}"


def session_key(session_id: str) -> str:
    return f"{PREFIX}session:{session_id}"


def scale_key(camera_id: str) -> str:
    return f"{PREFIX}scale:{camera_id}"


def conflict_key(conflict_id: str) -> str:
    return f"{PREFIX}conflict:{conflict_id}"


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


def watermark_key(camera_id: str) -> str:
    return f"{PREFIX}watermark:{camera_id}"


def window_key(camera_id: str, minute: int) -> str:
    return f"{PREFIX}window:{camera_id}:{minute}"


def patterns_key(camera_id: str) -> str:
    return f"{PREFIX}patterns:{camera_id}"


def alert_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}"


def opening_key(camera_id: str) -> str:
    return f"{PREFIX}opening:{camera_id}"


def opening_lease_key(alert_id: str) -> str:
    return f"{PREFIX}opening_lease:{alert_id}"


def to_verify_key(camera_id: str) -> str:
    return f"{PREFIX}to_verify:{camera_id}"


def verify_lease_key(conflict_id: str) -> str:
    return f"{PREFIX}verify_lease:{conflict_id}"


def conflict_alerts_key(conflict_id: str) -> str:
    return f"{PREFIX}conflict_alerts:{conflict_id}"


def evidence_key(alert_id: str, kind: str) -> str:
    return f"{PREFIX}evidence:{alert_id}:{kind}"


class AlertChangeError(ValueError):
    """A change of state an alert's lifecycle does not allow (the client's mistake: 409),
    kept apart from a stored alert that fails to parse (the fleet's: 500)."""


@dataclass(frozen=True)
class SaveOutcome:
    is_new: bool  # False: this frame's result was saved before
    is_latest: bool  # the camera's newest result now
    minute: MinuteCounts | None  # its minute's counts with it; None: not counted (closed, or a redelivery)


class Store:
    def __init__(
        self,
        client: Any,
        *,
        frame_ttl_s: int = 120,
        flight_timeout_s: float = 20.0,
        history_length: int = 1000,
        alerts_length: int = 5000,
        lateness_s: float = 10.0,
        stats_retention_s: int = 7 * 86400,
        evidence_retention_s: int = 7 * 86400,
        evidence_alerts: int = 500,
        conflicts_length: int = 5000,
        conflicts_retention_s: int = 7 * 86400,
        resolve_rejected: bool = True,
    ) -> None:
        self.client = client
        self.resolve_rejected = resolve_rejected
        self.frame_ttl_s = frame_ttl_s
        self.flight_timeout_s = flight_timeout_s
        self.history_length = history_length
        self.alerts_length = alerts_length
        self.lateness_s = lateness_s
        self.stats_retention_s = stats_retention_s
        self.evidence_retention_s = evidence_retention_s
        self.evidence_alerts = evidence_alerts
        self.conflicts_length = conflicts_length
        self.conflicts_retention_s = conflicts_retention_s
        self._save_conflict = client.register_script(_SAVE_CONFLICT)
        self._save_verdict = client.register_script(_SAVE_VERDICT)
        self._save_result = client.register_script(_SAVE_RESULT)
        self._add_alert = client.register_script(_ADD_ALERT)
        self._put_evidence = client.register_script(_PUT_EVIDENCE)
        self._reserve = client.register_script(_RESERVE)
        self._end_flight = client.register_script(_END_FLIGHT)

    @classmethod
    def from_settings(cls, client: Any, settings: Settings) -> Store:
        return cls(
            client,
            frame_ttl_s=settings.frame_ttl_s,
            flight_timeout_s=settings.flight_timeout_s,
            history_length=settings.history_length,
            alerts_length=settings.alerts_length,
            lateness_s=settings.lateness_s,
            stats_retention_s=settings.stats_retention_s,
            evidence_retention_s=settings.evidence_retention_s,
            evidence_alerts=settings.evidence_alerts,
            conflicts_length=settings.conflicts_length,
            conflicts_retention_s=settings.conflicts_retention_s,
            resolve_rejected=settings.resolve_rejected,
        )

    # Frames and crops: short-lived JPEG blobs that only their key travels for.
    def put_frame(self, camera_id: str, seq: int, jpeg: bytes) -> str:
        return self.put_frames([(camera_id, seq, jpeg)])[0]

    def get_blob(self, key: str) -> bytes | None:
        blob: bytes | None = self.client.get(key)
        return blob

    # Backpressure: frames of a camera between capture and aggregate, by frame id. Entries
    # older than the flight timeout count as lost, so a lost task cannot block a camera.
    def reserve_frames(self, camera_ids: list[str], now: float, limit: int,
                       unpublished: int = 0) -> dict[str, int]:
        """A new sequence number per camera with room in flight, else 0 (counted as dropped);
        `unpublished` frames that could not be offered earlier are counted too.

        One round trip for a whole beat, however many cameras are due in it.
        """
        args = [now, self.flight_timeout_s, limit, PREFIX, unpublished, seq_floor(now), *camera_ids]
        seqs = self._reserve(args=args)
        return dict(zip(camera_ids, (int(s) for s in seqs), strict=True))

    def put_frames(self, frames: list[tuple[str, int, bytes]]) -> list[str]:
        """Store JPEGs as (camera, seq, jpeg), in one round trip; their keys."""
        pipe = self.client.pipeline(transaction=False)
        keys = [frame_key(camera_id, seq) for camera_id, seq, _ in frames]
        for key, (_, _, jpeg) in zip(keys, frames, strict=True):
            pipe.set(key, jpeg, ex=self.frame_ttl_s)
        pipe.execute()
        return keys

    def end_flight(self, camera_id: str, frame_id: str, dropped: str | None = None) -> bool:
        """The frame's outcome in the ledger: stored, or dropped for this reason; False
        (nothing counted) when it was no longer in flight."""
        keys = [in_flight_key(camera_id), DROPPED_KEY if dropped else FRAMES_KEY]
        return bool(self._end_flight(keys=keys, args=[frame_id, dropped or "stored"]))

    def count_dropped(self, reason: str, frames: int = 1) -> None:
        self.client.hincrby(DROPPED_KEY, reason, frames)

    def count_llm_outcome(self, outcome: str, tokens: int = 0) -> None:
        """One assessment's outcome, and the tokens it was billed (under the field `tokens`)."""
        with self.client.pipeline(transaction=False) as pipe:
            pipe.hincrby(LLM_OUTCOMES_KEY, outcome, 1)
            if tokens:
                pipe.hincrby(LLM_OUTCOMES_KEY, "tokens", tokens)
            pipe.execute()

    # Dashboard sessions live here, not in the cookie alone, so that logout (or an idle
    # timeout) ends them everywhere, even for a copy of the cookie.
    def open_session(self, session_id: str, idle_s: int) -> None:
        self.client.set(session_key(session_id), 1, ex=idle_s)

    def renew_session(self, session_id: str, idle_s: int) -> bool:
        """False when the session has ended (logged out, or idle past `idle_s`)."""
        return bool(self.client.expire(session_key(session_id), idle_s))

    def close_session(self, session_id: str) -> None:
        self.client.delete(session_key(session_id))

    def count_webhook(self, outcome: str) -> None:
        """A webhook delivery's outcome: `delivered`, `retried` or `failed` (gave up)."""
        self.client.hincrby(WEBHOOKS_KEY, outcome, 1)

    def webhooks(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.client.hgetall(WEBHOOKS_KEY).items()}

    def record_llm_timing(self, high_priority: bool, wait_s: float, turnaround_s: float) -> None:
        """The latest LLM timings per priority, for the dashboard and benchmarks: the wait
        (queued by detect to sent to the LLM) and the turnaround (queued to verdict)."""
        with self.client.pipeline(transaction=False) as pipe:
            for key, value in (
                (llm_waits_key(high_priority), wait_s),
                (llm_turnarounds_key(high_priority), turnaround_s),
            ):
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

    def frame_counts(self) -> dict[str, int]:
        """The ledger's `offered` and `stored` (drops are in `dropped`)."""
        counts = {k.decode(): int(v) for k, v in self.client.hgetall(FRAMES_KEY).items()}
        return {"offered": counts.get("offered", 0), "stored": counts.get("stored", 0)}

    def frames_in_flight(self, camera_ids: list[str]) -> int:
        pipe = self.client.pipeline(transaction=False)
        for camera_id in camera_ids:
            pipe.zcard(in_flight_key(camera_id))
        return sum(pipe.execute())

    # Burst: a camera with a possible conflict is sampled faster for a while.
    def start_burst(self, camera_id: str, seconds: float) -> None:
        self.client.set(burst_key(camera_id), b"1", px=int(seconds * 1000))

    def bursting(self, camera_ids: list[str]) -> set[str]:
        values = self.client.mget([burst_key(c) for c in camera_ids]) if camera_ids else []
        return {c for c, v in zip(camera_ids, values, strict=True) if v}

    # Scenes: each camera's tracks, open conflicts and scale samples, moved on frame by frame.
    def update_scene(self, camera_id: str, update: Callable[[Any, Any], tuple[Outcome, Any, Any]]) -> Outcome:
        """Read, change and write the camera's scene state and scale samples as one step for
        all workers.

        `update(state, samples) -> (outcome, new state, new samples)`, None for both to
        leave them; it may run again when another worker wrote them meanwhile (optimistic
        locking). The state's `tracks.seq` is also kept on its own, for `scene_seq`.
        """
        keys = scene_key(camera_id), scale_key(camera_id)
        outcomes: list[Outcome] = []

        def attempt(pipe: Any) -> None:
            raw_state, raw_samples = pipe.get(keys[0]), pipe.get(keys[1])
            outcome, state, samples = update(
                json.loads(raw_state) if raw_state else None, json.loads(raw_samples) if raw_samples else None
            )
            outcomes[:] = [outcome]
            if state is not None:
                pipe.multi()
                pipe.set(keys[0], json.dumps(state), ex=SCENE_TTL_S)
                pipe.set(scene_seq_key(camera_id), state["tracks"]["seq"], ex=SCENE_TTL_S)
                pipe.set(keys[1], json.dumps(samples), ex=SCALE_TTL_S)

        self.client.transaction(attempt, *keys)
        return outcomes[0]

    def scene_seq(self, camera_id: str) -> int:
        """The seq of the camera's newest frame through its scene (0: none)."""
        return int(self.client.get(scene_seq_key(camera_id)) or 0)

    def is_in_flight(self, camera_id: str, seq: int) -> bool:
        return self.client.zscore(in_flight_key(camera_id), f"{camera_id}:{seq}") is not None

    def scale_samples(self, camera_id: str) -> dict[str, Any] | None:
        raw = self.client.get(scale_key(camera_id))
        return json.loads(raw) if raw else None

    # Conflict events: the newest version of each, indexed by start time.
    def save_conflicts(
        self, events: tuple[ConflictEvent, ...] | list[ConflictEvent], now: float, verify: bool = False
    ) -> list[bool]:
        """Store each event's version unless a newer one is there; which were stored. With
        `verify`, the versions that ask for verification wait for it (`claim_verifications`)."""
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            self._save_conflict(
                keys=[CONFLICTS_KEY, conflict_key(event.conflict_id), to_verify_key(event.camera_id)],
                client=pipe,
                args=[
                    event.conflict_id,
                    event.model_dump_json(),
                    event.start_at,
                    event.updated_seq,
                    self.conflicts_retention_s,
                    self.conflicts_length,
                    now,
                    PREFIX,
                    int(event.to_verify and verify),
                ],
            )
        return [bool(stored) for stored in pipe.execute()] if events else []

    def get_conflict(self, conflict_id: str) -> ConflictEvent | None:
        return _with_verdict(*self.client.hmget(conflict_key(conflict_id), "event", "verdict"))

    def save_verdict(
        self, conflict_id: str, verdict: Verdict, severity: ConflictSeverity
    ) -> ConflictEvent | None:
        """Keep a conflict's verdict unless a weightier one is there (a graver severity's, or the
        LLM's over a fallback); the event with it, or None when it was not kept."""
        weight = severity.rank * 2 + (verdict.source is not VerdictSource.FALLBACK)
        raw = self._save_verdict(keys=[conflict_key(conflict_id)], args=[verdict.model_dump_json(), weight])
        return _with_verdict(raw, verdict.model_dump_json()) if raw else None

    # Work that waits in a per-camera set until a worker has done it (opening an alert,
    # queueing a verification): claimed with a lease, so a stopped worker loses none of it.
    def _claim(self, waiting_key: str, lease_key: Callable[[str], str], lease_s: float) -> list[str]:
        return [
            member.decode()
            for member in self.client.smembers(waiting_key)
            if self.client.set(lease_key(member.decode()), b"1", nx=True, px=int(lease_s * 1000))
        ]

    def _done(self, waiting_key: str, lease_key: str, member: str) -> None:
        with self.client.pipeline(transaction=False) as pipe:
            pipe.srem(waiting_key, member)
            pipe.delete(lease_key)
            pipe.execute()

    def claim_verifications(self, camera_id: str, lease_s: float = OPENING_LEASE_S) -> list[ConflictEvent]:
        """The camera's conflicts waiting to be sent for verification that no other worker
        is sending, at their newest version (each leased to the caller until `verification_queued`)."""
        claimed = []
        for conflict_id in self._claim(to_verify_key(camera_id), verify_lease_key, lease_s):
            event = self.get_conflict(conflict_id)
            if event is None:  # gone past its retention or the cap
                self._done(to_verify_key(camera_id), verify_lease_key(conflict_id), conflict_id)
            else:
                claimed.append(event)
        return claimed

    def verification_queued(self, event: ConflictEvent) -> None:
        self._done(to_verify_key(event.camera_id), verify_lease_key(event.conflict_id), event.conflict_id)

    def conflicts(
        self,
        *,
        camera_id: str | None = None,
        since: float | None = None,
        severity: ConflictSeverity | None = None,
        limit: int = 100,
    ) -> list[ConflictEvent]:
        """Newest start first, filtered by camera, start time and minimum severity."""

        def load(ids: list[bytes]) -> list[ConflictEvent]:
            pipe = self.client.pipeline(transaction=False)
            for raw_id in ids:
                pipe.hmget(conflict_key(raw_id.decode()), "event", "verdict")
            return [event for fields in pipe.execute() if (event := _with_verdict(*fields)) is not None]

        def wanted(event: ConflictEvent) -> bool:
            return (camera_id is None or event.camera_id == camera_id) and (
                severity is None or event.severity.rank >= severity.rank
            )

        return self._newest(CONFLICTS_KEY, self.conflicts_length, since, load, wanted, limit)

    def _newest(
        self,
        index: str,
        length: int,
        since: float | None,
        load: Callable[[list[bytes]], list[Kept]],
        wanted: Callable[[Kept], bool],
        limit: int,
    ) -> list[Kept]:
        """The newest `limit` records of a time index that pass `wanted`, read a page at a
        time: the dashboard asks for the newest few of thousands."""
        low = since if since is not None else "-inf"
        chosen: list[Kept] = []
        for start in range(0, length, PAGE):
            ids = self.client.zrevrangebyscore(index, "+inf", low, start=start, num=PAGE)
            chosen += [record for record in load(ids) if wanted(record)]
            if len(chosen) >= limit or len(ids) < PAGE:
                break
        return chosen[:limit]

    # Cameras: the YAML file seeds them, the REST API edits them, capture follows them.
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

    # Results: latest per camera, a capped history stream, per-minute counts.
    def save_result(self, result: FrameResult) -> SaveOutcome:
        """Store a result once, count it in its minute if that is still open.

        The latest never goes back to an older frame, and a frame saved before (among
        the camera's last 4 x history length) is not saved again.
        """
        camera_id, minute = result.camera_id, minute_start(result.captured_at)
        keys = [
            latest_key(camera_id),
            history_key(camera_id),
            saved_key(camera_id),
            watermark_key(camera_id),
            window_key(camera_id, minute),
            LATE_RESULTS_KEY,
        ]
        counts = [item for pair in window_counts(result).items() for item in pair]
        closes_at = minute + MINUTE_S + self.lateness_s
        saved, counted, fields = self._save_result(
            keys=keys,
            args=[
                result.seq,
                result.model_dump_json(),
                result.frame_id,
                self.history_length,
                4 * self.history_length,
                result.captured_at,
                closes_at,
                self.stats_retention_s,
                camera_id,
                *counts,
            ],
        )
        pairs = zip(fields[::2], fields[1::2], strict=True)
        counted_minute = minute_counts(minute, {k.decode(): int(v) for k, v in pairs}) if counted else None
        return SaveOutcome(is_new=saved >= 0, is_latest=saved == 1, minute=counted_minute)

    def latest(self, camera_id: str) -> FrameResult | None:
        raw = self.client.hget(latest_key(camera_id), "result")
        return FrameResult.from_wire(raw) if raw else None

    def history(self, camera_id: str, count: int = 50) -> list[FrameResult]:
        """The camera's latest results, newest frame first, whatever order they finished in."""
        entries = self.client.xrevrange(history_key(camera_id), count=count)
        results = [FrameResult.from_wire(fields[b"result"]) for _, fields in entries]
        return sorted(results, key=lambda result: result.seq, reverse=True)

    def late_results(self) -> dict[str, int]:
        """Per camera, results that came after their minute had closed."""
        return {k.decode(): int(v) for k, v in self.client.hgetall(LATE_RESULTS_KEY).items()}

    def minutes(self, camera_ids: list[str], first: float, last: float) -> list[MinuteCounts]:
        """Per-minute counts summed over the cameras, oldest first, minutes first..last."""
        starts = list(minutes_between(first, last))
        pipe = self.client.pipeline(transaction=False)
        for start in starts:
            for camera_id in camera_ids:
                pipe.hgetall(window_key(camera_id, start))
        replies = iter(pipe.execute())
        summaries = []
        for start in starts:
            totals: dict[str, int] = {}
            for _ in camera_ids:
                for field, value in next(replies).items():
                    totals[field.decode()] = totals.get(field.decode(), 0) + int(value)
            summaries.append(minute_counts(start, totals))
        return summaries

    # Patterns: each camera's state, advanced with its alerts in one transaction.
    def advance_patterns(
        self,
        camera_id: str,
        advance: Callable[[dict[str, Any] | None], tuple[list[Alert], dict[str, Any]]],
        now: float,
    ) -> list[Alert]:
        """Run `advance(state) -> (alerts, new state)` and store both, as one step for all
        workers (it may run again when another worker changed the state meanwhile).
        The alerts returned are the new ones; they also wait to be opened
        (`claim_alerts_to_open`), so a worker stopping right after loses none."""
        key = patterns_key(camera_id)

        def attempt(pipe: Any) -> list[Alert]:
            raw = pipe.get(key)
            alerts, state = advance(json.loads(raw) if raw else None)
            new = self._with_verdicts([a for a in alerts if not a.escalated], now, pipe)
            escalated = self._escalations([a for a in alerts if a.escalated], now, pipe)
            pipe.multi()
            pipe.set(key, json.dumps(state), ex=PATTERNS_TTL_S)
            for alert in new:
                self._queue_alert(alert, now, pipe)
                pipe.sadd(opening_key(camera_id), alert.alert_id)
            for alert in escalated:
                pipe.set(alert_key(alert.alert_id), alert.model_dump_json(), keepttl=True)
            for alert in new + escalated:
                for conflict_id in alert.conflicts:  # where a verdict finds its alerts
                    pipe.sadd(conflict_alerts_key(conflict_id), alert.alert_id)
                    pipe.expire(conflict_alerts_key(conflict_id), self.conflicts_retention_s)
            return new + escalated

        alerts: list[Alert] = self.client.transaction(attempt, key, value_from_callable=True)
        return alerts

    def _escalations(self, alerts: list[Alert], now: float, pipe: Any) -> list[Alert]:
        """The stored alerts these escalate, with the new level, type and reason and their
        own state (watched: an operator's acknowledgement meanwhile is not lost)."""
        changed = []
        for alert in alerts:
            pipe.watch(alert_key(alert.alert_id))
            raw = pipe.get(alert_key(alert.alert_id))
            if raw is None:
                continue
            stored = Alert.from_wire(raw)
            changed.append(
                stored.model_copy(
                    update={
                        "risk_level": alert.risk_level,
                        "risk_type": alert.risk_type,
                        "reason": alert.reason,
                        "updated_at": now,
                        "escalated": True,
                        "conflicts": tuple(dict.fromkeys(stored.conflicts + alert.conflicts)),
                    }
                )
            )
        return changed

    def _with_verdicts(self, alerts: list[Alert], now: float, pipe: Any) -> list[Alert]:
        """New alerts with the verdicts their conflicts already have (watched: a verdict
        recorded meanwhile finds the alert, or the transaction runs again and sees it)."""
        kept = []
        for alert in alerts:
            verdict = None
            for conflict_id in alert.conflicts:
                pipe.watch(conflict_key(conflict_id))
                raw = pipe.hget(conflict_key(conflict_id), "verdict")
                verdict = Verdict.from_wire(raw) if raw else verdict
            kept.append(verified(alert, verdict, self.resolve_rejected, now) if verdict else alert)
        return kept

    def verify_alerts(self, event: ConflictEvent, now: float) -> list[tuple[Alert, bool]]:
        """The conflict's alerts with its verdict, each with whether it has been opened
        already (one still waiting to open goes out verified when it does)."""
        assert event.verdict is not None
        changed = []
        for raw_id in self.client.smembers(conflict_alerts_key(event.conflict_id)):
            alert_id = raw_id.decode()

            def attempt(pipe: Any, alert_id: str = alert_id) -> Alert | None:
                raw = pipe.get(alert_key(alert_id))
                if raw is None:
                    return None
                alert = verified(Alert.from_wire(raw), event.verdict, self.resolve_rejected, now)  # type: ignore[arg-type]
                pipe.multi()
                pipe.set(alert_key(alert_id), alert.model_dump_json(), keepttl=True)
                return alert

            alert = self.client.transaction(attempt, alert_key(alert_id), value_from_callable=True)
            if alert is not None:
                waiting = self.client.sismember(opening_key(alert.camera_id), alert_id)
                changed.append((self._with_evidence([alert])[0], not waiting))
        return changed

    # Alerts: one key each (their state changes), indexed by creation time.
    def _queue_alert(self, alert: Alert, now: float, client: Any) -> Any:
        minute = window_key(alert.camera_id, minute_start(alert.created_at))
        keys = [ALERTS_KEY, alert_key(alert.alert_id), minute]
        return self._add_alert(
            keys=keys,
            client=client,
            args=[
                alert.alert_id,
                alert.model_dump_json(),
                alert.created_at,
                self.alerts_length,
                self.evidence_retention_s,
                self.stats_retention_s,
                now,
                PREFIX,
            ],
        )

    def add_alert(self, alert: Alert, now: float) -> bool:
        """Store an alert; False when that very alert was already there (a redelivery)."""
        return bool(self._queue_alert(alert, now, self.client))

    def claim_alerts_to_open(
        self, camera_id: str, *, now: float = 0.0, wait_s: float = 0.0, lease_s: float = OPENING_LEASE_S
    ) -> list[Alert]:
        """The camera's alerts not opened yet that no other worker is opening (each now
        leased to the caller, until `alert_opened` or the lease runs out), but those that
        still wait for their verdict (up to `wait_s`)."""
        claimed = []
        for alert_id in self._claim(opening_key(camera_id), opening_lease_key, lease_s):
            alert = self.get_alert(alert_id)
            if alert is None:  # gone past its retention or the cap
                self._done(opening_key(camera_id), opening_lease_key(alert_id), alert_id)
            elif is_held(alert, wait_s, now):
                self.client.delete(opening_lease_key(alert_id))
            else:
                claimed.append(alert)
        return sorted(claimed, key=lambda alert: alert.created_at)

    def alert_opened(self, alert: Alert) -> None:
        self._done(opening_key(alert.camera_id), opening_lease_key(alert.alert_id), alert.alert_id)

    def get_alert(self, alert_id: str) -> Alert | None:
        raw = self.client.get(alert_key(alert_id))
        return self._with_evidence([Alert.from_wire(raw)])[0] if raw else None

    def change_alert_state(self, alert_id: str, state: AlertState, now: float) -> Alert | None:
        """The alert in its new state (None when there is no such alert); AlertChangeError for
        a change its lifecycle does not allow."""
        key = alert_key(alert_id)

        def attempt(pipe: Any) -> Alert | None:
            raw = pipe.get(key)
            if raw is None:
                return None
            alert = Alert.from_wire(raw)
            if not alert.state.can_become(state):
                raise AlertChangeError(f"alert {alert_id} is {alert.state}: it cannot become {state}")
            changed = alert.model_copy(update={"state": state, "updated_at": now})
            pipe.multi()
            pipe.set(key, changed.model_dump_json(), keepttl=True)
            return changed

        changed: Alert | None = self.client.transaction(attempt, key, value_from_callable=True)
        return self._with_evidence([changed])[0] if changed else None

    def alerts(
        self,
        *,
        camera_id: str | None = None,
        level: RiskLevel | None = None,
        since: float | None = None,
        state: AlertState | None = None,
        verification: Verification | None = None,
        limit: int = 100,
    ) -> list[Alert]:
        """Newest first, filtered by camera, minimum level, creation time, state and verification."""

        def wanted(alert: Alert) -> bool:
            return (
                (camera_id is None or alert.camera_id == camera_id)
                and (level is None or alert.risk_level.rank >= level.rank)
                and (state is None or alert.state is state)
                and (verification is None or alert.verification is verification)
            )

        return self._with_evidence(
            self._newest(ALERTS_KEY, self.alerts_length, since, self._load_alerts, wanted, limit)
        )

    def alert_states(self) -> dict[AlertState, int]:
        """How many alerts are kept in each state."""
        counts: dict[AlertState, int] = {}
        for alert in self._load_alerts(self.client.zrange(ALERTS_KEY, 0, -1)):
            counts[alert.state] = counts.get(alert.state, 0) + 1
        return counts

    def _load_alerts(self, ids: list[bytes]) -> list[Alert]:
        """The alerts of these ids, in order; those past their retention are skipped."""
        raws = self.client.mget([alert_key(i.decode()) for i in ids]) if ids else []
        return [Alert.from_wire(raw) for raw in raws if raw is not None]

    # Evidence: an alert's frame, crop and clip, for the newest alerts.
    def put_evidence(self, alert: Alert, kind: str, blob: bytes) -> None:
        self._put_evidence(
            keys=[EVIDENCE_KEY, evidence_key(alert.alert_id, kind)],
            args=[
                alert.alert_id,
                alert.created_at,
                blob,
                self.evidence_retention_s,
                self.evidence_alerts,
                PREFIX,
            ],
        )

    def evidence(self, alert_id: str, kind: str) -> bytes | None:
        return self.get_blob(evidence_key(alert_id, kind))

    def _with_evidence(self, alerts: list[Alert]) -> list[Alert]:
        pipe = self.client.pipeline(transaction=False)
        for alert in alerts:
            for kind in EVIDENCE_KINDS:
                pipe.exists(evidence_key(alert.alert_id, kind))
        found = iter(pipe.execute())
        return [
            a.model_copy(update={"evidence": tuple(k for k in EVIDENCE_KINDS if next(found))}) for a in alerts
        ]


def _with_verdict(event: bytes | None, verdict: bytes | str | None) -> ConflictEvent | None:
    """A stored conflict event with its verdict, kept beside it so that versions never erase it."""
    if event is None:
        return None
    conflict = ConflictEvent.from_wire(event)
    return conflict.model_copy(update={"verdict": Verdict.from_wire(verdict)}) if verdict else conflict
