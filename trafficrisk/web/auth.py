"""Who may see what: a password login for pages, a bearer token for the API.

Socket.IO connections need the same session (or the token in their auth payload).
A page that changes something through the API with the session cookie must send the
session's CSRF token in `X-CSRF-Token`: the cookie goes along with any request the
browser makes, a header only with the page's own scripts.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import abort, current_app, jsonify, redirect, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from trafficrisk.settings import Settings

USER = "admin"
CSRF_HEADER = "X-CSRF-Token"
# Methods that change nothing need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
View = TypeVar("View", bound=Callable[..., Any])


class Credentials:
    """The secrets, kept as a password hash and the token, never rendered anywhere."""

    def __init__(self, settings: Settings) -> None:
        password = settings.dashboard_password
        self.password_hash = generate_password_hash(password.get_secret_value()) if password else None
        self.api_token = settings.api_token.get_secret_value() if settings.api_token else None

    def password_matches(self, candidate: str) -> bool:
        return self.password_hash is not None and check_password_hash(self.password_hash, candidate)

    def token_matches(self, candidate: str | None) -> bool:
        if not self.api_token or not candidate:
            return False
        return hmac.compare_digest(candidate.encode(), self.api_token.encode())


def credentials() -> Credentials:
    return cast(Credentials, current_app.extensions["trafficrisk.credentials"])


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None


def is_logged_in() -> bool:
    return session.get("user") == USER


def is_authorized(token: str | None = None) -> bool:
    """A logged-in session, or a valid bearer token (from the header or given)."""
    return is_logged_in() or credentials().token_matches(token or bearer_token())


def api_auth_required(view: View) -> View:
    """A valid bearer token, or a logged-in session (with the CSRF header to change anything)."""
    @wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if credentials().token_matches(bearer_token()):
            return view(*args, **kwargs)
        if not is_logged_in():
            return jsonify(error="authentication required: log in or send a bearer token"), 401
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
