"""Schemathesis fuzzes the REST API from its own /api/openapi.json, with the token and
without: no answer may be a 5xx, every error must be JSON with an `error`, answers must
match the document, no secret may show, and no camera URL the policy refuses may ever be
stored or opened.

The app runs against a real Redis with some of everything in it (cameras, a result, a
frame, an alert with evidence, a conflict); path parameters name those half the time.
There is no capture process, and a loopback listener that the refused URLs point at must
never see a connection. `FUZZ_EXAMPLES` sets the examples per operation (scripts/fuzz-api
runs a longer fuzz); the figures land in test-artifacts/api-fuzz.json.

The schema is loaded when the module is imported, from an app of its own that serves only
the document (schemathesis.pytest.from_fixture reads `Function._nodeid`, which pytest 9
took out), and each test sends its cases to the app of its fixture.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from scripted import CAMERA, conflict_event, scripted_story

from conftest import free_port
from trafficrisk.messages import Alert, Calibration, Camera, RiskLevel
from trafficrisk.settings import Settings
from trafficrisk.web.app import create_app
from trafficrisk.workers.camera_url import CameraUrlError
from trafficrisk.workers.store import Store

pytestmark = pytest.mark.slow

TOKEN = "fuzz-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = ("hunter2", "t0ps3cret", TOKEN)
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ALERT_ID = f"{CAMERA}:risky-group:5"
SQUARE = ((0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0))
JPEG = b"\xff\xd8\xff\xe0fuzz"


CANARY_PORT = free_port()
# URLs the policy refuses; those on loopback point at the canary.
REFUSED_URLS = (
    f"rtsp://admin:hunter2@127.0.0.1:{CANARY_PORT}/s",
    f"http://localhost:{CANARY_PORT}/x.mjpg",
    f"rtsp://[::ffff:127.0.0.1]:{CANARY_PORT}/",
    "http://169.254.169.254/latest/meta-data",
    "file:///etc/passwd",
    "/etc/passwd",
    "device:0",
)


class Canary:
    """A loopback TCP listener the refused URLs point at: nothing may ever connect."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(0.2)
        self.connections = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(5)
        self.sock.close()


@dataclass
class Ledger:
    """Every request the app served, as a WSGI middleware sees it: the figures of the run,
    and what broke the contract."""

    run: str = ""  # the test that sends the requests: with the token, or without
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    violations: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(sum(counts.values()) for counts in self.statuses.values())

    def figures(self) -> dict[str, Any]:
        runs = {
            run: {"requests": sum(counts.values()), "statuses": dict(sorted(counts.items()))}
            for run, counts in sorted(self.statuses.items())
        }
        return {
            "examples_per_operation": EXAMPLES,
            "requests": self.requests,
            "runs": runs,
            "violations": self.violations,
        }

    def wrap(self, app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
        def recorded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            seen: dict[str, Any] = {}

            def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
                seen.update(status=int(status.split()[0]), headers=dict(headers))
                return start_response(status, headers, exc_info)

            body = b"".join(app(environ, start))
            self.record(f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}", seen, body)
            return [body]

        return recorded

    def record(self, request: str, seen: dict[str, Any], body: bytes) -> None:
        status = seen["status"]
        self.statuses[self.run][status] += 1
        problem = error_body_problem(status, seen["headers"].get("Content-Type", ""), body)
        if status >= 500:
            problem = problem or f"a {status}"
        leaked = [s for s in SECRETS if s.encode() in body]
        if leaked:
            problem = f"{problem or ''} shows {leaked}"
        if problem:
            self.violations.append(f"{request} -> {status}: {problem}: {body[:200]!r}")


def error_body_problem(status: int, content_type: str, body: bytes) -> str | None:
    """Why an error answer breaks the contract (JSON with an `error` string), or None."""
    if status < 400:
        return None
    if not content_type.startswith("application/json"):
        return f"an error as {content_type or 'no content type'}"
    try:
        parsed = json.loads(body)
    except ValueError:
        return "an error body that is not JSON"
    if not isinstance(parsed, dict) or not isinstance(parsed.get("error"), str):
        return "an error body without an `error` string"
    return None


def json_errors(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """Schemathesis check: every 4xx and 5xx is JSON with an `error`."""
    problem = error_body_problem(
        response.status_code, response.headers.get("content-type", [""])[0], response.content
    )
    assert problem is None, problem


def seed(store: Store) -> None:
    """Some of everything the API serves, so the fuzzer reaches more than 404s."""
    calibration = Calibration(image_points=SQUARE, ground_points=SQUARE)
    store.put_camera(
        Camera(id=CAMERA, url="rtsp://admin:hunter2@10.0.0.5/s?token=t0ps3cret", calibration=calibration)
    )
    store.put_camera(Camera(id="plain", url="rtsp://10.0.0.6/s"))
    for result in scripted_story(frames=30):
        store.put_frame(CAMERA, result.seq, JPEG)
        store.save_result(result)
    event = conflict_event(27)
    assert event is not None
    store.save_conflicts([event], now=event.end_at)
    alert = Alert(
        alert_id=ALERT_ID,
        camera_id=CAMERA,
        frame_id=f"{CAMERA}:5",
        created_at=1000.0,
        risk_level=RiskLevel.HIGH,
        risk_type="crossing",
        reason="r",
        source="rules",
    )
    store.add_alert(alert, now=1000.0)
    store.put_evidence(alert, "frame", JPEG)


KNOWN = {"camera_id": [CAMERA, "plain"], "alert_id": [ALERT_ID], "conflict_id": [f"{CAMERA}:7-8:25"]}


def document_app() -> Flask:
    """An app that serves the document and nothing else (its Redis is never reached)."""
    app, _ = create_app(
        Settings(
            redis_url=f"redis://127.0.0.1:{free_port()}/0",
            api_token=TOKEN,
            secret_key="k",
        )
    )
    return app


def known_half_the_time(ctx: Any, path: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """Path parameters as generated, or naming what is stored."""
    if not path:
        return st.just(path)
    return st.fixed_dictionaries(
        {name: st.sampled_from([value, *KNOWN.get(name, [])]) for name, value in path.items()}
    )


def load_schema(config: dict[str, Any]) -> Any:
    loaded = schemathesis.openapi.from_wsgi(
        "/api/openapi.json", document_app(), config=schemathesis.Config.from_dict(config)
    )
    loaded.hook("flatmap_path_parameters")(known_half_the_time)
    return loaded


# The token as Schemathesis's own auth, not a header laid over each case: a header would
# erase the Authorization values it mutates, and it would take the result for acceptance.
WITH_TOKEN = load_schema({"auth": {"openapi": {"bearerToken": {"bearer": TOKEN}}}})
WITHOUT_TOKEN = load_schema({})


@dataclass
class Fuzzed:
    app: Flask
    store: Store
    ledger: Ledger
    canary: Canary


@pytest.fixture(scope="module")
def ledger() -> Iterator[Ledger]:
    """One ledger for the module's runs; its figures are written out at the end."""
    kept = Ledger()
    yield kept
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "api-fuzz.json").write_text(json.dumps(kept.figures(), indent=2) + "\n")


@pytest.fixture
def fuzzed(redis_url: str, ledger: Ledger, request: pytest.FixtureRequest) -> Iterator[Fuzzed]:
    ledger.run = request.function.__name__.removeprefix("test_the_api_")
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="k",  # the fuzzer sends wrong tokens
                        login_limit_per_address="100000/minute", login_limit_total="100000/minute")
    app, _ = create_app(settings)
    app.config["TESTING"] = True
    store: Store = app.extensions["trafficrisk.store"]
    seed(store)
    canary = Canary(CANARY_PORT)
    app.wsgi_app = ledger.wrap(app.wsgi_app)  # type: ignore[method-assign]
    yield Fuzzed(app, store, ledger, canary)
    canary.stop()
    policy = app.extensions["trafficrisk.url_policy"]
    try:
        for camera in store.list_cameras():
            try:
                policy.check(camera.url)
            except CameraUrlError as error:
                pytest.fail(f"camera {camera.id!r} was stored with a refused URL: {error}")
        assert canary.connections == 0, "something opened a refused camera URL"
    finally:
        store.client.close()


FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))


