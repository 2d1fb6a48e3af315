"""Who may see what: a password login for pages, a bearer token for the API.

Sessions are kept in Redis (the cookie holds only their id), so logout ends them for
every copy of the cookie. Failed passwords and tokens are limited (web/throttle.py).
Socket.IO connections need the same session, or the token in an Authorization header,
checked before Engine.IO takes the connection (web/app.py).
A page that changes something through the API with the session cookie must send the
session's CSRF token in `X-CSRF-Token`: the cookie goes along with any request the
browser makes, a header only with the page's own scripts.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Callable
from functools import wraps
from http import HTTPStatus
from typing import Any, TypeVar, cast

from flask import Flask, Response, abort, current_app, g, jsonify, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from trafficrisk.settings import Settings
from trafficrisk.web.throttle import LoginThrottle
from trafficrisk.workers.store import Store

USER = "admin"
CSRF_HEADER = "X-CSRF-Token"
# Methods that change nothing need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A password check (scrypt) takes about 32 MiB for a moment: this many at once at most,
# and nothing longer than this is hashed at all.
PASSWORD_CHECKS = 2
MAX_PASSWORD_LENGTH = 1024
SOCKETIO_PATH = "/socket.io/"
View = TypeVar("View", bound=Callable[..., Any])


class Credentials:
    """The secrets, kept as a password hash and the token, never rendered anywhere."""

    def __init__(self, settings: Settings) -> None:
        password = settings.dashboard_password
        self.password_hash = generate_password_hash(password.get_secret_value()) if password else None
        self.api_token = settings.api_token.get_secret_value() if settings.api_token else None
        self.metrics_token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        self._checks = threading.BoundedSemaphore(PASSWORD_CHECKS)

    def password_matches(self, candidate: str) -> bool:
        if self.password_hash is None or len(candidate) > MAX_PASSWORD_LENGTH:
            return False
        with self._checks:
            return check_password_hash(self.password_hash, candidate)

    def token_matches(self, candidate: str | None, *, metrics: bool = False) -> bool:
        """The API token; with `metrics`, the metrics token too."""
        if not candidate:
            return False
        tokens = [self.api_token, self.metrics_token if metrics else None]
        return any(hmac.compare_digest(candidate.encode(), token.encode()) for token in tokens if token)


def credentials() -> Credentials:
    return cast(Credentials, current_app.extensions["trafficrisk.credentials"])


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None


def throttle() -> LoginThrottle:
    return cast(LoginThrottle, current_app.extensions["trafficrisk.throttle"])


def _store() -> Store:
    return cast(Store, current_app.extensions["trafficrisk.store"])


def start_session() -> None:
    """A new session (a new id: one an attacker planted before the login is worthless)."""
    session.clear()
    session["user"], session["sid"] = USER, secrets.token_urlsafe(32)
    _store().open_session(session["sid"], current_app.extensions["trafficrisk.settings"].session_idle_s)


def end_session() -> None:
    if "sid" in session:
        _store().close_session(session["sid"])
    session.clear()


def is_logged_in() -> bool:
    """A session that has not ended; each request keeps it alive for the idle time."""
    if session.get("user") != USER or not session.get("sid"):
        return False
    if "trafficrisk_session" not in g:  # one look in Redis per request
        idle_s = current_app.extensions["trafficrisk.settings"].session_idle_s
        g.trafficrisk_session = _store().renew_session(session["sid"], idle_s)
    return bool(g.trafficrisk_session)


def is_authorized(token: str | None = None, *, metrics: bool = False) -> bool:
    """A logged-in session, or a valid bearer token (from the header or given)."""
    return is_logged_in() or credentials().token_matches(token or bearer_token(), metrics=metrics)


def too_many_failures() -> tuple[Response, int] | None:
    """429 while this client (or everyone) has failed to log in too often."""
    wait_s = throttle().retry_after(request.remote_addr or "?")
    if wait_s is None:
        return None
    answer = jsonify(error=f"too many failed logins: try again in {wait_s} s")
    answer.headers["Retry-After"] = str(wait_s)
    return answer, 429


def api_auth_required(view: View) -> View:
    """A valid bearer token, or a logged-in session (with the CSRF header to change anything);
    a wrong token counts as a failed login."""
    return _guard(view, metrics=False)


def metrics_auth_required(view: View) -> View:
    """As api_auth_required, and the metrics token is good too."""
    return _guard(view, metrics=True)


def _guard(view: View, *, metrics: bool) -> View:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = bearer_token()
        if token is not None:
            if (refused := too_many_failures()) is not None:
                return refused
            if credentials().token_matches(token, metrics=metrics):
                return view(*args, **kwargs)
            throttle().failed(request.remote_addr or "?")
        if not is_logged_in():
            wrong = "wrong bearer token" if token is not None else "authentication required"
            return jsonify(error=f"{wrong}: log in or send a bearer token"), 401
        if request.method not in SAFE_METHODS and not is_csrf_header_valid():
            return jsonify(error=f"missing or wrong CSRF token: a logged-in page must send the {CSRF_HEADER} "
                           "header with the page's csrf-token (reload the page and try again)"), 400
        return view(*args, **kwargs)

    return cast(View, guarded)


def login_required(view: View) -> View:
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if not is_logged_in():
            return redirect(url_for("pages.login", next=request.path))
        return view(*args, **kwargs)

    return cast(View, guarded)


def csrf_token() -> str:
    token = session.get("csrf")
    if token is None:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def is_csrf_valid(sent: str) -> bool:
    expected = session.get("csrf", "")
    return bool(sent) and bool(expected) and hmac.compare_digest(sent.encode(), str(expected).encode())


def is_csrf_header_valid() -> bool:
    return is_csrf_valid(request.headers.get(CSRF_HEADER, ""))


def check_csrf() -> None:
    """For forms: the token in the hidden `csrf_token` field."""
    if not is_csrf_valid(request.form.get("csrf_token", "")):
        abort(400, "missing or wrong CSRF token: reload the page and try again")


def _socket_refusal() -> tuple[int, str] | None:
    token = bearer_token()
    if token is None:
        return None if is_logged_in() else (401, "authentication required: log in or send a bearer token")
    if throttle().retry_after(request.remote_addr or "?") is not None:
        return 429, "too many failed logins: try again later"
    if credentials().token_matches(token):
        return None
    throttle().failed(request.remote_addr or "?")
    return 401, "wrong bearer token"


def refuse_unauthorized_sockets(app: Flask) -> None:
    """Engine.IO requests (/socket.io/) without a logged-in session or a bearer token are
    answered before Engine.IO sees them: an anonymous socket never holds a connection
    slot, a greenlet or a thread. (Socket.IO's own auth payload comes too late for that.)"""
    inner = app.wsgi_app

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(SOCKETIO_PATH):
            with app.request_context(environ):
                refusal = _socket_refusal()
            if refusal is not None:
                body = json.dumps({"error": refusal[1]}).encode()
                start_response(f"{refusal[0]} {HTTPStatus(refusal[0]).phrase}",
                               [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
        return inner(environ, start_response)

    app.wsgi_app = guarded  # type: ignore[method-assign]
