"""The OpenAPI 3.1 document, generated from the pydantic models so it cannot drift from the code."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contract.protocol import Heartbeat, HeartbeatReply, Lease, LeaseRequest, Report
from orchestrator import __version__
from orchestrator.models import (
    CreateRecording,
    ErrorBody,
    Health,
    PoolView,
    Recording,
    RecordingList,
    WebhookEvent,
)
from orchestrator.states import State

_REF = "#/components/schemas/{model}"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(model)}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "invalid_json",
        401: "unauthorized",
        404: "not_found",
        409: "illegal_transition, idempotency_conflict or media_not_ready",
        410: "lease_gone",
        415: "unsupported_media_type: the body is not JSON",
        416: "range_not_satisfiable",
        422: "validation_error, invalid_url, url_not_allowed, url_unresolvable or (worker reports) invalid_report",
    }
    return {str(code): _json(ErrorBody, text[code]) for code in codes}


def _id_param() -> dict[str, Any]:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}


@cache
def openapi_document() -> dict[str, Any]:
    models = [
        CreateRecording,
        Recording,
        RecordingList,
        PoolView,
        ErrorBody,
        Health,
        WebhookEvent,
        LeaseRequest,
        Lease,
        Heartbeat,
        HeartbeatReply,
        Report,
    ]
    _, schema = models_json_schema(
        [
            (m, "validation" if m in (CreateRecording, LeaseRequest, Heartbeat, Report) else "serialization")
            for m in models
        ],
        ref_template=_REF,
    )
    api = [{"bearerApi": []}]
    worker = [{"bearerWorker": []}]
    recording = _json(Recording, "the recording")
    paths: dict[str, Any] = {
        "/v1/recordings": {
            "post": {
                "summary": "Queue a recording",
                "security": api,
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": 255},
                        "description": "the same key and body return the same recording; another body is a 409",
                    }
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(CreateRecording)}}},
                "responses": {
                    "202": {
                        **_json(Recording, "queued (or the earlier recording for this Idempotency-Key)"),
                        "headers": {"Location": {"schema": {"type": "string"}}},
                    },
                    **_errors(400, 401, 409, 415, 422),
                },
            },
            "get": {
                "summary": "List recordings, newest first",
                "security": api,
                "parameters": [
                    {
                        "name": "status",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "one or more comma-separated states: " + ", ".join(s.value for s in State),
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "next_cursor of the previous page",
                    },
                ],
                "responses": {"200": _json(RecordingList, "a page of recordings"), **_errors(401, 422)},
            },
        },
        "/v1/recordings/{id}": {
            "parameters": [_id_param()],
            "get": {"summary": "One recording", "security": api, "responses": {"200": recording, **_errors(401, 404)}},
            "delete": {
                "summary": "Cancel: a queued recording never starts; an active one stops and ends cancelled",
                "security": api,
                "parameters": [
                    {
                        "name": "keep",
                        "in": "query",
                        "schema": {"type": "boolean", "default": False},
                        "description": "keep (finalize and upload) what was recorded so far",
                    }
                ],
                "responses": {"202": recording, **_errors(401, 404, 409)},
            },
        },
        "/v1/recordings/{id}/stop": {
            "parameters": [_id_param()],
            "post": {
                "summary": "Stop gracefully: the recording is finalized, uploaded and completed",
                "security": api,
                "responses": {"202": recording, **_errors(401, 404, 409)},
            },
        },
        "/v1/recordings/{id}/media": {
            "parameters": [_id_param()],
            "get": {
                "summary": "The MP4: a redirect to a presigned S3 URL, or the local file (HTTP Range supported)",
                "security": api,
                "responses": {
                    "200": {"description": "the file", "content": {"video/mp4": {}}},
                    "206": {"description": "the requested byte range", "content": {"video/mp4": {}}},
                    "302": {"description": "presigned S3 URL in Location"},
                    **_errors(401, 404, 409, 416),
                },
            },
        },
        "/v1/pool": {
            "get": {
                "summary": "Workers and queue",
                "security": api,
                "responses": {"200": _json(PoolView, "the pool"), **_errors(401)},
            }
        },
        "/v1/worker/lease": {
            "post": {
                "summary": "Long-poll for a lease (worker protocol)",
                "security": worker,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(LeaseRequest)}}},
                "responses": {
                    "200": _json(Lease, "a lease"),
                    "204": {"description": "nothing within `wait`"},
                    **_errors(400, 401, 415, 422),
                },
            }
        },
        "/v1/worker/heartbeat": {
            "post": {
                "summary": "Renew a lease and report progress (worker protocol)",
                "security": worker,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(Heartbeat)}}},
                "responses": {"200": _json(HeartbeatReply, "what to do next"), **_errors(400, 401, 410, 415, 422)},
            }
        },
        "/v1/worker/report": {
            "post": {
                "summary": "End a recording (worker protocol)",
                "security": worker,
                "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(Report)}}},
                "responses": {"200": _json(HeartbeatReply, "recorded"), **_errors(400, 401, 410, 415, 422)},
            }
        },
        "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json(Health, "alive")}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: the store answers",
                "responses": {"200": _json(Health, "ready"), "503": _json(Health, "not ready")},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}
        },
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "recorder-farm orchestrator",
            "version": __version__,
            "description": "Record a web page to MP4 with a warm pool of recorders. See docs/api.md.",
        },
        "paths": paths,
        "webhooks": {
            "recordingStateChanged": {
                "post": {
                    "summary": "Sent to webhook_url on every state change; see the X-Recorder-Signature header",
                    "requestBody": {"content": {"application/json": {"schema": _ref(WebhookEvent)}}},
                    "responses": {"2XX": {"description": "received; anything else is retried"}},
                }
            }
        },
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "bearerApi": {"type": "http", "scheme": "bearer", "description": "one of API_TOKENS"},
                "bearerWorker": {"type": "http", "scheme": "bearer", "description": "WORKER_TOKEN"},
            },
        },
    }