def beyond_the_schema(case: schemathesis.Case) -> list[Any]:
    """A camera body can be schema-valid and still refused (400): its URL by the policy, its
    calibration's geometry, its zones' rules. No JSON schema says those, so the check that
    schema-valid data is accepted does not apply to camera bodies."""
    return [schemathesis.checks.positive_data_acceptance] if case.operation.body else []


def send_urls(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    """The case's camera body again, with its generated URL alone (the calibration and zones
    a fuzzer draws rarely pass, and would keep the URL from its check), then with a refused
    URL: that one is refused (400), or the camera is unknown (404), and never stored."""
    if not isinstance(case.body, dict) or not isinstance(case.body.get("url"), str):
        return
    send = getattr(fuzzed.app.test_client(), case.method.lower())
    path = case.formatted_path
    bare = {
        "id": case.path_parameters.get("camera_id") if case.path_parameters else "fuzzed",
        "url": case.body["url"],
    }
    refused = {**bare, "url": REFUSED_URLS[fuzzed.ledger.requests % len(REFUSED_URLS)]}
    assert send(path, json=bare, headers=AUTH).status_code in (200, 201, 400, 404, 409)
    answer = send(path, json=refused, headers=AUTH)
    assert answer.status_code in (400, 404), (refused, answer.status_code, answer.json)


@WITH_TOKEN.parametrize()
@FUZZ
def test_the_api_with_the_token(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    before = len(fuzzed.ledger.violations)
    case.call_and_validate(
        app=fuzzed.app, additional_checks=[json_errors], excluded_checks=beyond_the_schema(case)
    )
    send_urls(case, fuzzed)
    assert fuzzed.ledger.violations[before:] == []


@WITHOUT_TOKEN.parametrize()
@settings(FUZZ, max_examples=max(5, EXAMPLES // 5))
def test_the_api_without_a_token(case: schemathesis.Case, fuzzed: Fuzzed) -> None:
    before = len(fuzzed.ledger.violations)
    response = case.call_and_validate(app=fuzzed.app, additional_checks=[json_errors])
    assert fuzzed.ledger.violations[before:] == []
    if case.path != "/api/openapi.json":
        # OPTIONS is Flask's own: the allowed methods, no data.
        assert response.status_code >= 400 or case.method == "OPTIONS", "an answer without a token"
