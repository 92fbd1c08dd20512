"""Which token a route needs: workers use WORKER_TOKEN on /v1/worker/*, callers API_TOKENS on the rest
of /v1/*. Health, readiness, metrics and the OpenAPI document are open (bind them to a private network).

Without tokens (allowed only on loopback) `/v1/*` is open, but only to requests addressed to a loopback
host (`Host: 127.0.0.1`, `[::1]`, `localhost`; browsers always send one). A recorded page whose own name
rebinds to 127.0.0.1 reaches the port with `Host: <its name>`; were it answered, the page could read
every recording, URLs included, with the browser's same-origin blessing.
"""

from __future__ import annotations

import ipaddress

from aiohttp import web
from aiohttp.typedefs import Handler

from orchestrator.api.context import CLIENT, CONTEXT
from orchestrator.api.errors import error_response

WORKER_PREFIX = "/v1/worker/"


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith("/v1/"):
        return await handler(request)
    ctx = request.app[CONTEXT]
    auth = ctx.worker_auth if request.path.startswith(WORKER_PREFIX) else ctx.api_auth
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
