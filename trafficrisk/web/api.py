"""The REST API: cameras, latest results, frames, alerts and their evidence, stats, health."""

from __future__ import annotations

import time
from typing import Any, NoReturn, cast

from flask import Blueprint, Response, abort, current_app, jsonify, request
from pydantic import ValidationError
from redis.exceptions import RedisError

from trafficrisk.events import ALERT
from trafficrisk.messages import Alert, AlertState, Camera, ConflictSeverity, RiskLevel, Verification
from trafficrisk.tasks.webhook import queue_webhooks
from trafficrisk.web.auth import api_auth_required
from trafficrisk.workers import scale
from trafficrisk.workers.camera_url import CameraUrlError, mask_url
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.store import EVIDENCE_MIMETYPES, Store, frame_key
from trafficrisk.workers.windows import MINUTE_S

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
    """A camera as the API shows it: its URL's password masked (write-only)."""
    status = store().statuses().get(camera.id)
    return {**camera.to_wire(), "url": mask_url(camera.url), "status": status.to_wire() if status else None}


def _camera_from_body(
    camera_id: str | None = None, stored: Camera | None = None
) -> Camera | tuple[Response, int]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    if camera_id is not None and body.setdefault("id", camera_id) != camera_id:
        return _error(400, "id: does not match the camera in the URL")
    if stored is not None and body.get("url") == mask_url(stored.url):
        body["url"] = stored.url  # sent back as shown, masked: the password is kept
    try:
        camera = Camera.model_validate(body)
    except ValidationError as error:
        return _error(400, _validation_message(error))
    try:
        current_app.extensions["trafficrisk.url_policy"].check(camera.url)
    except CameraUrlError as error:
        return _error(400, f"url: {error}")
    return camera


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
    camera = _camera_from_body(camera_id, _existing(camera_id))
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


@blueprint.get("/cameras/<camera_id>/scale")
@api_auth_required
def camera_scale(camera_id: str) -> Any:
    """How the camera's measures are scaled: its calibration, or the scale fitted from the
    pedestrians it has seen (approximate), with metres per pixel across a few rows."""
    camera = _existing(camera_id)
    latest = store().latest(camera_id)
    width, height = (latest.width, latest.height) if latest else (0, 0)
    if camera.calibration is not None:
        plane = GroundPlane.from_points(camera.calibration.image_points, camera.calibration.ground_points)
        return jsonify(approximate=False, source="calibration", width=width, height=height,
                       side=plane.side, grid_step_m=2, matrix=plane.matrix.round(8).tolist())
    if not width:
        return _error(404, f"no frame yet from camera {camera_id!r}: its scale is fitted from what it sees")
    fitted = scale.fit(store().scale_samples(camera_id), width, height)
    return jsonify(width=width, height=height, side=1, grid_step_m=2, **fitted.to_json(width, height))


Choices = type[RiskLevel] | type[AlertState] | type[ConflictSeverity] | type[Verification]


def _choice(name: str, choices: Choices) -> Any:
    value = request.args.get(name) or None
    if value is not None and value not in choices.__members__.values():
        abort(400, f"{name}: must be one of {', '.join(choices)}")
    return choices(value) if value else None


def _number(name: str, default: str, low: float, high: float, kind: type[int] | type[float] = int) -> Any:
    raw = request.args.get(name) or default
    try:
        value = kind(raw)
    except ValueError:
        abort(400, f"{name}: must be a{'n integer' if kind is int else ' number'}, got {raw!r}")
    if not low <= value <= high:
        abort(400, f"{name}: must be between {low:g} and {high:g}")
    return value


def _alert_filters() -> dict[str, Any]:
    since = _number("since", "0", 0, float("inf"), float) if request.args.get("since") else None
    return {"camera_id": request.args.get("camera") or None, "level": _choice("level", RiskLevel),
            "state": _choice("state", AlertState), "verification": _choice("verification", Verification),
            "since": since, "limit": _number("limit", "100", 1, 1000)}


