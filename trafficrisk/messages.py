"""Every message that crosses a process boundary: small, frozen, JSON-only.

numpy stays inside a stage; what lands here is plain floats, ints and strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    def to_wire(self) -> dict[str, Any]:
        """The JSON-safe dict that Celery and Socket.IO carry."""
        return self.model_dump(mode="json")

    @classmethod
    def from_wire(cls, data: dict[str, Any] | str | bytes) -> Self:
        if isinstance(data, str | bytes):
            return cls.model_validate_json(data)
        return cls.model_validate(data)


class RiskLevel(StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RISK_ORDER.index(self)

    @classmethod
    def highest(cls, levels: list[RiskLevel]) -> RiskLevel:
        return max(levels, key=lambda level: level.rank, default=cls.NONE)


_RISK_ORDER = [RiskLevel.NONE, RiskLevel.LOW, RiskLevel.MEDIUM, RiskLevel.HIGH]


class VerdictSource(StrEnum):
    LLM = "llm"
    CACHE = "cache"
    RULES = "rules"
    FALLBACK = "fallback"


class Verification(StrEnum):
    """What the LLM made of a conflict: the state an alert shows (docs/verification.md)."""

    UNVERIFIED = "unverified"  # not judged (yet): waiting for the LLM, or it did not answer
    CONFIRMED = "confirmed"  # the footage shows a real conflict
    REJECTED = "rejected"  # the measures misfired: no real conflict
    UNCERTAIN = "uncertain"  # the footage cannot tell


class CameraState(StrEnum):
    ONLINE = "online"
    CONNECTING = "connecting"
    OFFLINE = "offline"


GroundPoints = tuple[tuple[float, float], ...]


class Calibration(Message):
    """Four image points (pixels) and where they lie on the road (metres)."""

    image_points: GroundPoints = Field(min_length=4, max_length=4)
    ground_points: GroundPoints = Field(min_length=4, max_length=4)

    @model_validator(mode="after")
    def _usable(self) -> Self:
        from trafficrisk.workers.ground_plane import GroundPlane  # numpy and cv2: only when used

        GroundPlane.from_points(self.image_points, self.ground_points)  # CalibrationError: a ValueError
        return self


class Zone(Message):
    """A polygon (a crosswalk, a junction box) or a counting line, in image pixels."""

    name: str = Field(pattern=r"^[A-Za-z0-9_ -]{1,40}$")
    kind: Literal["polygon", "line"] = "polygon"
    points: GroundPoints
    classes: tuple[str, ...] = ()  # the road-user labels it watches; empty: all

    @model_validator(mode="after")
    def _enough_points(self) -> Self:
        least = 3 if self.kind == "polygon" else 2
        if len(self.points) < least:
            raise ValueError(f"a {self.kind} needs at least {least} points, got {len(self.points)}")
        return self


class LineCrossing(Message):
    line: str
    track_id: int
    label: str
    direction: Literal["in", "out"]


# Frames a second a camera is sampled at unless it says otherwise: what the conflict
# measures need on a 2-core machine's detector (docs/benchmarks.md, "Conflicts").
DEFAULT_SAMPLE_FPS = 5.0


class Camera(Message):
    """One camera as configured in the YAML file or through the REST API."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    url: str = Field(min_length=1)
    name: str = ""
    sample_fps: float = Field(DEFAULT_SAMPLE_FPS, ge=0.1, le=15)
    enabled: bool = True
    loop: bool = True  # video files: start again at the end
    snapshot: bool = False  # an HTTP URL that returns one JPEG per request
    rtsp_transport: Literal["tcp", "udp"] = "tcp"
    calibration: Calibration | None = None  # speeds and distances in metres when set
    zones: tuple[Zone, ...] = ()

    @model_validator(mode="after")
    def _unique_zone_names(self) -> Self:
        names = [zone.name for zone in self.zones]
        if len(names) != len(set(names)):
            raise ValueError(f"zone names must be unique, got {names}")
        return self


