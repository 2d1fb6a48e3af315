"""The REST API's OpenAPI 3.1 document, generated from the code, served at
GET /api/openapi.json.

Each API view is marked with `describe(...)`: its query parameters (the same objects
that check the request: web/query.py), its body and answer models (pydantic: the fleet's
messages and web/bodies.py) and the error statuses only it has. The paths and methods come
from Flask's url_map, summaries from the views' docstrings, the JSON schemas from the
models, and the errors every operation shares from what it takes (a token, a query, a
body, a path parameter). Nothing is kept by hand, so nothing drifts: a view under /api/
that is not described makes the document fail to build, and the tests build it.

The document is served without a token: it describes the API and holds no data, no
setting and no secret (the code it comes from is public), and a client has to read it
to learn how to authenticate. Everything it describes needs the token or the session.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import version
from typing import Any, TypeVar

from flask import Blueprint, Flask, current_app, jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from werkzeug.routing import AnyConverter, IntegerConverter, Rule

from trafficrisk.web.bodies import ApiError
from trafficrisk.web.query import Parameter, describe_parameter

blueprint = Blueprint("openapi", __name__, url_prefix="/api")

ATTRIBUTE = "openapi_operation"
REF_TEMPLATE = "#/components/schemas/{model}"
View = TypeVar("View", bound=Callable[..., Any])
ModelKey = tuple[type[BaseModel], JsonSchemaMode]
Refs = dict[Any, dict[str, Any]]  # ModelKey -> {"$ref": ...}, as pydantic returns it
# Flask answers these itself for every route.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Operation:
    """What the url_map cannot say about a view."""

    query: tuple[Parameter, ...] = ()
    body: type[BaseModel] | None = None  # a JSON object validated by this model
    url_fills: tuple[str, ...] = ()  # body fields the URL supplies: optional in the body
    answer: type[BaseModel] | str | tuple[str, ...] | None = None  # a model, media types, or nothing
    many: bool = False  # a JSON array of `answer`
    status: int = 200
    errors: tuple[int, ...] = ()  # beyond those that follow from the rest
    public: bool = False  # no token needed


def describe(**fields: Any) -> Callable[[View], View]:
    """Mark a view with its Operation. Put it below the route and the auth decorators:
    functools.wraps carries the mark up to the function Flask calls."""
    operation = Operation(**fields)

    def mark(view: View) -> View:
        setattr(view, ATTRIBUTE, operation)
        return view

    return mark


def is_api_path(path: str) -> bool:
    """The REST API's paths: under /api/, and /metrics."""
    return path.startswith("/api/") or path in ("/api", "/metrics")


@dataclass(frozen=True)
class Route:
    path: str  # OpenAPI's form: /api/cameras/{camera_id}
    method: str
    rule: Rule
    view: Callable[..., Any]
    operation: Operation


