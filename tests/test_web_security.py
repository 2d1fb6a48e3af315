"""The web process against hostile clients, in process against a real Redis: failed-login
limits (per address and for everyone), sessions that logout and idling end, Secure
cookies, the Engine.IO handshake refused without a credential, /healthz and the metrics
token."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from conftest import free_port
from trafficrisk.settings import Settings, SettingsError, load_settings
from trafficrisk.web.app import create_app

TOKEN = "security-test-token"
PASSWORD = "security-password"
METRICS_TOKEN = "security-metrics-token"
HANDSHAKE = "/socket.io/?EIO=4&transport=polling"

AppFactory = Callable[..., Flask]


@pytest.fixture
def make_app(redis_url: str) -> Iterator[AppFactory]:
    made: list[Flask] = []

    def make(**settings: Any) -> Flask:
        base: dict[str, Any] = {
            "redis_url": redis_url,
            "api_token": TOKEN,
            "dashboard_password": PASSWORD,
            "secret_key": "k",
            "metrics_token": METRICS_TOKEN,
            "login_limit_per_address": "3/minute",
            "login_limit_total": "5/minute",
        }
        app, _ = create_app(Settings(**{**base, **settings}))
        app.config["TESTING"] = True
        made.append(app)
        return app

    yield make
    for app in made:
        app.extensions["trafficrisk.store"].client.close()


def as_address(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def form_token(client: FlaskClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True))
    assert match is not None
    return match.group(1)


def log_in(client: FlaskClient, password: str = PASSWORD) -> int:
    return client.post("/login", data={"password": password, "csrf_token": form_token(client)}).status_code


@pytest.mark.parametrize(
    ("attempts", "then", "status"),
    [
        # (address, password) tried first, then the right password from `then`: its answer
        ([("a", "x")] * 2, "a", 302),  # under the limit: the right password still works
        ([("a", "x")] * 3, "a", 429),  # the address's limit (3/minute): even the right one waits
        ([("a", "x")] * 3, "b", 302),  # another address is not held up by a's failures
        ([("a", "x")] * 3 + [("b", "x")] * 2, "c", 429),  # everyone's limit (5/minute) reached
        ([("a", PASSWORD)] * 6, "a", 302),  # successes never count
        ([("a", "x" * 5000)] * 3, "a", 429),  # a huge password is a failure, never hashed
    ],
)
def test_failed_logins_are_limited(
    make_app: AppFactory, attempts: list[tuple[str, str]], then: str, status: int
) -> None:
    app = make_app()
    for address, password in attempts:
        log_in(as_address(app, address), password)
    client = as_address(app, then)
    answer = client.post("/login", data={"password": PASSWORD, "csrf_token": form_token(client)})
    assert answer.status_code == status
    if status == 429:
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
        assert "Too many failed logins" in answer.get_data(as_text=True)


@pytest.mark.parametrize(
    ("wrong_tokens", "path", "token", "status"),
    [
        (2, "/api/cameras", TOKEN, 200),
        (3, "/api/cameras", TOKEN, 429),  # guessing the token is limited like the password
        (3, HANDSHAKE, TOKEN, 429),  # through the Socket.IO handshake too
        (0, "/api/cameras", METRICS_TOKEN, 401),  # the metrics token reads /metrics only
        (0, "/metrics", METRICS_TOKEN, 200),
        (0, "/metrics", TOKEN, 200),
        (0, "/metrics", "wrong-token", 401),
    ],
)
def test_bearer_tokens(make_app: AppFactory, wrong_tokens: int, path: str, token: str, status: int) -> None:
    client = as_address(make_app(), "a")
    for _ in range(wrong_tokens):
        assert client.get(HANDSHAKE, headers={"Authorization": "Bearer guess"}).status_code == 401
    answer = client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == status
    if status >= 400:
        assert answer.is_json and "error" in answer.json  # type: ignore[operator]


@pytest.mark.parametrize(
    ("credential", "status"),
    [
        ("none", 401),
        ("wrong-token", 401),
        ("token", 200),
        ("session", 200),
        ("logged-out-session", 401),
    ],
)
def test_the_socketio_handshake_needs_a_credential(
    make_app: AppFactory, credential: str, status: int
) -> None:
    client = as_address(make_app(), "a")
    headers = {"Authorization": f"Bearer {TOKEN}"} if credential == "token" else {}
    if credential == "wrong-token":
        headers = {"Authorization": "Bearer wrong"}
    if "session" in credential:
        assert log_in(client) == 302
    if credential == "logged-out-session":
        client.post("/logout", data={"csrf_token": form_token_of_dashboard(client)})
    answer = client.get(HANDSHAKE, headers=headers)
    assert answer.status_code == status
    if status == 401:
        assert answer.is_json and set(answer.json) == {"error"}  # type: ignore[arg-type]


def form_token_of_dashboard(client: FlaskClient) -> str:
    match = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/").get_data(as_text=True))
    assert match is not None
    return match.group(1)


def copy_of_session(app: Flask, client: FlaskClient, address: str) -> FlaskClient:
    """Another client (at `address`) holding a copy of `client`'s session cookie as it is now."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    copy = as_address(app, address)
    copy.set_cookie("session", cookie.value)
    return copy