@blueprint.get("/alerts")
@api_auth_required
def alerts() -> Any:
    """Alerts, newest first: `camera`, `level` (at least), `since` (creation time), `state`,
    `verification` (a conflict's alert: unverified, confirmed, rejected or uncertain), `limit`."""
    return jsonify([a.to_wire() for a in store().alerts(**_alert_filters())])


def _no_alert(alert_id: str) -> NoReturn:
    abort(404, f"no alert {alert_id!r} (unknown, or past its retention)")


def _existing_alert(alert_id: str) -> Alert:
    return store().get_alert(alert_id) or _no_alert(alert_id)


@blueprint.get("/alerts/<alert_id>")
@api_auth_required
def get_alert(alert_id: str) -> Any:
    return jsonify(_existing_alert(alert_id).to_wire())


def _change_alert(alert_id: str, state: AlertState) -> Any:
    try:
        changed = store().change_alert_state(alert_id, state, time.time())
    except ValueError as error:
        return _error(409, str(error))
    if changed is None:
        _no_alert(alert_id)
    current_app.extensions["socketio"].emit(ALERT, changed.to_wire())
    queue_webhooks(f"alert.{state}", changed)
    return jsonify(changed.to_wire())


@blueprint.post("/alerts/<alert_id>/acknowledge")
@api_auth_required
def acknowledge_alert(alert_id: str) -> Any:
    return _change_alert(alert_id, AlertState.ACKNOWLEDGED)


@blueprint.post("/alerts/<alert_id>/resolve")
@api_auth_required
def resolve_alert(alert_id: str) -> Any:
    return _change_alert(alert_id, AlertState.RESOLVED)


@blueprint.get("/alerts/<alert_id>/<any('frame.jpg', 'crop.jpg', 'clip.webm'):name>")
@api_auth_required
def alert_evidence(alert_id: str, name: str) -> Any:
    kind = name.split(".")[0]
    blob = store().evidence(alert_id, kind)
    if blob is None:
        abort(404, f"alert {alert_id!r} has no {kind} (none kept, or past its retention)")
    cache = {"Cache-Control": "private, max-age=3600"}  # evidence never changes once kept
    return Response(blob, mimetype=EVIDENCE_MIMETYPES[kind], headers=cache)


@blueprint.get("/conflicts")
@api_auth_required
def conflicts() -> Any:
    """Conflict events, newest first: `camera`, `since` (start time), `severity` (at least)."""
    since = _number("since", "0", 0, float("inf"), float) if request.args.get("since") else None
    found = store().conflicts(camera_id=request.args.get("camera") or None, since=since,
                              severity=_choice("severity", ConflictSeverity),
                              limit=_number("limit", "100", 1, 1000))
    return jsonify([event.to_wire() for event in found])


@blueprint.get("/conflicts/<conflict_id>")
@api_auth_required
def get_conflict(conflict_id: str) -> Any:
    event = store().get_conflict(conflict_id)
    if event is None:
        abort(404, f"no conflict {conflict_id!r} (unknown, or past its retention)")
    return jsonify(event.to_wire())


@blueprint.get("/stats")
@api_auth_required
def stats() -> Any:
    """Per-minute counts by event time over the last `window` minutes, oldest first."""
    camera_id = request.args.get("camera") or None
    if camera_id is not None:
        _existing(camera_id)
    window = _number("window", "60", 1, 1440)
    cameras = [camera_id] if camera_id else [c.id for c in store().list_cameras()]
    now = time.time()
    minutes = store().minutes(cameras, now - (window - 1) * MINUTE_S, now)
    return jsonify(camera=camera_id, lateness_s=store().lateness_s, minutes=[m.to_wire() for m in minutes])


@blueprint.errorhandler(400)
@blueprint.errorhandler(404)
def _json_error(error: Any) -> Any:
    return _error(error.code, error.description)
