"""The OpenAPI 3.1 document, generated from the routes the application registers: each route's path
and method from the router, what it promises from the `routing.RouteDoc` next to its handler, schemas
from the pydantic models that validate and serialize, error statuses from `responses.ERROR_STATUS`.
Nothing here restates a route, a limit or a status, so the document cannot drift from the code."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import JsonSchemaMode

from orchestrator import __version__
from orchestrator.api.bearer import realm_of
from orchestrator.api.parsing import BODY_ERRORS
from orchestrator.api.responses import ERROR_STATUS
from orchestrator.api.routing import JSON, Param, RouteDoc, is_browser_page, route_doc
from orchestrator.api.views import ErrorBody, WebhookEvent
from orchestrator.webhooks.signing import WEBHOOK_ID, WEBHOOK_SIGNATURE, WEBHOOK_TIMESTAMP

OPENAPI = web.AppKey("openapi_document", dict)

_REF = "#/components/schemas/{model}"
# aiohttp adds HEAD to every GET route (and OPTIONS for CORS); they answer like the route they shadow.
AUTOMATIC_METHODS = frozenset({"HEAD", "OPTIONS"})
_PATH_PARAM = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_SECURITY = {"api": "bearerApi", "worker": "bearerWorker"}
# The Standard Webhooks headers of every webhook (orchestrator.webhooks.signing).
_WEBHOOK_HEADERS = [
    {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": {"type": "string"},
    }
    for name, required, description in (
        (WEBHOOK_ID, True, "the event's id (evt_<hex>), the same on every attempt: receivers dedupe by it"),
        (WEBHOOK_TIMESTAMP, True, "unix seconds of the attempt; refuse signatures far from now"),
        (
            WEBHOOK_SIGNATURE,
            False,
            'v1,<base64 HMAC-SHA256 of "{webhook-id}.{webhook-timestamp}.{body}">; absent only when no secret'
            " is configured",
        ),
    )
]


def documented_routes(router: web.UrlDispatcher) -> list[tuple[str, str, RouteDoc | None]]:
    """(method, path, doc) of every registered route but aiohttp's automatic ones and the browser pages;
    doc None when the handler declares nothing."""
    return [
        (route.method, route.resource.canonical, route_doc(route.handler))
        for route in router.routes()
        if route.resource is not None and route.method not in AUTOMATIC_METHODS and not is_browser_page(route.handler)
    ]


class _Schemas:
    """Every schema the document needs, generated in one pass so shared models become one component."""

    def __init__(self, routes: Iterable[RouteDoc]) -> None:
        inputs: list[tuple[Any, JsonSchemaMode, TypeAdapter[Any]]] = [
            (ErrorBody, "serialization", TypeAdapter(ErrorBody)),
            (WebhookEvent, "serialization", TypeAdapter(WebhookEvent)),
        ]
        for doc in routes:
            if doc.body is not None:
                inputs.append((doc.body, "validation", TypeAdapter(doc.body)))
            inputs += [(r.model, "serialization", TypeAdapter(r.model)) for r in doc.replies if r.model is not None]
            inputs += [(p, "validation", TypeAdapter(p.annotation)) for p in doc.params]
        unique = list({(key, mode): (key, mode, adapter) for key, mode, adapter in inputs}.values())
        self._by_key, definitions = TypeAdapter.json_schemas(unique, ref_template=_REF)
        self.components: dict[str, Any] = definitions.get("$defs", {})

    def model(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        return self._by_key[(model, mode)]

    def param(self, param: Param) -> dict[str, Any]:
        schema = dict(self._by_key[(param, "validation")])
        if param.default is not None:
            schema["default"] = param.default
        return schema


def _errors(codes: Iterable[str]) -> dict[str, Any]:
    """One response per status, whose schema admits only the codes this route can answer with it."""
    by_status: dict[int, list[str]] = defaultdict(list)
    for code in dict.fromkeys(codes):
        by_status[ERROR_STATUS[code]].append(code)
    return {
        str(status): {
            "description": ", ".join(codes),
            "content": {
                JSON: {
                    "schema": {
                        "allOf": [
                            {"$ref": _REF.format(model=ErrorBody.__name__)},
                            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
                        ]
                    }
                }
            },
        }
        for status, codes in sorted(by_status.items())
    }


def _operation(path: str, doc: RouteDoc, schemas: _Schemas) -> dict[str, Any]:
    realm = realm_of(path)
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(path)
    ]
    for param in doc.params:
        entry = {"name": param.name, "in": param.location, "required": False, "schema": schemas.param(param)}
        entry["description"] = param.description
        if param.comma_separated:
            entry |= {"style": "form", "explode": False}
        parameters.append(entry)
    responses: dict[str, Any] = {}
    for reply in doc.replies:
        response: dict[str, Any] = {"description": reply.description}
        if reply.media_type is not None:
            schema = schemas.model(reply.model, "serialization") if reply.model is not None else None
            types = reply.media_type if isinstance(reply.media_type, tuple) else (reply.media_type,)
            response["content"] = {media_type: {"schema": schema} if schema else {} for media_type in types}
        if reply.headers:
            response["headers"] = {
                name: {"description": text, "schema": {"type": "string"}} for name, text in reply.headers.items()
            }
        responses[str(reply.status)] = response
    codes = [*doc.errors]
    if doc.body is not None:
        codes += BODY_ERRORS
    if realm is not None:
        codes.append("unauthorized")
    responses |= _errors(codes)
    operation: dict[str, Any] = {"summary": doc.summary}
    if realm is not None:
        operation["security"] = [{_SECURITY[realm]: []}]
    if parameters:
        operation["parameters"] = parameters
    if doc.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {JSON: {"schema": schemas.model(doc.body, "validation")}},
        }
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def openapi_document(router: web.UrlDispatcher) -> dict[str, Any]:
    """The document for the routes `router` holds; a route whose handler declares nothing is left out
    (the tests list those deliberately left out)."""
    routes = [(method, path, doc) for method, path, doc in documented_routes(router) if doc is not None]
    schemas = _Schemas(doc for _, _, doc in routes)
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for method, path, doc in routes:
        paths[path][method.lower()] = _operation(path, doc, schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recorder-farm orchestrator",
            "version": __version__,
            "description": "Record a web page to MP4 with a warm pool of recorders. See docs/api.md.",
        },
        "paths": dict(paths),
        "webhooks": {
            "recordingStateChanged": {
                "post": {
                    "summary": "Sent to webhook_url on every state change, signed as Standard Webhooks; delivered at"
                    " least once: dedupe by webhook-id",
                    "parameters": _WEBHOOK_HEADERS,
                    "requestBody": {"content": {JSON: {"schema": schemas.model(WebhookEvent, "serialization")}}},
                    "responses": {
                        "2XX": {"description": "received; anything else (a redirect too) is retried until the horizon"}
                    },
                }
            }
        },
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "bearerApi": {"type": "http", "scheme": "bearer", "description": "API_TOKENS or API_ADMIN_TOKEN"},
                "bearerWorker": {"type": "http", "scheme": "bearer", "description": "WORKER_TOKEN"},
            },
        },
    }
