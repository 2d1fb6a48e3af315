"""Alert webhooks: signatures, retry decisions and backoff; then a real alerts worker
delivering to real loopback receivers over a real Redis, retrying and giving up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery

from conftest import Received, Receiver, free_port, receiver_url, stop_all, wait_for
from trafficrisk.messages import Alert, AlertState, RiskLevel, VerdictSource, Verification
from trafficrisk.queues import ALERTS_QUEUE
from trafficrisk.workers.store import Store
from trafficrisk.workers.webhook import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryOutcome,
    WebhookEvent,
    backoff_s,
    classify,
    delivery_id,
    loggable_url,
    retry_after_s,
    sign,
    target_of,
    verify_signature,
    webhook_body,
    webhook_headers,
)

# Real alerts workers and receivers: not in the quick loop (pytest -m "not slow").
pytestmark = pytest.mark.slow

SECRET = "whsec-test-0123456789"
MAX_ATTEMPTS = 5
TIMEOUT_S = 2.0  # a try's timeout in the worker; the hanging receiver holds twice as long
BACKOFF_MAX_S = 0.2  # keeps the retries quick
RECEIVERS = 3  # URLs the module's worker is configured with


def make_alert(alert_id: str = "a-1", state: AlertState = AlertState.OPEN) -> Alert:
    return Alert(alert_id=alert_id, camera_id="main-street", frame_id="main-street:42",
                 created_at=1_700_000_000.5,
                 risk_level=RiskLevel.HIGH, risk_type="near-miss", reason="truck closing on a pedestrian",
                 source=VerdictSource.RULES, state=state, evidence=("frame",))


# ---------------------------------------------------------------- signatures

BODY = webhook_body(WebhookEvent.OPENED, make_alert())
SENT_AT = 1_700_000_100
GOOD = sign(SECRET.encode(), SENT_AT, BODY)


SIGNATURE_CASES = [
    (SECRET, str(SENT_AT), BODY, GOOD, SENT_AT + 1, True),
    (SECRET.encode(), SENT_AT, BODY, GOOD, SENT_AT, True),  # bytes secret, int timestamp
    (SECRET, str(SENT_AT), BODY, GOOD, SENT_AT + 300, True),  # at the tolerance
    (SECRET, str(SENT_AT), BODY, GOOD, SENT_AT - 300, True),  # the receiver's clock behind
    (SECRET, str(SENT_AT), BODY.replace(b"high", b"none"), GOOD, SENT_AT, False),  # tampered body
    (SECRET, str(SENT_AT), BODY + b" ", GOOD, SENT_AT, False),  # re-serialised body
    ("another-secret", str(SENT_AT), BODY, GOOD, SENT_AT, False),  # wrong secret
    ("", str(SENT_AT), BODY, GOOD, SENT_AT, False),
    (SECRET, str(SENT_AT + 1), BODY, GOOD, SENT_AT, False),  # timestamp replaced
    (SECRET, str(SENT_AT), BODY, GOOD, SENT_AT + 301, False),  # stale: a replay
    (SECRET, str(SENT_AT), BODY, GOOD, SENT_AT - 301, False),  # from the future
    (SECRET, str(SENT_AT), BODY, GOOD, SENT_AT + 61, True),
    (SECRET, "", BODY, GOOD, SENT_AT, False),  # malformed timestamps
    (SECRET, "17e8", BODY, GOOD, SENT_AT, False),
    (SECRET, "soon", BODY, GOOD, SENT_AT, False),
    (SECRET, str(SENT_AT), BODY, GOOD.removeprefix("sha256="), SENT_AT, False),  # malformed headers
    (SECRET, str(SENT_AT), BODY, GOOD.replace("sha256=", "sha1="), SENT_AT, False),
    (SECRET, str(SENT_AT), BODY, GOOD.upper(), SENT_AT, False),
    (SECRET, str(SENT_AT), BODY, GOOD[:-1], SENT_AT, False),
    (SECRET, str(SENT_AT), BODY, "sha256=", SENT_AT, False),
    (SECRET, str(SENT_AT), BODY, "", SENT_AT, False),
    (SECRET, str(SENT_AT), BODY, "sha256=é" + GOOD[8:], SENT_AT, False),  # not ASCII
    (SECRET, str(SENT_AT), BODY, f"{GOOD},{GOOD}", SENT_AT, False),
]


@pytest.mark.parametrize(("secret", "timestamp", "body", "header", "now", "expected"), SIGNATURE_CASES)
def test_verify_signature(secret: str | bytes, timestamp: str | int, body: bytes, header: str, now: float,
                          expected: bool) -> None:
    assert verify_signature(secret, timestamp, body, header, now) is expected


def readme_verifier() -> Callable[..., bool]:
    """The verify_signature that the README's Webhooks section gives receivers to copy."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("\n## Webhooks\n", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    verifier: Callable[..., bool] = namespace["verify_signature"]
    return verifier


