"""Every error leaves the API as `{"error": {"code", "message", "details"?}}` with the status of its code."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.errors import OrchestratorError
from orchestrator.models import Error, ErrorBody, ErrorDetail

log = structlog.get_logger("orchestrator.api")

STATUS = {
    "invalid_json": 400,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "illegal_transition": 409,
    "idempotency_conflict": 409,
    "media_not_ready": 409,
    "lease_gone": 410,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "range_not_satisfiable": 416,
    "validation_error": 422,
    "invalid_report": 422,
    "invalid_url": 422,
    "url_not_allowed": 422,
    "url_unresolvable": 422,
    "internal": 500,
}
_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
}


def error_response(
    code: str,
    message: str,
    details: list[ErrorDetail] | None = None,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(error=Error(code=code, message=message, details=details or None))
    return web.Response(
        status=status or STATUS.get(code, 400),
        text=body.model_dump_json(exclude_none=True),
        content_type="application/json",
        headers=headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except OrchestratorError as exc:
        details = [ErrorDetail(field=d.field, message=d.message) for d in exc.details or []]
        return error_response(exc.code, exc.message, details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = {
            404: f"no route {request.method} {request.path}; the routes are listed at /openapi.json",
            405: f"{request.method} is not allowed on {request.path}; allowed: {exc.headers.get('Allow', '')}",
            413: f"request body too large: {exc.text}",
        }.get(exc.status, exc.text or exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "www-authenticate")}
        return error_response(code, message, status=exc.status, headers=headers)
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response("internal", "unexpected error in the orchestrator; its log has the details", status=500)
