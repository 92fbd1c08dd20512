"""What runs around every handler: the token check, and the mapping of every failure to an error body.

Without tokens (allowed only on loopback) `/v1/*` is open, but only to requests addressed to a loopback
host (`Host: 127.0.0.1`, `[::1]`, `localhost`; browsers always send one). A recorded page whose own name
rebinds to 127.0.0.1 reaches the port with `Host: <its name>`; were it answered, the page could read
every recording, URLs included, with the browser's same-origin blessing.
"""

from __future__ import annotations

import ipaddress

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.api.bearer import realm_of
from orchestrator.api.context import CLIENT, CONTEXT
from orchestrator.api.responses import ERROR_STATUS, error_response
from orchestrator.api.views import ErrorDetail
from orchestrator.errors import OrchestratorError

log = structlog.get_logger("orchestrator.api")

# The codes of what aiohttp itself refuses (no route, wrong method, body too large, ...), by status.
_AIOHTTP_REFUSALS = (
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "unsupported_media_type",
    "range_not_satisfiable",
)
_HTTP_CODES = {ERROR_STATUS[code]: code for code in _AIOHTTP_REFUSALS}


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves the API as an error body with the status of its code."""
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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The caller of a `/v1/*` request, from its bearer token (see `bearer.realm_of`), or a 401."""
    realm = realm_of(request.path)
    if realm is None:
        return await handler(request)
    ctx = request.app[CONTEXT]
    auth = ctx.worker_auth if realm == "worker" else ctx.api_auth
    host = request.headers.get("Host")
    if auth.open and host is not None and not addressed_to_loopback(host):
        return error_response(
            "unauthorized",
            f"{auth.source} is not set, so {request.path} answers only requests addressed to a loopback host"
            f" (127.0.0.1, [::1] or localhost), not {host!r}; set {auth.source} to reach it by any name",
            headers={"WWW-Authenticate": f'Bearer realm="{auth.realm}"'},
        )
    header = request.headers.get("Authorization")
    client = auth.identify(header)
    if client is None:
        return error_response(
            "unauthorized",
            auth.problem(header),
            headers={"WWW-Authenticate": f'Bearer realm="{auth.realm}"'},
        )
    request[CLIENT] = client
    return await handler(request)


def addressed_to_loopback(host: str) -> bool:
    """Whether a Host header (`name`, `name:port`, `[v6]:port`) names a loopback address or localhost."""
    host = host.strip()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    else:
        name = host.rpartition(":")[0] if host.count(":") == 1 else host
    name = name.lower().rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
