"""The REST API's own JSON bodies: what it answers beyond the fleet's messages
(trafficrisk/messages.py). The OpenAPI document is generated from these models and the
messages; the views build their answers through them or are checked against them by the
fuzz test (tests/test_api_fuzz.py), so the document says what the API really sends.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from trafficrisk.messages import Camera, CameraState, CameraStatus, MinuteCounts


class Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiError(BaseModel):
    """Every error the API answers: 4xx and 5xx alike (a few add details beside it)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    error: str


class CameraView(Camera):
    """A camera as the API shows it: its URL's password masked (write-only), its status."""

    status: CameraStatus | None = None


class Health(Body):
    status: Literal["ok"]
    redis: Literal["ok"]
    llm_enabled: bool
    cameras: int
    camera_states: dict[str, CameraState]


class Stats(Body):
    """Per-minute counts by event time, oldest first; `camera` None: all cameras."""

    camera: str | None
    lateness_s: float
    minutes: list[MinuteCounts]


class Scale(Body):
    """How a camera's measures are scaled: its calibration, or the scale fitted from the
    pedestrians it has seen (`approximate`, with the fit's figures; workers/scale.py)."""

    approximate: bool
    source: Literal["calibration", "pedestrians", "prior"]
    width: int
    height: int
    side: float
    grid_step_m: float
    matrix: list[list[float]]
    sightings: int | None = None
    walkers: int | None = None
    horizon_row: float | None = None
    camera_height_m: float | None = None
    metres_per_pixel_across: dict[str, float] | None = None


class Workers(Body):
    alive: list[str]
    count: int
    checked_at: float
    error: str | None


class Latency(Body):
    count: int
    p50: float | None
    p95: float | None


class LlmReport(Body):
    enabled: bool
    latency_s: dict[Literal["high", "low"], Latency]
    outcomes: dict[str, int]
    tokens: int
    cache_hit_rate: float | None


class KeyReport(Body):
    key: str  # masked: `...` and its last four characters
    state: Literal["ok", "cooling", "disabled"]
    detail: str
    requests_last_minute: int
    in_flight: int
    rpm_limit: int


class SystemReport(Body):
    """The fleet at a glance: queue depths, live workers, the LLM, its keys, drops, webhooks."""

    queues: dict[str, int]
    workers: Workers
    llm: LlmReport
    keys: list[KeyReport]
    dropped_frames: dict[str, int]
    webhooks: dict[Literal["delivered", "retried", "failed"], int]