def api_routes(app: Flask) -> Iterator[Route]:
    """Every method of every API rule with its Operation; LookupError for a view without one."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not is_api_path(rule.rule):
            continue
        view = app.view_functions[rule.endpoint]
        operation = getattr(view, ATTRIBUTE, None)
        if operation is None:
            raise LookupError(f"{rule.rule} ({rule.endpoint}) is not described: mark it with @describe")
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            yield Route(path, method, rule, view, operation)


def _models(routes: list[Route]) -> set[ModelKey]:
    wanted: set[ModelKey] = {(ApiError, "serialization")}
    for route in routes:
        if route.operation.body is not None:
            wanted.add((route.operation.body, "validation"))
        if isinstance(route.operation.answer, type):
            wanted.add((route.operation.answer, "serialization"))
    return wanted


def _path_parameter(rule: Rule, name: str) -> dict[str, Any]:
    converter = rule._converters.get(name)  # werkzeug keeps them only here
    schema: dict[str, Any] = {"type": "string"}
    if isinstance(converter, AnyConverter):
        schema["enum"] = sorted(converter.items)
    elif isinstance(converter, IntegerConverter):
        schema = {"type": "integer", "minimum": 0}
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _error_statuses(route: Route) -> list[int]:
    operation, statuses = route.operation, {500, *route.operation.errors}
    if not operation.public:
        # the token (429: too many failed logins from this client); Redis, which every such view reads
        statuses |= {401, 429, 503}
        if route.method in UNSAFE_METHODS:
            statuses.add(400)  # a session's missing CSRF header
    if operation.query:
        statuses.add(400)
    if operation.body is not None:
        statuses |= {400, 413, 415}
    if route.rule.arguments:
        statuses.add(404)
    return sorted(statuses)


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _media_schema(media_type: str) -> dict[str, Any]:
    if media_type == "application/json":
        return {"type": "object"}
    if media_type.startswith("text/"):
        return {"type": "string"}
    return {"type": "string", "contentMediaType": media_type}  # bytes: an image, a clip


def _answer(route: Route, refs: Refs) -> dict[str, Any]:
    operation = route.operation
    status = HTTPStatus(operation.status)
    if operation.answer is None:
        return {str(status.value): {"description": status.phrase}}
    if isinstance(operation.answer, str | tuple):
        media_types = (operation.answer,) if isinstance(operation.answer, str) else operation.answer
        content = {media_type: {"schema": _media_schema(media_type)} for media_type in media_types}
        return {str(status.value): {"description": status.phrase, "content": content}}
    ref = refs[(operation.answer, "serialization")]
    schema = {"type": "array", "items": ref} if operation.many else ref
    return {str(status.value): {"description": status.phrase, "content": _json(schema)}}


def _request_body(route: Route, refs: Refs, schemas: dict[str, Any]) -> dict[str, Any]:
    body = route.operation.body
    assert body is not None
    ref = refs[(body, "validation")]
    if not route.operation.url_fills:
        return {"required": True, "content": _json(ref)}
    # The same model with the fields the URL supplies made optional.
    component = dict(schemas[ref["$ref"].rsplit("/", 1)[1]])
    component["required"] = [f for f in component.get("required", []) if f not in route.operation.url_fills]
    return {"required": True, "content": _json(component)}


def _summary(view: Callable[..., Any]) -> tuple[str, str]:
    """The docstring's first paragraph, and the rest, each on one line."""
    paragraphs = [" ".join(p.split()) for p in (inspect.getdoc(view) or "").split("\n\n")]
    return paragraphs[0], "\n\n".join(paragraphs[1:])


def _operation(route: Route, refs: Refs, schemas: dict[str, Any]) -> dict[str, Any]:
    summary, description = _summary(route.view)
    if not summary:
        raise LookupError(f"{route.rule.endpoint} has no docstring: its first line is the summary")
    error = {"content": _json({"$ref": REF_TEMPLATE.format(model="ApiError")})}
    responses = _answer(route, refs) | {
        str(status): {"description": HTTPStatus(status).phrase, **error} for status in _error_statuses(route)
    }
    operation: dict[str, Any] = {
        "operationId": f"{route.rule.endpoint}.{route.method.lower()}",
        "summary": summary,
        "tags": [route.path.removeprefix("/api").strip("/").split("/")[0] or "api"],
        "parameters": [_path_parameter(route.rule, name) for name in sorted(route.rule.arguments)]
        + [describe_parameter(p) for p in route.operation.query],
        "responses": responses,
    }
    if description:
        operation["description"] = description
    if route.operation.body is not None:
        operation["requestBody"] = _request_body(route, refs, schemas)
    if route.operation.public:
        operation["security"] = []
    return operation


def _security_schemes(app: Flask) -> dict[str, Any]:
    return {
        "bearerToken": {"type": "http", "scheme": "bearer", "description": "TRAFFICRISK_API_TOKEN"},
        "session": {
            "type": "apiKey",
            "in": "cookie",
            "name": app.config["SESSION_COOKIE_NAME"],
            "description": "The dashboard's login. POST, PUT and DELETE also need the page's CSRF "
            "token in the X-CSRF-Token header.",
        },
    }


def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the app's API routes."""
    routes = list(api_routes(app))
    refs, top = models_json_schema(
        sorted(_models(routes), key=lambda k: (k[0].__name__, k[1])), ref_template=REF_TEMPLATE
    )
    schemas = top.get("$defs", {})
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trafficrisk REST API",
            "version": version("trafficrisk"),
            "description": 'Every error is answered as JSON: {"error": "..."}.',
        },
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": _security_schemes(app)},
        "security": [{"bearerToken": []}, {"session": []}],
    }


def document(app: Flask) -> dict[str, Any]:
    """The document, built once per app: its routes are fixed once it serves."""
    built: dict[str, Any] | None = app.extensions.get("trafficrisk.openapi")
    if built is None:
        built = app.extensions["trafficrisk.openapi"] = build_document(app)
    return built


@blueprint.get("/openapi.json")
@describe(answer="application/json", public=True)
def openapi_json() -> Any:
    """This document: the REST API in OpenAPI 3.1."""
    return jsonify(document(current_app))
