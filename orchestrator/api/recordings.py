"""Public recording routes: create, read, list, stop, cancel and media."""

from __future__ import annotations

import re

from aiohttp import web

from orchestrator.api.body import parse_body, query_bool, query_int
from orchestrator.api.context import CLIENT, CONTEXT
from orchestrator.api.errors import error_response
from orchestrator.api.responses import json_model
from orchestrator.media import LocalFile
from orchestrator.models import CreateRecording, RecordingList
from orchestrator.service import parse_statuses

routes = web.RouteTableDef()

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# A suffix range of zero bytes asks for nothing: RFC 9110 calls it unsatisfiable (aiohttp would send all).
_EMPTY_SUFFIX = re.compile(r"^\s*bytes\s*=\s*-0+\s*$", re.IGNORECASE)


@routes.post("/v1/recordings")
async def create_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await parse_body(request, CreateRecording, {"max_duration": ctx.settings.max_duration})
    row, created = await ctx.service.create(body, request.headers.get("Idempotency-Key"), request[CLIENT])
    headers = {"Location": f"/v1/recordings/{row.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_model(ctx.render(row), status=202, headers=headers)


@routes.get("/v1/recordings")
async def list_recordings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    rows, next_cursor = await ctx.service.list(
        parse_statuses(request.query.get("status")),
        query_int(request, "limit", 50),
        request.query.get("cursor") or None,
        request[CLIENT],
    )
    return json_model(RecordingList(items=[ctx.render(r) for r in rows], next_cursor=next_cursor))


@routes.get("/v1/recordings/{id}")
async def get_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(ctx.render(await ctx.service.get(request.match_info["id"], request[CLIENT])))


@routes.post("/v1/recordings/{id}/stop")
async def stop_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(ctx.render(await ctx.service.stop(request.match_info["id"], request[CLIENT])), status=202)


@routes.delete("/v1/recordings/{id}")
async def cancel_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    keep = query_bool(request, "keep", False)
    return json_model(ctx.render(await ctx.service.cancel(request.match_info["id"], keep, request[CLIENT])), status=202)


@routes.get("/v1/recordings/{id}/media")
async def recording_media(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    row = await ctx.service.get(request.match_info["id"], request[CLIENT])
    where = await ctx.media.locate(row)
    if isinstance(where, LocalFile):
        if _EMPTY_SUFFIX.match(request.headers.get("Range", "")):
            return error_response(
                "range_not_satisfiable",
                "Range bytes=-0 selects no bytes; ask for bytes=-N with N > 0, or bytes=START-",
                headers={**NOSNIFF, "Content-Range": f"bytes */{where.path.stat().st_size}"},
            )
        return web.FileResponse(
            where.path,
            headers={**NOSNIFF, "Content-Disposition": f'inline; filename="{row.id}{where.path.suffix}"'},
        )
    raise web.HTTPFound(where.url, headers=NOSNIFF)
