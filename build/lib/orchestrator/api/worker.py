"""The worker protocol routes (see `contract.protocol`): lease, heartbeat, report."""

from __future__ import annotations

from aiohttp import web

from contract.protocol import Heartbeat, HeartbeatReply, Lease, LeaseRequest, Report
from orchestrator.api.context import CONTEXT
from orchestrator.api.parsing import parse_body
from orchestrator.api.responses import json_model
from orchestrator.api.routing import Reply, documented

routes = web.RouteTableDef()


@routes.post("/v1/worker/lease")
@documented(
    "Long-poll for a lease (worker protocol)",
    Reply(200, "a lease", Lease),
    Reply(204, "nothing within `wait`", media_type=None),
    body=LeaseRequest,
)
async def lease(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await parse_body(request, LeaseRequest)

    def hung_up() -> bool:
        return request.transport is None or request.transport.is_closing()

    granted = await ctx.scheduler.lease(body, gone=hung_up)
    return json_model(granted) if granted is not None else web.Response(status=204)


@routes.post("/v1/worker/heartbeat")
@documented(
    "Renew a lease and report progress (worker protocol)",
    Reply(200, "what to do next", HeartbeatReply),
    body=Heartbeat,
    errors=("lease_gone",),
)
async def heartbeat(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(await ctx.scheduler.heartbeat(await parse_body(request, Heartbeat)))


@routes.post("/v1/worker/report")
@documented(
    "End a recording (worker protocol)",
    Reply(200, "recorded", HeartbeatReply),
    body=Report,
    errors=("lease_gone", "invalid_report"),
)
async def report(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(await ctx.scheduler.report(await parse_body(request, Report)))
