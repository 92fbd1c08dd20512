"""Which token a route needs: workers use WORKER_TOKEN on /v1/worker/*, callers API_TOKENS on the rest
of /v1/*. Health, readiness, metrics and the OpenAPI document are open (bind them to a private network)."""

from __future__ import annotations

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