@pytest.mark.parametrize(("secret", "timestamp", "body", "header", "now", "expected"), SIGNATURE_CASES)
def test_the_readme_verifier_agrees(secret: str | bytes, timestamp: str | int, body: bytes, header: str,
                                    now: float, expected: bool) -> None:
    key = secret.encode() if isinstance(secret, str) else secret
    assert readme_verifier()(key, str(timestamp), body, header, now) is expected


def test_tolerance_is_the_receivers_choice() -> None:
    assert verify_signature(SECRET, SENT_AT, BODY, GOOD, SENT_AT + 30, tolerance_s=60)
    assert not verify_signature(SECRET, SENT_AT, BODY, GOOD, SENT_AT + 61, tolerance_s=60)


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(SECRET.encode(), f"{SENT_AT}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert "sha256=" + expected == GOOD


@pytest.mark.parametrize("secret", [SECRET.encode(), None])
def test_headers_of_a_try(secret: bytes | None) -> None:
    delivery = delivery_id("a-1", WebhookEvent.OPENED)
    headers = webhook_headers(WebhookEvent.OPENED, delivery, BODY, secret, SENT_AT)
    assert headers[EVENT_HEADER] == "alert.opened"
    assert headers[DELIVERY_HEADER] == delivery_id("a-1", WebhookEvent.OPENED)
    assert headers[TIMESTAMP_HEADER] == str(SENT_AT)
    assert headers["Content-Type"] == "application/json"
    if secret is None:
        assert SIGNATURE_HEADER not in headers
    else:
        assert verify_signature(secret, headers[TIMESTAMP_HEADER], BODY, headers[SIGNATURE_HEADER], SENT_AT)
    assert SECRET not in json.dumps(headers)


# ---------------------------------------------------------------- body and ids

def test_body_is_the_event_the_delivery_id_and_the_alert() -> None:
    alert = make_alert(state=AlertState.ACKNOWLEDGED)
    body = webhook_body(WebhookEvent.ACKNOWLEDGED, alert)
    assert json.loads(body) == {"event": "alert.acknowledged",
                                "delivery_id": delivery_id("a-1", WebhookEvent.ACKNOWLEDGED),
                                "alert": alert.to_wire()}
    assert body == webhook_body(WebhookEvent.ACKNOWLEDGED, Alert.from_wire(alert.to_wire()))  # every try


VERIFIED = WebhookEvent.VERIFIED


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        (("a-1", WebhookEvent.OPENED), ("a-1", WebhookEvent.OPENED), True),  # retries de-duplicate
        (("a-1", WebhookEvent.OPENED), ("a-1", WebhookEvent.RESOLVED), False),
        (("a-1", WebhookEvent.OPENED), ("a-2", WebhookEvent.OPENED), False),
        (("a-1/alert.opened", WebhookEvent.OPENED), ("a-1", WebhookEvent.OPENED), False),
        # an alert is verified at most twice (potential, then serious): each change its own id
        (("a-1", VERIFIED, "confirmed@1.0"), ("a-1", VERIFIED, "confirmed@1.0"), True),
        (("a-1", VERIFIED, "confirmed@1.0"), ("a-1", VERIFIED, "rejected@2.0"), False),
        (("a-1", VERIFIED), ("a-1", VERIFIED, "confirmed@1.0"), False),
    ],
)
def test_delivery_ids(first: tuple[str, ...], second: tuple[str, ...], same: bool) -> None:
    assert (delivery_id(*first) == delivery_id(*second)) is same  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("verification", "updated_at", "other_updated_at", "same"),
    [(Verification.CONFIRMED, 5.0, 5.0, True), (Verification.CONFIRMED, 5.0, 6.0, False)],
)
def test_a_verification_is_its_own_delivery(
    verification: Verification, updated_at: float, other_updated_at: float, same: bool
) -> None:
    first = make_alert().model_copy(update={"verification": verification, "updated_at": updated_at})
    second = first.model_copy(update={"updated_at": other_updated_at})
    ids = [json.loads(webhook_body(WebhookEvent.VERIFIED, a))["delivery_id"] for a in (first, second)]
    assert (ids[0] == ids[1]) is same
    assert ids[0] != delivery_id(first.alert_id, WebhookEvent.VERIFIED)


