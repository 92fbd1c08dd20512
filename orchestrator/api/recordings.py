"""Public recording routes: create, read, list, stop, cancel, purge, pause, resume, media, the failure
screenshot, the timeline, and the signed links a browser opens the replay and list pages with."""

from __future__ import annotations

import re
from typing import Annotated

from aiohttp import web
from pydantic import Field, StringConstraints

from orchestrator.api.context import CLIENT, CONTEXT
from orchestrator.api.parsing import parse_body, query_bool, query_int, query_value
from orchestrator.api.responses import error_response, json_model
from orchestrator.api.routing import Param, Reply, documented
from orchestrator.api.views import Recording, RecordingList, ViewLink
from orchestrator.media import LocalFile, Redirect
from orchestrator.request import CreateRecording
from orchestrator.service import MAX_IDEMPOTENCY_KEY, MAX_PAGE, parse_statuses
from orchestrator.states import State

routes = web.RouteTableDef()

NOSNIFF = {"X-Content-Type-Options": "nosniff"}
# A suffix range of zero bytes asks for nothing: RFC 9110 calls it unsatisfiable (aiohttp would send all).
_EMPTY_SUFFIX = re.compile(r"^\s*bytes\s*=\s*-0+\s*$", re.IGNORECASE)

IDEMPOTENCY_KEY = Param(
    "Idempotency-Key",
    Annotated[str, StringConstraints(min_length=1, max_length=MAX_IDEMPOTENCY_KEY)],
    "the same key and body return the same recording; another body is a 409",
    location="header",
)
STATUS = Param(
    "status", Annotated[list[State], Field(min_length=1)], "one or more states, comma-separated", comma_separated=True
)
LIMIT = Param("limit", Annotated[int, Field(ge=1, le=MAX_PAGE)], "recordings per page", default=50)
CURSOR = Param("cursor", str, "next_cursor of the previous page")
KEEP = Param(
    "keep", bool, "cancel: keep (finalize and upload) what was recorded so far; ignored with purge", default=False
)
PURGE = Param(
    "purge",
    bool,
    "instead of cancelling: delete an ended recording's media and metadata (local files or S3 objects) and"
    " mark it purged; a recording still queued or running is a 409",
    default=False,
)

_RECORDING = Reply(202, "the recording, as changed", Recording)
_NOSNIFF_DOC = {"X-Content-Type-Options": "nosniff: browsers must not guess another type"}


@routes.post("/v1/recordings")
@documented(
    "Queue a recording",
    Reply(
        202,
        "queued (or the earlier recording for this Idempotency-Key)",
        Recording,
        headers={"Location": "where the recording is", "Idempotent-Replayed": "true when an earlier one is returned"},
    ),
    body=CreateRecording,
    params=(IDEMPOTENCY_KEY,),
    errors=("invalid_url", "url_not_allowed", "url_unresolvable", "idempotency_conflict"),
)
async def create_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await parse_body(request, CreateRecording, {"max_duration": ctx.settings.max_duration})
    row, created = await ctx.service.create(body, request.headers.get(IDEMPOTENCY_KEY.name), request[CLIENT])
    headers = {"Location": f"/v1/recordings/{row.id}"}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return json_model(ctx.render(row), status=202, headers=headers)


