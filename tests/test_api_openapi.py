"""GET /api/openapi.json: a valid OpenAPI 3.1 document built from the code, covering every
API route, with the parameters, bodies and errors the views really have."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from openapi_spec_validator import validate

from trafficrisk.settings import Settings
from trafficrisk.web.app import create_app
from trafficrisk.web.openapi import IMPLICIT_METHODS, build_document, is_api_path

TOKEN = "openapi-test-token"


@pytest.fixture
def app(redis_url: str) -> Iterator[Flask]:
    settings = Settings(redis_url=redis_url, api_token=TOKEN, secret_key="k")
    flask_app, _ = create_app(settings)
    flask_app.config["TESTING"] = True
    yield flask_app
    flask_app.extensions["trafficrisk.store"].client.close()


@pytest.fixture
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/api/openapi.json")  # no token: it describes, it holds no data
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert TOKEN not in response.get_data(as_text=True)
    body = response.json
    assert isinstance(body, dict)
    return body


def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert set(document["components"]["securitySchemes"]) == {"bearerToken", "session"}
    assert document["paths"]["/api/openapi.json"]["get"]["security"] == []


def test_every_api_route_is_in_the_document(app: Flask, document: dict[str, Any]) -> None:
    routed = {
        (
            rule.rule.replace("<camera_id>", "{camera_id}")
            .replace("<alert_id>", "{alert_id}")
            .replace("<conflict_id>", "{conflict_id}")
            .replace("<any('frame.jpg', 'crop.jpg', 'clip.webm'):name>", "{name}"),
            method.lower(),
        )
        for rule in app.url_map.iter_rules()
        if is_api_path(rule.rule)
        for method in (rule.methods or set()) - IMPLICIT_METHODS
    }
    documented = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert documented == routed
    assert ("/api/cameras/{camera_id}", "put") in documented and len(documented) == 20


def test_an_api_route_without_a_description_breaks_the_build(app: Flask) -> None:
    app.add_url_rule("/api/undescribed", "undescribed", lambda: "")
    with pytest.raises(LookupError, match=r"/api/undescribed \(undescribed\) is not described"):
        build_document(app)


def operation(document: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][path][method]
    return found


@pytest.mark.parametrize(
    ("path", "name", "schema"),
    [
        ("/api/alerts", "limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
        ("/api/alerts", "since", {"type": "number", "minimum": 0}),
        ("/api/alerts", "level", {"type": "string", "enum": ["none", "low", "medium", "high"]}),
        (
            "/api/alerts",
            "verification",
            {"type": "string", "enum": ["unverified", "confirmed", "rejected", "uncertain"]},
        ),
        ("/api/alerts", "camera", {"type": "string"}),
        ("/api/conflicts", "severity", {"type": "string", "enum": ["potential", "serious"]}),
        ("/api/stats", "window", {"type": "integer", "minimum": 1, "maximum": 1440, "default": 60}),
        ("/api/cameras/{camera_id}/frame.jpg", "seq", {"type": "integer", "minimum": 0}),
        ("/api/cameras/{camera_id}/frame.jpg", "camera_id", {"type": "string"}),
        (
            "/api/alerts/{alert_id}/{name}",
            "name",
            {"type": "string", "enum": ["clip.webm", "crop.jpg", "frame.jpg"]},
        ),
    ],
)
def test_parameters_are_documented_as_they_are_checked(
    document: dict[str, Any], path: str, name: str, schema: dict[str, Any]
) -> None:
    [parameter] = [p for p in operation(document, "get", path)["parameters"] if p["name"] == name]
    assert parameter["schema"] == schema
    in_path = "{" + name + "}" in path
    assert parameter["in"] == ("path" if in_path else "query")
    assert parameter.get("allowEmptyValue") is (None if in_path else True)  # `?level=`: no filter


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("get", "/api/cameras", ["200", "401", "429", "500", "503"]),
        ("post", "/api/cameras", ["201", "400", "401", "409", "413", "415", "429", "500", "503"]),
        ("put", "/api/cameras/{camera_id}", ["200", "400", "401", "404", "413", "415", "429", "500", "503"]),
        ("delete", "/api/cameras/{camera_id}", ["204", "400", "401", "404", "429", "500", "503"]),
        ("get", "/api/alerts", ["200", "400", "401", "429", "500", "503"]),
        ("post", "/api/alerts/{alert_id}/resolve", ["200", "400", "401", "404", "409", "429", "500", "503"]),
        ("get", "/api/stats", ["200", "400", "401", "404", "429", "500", "503"]),
        ("get", "/api/openapi.json", ["200", "500"]),
    ],
)
def test_each_operation_lists_the_statuses_it_answers(
    document: dict[str, Any], method: str, path: str, statuses: list[str]
) -> None:
    responses = operation(document, method, path)["responses"]
    assert sorted(responses) == statuses
    for status in statuses:
        if int(status) >= 400:
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ApiError"}


@pytest.mark.parametrize(
    ("method", "path", "content"),
    [
        (
            "get",
            "/api/cameras",
            {
                "application/json": {
                    "schema": {"type": "array", "items": {"$ref": "#/components/schemas/CameraView"}}
                }
            },
        ),
        (
            "get",
            "/api/cameras/{camera_id}/latest",
            {"application/json": {"schema": {"$ref": "#/components/schemas/FrameResult"}}},
        ),
        (
            "get",
            "/api/cameras/{camera_id}/frame.jpg",
            {"image/jpeg": {"schema": {"type": "string", "contentMediaType": "image/jpeg"}}},
        ),
        ("get", "/metrics", {"text/plain": {"schema": {"type": "string"}}}),
        (
            "get",
            "/api/system",
            {"application/json": {"schema": {"$ref": "#/components/schemas/SystemReport"}}},
        ),
    ],
)
def test_answers_are_the_models(
    document: dict[str, Any], method: str, path: str, content: dict[str, Any]
) -> None:
    responses = operation(document, method, path)["responses"]
    success = min(responses)
    assert responses[success]["content"] == content


def test_the_camera_bodies_are_the_camera_model(document: dict[str, Any]) -> None:
    camera = document["components"]["schemas"]["Camera"]
    assert camera["required"] == ["id", "url"] and camera["additionalProperties"] is False
    assert camera["properties"]["sample_fps"] == {
        "default": 5.0,
        "maximum": 15,
        "minimum": 0.1,
        "title": "Sample Fps",
        "type": "number",
    }
    created = operation(document, "post", "/api/cameras")["requestBody"]["content"]["application/json"]
    assert created["schema"] == {"$ref": "#/components/schemas/Camera"}
    # A replacement's id comes from the URL: the same model, id optional.
    replaced = operation(document, "put", "/api/cameras/{camera_id}")["requestBody"]["content"]
    assert replaced["application/json"]["schema"] == {**camera, "required": ["url"]}