@pytest.mark.parametrize(
    ("state", "event"),
    [(AlertState.OPEN, "alert.opened"), (AlertState.ACKNOWLEDGED, "alert.acknowledged"),
     (AlertState.RESOLVED, "alert.resolved")],
)
def test_event_of_each_state(state: AlertState, event: str) -> None:
    assert WebhookEvent.from_state(state) == event


def test_unknown_events_are_refused() -> None:
    with pytest.raises(ValueError):
        WebhookEvent("alert.deleted")


# ---------------------------------------------------------------- retry or not

@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, DeliveryOutcome.DELIVERED), (201, DeliveryOutcome.DELIVERED), (204, DeliveryOutcome.DELIVERED),
        (None, DeliveryOutcome.RETRYABLE),  # connection refused, reset, timed out
        (408, DeliveryOutcome.RETRYABLE), (429, DeliveryOutcome.RETRYABLE),
        (500, DeliveryOutcome.RETRYABLE), (502, DeliveryOutcome.RETRYABLE), (503, DeliveryOutcome.RETRYABLE),
        (504, DeliveryOutcome.RETRYABLE), (599, DeliveryOutcome.RETRYABLE),
        (301, DeliveryOutcome.FINAL), (302, DeliveryOutcome.FINAL), (304, DeliveryOutcome.FINAL),
        (400, DeliveryOutcome.FINAL), (401, DeliveryOutcome.FINAL), (403, DeliveryOutcome.FINAL),
        (404, DeliveryOutcome.FINAL), (409, DeliveryOutcome.FINAL), (410, DeliveryOutcome.FINAL),
        (413, DeliveryOutcome.FINAL), (422, DeliveryOutcome.FINAL), (499, DeliveryOutcome.FINAL),
        (100, DeliveryOutcome.FINAL), (600, DeliveryOutcome.FINAL),
    ],
)
def test_classify(status: int | None, outcome: DeliveryOutcome) -> None:
    assert classify(status) is outcome


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("1.5", 1.5), ("120", 120.0), (None, None), ("", None), ("-1", None),
     ("nan", None), ("inf", None), ("soon", None), ("Wed, 21 Oct 2015 07:28:00 GMT", None)],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header) == seconds


# ---------------------------------------------------------------- backoff

@pytest.mark.parametrize(
    ("attempt", "max_s", "ceiling"),
    [(1, 60, 1), (2, 60, 2), (3, 60, 4), (6, 60, 32), (7, 60, 60), (20, 60, 60), (1000, 60, 60),
     (1, 0.2, 0.2), (3, 0.2, 0.2), (3, 3, 3)],
)
def test_backoff_doubles_with_jitter_up_to_the_cap(attempt: int, max_s: float, ceiling: float) -> None:
    waits = [backoff_s(attempt, max_s=max_s) for _ in range(200)]
    assert all(ceiling / 2 <= w <= ceiling for w in waits), (min(waits), max(waits))
    assert len(set(waits)) > 1  # jittered: retries of one outage spread out


