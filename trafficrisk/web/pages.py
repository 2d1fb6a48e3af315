"""HTML pages: login, logout and the dashboard."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, redirect, render_template, request, url_for

from trafficrisk.web.auth import (
    check_csrf,
    credentials,
    csrf_token,
    end_session,
    login_required,
    start_session,
    throttle,
)

log = logging.getLogger(__name__)
blueprint = Blueprint("pages", __name__)


@blueprint.app_context_processor
def _template_globals() -> dict[str, Any]:
    return {"csrf_token": csrf_token}


def _safe_next(target: str | None) -> str:
    # Only local paths: never bounce a fresh login to another site.
    if target and target.startswith("/") and not target.startswith("//"):
        return target
    return url_for("pages.dashboard")


@blueprint.get("/login")
def login() -> Any:
    can_log_in = credentials().password_hash is not None
    return render_template("login.html", can_log_in=can_log_in, error=None)


@blueprint.post("/login")
def login_submit() -> Any:
    check_csrf()
    address = request.remote_addr or "?"
    wait_s = throttle().retry_after(address)
    if wait_s is not None:
        error = f"Too many failed logins: try again in {wait_s} s."
        return render_template("login.html", can_log_in=True, error=error), 429, {"Retry-After": str(wait_s)}
    if not credentials().password_matches(request.form.get("password", "")):
        throttle().failed(address)
        log.warning("failed dashboard login from %s", address)
        return render_template("login.html", can_log_in=True, error="Wrong password."), 401
    start_session()
    return redirect(_safe_next(request.args.get("next")))


@blueprint.post("/logout")
def logout() -> Any:
    check_csrf()
    end_session()
    return redirect(url_for("pages.login"))


@blueprint.get("/")
@login_required
def dashboard() -> Any:
    settings = current_app.extensions["trafficrisk.settings"]
    return render_template("dashboard.html", llm_enabled=settings.is_llm_enabled)
