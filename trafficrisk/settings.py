"""The one settings object, read once from `TRAFFICRISK_*` environment variables.

A bad value stops start-up with one line naming the variable (`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import os
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from trafficrisk.workers.camera_url import UrlPolicy

ENV_PREFIX = "TRAFFICRISK_"
# Guessable credentials are refused at start-up; `trafficrisk run` generates longer ones.
MIN_SECRET_LENGTH = {"dashboard_password": 8, "api_token": 12, "metrics_token": 12}
# The visibility timeout outlasts a message's longest hold by at least this much.
HELD_MARGIN_S = 10.0


class SettingsError(SystemExit):
    """A configuration problem; its message is one line that names the culprit."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    redis_url: str = "redis://127.0.0.1:6379/0"
    cameras_file: Path = Path("cameras.yaml")
    # Camera URLs (docs/operations.md): video files only under these folders (default: the
    # cameras file's folder and data/); local devices only when allowed; hosts that are this
    # machine, link-local or a cloud's metadata service only on these networks (CIDR).
    media_folders: Annotated[tuple[Path, ...], NoDecode] = ()
    allow_devices: bool = False
    camera_allow_networks: Annotated[tuple[str, ...], NoDecode] = ()

    model: str = "auto"
    device: str = "auto"
    detect_confidence: float = Field(0.35, gt=0, lt=1)
    # Frames detected together: up to this many, or fewer once the first has waited
    # detect_batch_wait_ms. The detect worker runs twice this many task threads.
    detect_batch_size: int = Field(8, ge=1, le=256)
    detect_batch_wait_ms: float = Field(10.0, ge=0, le=1000)

    llm_base_url: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    llm_rpm_per_key: int = Field(60, gt=0)
    llm_tpm_per_key: int = Field(100_000, gt=0)
    llm_concurrency: int = Field(100, gt=0)
    llm_concurrency_per_key: int = Field(50, gt=0)
    # Share of every key's limits that only llm.high work may use.
    llm_high_reserve: float = Field(0.1, ge=0, lt=1)
    # llm.low work that waited longer than this takes the rules verdict instead.
    llm_low_max_age_s: float = Field(30.0, gt=0)
    # A camera's verdict is reused for a scene that looks the same within this long; 0: off.
    llm_cache_ttl_s: float = Field(60.0, ge=0)
    # Up to this many groups waiting together go in one multi-image request; 1: off.
    # For backends that take several images in a prompt.
    llm_batch_size: int = Field(1, ge=1, le=16)
    llm_batch_wait_ms: int = Field(200, ge=0, le=5000)
    llm_timeout_s: float = Field(30.0, gt=0)
    llm_max_tokens: int = Field(300, gt=0)
    # A conflict's frames go as several images in one message; false: side by side in one
    # image, for backends that take a single image.
    llm_multi_image: bool = True
    # A potential conflict is verified once it has lasted this long (event time), or when it
    # ends; a serious one at once (docs/verification.md).
    verify_potential_after_s: float = Field(3.0, ge=0, le=60)
    # 0: a conflict's alert opens at once, unverified; else it waits for the verdict this
    # long at most, then opens unverified.
    alert_verify_wait_s: float = Field(0.0, ge=0, le=120)
    # A rejected alert is resolved with the model's reason.
    resolve_rejected: bool = True

    api_token: SecretStr | None = None
    dashboard_password: SecretStr | None = None
    secret_key: SecretStr | None = None
    # A read-only credential for /metrics alone, so that Prometheus need not hold the API token.
    metrics_token: SecretStr | None = None
    web_host: str = "127.0.0.1"
    # Failed logins (password or API token) allowed per client address, and from everyone
    # together, in a moving window ("N/minute", "N/hour"); beyond, 429 until the window moves.
    login_limit_per_address: str = Field("10/minute", pattern=r"^\d+ ?/ ?(second|minute|hour|day)$")
    login_limit_total: str = Field("100/minute", pattern=r"^\d+ ?/ ?(second|minute|hour|day)$")
    # A dashboard session ends after this long without a request (and at logout, at once).
    session_idle_s: int = Field(8 * 3600, gt=0, le=30 * 86400)
    # Proxies in front of the web process whose X-Forwarded-For/-Proto to believe (0: none):
    # the client address the limits count, and whether the request came over TLS.
    trusted_proxies: int = Field(0, ge=0, le=5)
    # Session cookies only over TLS. They are Secure anyway on requests that came over TLS.
    secure_cookies: bool = False
    # Connections one web process holds open at once (gevent: idle ones cost little).
    web_connections: int = Field(2000, ge=100, le=100_000)
    flower_port: int = Field(5555, gt=0, lt=65536)
    port: int = Field(5000, gt=0, lt=65536, validation_alias=AliasChoices("PORT", "TRAFFICRISK_PORT"))

    frame_ttl_s: int = Field(120, gt=0)
    # A frame with no outcome this long after capture counts as lost (its task died with a
    # worker or with Redis) and frees its camera's slot in flight.
    flight_timeout_s: float = Field(20.0, gt=0, le=3600)
    jpeg_quality: int = Field(85, ge=10, le=100)
    history_length: int = Field(1000, gt=0)
    alerts_length: int = Field(5000, gt=0)
    alert_level: str = Field("high", pattern="^(low|medium|high)$")
    # Conflict severity (docs/conflicts.md has the sources): serious at a TTC or PET at most
    # the serious thresholds or a DRAC at least its one; potential up to the potential ones.
    serious_ttc_s: float = Field(1.5, gt=0, le=10)
    potential_ttc_s: float = Field(3.0, gt=0, le=10)
    serious_pet_s: float = Field(1.0, gt=0, le=10)
    potential_pet_s: float = Field(3.0, gt=0, le=10)
    serious_drac: float = Field(3.4, gt=0, le=20)
    # Frames in a row a measure must hold to open a conflict or make it serious; how long
    # out of range ends it.
    conflict_confirm_frames: int = Field(2, ge=1, le=10)
    conflict_end_s: float = Field(1.5, gt=0, le=30)
    conflicts_length: int = Field(5000, gt=0)
    conflicts_retention_s: int = Field(7 * 86400, gt=0)
    # Temporal patterns that raise alerts (YAML); unset: the built-in ones (docs/patterns.md).
    patterns_file: Path | None = None
    # Results may arrive this late (event time) and still count in their minute and patterns.
    lateness_s: float = Field(10.0, ge=0, le=300)
    stats_retention_s: int = Field(7 * 86400, gt=0)
    # An alert's frame, crop and clip (the seconds around it) are kept this long.
    evidence_retention_s: int = Field(7 * 86400, gt=0)
    # Only the newest this many alerts keep evidence: frames and clips are the bulk.
    evidence_alerts: int = Field(500, gt=0)
    clip_before_s: float = Field(3.0, ge=0, le=30)
    clip_after_s: float = Field(3.0, ge=0, le=30)
    # Every alert change is POSTed to each URL, signed with HMAC-SHA256 of the secret.
    webhook_urls: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(6, ge=1, le=20)
    webhook_timeout_s: float = Field(5.0, gt=0)
    # The longest wait between tries (waits double from 1 s; a receiver's Retry-After counts too).
    webhook_backoff_max_s: float = Field(30.0, gt=0, le=3600)
    result_expires_s: int = Field(3600, gt=0)
    # A task message a worker took and never acknowledged (it was killed) goes back to its
    # queue after this long; it must outlast the longest wait a worker holds a message
    # for (a webhook retry's backoff, a clip's delay): docs/reliability.md.
    visibility_timeout_s: int = Field(60, ge=10)
    camera_sync_s: float = Field(2.0, gt=0)
    # A capture process owns a camera while it renews that camera's lease; a dead
    # process's cameras move to the others when its leases run out.
    capture_lease_s: float = Field(10.0, gt=0)
    # No new frame for this long (a hung stream) counts as offline, and reconnects.
    stall_timeout_s: float = Field(10.0, gt=0)
    # Frames of one camera between capture and aggregate; beyond, beats are skipped.
    max_in_flight_per_camera: int = Field(2, gt=0)
    # After the detector flags a possible conflict, sample that camera this fast for a while.
    burst_fps: float = Field(5.0, ge=0.1, le=15)
    burst_s: float = Field(5.0, ge=0)
    log_level: str = "INFO"

    @field_validator("llm_api_keys", "webhook_urls", "media_folders", "camera_allow_networks", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _http_urls(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"webhook URLs must start with http:// or https://, got {url!r}")
        return urls

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, url: str) -> str:
        # rediss:// is TLS; a password goes in the URL (redis://:password@host:6379/0).
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
        return url

    @field_validator("camera_allow_networks")
    @classmethod
    def _networks(cls, networks: tuple[str, ...]) -> tuple[str, ...]:
        for network in networks:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"not a network (CIDR such as 127.0.0.0/8): {network!r}") from None
        return networks

    # An empty value means unset, for a secret too: an empty password must not serve Flower
    # (or anything) with an empty password.
    @field_validator("llm_base_url", "api_token", "dashboard_password", "secret_key", "webhook_secret",
                     "metrics_token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("dashboard_password", "api_token", "metrics_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        least = MIN_SECRET_LENGTH[str(info.field_name)]
        if value is not None and len(value.get_secret_value()) < least:
            raise ValueError(f"must be at least {least} characters")
        return value

    @model_validator(mode="after")
    def _ordered_thresholds(self) -> Settings:
        if self.serious_ttc_s > self.potential_ttc_s:
            raise ValueError("TRAFFICRISK_SERIOUS_TTC_S: must not exceed TRAFFICRISK_POTENTIAL_TTC_S")
        if self.serious_pet_s > self.potential_pet_s:
            raise ValueError("TRAFFICRISK_SERIOUS_PET_S: must not exceed TRAFFICRISK_POTENTIAL_PET_S")
        held_s = max(self.webhook_backoff_max_s + self.webhook_timeout_s, self.clip_after_s) + HELD_MARGIN_S
        if self.visibility_timeout_s < held_s:
            raise ValueError(f"TRAFFICRISK_VISIBILITY_TIMEOUT_S: must be at least {held_s:g} (a worker "
                             "holds a message for TRAFFICRISK_WEBHOOK_BACKOFF_MAX_S + TRAFFICRISK_WEBHOOK_"
                             "TIMEOUT_S or TRAFFICRISK_CLIP_AFTER_S; shorter, it is delivered twice)")
        return self

    @property
    def is_llm_enabled(self) -> bool:
        return self.llm_base_url is not None

    def url_policy(self) -> UrlPolicy:
        """Which camera URLs may be opened (workers/camera_url.py)."""
        from trafficrisk.workers.camera_url import UrlPolicy

        folders = self.media_folders or (self.cameras_file.parent, Path("data"))
        return UrlPolicy.from_settings(folders, self.allow_devices, self.camera_allow_networks)


# Never echoed back, not even when malformed (a Redis or webhook URL may hold a password).
SECRET_FIELDS = frozenset({"llm_api_keys", "api_token", "dashboard_password", "secret_key", "webhook_secret",
                           "redis_url", "webhook_urls", "metrics_token"})


def _env_name(field: str) -> str:
    return "PORT" if field == "PORT" else ENV_PREFIX + field.upper()


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    if not first["loc"]:  # a check across settings names them itself
        return str(first["msg"]).removeprefix("Value error, ")
    field = str(first["loc"][0])
    line = f"{_env_name(field)}: {str(first['msg']).removeprefix('Value error, ')}"
    # Never echo a secret back, not even a malformed one.
    if field not in SECRET_FIELDS and "input" in first and isinstance(first["input"], str | int | float):
        line += f" (got {first['input']!r})"
    return line


def load_settings() -> Settings:
    """Settings from the environment, or SettingsError with one clear line."""
    known = {_env_name(name) for name in Settings.model_fields} | {"TRAFFICRISK_PORT"}
    unknown = sorted(n for n in os.environ if n.startswith(ENV_PREFIX) and n not in known)
    if unknown:
        raise SettingsError(f"{unknown[0]}: unknown setting (the README lists the known ones)")
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError(_describe(error)) from None


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