# Frame numbers: a camera's count starts at 1 and goes up by one. When Redis restarted (it
# may have lost numbers given since its last save, or all of them) the count continues
# at the next multiple of SEQ_BLOCK above a floor that grows faster than any camera
# samples, plus 1 (workers/store.py), so numbers, and the ids made from them, never
# repeat. A frame numbered so starts a run: no frame before it is worth waiting for.
SEQ_BLOCK = 1024


def starts_run(seq: int) -> bool:
    return seq % SEQ_BLOCK == 1


class FrameRef(Message):
    """A sampled frame: the JPEG itself waits in Redis under `frame_key`."""

    camera_id: str
    seq: int = Field(ge=0)
    captured_at: float
    frame_key: str
    width: int = Field(gt=0)
    height: int = Field(gt=0)

    @property
    def frame_id(self) -> str:
        return f"{self.camera_id}:{self.seq}"


class Box(Message):
    """Pixel corners, x1 < x2 and y1 < y2."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    @property
    def ground_point(self) -> tuple[float, float]:
        """Bottom centre: where the road user touches the ground."""
        return ((self.x1 + self.x2) / 2, self.y2)

    @classmethod
    def union(cls, boxes: list[Box]) -> Box:
        return cls(
            x1=min(b.x1 for b in boxes),
            y1=min(b.y1 for b in boxes),
            x2=max(b.x2 for b in boxes),
            y2=max(b.y2 for b in boxes),
        )


class Detection(Message):
    label: str
    confidence: float = Field(ge=0, le=1)
    box: Box
    track_id: int | None = None  # stable per camera while the road user stays in view
    # On the ground plane, from the track (None until it has one): metres east/north of
    # the plane's origin, m/s, and whether it moves at all (stationary: velocity zero).
    ground: tuple[float, float] | None = None
    velocity_mps: tuple[float, float] | None = None
    speed_mps: float | None = None
    moving: bool | None = None
    confirmed: bool = False  # seen in enough frames to take part in a conflict
    zones: tuple[str, ...] = ()  # the camera's polygons its ground point is in


class Verdict(Message):
    """A risk verdict. The LLM fills every field but `source`, which we add.

    This one model renders the schema in the prompt (`llm_schema`) and validates replies.
    """

    risk_level: RiskLevel
    risk_type: str = Field(max_length=60)
    confidence: float = Field(ge=0, le=1)
    reason: str = Field(max_length=400)
    source: VerdictSource = VerdictSource.LLM
    # A conflict's verification; the LLM must give it (`llm_schema`), the rules never do.
    verification: Verification | None = None

    @classmethod
    def llm_schema(cls) -> dict[str, Any]:
        """What the model must answer: every field but `source`, with a verification that
        is one of confirmed, rejected or uncertain (unverified is ours to say)."""
        schema = cls.model_json_schema()
        schema["properties"].pop("source")
        schema["properties"]["verification"] = {
            "type": "string",
            "enum": [str(v) for v in Verification if v is not Verification.UNVERIFIED],
        }
        schema["required"] = ["verification", "risk_level", "risk_type", "confidence", "reason"]
        schema["additionalProperties"] = False
        defs = schema.get("$defs", {})
        defs.pop("Verification", None)
        defs.pop("VerdictSource", None)
        return schema


class PairMeasure(Message):
    """Two road users of a frame (indices into its detections), measured on the ground plane.

    Metres, seconds, m/s and m/s² (docs/conflicts.md); `approximate` when the camera's
    scale was fitted from its pedestrians rather than calibrated. None: no finite value
    (never touching, both standing still, paths that do not cross).
    """

    first: int
    second: int
    gap_m: float  # between their footprints
    closing_speed: float  # how fast the gap shrinks, m/s
    ttc_s: float | None = None
    pet_s: float | None = None  # observed, once the second has entered where the first was
    drac: float | None = None
    approximate: bool = False


class ConflictSeverity(StrEnum):
    POTENTIAL = "potential"
    SERIOUS = "serious"

    @property
    def rank(self) -> int:
        return list(ConflictSeverity).index(self)


class ConflictChange(StrEnum):
    """What a frame did to a conflict event: what the `conflict` event announces."""

    OPENED = "opened"
    ESCALATED = "escalated"  # potential -> serious
    UPDATED = "updated"  # a measure moved (a lower TTC, say), or nothing: still going
    ENDED = "ended"


class ConflictEvent(Message):
    """One encounter of two tracks of a camera: its interval, the extremes of its
    measures, its kind and its place (docs/conflicts.md). Versions of one event share
    `conflict_id`; `updated_seq` orders them."""

    conflict_id: str
    camera_id: str
    first_track: int
    second_track: int
    first_label: str
    second_label: str
    kind: Literal["vehicle-pedestrian", "vehicle-vehicle"]
    conflict_type: Literal["crossing", "rear-end", "head-on"]
    severity: ConflictSeverity
    change: ConflictChange
    start_at: float  # capture time of its first frame in range
    end_at: float  # of its last frame in range so far
    start_frame: str
    last_frame: str
    updated_seq: int
    min_ttc_s: float | None = None
    min_ttc_at: float | None = None
    min_ttc_frame: str | None = None
    pet_s: float | None = None
    pet_at: float | None = None  # when the second road user entered the shared area
    pet_frame: str | None = None
    max_drac: float | None = None
    closing_speed: float | None = None  # at the minimum TTC, m/s
    first_speed_mps: float | None = None  # at the minimum TTC (or the PET)
    second_speed_mps: float | None = None
    max_speed_mps: float = 0.0  # the faster road user's highest speed during the encounter
    location: tuple[float, float] | None = None  # on the ground, metres
    image_point: tuple[float, float] | None = None  # the same place in the frame, pixels
    zones: tuple[str, ...] = ()
    approximate: bool = False  # measured on a fitted, not a calibrated, scale
    # This version asks for the LLM's verification (docs/verification.md: opened serious,
    # escalated, or potential for a while or at its end); set by the scene, once each.
    to_verify: bool = False
    verdict: Verdict | None = None  # the LLM's verification, once it came (kept apart in Redis)

    @property
    def frames(self) -> tuple[str, ...]:
        """The frames that show it: the first, the critical ones, the last."""
        ids = (self.start_frame, self.min_ttc_frame, self.pet_frame, self.last_frame)
        return tuple(dict.fromkeys(i for i in ids if i))

    @property
    def is_open(self) -> bool:
        return self.change is not ConflictChange.ENDED


class Group(Message):
    """Road users that interact, with the rules' opinion of them."""

    group_id: str
    members: tuple[int, ...]
    labels: tuple[str, ...]
    box: Box
    prescore: float = Field(ge=0, le=1)
    rules_verdict: Verdict
    pairs: tuple[PairMeasure, ...] = ()


