"""Operations routes: liveness, readiness, metrics, the OpenAPI document and the pool view."""

from __future__ import annotations

import structlog
from aiohttp import web

from orchestrator.api.context import CLIENT, CONTEXT, ApiContext
from orchestrator.api.openapi import OPENAPI
from orchestrator.api.responses import json_model
from orchestrator.api.routing import Reply, documented
from orchestrator.api.views import Health, PoolView, PoolWorker, utc
from orchestrator.auth import Caller
from orchestrator.metrics import CONTENT_TYPE
from orchestrator.states import ACTIVE, State

log = structlog.get_logger("orchestrator.api")
routes = web.RouteTableDef()


@routes.get("/healthz")
@documented("Liveness", Reply(200, "alive", Health))
async def healthz(request: web.Request) -> web.Response:
    return json_model(Health(status="ok"))


@routes.get("/readyz")
@documented("Readiness: the store answers", Reply(200, "ready", Health), Reply(503, "not ready", Health))
async def readyz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    if ctx.settings.replicated and ctx.scheduler.draining:
        # Shutting down: callers and workers go to another replica (one orchestrator alone keeps serving).
        return json_model(Health(status="unavailable", detail="draining: shutting down"), status=503)
    try:
        await ctx.store.ping()
    except Exception as exc:
        log.warning("not_ready", error=str(exc))
        return json_model(Health(status="unavailable", detail=f"store: {exc}"), status=503)
    return json_model(Health(status="ok"))


@routes.get("/metrics")
@documented("Prometheus metrics", Reply(200, "the text exposition format", media_type="text/plain"))
async def metrics(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    view = await pool_view(ctx)
    workers = {
        state: sum(1 for w in view.workers if w.state == state) for state in ("starting", "idle", "busy", "failed")
    }
    ctx.metrics.set_counts(await ctx.store.count_by_status(), workers)
    return web.Response(body=ctx.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


@routes.get("/openapi.json")
@documented("This document", Reply(200, "OpenAPI 3.1"))
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


@routes.get("/v1/pool")
@documented("Workers and queue", Reply(200, "the pool", PoolView))
async def pool(request: web.Request) -> web.Response:
    return json_model(await pool_view(request.app[CONTEXT], request[CLIENT]))


async def _visible(ctx: ApiContext, held: set[str], caller: Caller | None) -> set[str]:
    """Of the recordings workers hold, those `caller` may see (all for the admin or no caller)."""
    if caller is None or caller.admin:
        return held
    visible = set()
    for recording_id in held:
        row = await ctx.store.get(recording_id)
        if row is not None and caller.may_see(row.owner):
            visible.add(recording_id)
    return visible


def _summary(reason: str | None) -> str | None:
    """What a failed worker's reason says before its detail: "worker killed by SIGKILL", "OOMKilled".

    The detail is the worker's own words (the last line it logged, its termination message), which may
    name the recording it held and that recording's URL: only the admin sees it."""
    return reason.split(": ", 1)[0] if reason else reason


async def pool_view(ctx: ApiContext, caller: Caller | None = None) -> PoolView:
    """The pool as `caller` may see it: every worker and count, but only the caller's own recording ids
    (another caller's ids are never shown to it, here as anywhere else), and a failed worker's reason
    without the worker's own words unless the caller is the admin."""
    snapshot = await ctx.registry.workers()
    visible = await _visible(ctx, {r for w in snapshot for r in w.recordings}, caller)
    workers = [
        PoolWorker(
            id=w.worker_id,
            state=w.state,
            retiring=w.retiring,
            last_seen=utc(w.last_seen),
            idle_since=utc(w.idle_since),
            recordings=[r for r in w.recordings if r in visible],
            browser_sandbox=w.browser_sandbox,
        )
        for w in snapshot
    ]
    if ctx.backend is not None:
        # Workers the backend started that have not asked for work yet, and those that failed.
        seen = {w.id for w in workers}
        for info in await ctx.backend.list():
            if info.name in seen or info.phase == "gone":
                continue
            state = "failed" if info.phase == "failed" else "starting"
            reason = info.reason if caller is None or caller.admin else _summary(info.reason)
            workers.append(PoolWorker(id=info.name, state=state, reason=reason))
    counts = await ctx.store.count_by_status()
    s = ctx.settings
    return PoolView(
        workers=workers,
        idle=sum(1 for w in workers if w.state == "idle"),
        busy=sum(1 for w in workers if w.state == "busy"),
        starting=sum(1 for w in workers if w.state == "starting"),
        queued=counts[State.QUEUED],
        active=sum(counts[a] for a in ACTIVE),
        capacity=s.pool_capacity,
        min=s.pool_min,
        max=s.pool_max,
        spare=s.pool_spare,
        draining=ctx.scheduler.draining,
    )
