"""The cameras YAML file: parsed and validated, or one clear error line."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from trafficrisk.messages import Camera


class CameraFileError(ValueError):
    """The cameras file is missing, not YAML, or has a field that does not validate."""


class CameraFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    cameras: tuple[Camera, ...]


def _describe(path: Path, error: ValidationError) -> str:
    problems = [f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in error.errors()[:3]]
    return f"{path}: {'; '.join(problems)}"


def load_cameras(path: Path) -> tuple[Camera, ...]:
    """Cameras from `path`; relative file URLs are taken relative to the file's folder."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CameraFileError(f"{path}: cameras file not found") from None
    except yaml.YAMLError as error:
        raise CameraFileError(f"{path}: not valid YAML ({error})") from None
    try:
        cameras = CameraFile.model_validate(raw if raw is not None else {}).cameras
    except ValidationError as error:
        raise CameraFileError(_describe(path, error)) from None
    ids = [camera.id for camera in cameras]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise CameraFileError(f"{path}: camera id {duplicates[0]!r} appears more than once")
    return tuple(_resolve_file_url(camera, path.parent) for camera in cameras)


def _resolve_file_url(camera: Camera, folder: Path) -> Camera:
    if "://" in camera.url or Path(camera.url).is_absolute():
        return camera
    return camera.model_copy(update={"url": str((folder / camera.url).resolve())})