class EncounterFrame(Message):
    """One frame of a conflict shown to the LLM: its JPEG waits in Redis under `frame_key`."""

    frame_id: str
    frame_key: str
    moment: Literal["before", "start", "closest", "now"]
    offset_s: float  # capture time, from the conflict's start


class AssessRequest(Message):
    """A conflict event to verify: its version as asked, a few frames of the encounter and
    the box around the pair in all of them (pixels of a width x height frame)."""

    conflict: ConflictEvent
    frames: tuple[EncounterFrame, ...] = Field(min_length=1)
    box: Box
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    high_priority: bool = False  # sent to llm.high (a serious conflict)
    queued_at: float = 0.0  # wall clock; low-priority work too old is shed

    @property
    def conflict_id(self) -> str:
        return self.conflict.conflict_id


class Assessment(Message):
    """What an assess task returns into the chord, success or not."""

    conflict_id: str
    camera_id: str
    severity: ConflictSeverity  # of the version verified: a later, graver one's verdict wins
    verdict: Verdict
    latency_s: float = 0.0
    error: str | None = None
    shed: bool = False  # low-priority work too old to be worth a call
    tokens: int = 0  # the reply's total_tokens, as the provider bills them
    wait_s: float = 0.0  # from queued by aggregate to sent to the LLM: broker queue and key wait
    queued_at: float = 0.0  # wall clock, when aggregate queued it
    high_priority: bool = False

    @property
    def outcome(self) -> str:
        """`llm`, `rules`, `fallback`, `cache` or `shed`: what the counters count."""
        return "shed" if self.shed else str(self.verdict.source)


