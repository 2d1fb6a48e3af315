"""The REST API: cameras, latest results, frames, alerts and their evidence, stats, health.

Each view is described for the OpenAPI document (web/openapi.py) by `describe`: its
query parameters are the objects that check them (web/query.py). Errors are answered as
JSON by web/errors.py, whatever raises them.
"""

from __future__ import annotations

import json
import time
from typing import Any, NoReturn, cast

from flask import Blueprint, Response, abort, current_app, jsonify, request
from pydantic import ValidationError
from redis.exceptions import RedisError

from trafficrisk.events import ALERT
from trafficrisk.messages import (
    Alert,
    AlertState,
    Camera,
    ConflictEvent,
    ConflictSeverity,
    FrameResult,
    RiskLevel,
    Verification,
)
from trafficrisk.tasks.webhook import queue_webhooks
from trafficrisk.web.auth import api_auth_required
from trafficrisk.web.bodies import CameraView, Health, Scale, Stats
from trafficrisk.web.errors import error_response
from trafficrisk.web.openapi import describe
from trafficrisk.web.query import Choice, Number, Text
from trafficrisk.workers import scale
from trafficrisk.workers.camera_url import CameraUrlError, mask_url
from trafficrisk.workers.ground_plane import GroundPlane
from trafficrisk.workers.store import EVIDENCE_MIMETYPES, AlertChangeError, Store, frame_key
from trafficrisk.workers.windows import MINUTE_S

blueprint = Blueprint("api", __name__, url_prefix="/api")


def store() -> Store:
    return cast(Store, current_app.extensions["trafficrisk.store"])


def _error(status: int, message: str) -> Response:
    return error_response(status, message)