@routes.get("/v1/recordings")
@documented(
    "List recordings, newest first",
    Reply(200, "a page of recordings", RecordingList),
    params=(STATUS, LIMIT, CURSOR),
    errors=("validation_error",),
)
async def list_recordings(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    rows, next_cursor = await ctx.service.list(
        parse_statuses(query_value(request, STATUS.name)),
        query_int(request, LIMIT.name, LIMIT.default),
        request.query.get(CURSOR.name) or None,
        request[CLIENT],
    )
    return json_model(RecordingList(items=[ctx.render(r) for r in rows], next_cursor=next_cursor))


@routes.get("/v1/recordings/{id}")
@documented("One recording", Reply(200, "the recording", Recording), errors=("not_found",))
async def get_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(ctx.render(await ctx.service.get(request.match_info["id"], request[CLIENT])))


@routes.post("/v1/recordings/{id}/stop")
@documented(
    "Stop gracefully: the recording is finalized, uploaded and completed",
    _RECORDING,
    errors=("not_found", "illegal_transition"),
)
async def stop_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(ctx.render(await ctx.service.stop(request.match_info["id"], request[CLIENT])), status=202)


@routes.delete("/v1/recordings/{id}")
@documented(
    "Cancel: a queued recording never starts; an active one stops and ends cancelled. With purge=true:"
    " delete an ended recording's files and mark it purged",
    _RECORDING,
    params=(KEEP, PURGE),
    errors=("not_found", "illegal_transition", "validation_error", "purge_failed"),
)
async def cancel_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    keep = query_bool(request, KEEP.name, KEEP.default)
    if query_bool(request, PURGE.name, PURGE.default):
        row = await ctx.service.purge(request.match_info["id"], request[CLIENT])  # `keep` is a cancel's
    else:
        row = await ctx.service.cancel(request.match_info["id"], keep, request[CLIENT])
    return json_model(ctx.render(row), status=202)


@routes.post("/v1/recordings/{id}/pause")
@documented(
    "Pause the capture (a private part of a meeting): nothing is recorded until resumed",
    _RECORDING,
    errors=("not_found", "illegal_transition"),
)
async def pause_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(ctx.render(await ctx.service.pause(request.match_info["id"], request[CLIENT])), status=202)


@routes.post("/v1/recordings/{id}/resume")
@documented("Resume a paused capture", _RECORDING, errors=("not_found", "illegal_transition"))
async def resume_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_model(ctx.render(await ctx.service.resume(request.match_info["id"], request[CLIENT])), status=202)


_MEDIA_TYPES = ("video/mp4", "audio/mp4")


@routes.get("/v1/recordings/{id}/media")
@documented(
    "The MP4 (M4A when recorded without video): a redirect to a presigned S3 URL, or the local file"
    " (HTTP Range supported)",
    Reply(200, "the file", media_type=_MEDIA_TYPES, headers=_NOSNIFF_DOC),
    Reply(206, "the requested byte range", media_type=_MEDIA_TYPES, headers=_NOSNIFF_DOC),
    Reply(302, "a presigned S3 URL", media_type=None, headers={"Location": "the presigned URL", **_NOSNIFF_DOC}),
    errors=("not_found", "media_not_ready", "range_not_satisfiable", "recording_purged"),
)
async def recording_media(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    row = await ctx.service.get(request.match_info["id"], request[CLIENT])
    where = await ctx.media.locate(row)
    if isinstance(where, LocalFile) and _EMPTY_SUFFIX.match(request.headers.get("Range", "")):
        return error_response(
            "range_not_satisfiable",
            "Range bytes=-0 selects no bytes; ask for bytes=-N with N > 0, or bytes=START-",
            headers={**NOSNIFF, "Content-Range": f"bytes */{where.path.stat().st_size}"},
        )
    return _serve(row.id, where)


@routes.get("/v1/recordings/{id}/screenshot")
@documented(
    "failure.png, the page when the recording failed: a redirect to a presigned S3 URL, or the local file",
    Reply(200, "the PNG", media_type="image/png", headers=_NOSNIFF_DOC),
    Reply(302, "a presigned S3 URL", media_type=None, headers={"Location": "the presigned URL", **_NOSNIFF_DOC}),
    errors=("not_found", "recording_purged"),
)
async def recording_screenshot(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    row = await ctx.service.get(request.match_info["id"], request[CLIENT])
    return _serve(row.id, await ctx.media.screenshot(row))


@routes.get("/v1/recordings/{id}/timeline")
@documented(
    "timeline.json: what happened during the recording, on the media clock (contract/timeline.py); read from"
    " local disk or the bucket and served here",
    Reply(200, "the timeline", media_type="application/json", headers=_NOSNIFF_DOC),
    errors=("not_found", "recording_purged"),
)
async def recording_timeline(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await ctx.service.get(request.match_info["id"], request[CLIENT])
    return timeline_response(await ctx.media.timeline(row))


def timeline_response(data: bytes, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=data, content_type="application/json", headers={**NOSNIFF, **(headers or {})})


@routes.get("/v1/recordings/{id}/view")
@documented(
    "A short-lived signed link to the recording's replay page, for a browser: no token goes with it",
    Reply(200, "the link", ViewLink),
    errors=("not_found",),
)
async def recording_view_link(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await ctx.service.get(request.match_info["id"], request[CLIENT])
    link = ctx.signer.recording_link(row.id, row.owner)
    return json_model(ViewLink(url=link.url, expires_at=link.expires_at), headers={"Cache-Control": "no-store"})


@routes.get("/v1/view")
@documented(
    "A short-lived signed link to the list page of the caller's recordings (every caller's for the admin)",
    Reply(200, "the link", ViewLink),
)
async def list_view_link(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    caller = request[CLIENT]
    link = ctx.signer.list_link(caller.name, caller.admin)
    return json_model(ViewLink(url=link.url, expires_at=link.expires_at), headers={"Cache-Control": "no-store"})


def _serve(recording_id: str, where: LocalFile | Redirect) -> web.StreamResponse:
    """The file itself with its own type (never one a browser guesses), or the redirect to it."""
    if isinstance(where, Redirect):
        raise web.HTTPFound(where.url, headers=NOSNIFF)
    return web.FileResponse(
        where.path,
        headers={
            **NOSNIFF,
            "Content-Type": where.content_type,
            "Content-Disposition": f'inline; filename="{recording_id}{where.path.suffix}"',
        },
    )
