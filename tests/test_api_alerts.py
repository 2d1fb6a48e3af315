"""The alerts API: filters, the lifecycle, evidence, and per-minute stats, against a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from scripted import CAMERA, STORY_PATTERNS, scripted_story

from trafficrisk.events import SOCKETIO_CHANNEL
from trafficrisk.messages import Alert, AlertState, Camera, RiskLevel, Verdict, VerdictSource, Verification
from trafficrisk.settings import Settings
from trafficrisk.web.app import create_app
from trafficrisk.workers.aggregation import record_result
from trafficrisk.workers.patterns import PatternEngine
from trafficrisk.workers.store import Store

TOKEN = "alerts-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def web(redis_url: str) -> Iterator[tuple[Flask, FlaskClient, Store]]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="k")  # type: ignore[arg-type]
    app, _ = create_app(settings)
    app.config["TESTING"] = True
    yield app, app.test_client(), app.extensions["trafficrisk.store"]
    app.extensions["trafficrisk.store"].client.close()


def alert(n: int, camera_id: str, level: RiskLevel) -> Alert:
    return Alert(alert_id=f"{camera_id}:risky-group:{n}", camera_id=camera_id, frame_id=f"{camera_id}:{n}",
                 created_at=100.0 + n, updated_at=100.0 + n, risk_level=level, risk_type="t", reason="r",
                 source="llm", group_id="g0")


@pytest.mark.parametrize(
    ("query", "status", "ids"),
    [
        ("", 200, ["b:risky-group:2", "a:risky-group:1"]),
        ("?camera=a", 200, ["a:risky-group:1"]),
        ("?level=high", 200, ["b:risky-group:2"]),
        ("?since=101.5", 200, ["b:risky-group:2"]),
        ("?limit=1", 200, ["b:risky-group:2"]),
        ("?state=open", 200, ["b:risky-group:2"]),
        ("?state=acknowledged", 200, ["a:risky-group:1"]),
        ("?state=resolved", 200, []),
        ("?level=extreme", 400, "level: must be one of none, low, medium, high"),
        ("?state=closed", 400, "state: must be one of open, acknowledged, resolved"),
        ("?verification=confirmed", 200, []),  # neither is a conflict's alert: nothing verified
        ("?verification=maybe", 400,
         "verification: must be one of unverified, confirmed, rejected, uncertain"),
        ("?since=yesterday", 400, "since: must be a number, got 'yesterday'"),
        ("?limit=0", 400, "limit: must be between 1 and 1000"),
        ("?limit=ten", 400, "limit: must be an integer, got 'ten'"),
    ],
)
def test_alerts_query(web: tuple[Flask, FlaskClient, Store], query: str, status: int, ids: Any) -> None:
    _, client, store = web
    store.add_alert(alert(1, "a", RiskLevel.MEDIUM), now=110)
    store.add_alert(alert(2, "b", RiskLevel.HIGH), now=110)
    store.change_alert_state("a:risky-group:1", AlertState.ACKNOWLEDGED, now=120)
    response = client.get("/api/alerts" + query, headers=AUTH)
    assert response.status_code == status
    if status == 200:
        assert [a["alert_id"] for a in response.json or []] == ids
    else:
        assert (response.json or {})["error"] == ids


def conflict_alert(n: int, verification: Verification) -> Alert:
    """A conflict's alert as the fleet keeps it once verified: a failed verification
    (the fallback) stays unverified, with the reason why."""
    failed = verification is Verification.UNVERIFIED
    verdict = Verdict(risk_level=RiskLevel.HIGH, risk_type="crossing", confidence=0.8,
                      reason="LLM unavailable (timeout); rules" if failed else f"the model: {verification}",
                      source=VerdictSource.FALLBACK if failed else VerdictSource.LLM,
                      verification=None if failed else verification)
    return Alert(alert_id=f"c:conflict:{n}", camera_id="c", frame_id=f"c:{n}", created_at=200.0 + n,
                 risk_level=RiskLevel.HIGH, risk_type="crossing", reason="r", source="rules",
                 pattern="conflict", conflict_id=f"c:1-2:{n}", conflicts=(f"c:1-2:{n}",),
                 verification=verification, verdict=verdict,
                 state=AlertState.RESOLVED if verification is Verification.REJECTED else AlertState.OPEN)


@pytest.mark.parametrize(
    ("query", "status", "ids"),
    [
        ("", 200, ["c:conflict:4", "c:conflict:3", "c:conflict:2", "c:conflict:1", "a:risky-group:1"]),
        ("?verification=", 200, ["c:conflict:4", "c:conflict:3", "c:conflict:2", "c:conflict:1",
                                 "a:risky-group:1"]),
        ("?verification=unverified", 200, ["c:conflict:1"]),
        ("?verification=confirmed", 200, ["c:conflict:2"]),
        ("?verification=rejected", 200, ["c:conflict:3"]),
        ("?verification=uncertain", 200, ["c:conflict:4"]),
        ("?verification=rejected&state=resolved", 200, ["c:conflict:3"]),
        ("?verification=rejected&state=open", 200, []),
        ("?verification=confirmed&camera=a", 200, []),
        ("?verification=confirmed&level=high", 200, ["c:conflict:2"]),
        ("?verification=true", 400,
         "verification: must be one of unverified, confirmed, rejected, uncertain"),
        ("?verification=Confirmed", 400,
         "verification: must be one of unverified, confirmed, rejected, uncertain"),
    ],
)
def test_alerts_by_verification(web: tuple[Flask, FlaskClient, Store], query: str, status: int,
                                ids: Any) -> None:
    _, client, store = web
    store.add_alert(alert(1, "a", RiskLevel.MEDIUM), now=300)  # not a conflict's: nothing to verify
    for n, verification in enumerate(Verification, start=1):
        store.add_alert(conflict_alert(n, verification), now=300)
    response = client.get("/api/alerts" + query, headers=AUTH)
    assert response.status_code == status
    if status != 200:
        assert (response.json or {})["error"] == ids
        return
    listed = response.json or []
    assert [a["alert_id"] for a in listed] == ids
    expected = {f"c:conflict:{n}": verification for n, verification in enumerate(Verification, start=1)}
    for shown in listed:
        assert shown["verification"] == expected.get(shown["alert_id"])
        assert (shown["verdict"] is None) == (shown["alert_id"] not in expected)


@pytest.mark.parametrize(
    ("actions", "statuses", "final"),
    [
        (["acknowledge", "resolve"], [200, 200], "resolved"),
        (["resolve"], [200], "resolved"),
        (["acknowledge", "acknowledge"], [200, 200], "acknowledged"),
        (["resolve", "acknowledge"], [200, 409], "resolved"),
        (["resolve", "resolve"], [200, 409], "resolved"),
    ],
)
def test_alert_lifecycle(web: tuple[Flask, FlaskClient, Store], actions: list[str], statuses: list[int],
                         final: str) -> None:
    _, client, store = web
    store.add_alert(alert(1, "a", RiskLevel.HIGH), now=110)
    listener = store.client.pubsub()
    listener.subscribe(SOCKETIO_CHANNEL)  # what the web process emits goes through here, as JSON
    for action, status in zip(actions, statuses, strict=True):
        response = client.post(f"/api/alerts/a:risky-group:1/{action}", headers=AUTH)
        assert response.status_code == status, response.json
        if status == 409:
            assert "cannot become" in (response.json or {})["error"]
    shown = client.get("/api/alerts/a:risky-group:1", headers=AUTH).json or {}
    assert shown["state"] == final and shown["updated_at"] > 1_000_000
    messages = [json.loads(m["data"]) for m in iter(lambda: listener.get_message(timeout=0.5), None)
                if m["type"] == "message"]
    pushed = [m["data"][0]["state"] for m in messages if m["event"] == "alert"]
    changed = {"acknowledge": "acknowledged", "resolve": "resolved"}
    assert pushed == [changed[a] for a, code in zip(actions, statuses, strict=True) if code == 200]
    listener.close()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/api/alerts/nope:risky-group:1/acknowledge", 404),
        ("POST", "/api/alerts/nope:risky-group:1/resolve", 404),
        ("GET", "/api/alerts/nope:risky-group:1", 404),
        ("GET", "/api/alerts/a:risky-group:1/acknowledge", 405),
        ("POST", "/api/alerts/a:risky-group:1/close", 404),
        ("POST", "/api/alerts/a:risky-group:1/resolve", 200),
    ],
)
def test_unknown_alerts_and_actions(web: tuple[Flask, FlaskClient, Store], method: str, path: str,
                                    status: int) -> None:
    _, client, store = web
    store.add_alert(alert(1, "a", RiskLevel.HIGH), now=110)
    assert client.open(path, method=method, headers=AUTH).status_code == status


@pytest.mark.parametrize(
    ("name", "stored", "status", "mimetype"),
    [
        ("crop.jpg", {"crop": b"\xff\xd8crop"}, 200, "image/jpeg"),
        ("frame.jpg", {"frame": b"\xff\xd8frame"}, 200, "image/jpeg"),
        ("clip.webm", {"clip": b"\x1a\x45\xdf\xa3clip"}, 200, "video/webm"),
        ("clip.webm", {"crop": b"\xff\xd8crop"}, 404, None),
        ("other.png", {"crop": b"\xff\xd8crop"}, 404, None),
    ],
)
def test_evidence(web: tuple[Flask, FlaskClient, Store], name: str, stored: dict[str, bytes], status: int,
                  mimetype: str | None) -> None:
    _, client, store = web
    kept = alert(1, "a", RiskLevel.HIGH)
    store.add_alert(kept, now=110)
    for kind, blob in stored.items():
        store.put_evidence(kept, kind, blob)
    response = client.get(f"/api/alerts/{kept.alert_id}/{name}", headers=AUTH)
    assert response.status_code == status
    if mimetype:
        assert response.mimetype == mimetype and response.data in stored.values()
    listed = (client.get("/api/alerts", headers=AUTH).json or [])[0]
    assert listed["evidence"] == list(stored)


@pytest.mark.parametrize(
    ("query", "status", "minutes"),
    [
        ("?camera=cam&window=3", 200, 3),
        ("?window=1", 200, 1),
        ("", 200, 60),
        ("?camera=nope", 404, None),
        ("?window=0", 400, None),
        ("?window=1441", 400, None),
        ("?window=hour", 400, None),
    ],
)
def test_stats(web: tuple[Flask, FlaskClient, Store], query: str, status: int, minutes: int | None) -> None:
    _, client, store = web
    store.put_camera(Camera(id=CAMERA, url="x"))
    engine = PatternEngine(STORY_PATTERNS, 10)
    # frames 1..39 two minutes ago, 40..45 one minute ago
    for result in scripted_story(start=(time.time() // 60) * 60 - 100):
        record_result(store, engine, result, now=time.time())
    response = client.get("/api/stats" + query, headers=AUTH)
    assert response.status_code == status
    if minutes is None:
        assert "error" in (response.json or {})
        return
    body = response.json or {}
    assert len(body["minutes"]) == minutes and body["lateness_s"] == 10
    assert body["minutes"] == sorted(body["minutes"], key=lambda m: m["start"])
    if minutes >= 3:
        counted = [m for m in body["minutes"] if m["frames"]]
        assert [m["frames"] for m in counted] == [39, 6] and counted[0]["alerts"] == 5
        assert counted[0]["levels"]["high"] == 4 and counted[0]["classes"]["person"] == 42


def test_metrics_count_alerts_late_results_and_webhooks(web: tuple[Flask, FlaskClient, Store]) -> None:
    _, client, store = web
    for n in range(3):
        store.add_alert(alert(n, "a", RiskLevel.HIGH), now=110)
    store.change_alert_state("a:risky-group:0", AlertState.RESOLVED, now=120)
    store.count_webhook("delivered")
    store.client.hincrby("tr:late_results", "a", 2)
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    expected = ['alerts{state="open"} 2.0', 'alerts{state="acknowledged"} 0.0',
                'alerts{state="resolved"} 1.0',
                'results_late_total{camera="a"} 2.0', 'webhook_deliveries_total{outcome="delivered"} 1.0',
                'webhook_deliveries_total{outcome="failed"} 0.0']
    assert [line for line in expected if line not in text] == []
