"""Conflict events in Redis and through the API: newest version kept, filters, the camera's scale."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from scripted import conflict_event

from trafficrisk.messages import Camera, ConflictEvent, ConflictSeverity, FrameResult, RiskLevel
from trafficrisk.settings import Settings
from trafficrisk.web.app import create_app
from trafficrisk.workers.store import Store

TOKEN = "conflicts-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def version(seq: int, camera_id: str = "cam", start: float = 1000.0) -> ConflictEvent:
    event = conflict_event(seq, start=start - 25, camera_id=camera_id)
    assert event is not None
    return event


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield Store(client, conflicts_length=3, conflicts_retention_s=3600)
    client.close()


@pytest.mark.parametrize(
    ("arrivals", "stored", "kept_seq"),
    [
        ([25, 26, 27], [True, True, True], 27),
        ([27, 25, 26], [True, False, False], 27),  # late versions never take the record back
        ([25, 25], [True, False], 25),  # a redelivery changes nothing
        ([26, 30, 28], [True, True, False], 30),
    ],
)
def test_the_newest_version_of_a_conflict_is_kept(
    store: Store, arrivals: list[int], stored: list[bool], kept_seq: int
) -> None:
    assert [store.save_conflicts([version(seq)], now=1000.0)[0] for seq in arrivals] == stored
    kept = store.get_conflict("cam:7-8:25")
    assert kept is not None and kept.updated_seq == kept_seq
    assert kept == version(kept_seq)


def test_conflicts_are_capped_and_past_their_retention_go(store: Store) -> None:
    for n in range(5):
        event = version(27).model_copy(update={"conflict_id": f"cam:1-2:{n}", "start_at": 1000.0 + n})
        store.save_conflicts([event], now=1000.0 + n)
    assert [e.conflict_id for e in store.conflicts()] == ["cam:1-2:4", "cam:1-2:3", "cam:1-2:2"]
    assert store.get_conflict("cam:1-2:0") is None
    late = version(27).model_copy(update={"conflict_id": "cam:1-2:9", "start_at": 9000.0})
    store.save_conflicts([late], now=9000.0)  # the others started over an hour before
    assert [e.conflict_id for e in store.conflicts()] == ["cam:1-2:9"]


@pytest.fixture
def web(redis_url: str) -> Iterator[tuple[FlaskClient, Store]]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="k")  # type: ignore[arg-type]
    app, _ = create_app(settings)
    app.config["TESTING"] = True
    store: Store = app.extensions["trafficrisk.store"]
    store.client.flushall()
    store.save_conflicts([version(26, "a", 100.0), version(28, "b", 200.0)], now=300.0)
    yield app.test_client(), store
    store.client.close()


@pytest.mark.parametrize(
    ("query", "status", "ids"),
    [
        ("", 200, ["b:7-8:25", "a:7-8:25"]),
        ("?camera=a", 200, ["a:7-8:25"]),
        ("?severity=serious", 200, ["b:7-8:25"]),  # a's version of frame 26 is still potential
        ("?severity=potential", 200, ["b:7-8:25", "a:7-8:25"]),
        ("?since=150", 200, ["b:7-8:25"]),
        ("?limit=1", 200, ["b:7-8:25"]),
        ("?camera=nobody", 200, []),
        ("?severity=deadly", 400, "severity: must be one of potential, serious"),
        ("?since=soon", 400, "since: must be a number, got 'soon'"),
        ("?limit=5000", 400, "limit: must be between 1 and 1000"),
    ],
)
def test_conflicts_query(web: tuple[FlaskClient, Store], query: str, status: int, ids: Any) -> None:
    client, _ = web
    answer = client.get(f"/api/conflicts{query}", headers=AUTH)
    assert answer.status_code == status
    if status == 200:
        assert [c["conflict_id"] for c in answer.get_json()] == ids
    else:
        assert answer.get_json() == {"error": ids}


@pytest.mark.parametrize(
    ("path", "status", "check"),
    [
        (
            "/api/conflicts/b:7-8:25",
            200,
            {"severity": "serious", "min_ttc_s": 1.2, "kind": "vehicle-pedestrian"},
        ),
        ("/api/conflicts/a:7-8:25", 200, {"severity": "potential", "updated_seq": 26}),
        ("/api/conflicts/nope", 404, {"error": "no conflict 'nope' (unknown, or past its retention)"}),
    ],
)
def test_one_conflict(web: tuple[FlaskClient, Store], path: str, status: int, check: dict[str, Any]) -> None:
    client, _ = web
    answer = client.get(path, headers=AUTH)
    assert answer.status_code == status
    assert check.items() <= answer.get_json().items()


def test_conflicts_need_auth(web: tuple[FlaskClient, Store]) -> None:
    client, _ = web
    assert client.get("/api/conflicts").status_code == 401
    assert client.get("/api/cameras/a/scale").status_code == 401


def latest(camera_id: str) -> FrameResult:
    return FrameResult(
        camera_id=camera_id,
        frame_id=f"{camera_id}:1",
        seq=1,
        captured_at=1.0,
        processed_at=1.0,
        width=768,
        height=576,
        detector="test",
        llm_enabled=False,
        detections=(),
        groups=(),
        risk_level=RiskLevel.NONE,
    )


CALIBRATION = {
    "image_points": [[0, 0], [100, 0], [100, 100], [0, 100]],
    "ground_points": [[0, 10], [5, 10], [5, 0], [0, 0]],
}


@pytest.mark.parametrize(
    ("camera", "has_frame", "status", "check"),
    [
        # no pedestrian seen yet: a typical mounting, approximate
        ({}, True, 200, {"approximate": True, "source": "prior", "sightings": 0, "width": 768}),
        ({"calibration": CALIBRATION}, True, 200, {"approximate": False, "source": "calibration"}),
        ({}, False, 404, {"error": "no frame yet from camera 'c': its scale is fitted from what it sees"}),
    ],
)
def test_a_camera_s_scale(
    web: tuple[FlaskClient, Store],
    camera: dict[str, Any],
    has_frame: bool,
    status: int,
    check: dict[str, Any],
) -> None:
    client, store = web
    store.put_camera(Camera(id="c", url="x.mp4", **camera))
    if has_frame:
        store.save_result(latest("c"))
    answer = client.get("/api/cameras/c/scale", headers=AUTH)
    assert answer.status_code == status
    assert check.items() <= answer.get_json().items()
    if status == 200 and camera == {}:
        across = answer.get_json()["metres_per_pixel_across"]
        assert list(across) == ["144", "288", "432", "547"]
        assert across["144"] > across["547"] > 0  # rows higher up are further away
    assert client.get("/api/cameras/missing/scale", headers=AUTH).status_code == 404


def test_severity_orders() -> None:
    assert ConflictSeverity.SERIOUS.rank > ConflictSeverity.POTENTIAL.rank