class AssessedGroup(Message):
    group: Group
    verdict: Verdict


class FrameResult(Message):
    camera_id: str
    frame_id: str
    seq: int
    captured_at: float
    processed_at: float
    width: int
    height: int
    detector: str
    llm_enabled: bool
    detections: tuple[Detection, ...]
    groups: tuple[AssessedGroup, ...]
    risk_level: RiskLevel
    crossings: tuple[LineCrossing, ...] = ()
    # The camera's conflict events as this frame left them: open ones, and those it ended.
    conflicts: tuple[ConflictEvent, ...] = ()
    # How the measures were scaled: `calibrated`, or `approximate` (fitted from pedestrians).
    scale: Literal["calibrated", "approximate"] = "approximate"
    timings: dict[str, float] = Field(default_factory=dict)


class AlertState(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"

    def can_become(self, new: AlertState) -> bool:
        """Open, then acknowledged, then resolved; a step may be skipped or repeated,
        never taken back, and nothing follows resolved."""
        order = list(AlertState)
        return self is not AlertState.RESOLVED and order.index(new) >= order.index(self)


class Alert(Message):
    """A pattern matched on a camera: what an operator reviews, acknowledges and resolves."""

    alert_id: str
    camera_id: str
    frame_id: str  # the frame that completed the match: its evidence
    created_at: float  # that frame's capture time (event time)
    risk_level: RiskLevel
    risk_type: str
    reason: str
    source: VerdictSource
    group_id: str = ""  # the group the evidence crop shows; empty for a whole-frame pattern
    pattern: str = "risky-group"
    conflict_id: str = ""  # the conflict event it was raised for (a `conflict` pattern)
    # A later version of an alert already raised, at a higher level (its conflict escalated):
    # the stored alert takes its level, type and reason, and keeps its state.
    escalated: bool = False
    # A conflict's alert: what the LLM made of it (None: nothing to verify, not a conflict),
    # its verdict with the reason once it came (or why it did not), and the conflict
    # events of the encounter it covers (one, or more when a track was lost and found).
    verification: Verification | None = None
    verdict: Verdict | None = None
    conflicts: tuple[str, ...] = ()
    state: AlertState = AlertState.OPEN
    updated_at: float = 0.0  # wall clock of the last change of state
    evidence: tuple[Literal["frame", "crop", "clip"], ...] = ()  # what the API can serve

    @property
    def seq(self) -> int:
        """The frame's number on its camera (frame ids are `<camera>:<seq>`)."""
        return int(self.frame_id.rsplit(":", 1)[1])


class MinuteCounts(Message):
    """What cameras saw in one minute of capture time (`start`, unix seconds)."""

    start: int
    frames: int = 0
    levels: dict[RiskLevel, int] = Field(default_factory=dict)  # frames by their risk level
    classes: dict[str, int] = Field(default_factory=dict)  # road users by class, frame by frame
    alerts: int = 0


class CameraMinute(Message):
    """The `stats` event: a camera's minute whose counts just changed."""

    camera_id: str
    minute: MinuteCounts


class CameraStatus(Message):
    camera_id: str
    state: CameraState
    reason: str = ""
    updated_at: float
