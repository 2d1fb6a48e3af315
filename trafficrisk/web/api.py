"""The REST API: cameras, latest results, frames, alerts, health."""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, Response, abort, current_app, jsonify, request
from pydantic import ValidationError
from redis.exceptions import RedisError

from trafficrisk.messages import Camera, RiskLevel
from trafficrisk.web.auth import api_auth_required
from trafficrisk.workers.store import Store, frame_key

blueprint = Blueprint("api", __name__, url_prefix="/api")


def store() -> Store:
    return cast(Store, current_app.extensions["trafficrisk.store"])


def _error(status: int, message: str) -> tuple[Response, int]:
    return jsonify(error=message), status


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _camera_json(camera: Camera) -> dict[str, Any]:
    status = store().statuses().get(camera.id)
    return {**camera.to_wire(), "status": status.to_wire() if status else None}


def _camera_from_body(camera_id: str | None = None) -> Camera | tuple[Response, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    if camera_id is not None and body.setdefault("id", camera_id) != camera_id:
        return _error(400, "id: does not match the camera in the URL")
    try:
        return Camera.model_validate(body)
    except ValidationError as error:
        return _error(400, _validation_message(error))


@blueprint.get("/health")
@api_auth_required
def health() -> Any:
    settings = current_app.extensions["trafficrisk.settings"]
    try:
        store().client.ping()
        cameras = store().list_cameras()
        states = {camera_id: s.state for camera_id, s in store().statuses().items()}
    except RedisError as error:
        return jsonify(status="error", redis=f"unreachable: {type(error).__name__}"), 503
    return jsonify(status="ok", redis="ok", llm_enabled=settings.is_llm_enabled, cameras=len(cameras),
                   camera_states=states)


@blueprint.get("/cameras")
@api_auth_required
def list_cameras() -> Any:
    return jsonify([_camera_json(c) for c in store().list_cameras()])


@blueprint.post("/cameras")
@api_auth_required
def create_camera() -> Any:
    camera = _camera_from_body()
    if not isinstance(camera, Camera):
        return camera
    if store().get_camera(camera.id) is not None:
        return _error(409, f"id: camera {camera.id!r} already exists")
    store().put_camera(camera)
    return jsonify(_camera_json(camera)), 201


def _existing(camera_id: str) -> Camera:
    camera = store().get_camera(camera_id)
    if camera is None:
        abort(404, f"no camera {camera_id!r}")
    return camera


@blueprint.get("/cameras/<camera_id>")
@api_auth_required
def get_camera(camera_id: str) -> Any:
    return jsonify(_camera_json(_existing(camera_id)))


@blueprint.put("/cameras/<camera_id>")
@api_auth_required
def replace_camera(camera_id: str) -> Any:
    _existing(camera_id)
    camera = _camera_from_body(camera_id)
    if not isinstance(camera, Camera):
        return camera
    store().put_camera(camera)
    return jsonify(_camera_json(camera))


@blueprint.delete("/cameras/<camera_id>")
@api_auth_required
def delete_camera(camera_id: str) -> Any:
    _existing(camera_id)
    store().delete_camera(camera_id)
    return "", 204


@blueprint.get("/cameras/<camera_id>/latest")
@api_auth_required
def latest(camera_id: str) -> Any:
    _existing(camera_id)
    result = store().latest(camera_id)
    if result is None:
        return _error(404, f"no result yet for camera {camera_id!r}")
    return jsonify(result.to_wire())


@blueprint.get("/cameras/<camera_id>/frame.jpg")
@api_auth_required
def frame(camera_id: str) -> Any:
    _existing(camera_id)
    seq = request.args.get("seq", type=int)
    if seq is None:
        result = store().latest(camera_id)
        seq = result.seq if result else None
    jpeg = store().get_blob(frame_key(camera_id, seq)) if seq is not None else None
    if jpeg is None:
        return _error(404, "frame not available (none yet, or expired)")
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


def _alert_filters() -> dict[str, Any]:
    args = request.args
    level = args.get("level") or None
    if level is not None and level not in RiskLevel.__members__.values():
        abort(400, f"level: must be one of {', '.join(RiskLevel)}")
    since = args.get("since") or None
    limit = args.get("limit", "100")
    try:
        since_value = float(since) if since is not None else None
        limit_value = int(limit)
    except ValueError:
        abort(400, "since must be a number (unix time) and limit an integer")
    if not 1 <= limit_value <= 1000:
        abort(400, "limit: must be between 1 and 1000")
    return {"camera_id": args.get("camera") or None, "level": RiskLevel(level) if level else None,
            "since": since_value, "limit": limit_value}


@blueprint.get("/alerts")
@api_auth_required
def alerts() -> Any:
    return jsonify([a.to_wire() for a in store().alerts(**_alert_filters())])


@blueprint.errorhandler(400)
@blueprint.errorhandler(404)
def _json_error(error: Any) -> Any:
    return _error(error.code, error.description)