@pytest.mark.parametrize(
    ("attempt", "retry_after", "max_s", "wait"),
    [(1, 5.0, 60, 5.0), (6, 5.0, 60, 5.0), (1, 0.0, 60, 0.0), (1, 120.0, 60, 60.0), (2, 3600.0, 0.2, 0.2)],
)
def test_backoff_honours_retry_after_up_to_the_cap(attempt: int, retry_after: float, max_s: float,
                                                   wait: float) -> None:
    assert backoff_s(attempt, retry_after, max_s=max_s) == wait


@pytest.mark.parametrize(
    ("url", "logged"),
    [
        ("https://hooks.example.com/alerts?token=s3cret", "https://hooks.example.com/alerts"),
        ("https://user:pa55@hooks.example.com:8443/a#frag", "https://hooks.example.com:8443/a"),
        ("http://127.0.0.1:9000/", "http://127.0.0.1:9000/"),
        ("http://[::1]:9000/x?k=v", "http://[::1]:9000/x"),
        ("http://[::1:9000/x?token=s3cret", "<unparsable URL>"),
    ],
)
def test_urls_are_logged_without_credentials(url: str, logged: str) -> None:
    assert loggable_url(url) == logged


# ---------------------------------------------------------------- real worker, real receivers

@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    """Receivers made in a test (append to the list), stopped after it."""
    made: list[Receiver] = []
    yield made
    for receiver in made:
        receiver.stop()


def worker_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAFFICRISK_")}
    env.update({"TRAFFICRISK_REDIS_URL": redis_url, "TRAFFICRISK_WEBHOOK_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
                "TRAFFICRISK_WEBHOOK_TIMEOUT_S": str(TIMEOUT_S),
                "TRAFFICRISK_WEBHOOK_BACKOFF_MAX_S": str(BACKOFF_MAX_S), **extra})
    return env


@dataclass
class Fleet:
    store: Store
    producer: Celery
    log: Path
    redis_url: str

    # The receivers the worker is configured with (tasks name them by digest, not URL).
    ports: list[int] = field(default_factory=list)

    def receiver(self, answers: list[int | tuple[int, str] | str]) -> Receiver:
        """A receiver on the next of the worker's URLs (each test stops its own)."""
        self.ports.append(self.ports.pop(0))
        return Receiver(answers, port=self.ports[-1])

    def send(self, url: str, event: WebhookEvent, alert: Alert) -> None:
        args = [target_of(url), event.value, alert.to_wire()]
        self.producer.send_task("trafficrisk.deliver_webhook", args=args, queue=ALERTS_QUEUE)

    def wait_for_counts(self, before: dict[str, int], **deltas: int) -> dict[str, int]:
        """Waits until the counts moved by `deltas` at least, then returns them all moved."""
        def moved() -> dict[str, int] | None:
            now = self.store.webhooks()
            change = {k: now.get(k, 0) - before.get(k, 0) for k in ("delivered", "retried", "failed")}
            return change if all(change[k] >= v for k, v in deltas.items()) else None

        result: dict[str, int] = wait_for(moved, 60, f"webhook counts {deltas}",
                                          lambda: self.log.read_text()[-4000:])
        return result


def start_alerts_worker(redis_url: str, log: Path, ports: list[int] | None = None,
                        **env: str) -> Iterator[Fleet]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()  # before the worker declares its queues: a flush after would drop them
    producer = Celery("producer", broker=redis_url)
    producer.conf.update(task_serializer="json", accept_content=["json"], task_default_priority=5)
    with log.open("wb") as out:
        command = [sys.executable, "-m", "trafficrisk.cli", "worker", "alerts"]
        procs = {"alerts": subprocess.Popen(command, env=worker_env(redis_url, **env), stdout=out,
                                               stderr=subprocess.STDOUT, start_new_session=True)}
    try:
        wait_for(lambda: " ready." in log.read_text(), 90, "the alerts worker", log.read_text)
        yield Fleet(Store(client), producer, log, redis_url, ports or [])
    finally:
        stop_all(procs)
        producer.close()
        client.close()


