"""The Flask + Socket.IO application factory."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from flask import Flask, Response, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from flask_socketio import ConnectionRefusedError, SocketIO, emit
from werkzeug.middleware.proxy_fix import ProxyFix

from trafficrisk.connections import REDIS_OPTIONS, redis_client
from trafficrisk.events import CAMERA_STATUS, SOCKETIO_CHANNEL
from trafficrisk.settings import Settings, get_settings
from trafficrisk.web import api, errors, metrics, openapi, pages, system
from trafficrisk.web.auth import Credentials, is_authorized, refuse_unauthorized_sockets
from trafficrisk.web.throttle import LoginThrottle
from trafficrisk.workers.store import Store

log = logging.getLogger(__name__)


def _secret_key(settings: Settings) -> str:
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    log.warning("TRAFFICRISK_SECRET_KEY is unset: sessions end whenever the web process restarts")
    return secrets.token_hex(32)


# The page loads only its own scripts, styles and images (and blobs/data URLs it makes), talks
# only to its own origin (the API, Socket.IO) and may not be framed: what an injected tag
# or a hostile LLM reason could do is nothing.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def _security_headers(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


class _SessionCookies(SecureCookieSessionInterface):
    """Secure (sent over TLS only) when the settings say so, or the request came over TLS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)


def _async_mode() -> str:
    """gevent under gunicorn's gevent worker (it patched the standard library), else threads
    (the tests' in-process apps)."""
    from gevent import monkey

    return "gevent" if monkey.is_module_patched("socket") else "threading"


def create_app(settings: Settings | None = None) -> tuple[Flask, SocketIO]:
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config.update(SECRET_KEY=_secret_key(settings), SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Lax", SESSION_COOKIE_SECURE=settings.secure_cookies,
                      MAX_CONTENT_LENGTH=1024 * 1024)
    app.session_interface = _SessionCookies()
    client = redis_client(settings.redis_url)
    app.extensions["trafficrisk.settings"] = settings
    app.extensions["trafficrisk.url_policy"] = settings.url_policy()
    app.extensions["trafficrisk.credentials"] = Credentials(settings)
    app.extensions["trafficrisk.store"] = Store.from_settings(client, settings)
    app.extensions["trafficrisk.throttle"] = LoginThrottle(
        client, settings.login_limit_per_address, settings.login_limit_total
    )
    app.extensions["trafficrisk.health_client"] = redis_client(settings.redis_url, system.HEALTH_TIMEOUT_S)
    app.extensions["trafficrisk.worker_probe"] = system.WorkerProbe(settings.redis_url)
    for blueprint in (pages.blueprint, api.blueprint, metrics.blueprint, system.blueprint, system.probes,
                      openapi.blueprint):
        app.register_blueprint(blueprint)
    errors.register(app)
    app.after_request(_security_headers)
    # eventlet is unmaintained: gevent in production (gunicorn's gevent worker), else threads.
    socketio = SocketIO(app, async_mode=_async_mode(), message_queue=settings.redis_url,
                        channel=SOCKETIO_CHANNEL, redis_options=REDIS_OPTIONS)
    refuse_unauthorized_sockets(app)  # outside Engine.IO, which SocketIO wrapped around the app
    if settings.trusted_proxies:  # outermost: the guard and the limits see the client's address
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies,  # type: ignore[method-assign]
                                x_proto=settings.trusted_proxies)
    _register_socket_handlers(socketio, app)
    return app, socketio


def _register_socket_handlers(socketio: SocketIO, app: Flask) -> None:
    @socketio.on("connect")
    def _connect(auth: Any = None) -> None:
        token = auth.get("token") if isinstance(auth, dict) else None
        if not is_authorized(token):
            # Socket.IO's own exception: its message reaches the client's connect_error.
            raise ConnectionRefusedError("authentication required")
        store: Store = app.extensions["trafficrisk.store"]
        for status in store.statuses().values():
            emit(CAMERA_STATUS, status.to_wire())