def _validation_message(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def _camera_json(camera: Camera) -> dict[str, Any]:
    """A camera as the API shows it: its URL's password masked (write-only)."""
    status = store().statuses().get(camera.id)
    return {**camera.to_wire(), "url": mask_url(camera.url), "status": status.to_wire() if status else None}


def _json_object() -> dict[str, Any]:
    """The request's body, a JSON object; else 415 (not JSON at all) or 400."""
    if not request.is_json:
        abort(415, "body must be JSON: send it with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # json.loads gives up on arrays nested thousands deep
        body = None
    if not isinstance(body, dict):
        abort(400, "body must be a JSON object")
    return body


def _strictly(body: dict[str, Any]) -> Camera:
    """The camera the body describes, its JSON types as the document says: strict, so
    `"snapshot": 0` or `"sample_fps": "5"` is refused rather than guessed at."""
    try:
        return Camera.model_validate_json(json.dumps(body), strict=True)
    except ValidationError as error:
        abort(400, _validation_message(error))
    except RecursionError:
        abort(400, "body: nested too deeply")


def _camera_from_body(camera_id: str | None = None, stored: Camera | None = None) -> Camera | Response:
    body = _json_object()
    if camera_id is not None and body.setdefault("id", camera_id) != camera_id:
        return _error(400, "id: does not match the camera in the URL")
    if stored is not None and body.get("url") == mask_url(stored.url):
        body["url"] = stored.url  # sent back as shown, masked: the password is kept
    camera = _strictly(body)
    try:
        current_app.extensions["trafficrisk.url_policy"].check(camera.url)
    except CameraUrlError as error:
        return _error(400, f"url: {error}")
    return camera


@blueprint.get("/health")
@api_auth_required
@describe(answer=Health)
def health() -> Any:
    """Whether Redis answers, how many cameras there are and their states.

    503 when Redis does not answer: its body has `status` and `redis` beside `error`."""
    settings = current_app.extensions["trafficrisk.settings"]
    try:
        store().client.ping()
        cameras = store().list_cameras()
        states = {camera_id: s.state for camera_id, s in store().statuses().items()}
    except RedisError as error:
        unreachable = f"unreachable: {type(error).__name__}"
        return jsonify(status="error", redis=unreachable, error=f"Redis {unreachable}"), 503
    return jsonify(Health(status="ok", redis="ok", llm_enabled=settings.is_llm_enabled, cameras=len(cameras),
                          camera_states=states).model_dump(mode="json"))


@blueprint.get("/cameras")
@api_auth_required
@describe(answer=CameraView, many=True)
def list_cameras() -> Any:
    """Every camera, its URL's password masked, with its status."""
    return jsonify([_camera_json(c) for c in store().list_cameras()])


@blueprint.post("/cameras")
@api_auth_required
@describe(body=Camera, answer=CameraView, status=201, errors=(409,))
def create_camera() -> Any:
    """Add a camera: its URL must be one the fleet may open (docs/operations.md, "Camera URLs")."""
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
@describe(answer=CameraView)
def get_camera(camera_id: str) -> Any:
    """One camera, its URL's password masked, with its status."""
    return jsonify(_camera_json(_existing(camera_id)))


@blueprint.put("/cameras/<camera_id>")
@api_auth_required
@describe(body=Camera, url_fills=("id",), answer=CameraView)
def replace_camera(camera_id: str) -> Any:
    """Replace a camera's settings; a URL sent back masked, as shown, keeps its password."""
    camera = _camera_from_body(camera_id, _existing(camera_id))
    if not isinstance(camera, Camera):
        return camera
    store().put_camera(camera)
    return jsonify(_camera_json(camera))


@blueprint.delete("/cameras/<camera_id>")
@api_auth_required
@describe(status=204)
def delete_camera(camera_id: str) -> Any:
    """Remove a camera: its capture process lets it go."""
    _existing(camera_id)
    store().delete_camera(camera_id)
    return "", 204


@blueprint.get("/cameras/<camera_id>/latest")
@api_auth_required
@describe(answer=FrameResult)
def latest(camera_id: str) -> Any:
    """The camera's newest frame result (404 before its first)."""
    _existing(camera_id)
    result = store().latest(camera_id)
    if result is None:
        return _error(404, f"no result yet for camera {camera_id!r}")
    return jsonify(result.to_wire())


FRAME_SEQ = Number("seq", "the frame's number on its camera; absent: the newest result's frame", 0)


@blueprint.get("/cameras/<camera_id>/frame.jpg")
@api_auth_required
@describe(query=(FRAME_SEQ,), answer="image/jpeg")
def frame(camera_id: str) -> Any:
    """A frame's JPEG while Redis keeps it (FRAME_TTL_S)."""
    _existing(camera_id)
    seq = FRAME_SEQ.read()
    if seq is None:
        result = store().latest(camera_id)
        seq = result.seq if result else None
    jpeg = store().get_blob(frame_key(camera_id, seq)) if seq is not None else None
    if jpeg is None:
        return _error(404, "frame not available (none yet, or expired)")
    return Response(jpeg, mimetype="image/jpeg", headers={"Cache-Control": "no-store"})


@blueprint.get("/cameras/<camera_id>/scale")
@api_auth_required
@describe(answer=Scale)
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


CAMERA = Text("camera", "only this camera's")
LIMIT = Number("limit", "at most this many, newest first", 1, 1000, default=100)
LEVEL = Choice("level", "at least this risk level", RiskLevel)
CREATED_SINCE = Number("since", "created at or after this time (unix seconds, capture time)", 0, kind=float)
STATE = Choice("state", "in this state", AlertState)
VERIFICATION = Choice("verification", "a conflict's alert, verified so (unverified: not yet, or failed)",
                      Verification)


@blueprint.get("/alerts")
@api_auth_required
@describe(query=(CAMERA, LEVEL, CREATED_SINCE, STATE, VERIFICATION, LIMIT), answer=Alert, many=True)
def alerts() -> Any:
    """Alerts, newest first, filtered by the query."""
    found = store().alerts(camera_id=CAMERA.read(), level=LEVEL.read(), since=CREATED_SINCE.read(),
                           state=STATE.read(), verification=VERIFICATION.read(), limit=LIMIT.read())
    return jsonify([a.to_wire() for a in found])


def _no_alert(alert_id: str) -> NoReturn:
    abort(404, f"no alert {alert_id!r} (unknown, or past its retention)")


def _existing_alert(alert_id: str) -> Alert:
    return store().get_alert(alert_id) or _no_alert(alert_id)


@blueprint.get("/alerts/<alert_id>")
@api_auth_required
@describe(answer=Alert)
def get_alert(alert_id: str) -> Any:
    """One alert, with what evidence is kept of it."""
    return jsonify(_existing_alert(alert_id).to_wire())


def _change_alert(alert_id: str, state: AlertState) -> Any:
    try:
        changed = store().change_alert_state(alert_id, state, time.time())
    except AlertChangeError as error:  # a stored alert that fails to parse is not the client's fault: 500
        return _error(409, str(error))
    if changed is None:
        _no_alert(alert_id)
    current_app.extensions["socketio"].emit(ALERT, changed.to_wire())
    queue_webhooks(f"alert.{state}", changed)
    return jsonify(changed.to_wire())


@blueprint.post("/alerts/<alert_id>/acknowledge")
@api_auth_required
@describe(answer=Alert, errors=(409,))
def acknowledge_alert(alert_id: str) -> Any:
    """Acknowledge an alert (409 once resolved)."""
    return _change_alert(alert_id, AlertState.ACKNOWLEDGED)


@blueprint.post("/alerts/<alert_id>/resolve")
@api_auth_required
@describe(answer=Alert, errors=(409,))
def resolve_alert(alert_id: str) -> Any:
    """Resolve an alert (409 once resolved)."""
    return _change_alert(alert_id, AlertState.RESOLVED)


@blueprint.get("/alerts/<alert_id>/<any('frame.jpg', 'crop.jpg', 'clip.webm'):name>")
@api_auth_required
@describe(answer=tuple(sorted(set(EVIDENCE_MIMETYPES.values()))))
def alert_evidence(alert_id: str, name: str) -> Any:
    """An alert's evidence: its frame and crop (JPEG) and its clip (WebM)."""
    kind = name.split(".")[0]
    blob = store().evidence(alert_id, kind)
    if blob is None:
        abort(404, f"alert {alert_id!r} has no {kind} (none kept, or past its retention)")
    cache = {"Cache-Control": "private, max-age=3600"}  # evidence never changes once kept
    return Response(blob, mimetype=EVIDENCE_MIMETYPES[kind], headers=cache)


STARTED_SINCE = Number("since", "started at or after this time (unix seconds, capture time)", 0, kind=float)
SEVERITY = Choice("severity", "at least this severe", ConflictSeverity)


@blueprint.get("/conflicts")
@api_auth_required
@describe(query=(CAMERA, STARTED_SINCE, SEVERITY, LIMIT), answer=ConflictEvent, many=True)
def conflicts() -> Any:
    """Conflict events, newest first, filtered by the query."""
    found = store().conflicts(camera_id=CAMERA.read(), since=STARTED_SINCE.read(), severity=SEVERITY.read(),
                              limit=LIMIT.read())
    return jsonify([event.to_wire() for event in found])


@blueprint.get("/conflicts/<conflict_id>")
@api_auth_required
@describe(answer=ConflictEvent)
def get_conflict(conflict_id: str) -> Any:
    """One conflict event's newest version, with its verdict once the LLM gave one."""
    event = store().get_conflict(conflict_id)
    if event is None:
        abort(404, f"no conflict {conflict_id!r} (unknown, or past its retention)")
    return jsonify(event.to_wire())


STATS_CAMERA = Text("camera", "only this camera's (404 for one that does not exist); absent: all cameras")
WINDOW = Number("window", "over the last this many minutes", 1, 1440, default=60)


@blueprint.get("/stats")
@api_auth_required
@describe(query=(STATS_CAMERA, WINDOW), answer=Stats, errors=(404,))
def stats() -> Any:
    """Per-minute counts by event time over the last `window` minutes, oldest first."""
    camera_id, window = STATS_CAMERA.read(), WINDOW.read()
    if camera_id is not None:
        _existing(camera_id)
    cameras = [camera_id] if camera_id else [c.id for c in store().list_cameras()]
    now = time.time()
    minutes = store().minutes(cameras, now - (window - 1) * MINUTE_S, now)
    answer = Stats(camera=camera_id, lateness_s=store().lateness_s, minutes=minutes)
    return jsonify(answer.model_dump(mode="json"))
