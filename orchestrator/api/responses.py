"""How answers leave the API: models as JSON, and every error as `{"error": {"code", "message",
"details"?}}` with the HTTP status of its code. `ERROR_STATUS` is the one table of those statuses; the
OpenAPI document reads it too."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel

from orchestrator.api.views import Error, ErrorBody, ErrorDetail

ERROR_STATUS: dict[str, int] = {
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "illegal_transition": 409,
    "idempotency_conflict": 409,
    "media_not_ready": 409,
    "lease_gone": 410,
    "recording_purged": 410,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "range_not_satisfiable": 416,
    "validation_error": 422,
    "invalid_report": 422,
    "invalid_url": 422,
    "url_not_allowed": 422,
    "url_unresolvable": 422,
    "internal": 500,
    "purge_failed": 503,
}


def json_model(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json", headers=headers)


def error_response(
    code: str,
    message: str,
    details: list[ErrorDetail] | None = None,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(error=Error(code=code, message=message, details=details or None))
    return web.Response(
        status=status or ERROR_STATUS.get(code, 400),
        text=body.model_dump_json(exclude_none=True),
        content_type="application/json",
        headers=headers,
    )