def test_logout_ends_the_session_for_every_copy_of_its_cookie(make_app: AppFactory) -> None:
    app = make_app()
    client = as_address(app, "a")
    assert log_in(client) == 302
    thief = copy_of_session(app, client, "b")
    assert thief.get("/api/cameras").status_code == 200  # a copy works while the session lives
    client.post("/logout", data={"csrf_token": form_token_of_dashboard(client)})
    assert thief.get("/api/cameras").status_code == 401
    assert thief.get("/").status_code == 302


def test_a_login_starts_a_new_session(make_app: AppFactory) -> None:
    app = make_app()
    planted = as_address(app, "a")
    assert log_in(planted) == 302
    stale = copy_of_session(app, planted, "b")
    assert log_in(planted) == 302  # logging in again: a new session id
    assert planted.get_cookie("session").value != stale.get_cookie("session").value  # type: ignore[union-attr]
    assert stale.get("/api/cameras").status_code == 200  # the first session was not logged out
    planted.post("/logout", data={"csrf_token": form_token_of_dashboard(planted)})
    assert stale.get("/api/cameras").status_code == 200  # logout ends this session, not others


def test_an_idle_session_ends(make_app: AppFactory) -> None:
    client = as_address(make_app(session_idle_s=1), "a")
    assert log_in(client) == 302
    assert client.get("/api/cameras").status_code == 200
    time.sleep(2.2)
    assert client.get("/api/cameras").status_code == 401


@pytest.mark.parametrize(
    ("settings", "scheme", "headers", "secure"),
    [
        ({}, "http", {}, False),
        ({}, "https", {}, True),  # came over TLS
        ({"secure_cookies": True}, "http", {}, True),
        ({}, "http", {"X-Forwarded-Proto": "https"}, False),  # no proxy trusted
        ({"trusted_proxies": 1}, "http", {"X-Forwarded-Proto": "https"}, True),
    ],
)
def test_session_cookies_are_secure_over_tls(
    make_app: AppFactory, settings: dict[str, Any], scheme: str, headers: dict[str, str], secure: bool
) -> None:
    client = as_address(make_app(**settings), "a")
    answer = client.get("/login", headers=headers, base_url=f"{scheme}://localhost")
    cookie = answer.headers["Set-Cookie"]
    assert ("; Secure" in cookie) is secure
    assert "HttpOnly" in cookie


def test_a_trusted_proxy_names_the_client_whose_failures_count(make_app: AppFactory) -> None:
    app = make_app(trusted_proxies=1)
    proxy = as_address(app, "10.0.0.1")
    for _ in range(3):
        proxy.post(
            "/login",
            data={"password": "x", "csrf_token": form_token(proxy)},
            headers={"X-Forwarded-For": "203.0.113.7"},
        )
    refused = proxy.post(
        "/login",
        data={"password": PASSWORD, "csrf_token": form_token(proxy)},
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    allowed = proxy.post(
        "/login",
        data={"password": PASSWORD, "csrf_token": form_token(proxy)},
        headers={"X-Forwarded-For": "203.0.113.8"},
    )
    assert (refused.status_code, allowed.status_code) == (429, 302)


@pytest.mark.parametrize(
    ("redis_up", "status", "body"), [(True, 200, {"status": "ok"}), (False, 503, {"status": "unavailable"})]
)
def test_healthz_needs_no_credential_and_tells_nothing_else(
    make_app: AppFactory, redis_up: bool, status: int, body: dict[str, str]
) -> None:
    app = make_app() if redis_up else make_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    answer = app.test_client().get("/healthz")
    assert (answer.status_code, answer.json) == (status, body)
    assert time.monotonic() - started < 5  # a probe's timeout: down is said quickly


@pytest.mark.parametrize(
    ("env", "error"),
    [
        ({"TRAFFICRISK_LOGIN_LIMIT_PER_ADDRESS": "ten a minute"}, "TRAFFICRISK_LOGIN_LIMIT_PER_ADDRESS"),
        ({"TRAFFICRISK_LOGIN_LIMIT_TOTAL": "5/fortnight"}, "TRAFFICRISK_LOGIN_LIMIT_TOTAL"),
        ({"TRAFFICRISK_METRICS_TOKEN": "short"}, "TRAFFICRISK_METRICS_TOKEN: must be at least 12"),
        ({"TRAFFICRISK_SESSION_IDLE_S": "0"}, "TRAFFICRISK_SESSION_IDLE_S"),
        ({"TRAFFICRISK_TRUSTED_PROXIES": "-1"}, "TRAFFICRISK_TRUSTED_PROXIES"),
        ({"TRAFFICRISK_WEB_CONNECTIONS": "10"}, "TRAFFICRISK_WEB_CONNECTIONS"),
        ({"TRAFFICRISK_LOGIN_LIMIT_PER_ADDRESS": "20/hour", "TRAFFICRISK_METRICS_TOKEN": ""}, None),
    ],
)
def test_web_settings(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], error: str | None) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    if error is None:
        settings = load_settings()
        assert settings.metrics_token is None  # empty is unset
        return
    with pytest.raises(SettingsError) as raised:
        load_settings()
    assert error in str(raised.value)
    assert "short" not in str(raised.value)  # a secret is never echoed