@pytest.fixture(scope="module")
def fleet(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A real `trafficrisk worker alerts` that signs with SECRET, for the module's tests."""
    ports = [free_port() for _ in range(RECEIVERS)]
    yield from start_alerts_worker(redis_server, tmp_path_factory.mktemp("webhooks") / "alerts.log", ports,
                                      TRAFFICRISK_WEBHOOK_SECRET=SECRET,
                                      TRAFFICRISK_WEBHOOK_URLS=",".join(receiver_url(p) for p in ports))


def assert_signed(received: Received, now_slack: float = 60) -> None:
    headers = received.headers
    assert verify_signature(SECRET, headers[TIMESTAMP_HEADER], received.body, headers[SIGNATURE_HEADER],
                            received.at)
    assert abs(int(headers[TIMESTAMP_HEADER]) - received.at) < now_slack


def test_failing_receiver_gets_retries_until_it_answers(fleet: Fleet, receivers: list[Receiver]) -> None:
    receiver = fleet.receiver([500, "hang", (503, "30"), 200])  # Retry-After 30 s: capped at BACKOFF_MAX_S
    receivers.append(receiver)
    alert = make_alert("a-flaky")
    before = fleet.store.webhooks()
    fleet.send(receiver.url, WebhookEvent.OPENED, alert)
    assert fleet.wait_for_counts(before, delivered=1) == {"delivered": 1, "retried": 3, "failed": 0}
    assert len(receiver.received) == 4
    expected_id = delivery_id("a-flaky", WebhookEvent.OPENED)
    for received in receiver.received:
        assert received.headers[DELIVERY_HEADER] == expected_id
        assert received.headers[EVENT_HEADER] == "alert.opened"
        assert received.body == receiver.received[0].body  # the same bytes every try
        assert_signed(received)
    assert json.loads(receiver.received[-1].body) == {"event": "alert.opened", "delivery_id": expected_id,
                                                      "alert": alert.to_wire()}
    log = fleet.log.read_text()
    assert SECRET not in log
    assert "not-for-logs" not in log  # the URL's query (httpx's own request lines included)
    assert "/hooks/alerts" in log


def test_refusing_receiver_gets_one_try(fleet: Fleet, receivers: list[Receiver]) -> None:
    receiver = fleet.receiver([400])
    receivers.append(receiver)
    before = fleet.store.webhooks()
    fleet.send(receiver.url, WebhookEvent.RESOLVED, make_alert("a-refused", AlertState.RESOLVED))
    assert fleet.wait_for_counts(before, failed=1) == {"delivered": 0, "retried": 0, "failed": 1}
    assert len(receiver.received) == 1  # failed is counted after the last try: no more come
    assert_signed(receiver.received[0])


def test_receiver_that_never_answers_well_gets_max_attempts(fleet: Fleet, receivers: list[Receiver]) -> None:
    receiver = fleet.receiver([500, 502, (429, "0"), 503, 500, 500])
    receivers.append(receiver)
    before = fleet.store.webhooks()
    fleet.send(receiver.url, WebhookEvent.ACKNOWLEDGED, make_alert("a-down", AlertState.ACKNOWLEDGED))
    change = fleet.wait_for_counts(before, failed=1)
    assert change == {"delivered": 0, "retried": MAX_ATTEMPTS - 1, "failed": 1}
    assert len(receiver.received) == MAX_ATTEMPTS
    assert {r.headers[DELIVERY_HEADER] for r in receiver.received} == {
        delivery_id("a-down", WebhookEvent.ACKNOWLEDGED)}
    assert f"failed after {MAX_ATTEMPTS} tries" in fleet.log.read_text()


def test_unreachable_receiver_counts_as_retryable(fleet: Fleet) -> None:
    before = fleet.store.webhooks()
    fleet.send(receiver_url(fleet.ports[0]), WebhookEvent.OPENED, make_alert("a-gone"))  # nobody listens
    change = fleet.wait_for_counts(before, failed=1)
    assert change == {"delivered": 0, "retried": MAX_ATTEMPTS - 1, "failed": 1}


QUEUE_FROM_ANOTHER_PROCESS = """
import json, os, sys
from celery.signals import before_task_publish
from trafficrisk.messages import Alert
from trafficrisk.settings import get_settings
from trafficrisk.tasks.webhook import queue_webhooks

published = []
before_task_publish.connect(
    lambda sender, routing_key, body, **_: published.append([sender, routing_key, json.dumps(body)]),
    weak=False)
alert = Alert.from_wire(sys.argv[1])
urls = os.environ.pop("TRAFFICRISK_WEBHOOK_URLS")
queue_webhooks("alert.opened", alert)  # no URLs configured: nothing
os.environ["TRAFFICRISK_WEBHOOK_URLS"] = urls
get_settings.cache_clear()
queue_webhooks("alert.resolved", alert)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("cv2", "numpy", "torch", "ultralytics")
               or m in ("trafficrisk.tasks.detect", "trafficrisk.workers.detection"))
print(json.dumps({"published": published, "heavy": heavy}))
"""


def test_queue_webhooks_sends_one_task_per_url_to_the_alerts_queue(fleet: Fleet,
                                                                       receivers: list[Receiver]) -> None:
    receivers.extend([fleet.receiver([200]), fleet.receiver([204])])
    alert = make_alert("a-queued", AlertState.RESOLVED)
    before = fleet.store.webhooks()
    env = worker_env(fleet.redis_url, TRAFFICRISK_WEBHOOK_URLS=",".join(r.url for r in receivers))
    done = subprocess.run([sys.executable, "-c", QUEUE_FROM_ANOTHER_PROCESS, json.dumps(alert.to_wire())],
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [p[:2] for p in report["published"]] == [["trafficrisk.deliver_webhook", ALERTS_QUEUE]] * 2
    # Task arguments show in Flower: a receiver's URL (and the token in it) is not one of them.
    assert not any("token=" in p[2] or "127.0.0.1" in p[2] for p in report["published"])
    assert report["heavy"] == []  # the web imports this module: no detector, no numpy
    assert fleet.wait_for_counts(before, delivered=2) == {"delivered": 2, "retried": 0, "failed": 0}
    for receiver in receivers:
        assert [r.headers[EVENT_HEADER] for r in receiver.received] == ["alert.resolved"]
        assert json.loads(receiver.received[0].body)["alert"] == alert.to_wire()
        assert_signed(receiver.received[0])


def test_without_a_secret_deliveries_are_unsigned_and_the_worker_warns_once(
        redis_server: str, tmp_path: Path, receivers: list[Receiver]) -> None:
    receiver = Receiver([200])
    receivers.append(receiver)
    # Database 1: the module's signing worker consumes the same queue on database 0.
    unsigned_url = redis_server.rsplit("/", 1)[0] + "/1"
    workers = start_alerts_worker(unsigned_url, tmp_path / "unsigned.log",
                                     TRAFFICRISK_WEBHOOK_URLS=receiver.url)
    fleet = next(workers)
    try:
        before = fleet.store.webhooks()
        fleet.send(receiver.url, WebhookEvent.OPENED, make_alert("a-unsigned"))
        fleet.wait_for_counts(before, delivered=1)
        headers = receiver.received[0].headers
        assert SIGNATURE_HEADER not in headers
        assert headers[DELIVERY_HEADER] == delivery_id("a-unsigned", WebhookEvent.OPENED)
        assert fleet.log.read_text().count("webhooks are sent unsigned") == 1
    finally:
        workers.close()
