"""The worker protocol routes (see `contract.protocol`): lease, heartbeat, report."""

from __future__ import annotations

from aiohttp import web

from contract.protocol import Heartbeat, LeaseRequest, Report
from orchestrator.api.body import parse_body
from orchestrator.api.context import CONTEXT
from orchestrator.api.responses import json_model

routes = web.RouteTableDef()


@routes.post("/v1/worker/lease")
async def lease(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await parse_body(request, LeaseRequest)

    def hung_up() -> bool:
        return request.transport is None or request.transport.is_closing()

    granted = await ctx.scheduler.lease(body, gone=hung_up)
    return json_model(granted) if granted is not None else web.Response(status=204)


@routes.post("/v1/worker/heartbeat")
async def heartbeat(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(await ctx.scheduler.heartbeat(await parse_body(request, Heartbeat)))


@routes.post("/v1/worker/report")
async def report(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(await ctx.scheduler.report(await parse_body(request, Report)))
