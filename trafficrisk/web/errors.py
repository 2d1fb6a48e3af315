"""The REST API's error contract: every error under /api/ (and /metrics) is answered as
JSON, `{"error": "..."}`, with its status, whatever raised it.

400 a bad query or body, 401 no token, 404 also for a path no route has, 405 with the
`Allow` header, 413 a body over MAX_CONTENT_LENGTH, 415 a body that should be JSON and is
not, 503 when Redis cannot be reached (it comes back by itself: worth a retry), and 500
for anything else: logged with its traceback, answered with neither the traceback nor
anything it held. Pages keep Flask's own HTML answers.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, request
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from trafficrisk.web.openapi import is_api_path

log = logging.getLogger(__name__)


def error_response(status: int, message: str) -> Response:
    response = jsonify(error=message)
    response.status_code = status
    return response


def _http_error(error: HTTPException) -> Response | HTTPException:
    if not is_api_path(request.path):
        return error  # a page: Flask's own answer
    response = error_response(error.code or 500, error.description or error.name)
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(error.valid_methods))
    return response


def _redis_unreachable(error: RedisConnectionError | RedisTimeoutError) -> Response:
    if not is_api_path(request.path):
        raise error  # a page: Flask's own 500
    log.warning("%s %s: Redis unreachable (%s)", request.method, request.path, type(error).__name__)
    return error_response(503, f"Redis unreachable ({type(error).__name__}): try again shortly")


def _unexpected(error: Exception) -> Response:
    if not is_api_path(request.path):
        raise error
    log.exception("%s %s failed", request.method, request.path)
    return error_response(500, "internal error: the web process's log has the details")


def register(app: Flask) -> None:
    """Answer the API's errors as JSON (the most specific handler wins)."""
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(RedisConnectionError, _redis_unreachable)
    app.register_error_handler(RedisTimeoutError, _redis_unreachable)
    app.register_error_handler(Exception, _unexpected)
