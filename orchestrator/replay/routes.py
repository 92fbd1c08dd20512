"""The `/view` routes a browser opens from a signed link (`signing.py`): the replay page of a recording and
what it fetches (media, timeline, the recording), the list page and its data, and the static files.

No bearer token reaches these routes and none is ever written into what they serve: every request
carries the link's `exp` and `sig` in its query string, checked here for the recording (and its owner)
or the list (and its caller); anything else is a 403. A recording that does not exist answers exactly
like a signature that does not fit it. Signed answers are `Cache-Control: no-store`; every answer has a
Content-Security-Policy without inline script, `Referrer-Policy: no-referrer` (the signed URL must not
follow the video to the bucket) and `nosniff`. Errors too (a 404, a 416 of a Range, a 500): every
handler here is wrapped by `view_route`, which formats its errors as the API does and adds the headers,
and an unknown path under /view is answered by a route of its own.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field

from contract.redact import redact_urls
from orchestrator.api.context import CONTEXT, ApiContext
from orchestrator.api.middleware import error_middleware
from orchestrator.api.parsing import query_bool, query_value
from orchestrator.api.routing import browser_page
from orchestrator.auth import Caller
from orchestrator.errors import OrchestratorError
from orchestrator.media import LocalFile, Redirect
from orchestrator.service import encode_cursor, parse_statuses
from orchestrator.states import State
from orchestrator.store.row import RecordingRow

routes = web.RouteTableDef()

FORBIDDEN = "forbidden"
PAGE_SIZE = 50
# The list's "has problems" filter reads each row's summary: at most this many rows are looked at per page.
MAX_SCANNED = 2000
_STATIC = resources.files("orchestrator.replay") / "static"
_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
# Presigned media of a bucket without S3_ENDPOINT_URL is on AWS.
_AWS_S3 = "https://*.amazonaws.com"


def _static_names() -> frozenset[str]:
    return frozenset(p.name for p in _STATIC.iterdir() if p.name.rsplit(".", 1)[-1] in ("js", "css"))


STATIC_NAMES = _static_names()


def _csp(ctx: ApiContext) -> str:
    endpoint = ctx.settings.s3_endpoint_url
    bucket = "{0.scheme}://{0.netloc}".format(urlsplit(endpoint)) if endpoint else _AWS_S3
    return (
        f"default-src 'self'; media-src 'self' {bucket}; img-src 'self' data:; script-src 'self'; style-src 'self';"
        " object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
    )


def _headers(ctx: ApiContext) -> dict[str, str]:
    """What every `/view` answer carries (`view_route` sets them); one that sets its own cache (the static
    files) keeps it."""
    return {
        "Content-Security-Policy": _csp(ctx),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


def view_route(handler: Handler) -> Handler:
    """A `/view` handler whose every answer, error or redirect, carries the page's headers (`_headers`);
    what an answer sets itself (the static files' cache) stands."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        headers = _headers(request.app[CONTEXT])
        try:
            response = await error_middleware(request, handler)  # errors become the API's error bodies
        except web.HTTPException as exc:  # a redirect (error_middleware answers every status >= 400)
            for name, value in headers.items():
                exc.headers.setdefault(name, value)
            raise
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        return response

    return browser_page(answer)


def _page(name: str) -> web.Response:
    html = (_STATIC / name).read_text(encoding="utf-8")
    return web.Response(text=html, content_type="text/html", charset="utf-8")


async def _signed_recording(request: web.Request) -> RecordingRow:
    """The recording the request's signature opens; a 403 (`forbidden`) otherwise."""
    ctx = request.app[CONTEXT]
    row = await ctx.store.get(request.match_info["id"])
    exp, sig = request.query.get("exp"), request.query.get("sig")
    owner = row.owner if row is not None else None
    problem = ctx.signer.recording_valid(request.match_info["id"], owner, exp, sig)
    if row is None and problem is None:
        problem = "this link's signature is not valid for this page: ask the API for a new link"
    if problem is not None or row is None:
        raise OrchestratorError(FORBIDDEN, problem or "")
    return row


def _signed_caller(request: web.Request) -> Caller:
    """The caller whose list the request's signature opens; a 403 (`forbidden`) otherwise."""
    ctx = request.app[CONTEXT]
    name = request.query.get("caller") or ""
    admin = request.query.get("admin") == "1"
    problem = ctx.signer.list_valid(name, admin, request.query.get("exp"), request.query.get("sig"))
    if problem is not None:
        raise OrchestratorError(FORBIDDEN, problem)
    return Caller(name, admin=admin)


# static files and the list: registered before /view/{id}, which would match them too


@routes.get("/view/static/{name}")
@view_route
async def static_file(request: web.Request) -> web.StreamResponse:
    """replay.js, replay.css, list.js: nothing secret, no signature."""
    name = request.match_info["name"]
    if name not in STATIC_NAMES:
        raise web.HTTPNotFound()
    body = (_STATIC / name).read_bytes()
    content_type = _STATIC_TYPES["." + name.rsplit(".", 1)[1]]
    return web.Response(body=body, headers={"Cache-Control": "public, max-age=300", "Content-Type": content_type})


@routes.get("/view")
@view_route
async def list_page(request: web.Request) -> web.Response:
    _signed_caller(request)
    return _page("list.html")


class ListedRecording(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    owner: str | None
    status: State
    created_at: datetime
    duration: float | None = Field(description="media seconds, from the quality report")
    stop_reason: str | None
    errors: int | None
    problems: int | None
    worst_inbound_loss: float | None
    has_problems: bool
    url: str = Field(description="the signed replay page")


class ListedPage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    items: list[ListedRecording]
    next_cursor: str | None


def timeline_summary(row: RecordingRow) -> dict[str, Any]:
    quality = row.quality if isinstance(row.quality, dict) else {}
    summary = quality.get("timeline")
    return summary if isinstance(summary, dict) else {}


def has_problems(row: RecordingRow) -> bool:
    """Failed, or its timeline summary counts a problem (a problem span or an error)."""
    problems = timeline_summary(row).get("problems")
    return row.status is State.FAILED or (isinstance(problems, int) and problems > 0)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _listed(ctx: ApiContext, row: RecordingRow) -> ListedRecording:
    summary = timeline_summary(row)
    quality = row.quality if isinstance(row.quality, dict) else {}
    link = ctx.signer.recording_link(row.id, row.owner)
    count = {k: int(v) if isinstance(v, int) and not isinstance(v, bool) else None for k, v in summary.items()}
    return ListedRecording(
        id=row.id,
        owner=row.owner,
        status=row.status,
        created_at=datetime.fromtimestamp(row.created_at, UTC),
        duration=_number(quality.get("duration")),
        stop_reason=row.stop_reason,
        errors=count.get("errors"),
        problems=count.get("problems"),
        worst_inbound_loss=_number(summary.get("worst_inbound_loss")),
        has_problems=has_problems(row),
        url=link.url,
    )


@routes.get("/view/recordings")
@view_route
async def list_data(request: web.Request) -> web.Response:
    """A page of the caller's recordings, newest first: ?status=a,b&problems=true&cursor=."""
    ctx = request.app[CONTEXT]
    caller = _signed_caller(request)
    statuses = parse_statuses(query_value(request, "status"))
    problems = query_bool(request, "problems", False)
    cursor = query_value(request, "cursor")
    found: list[RecordingRow] = []
    scanned = 0
    while True:
        rows, cursor = await ctx.service.list(statuses, 200 if problems else PAGE_SIZE, cursor, caller)
        scanned += len(rows)
        for index, row in enumerate(rows):
            if not problems or has_problems(row):
                found.append(row)
            if len(found) == PAGE_SIZE:
                if index < len(rows) - 1:
                    cursor = encode_cursor(row.seq)
                break
        if len(found) >= PAGE_SIZE or cursor is None or scanned >= MAX_SCANNED:
            break
    page = ListedPage(items=[_listed(ctx, r) for r in found], next_cursor=cursor)
    return web.Response(text=page.model_dump_json(), content_type="application/json")


@routes.get("/view/{id}")
@view_route
async def replay_page(request: web.Request) -> web.Response:
    await _signed_recording(request)
    return _page("replay.html")


@routes.get("/view/{id}/media")
@view_route
async def replay_media(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    where = await ctx.media.locate(await _signed_recording(request))
    if isinstance(where, Redirect):
        raise web.HTTPFound(where.url)
    assert isinstance(where, LocalFile)
    return web.FileResponse(where.path, headers={"Content-Type": where.content_type})


@routes.get("/view/{id}/timeline")
@view_route
async def replay_timeline(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await _signed_recording(request)
    return web.Response(body=await ctx.media.timeline(row), content_type="application/json")


# What the page shows of a recording: never the request (its URL may carry a meeting's token), the
# upload target, the worker or where the files are.
_SHOWN = {"id", "owner", "status", "created_at", "updated_at", "timestamps", "attempts", "duration", "paused"}
_SHOWN |= {"stop_reason", "quality", "progress"}


@routes.get("/view/{id}/recording")
@view_route
async def replay_recording(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await _signed_recording(request)
    shown = ctx.render(row).model_dump(mode="json", include=_SHOWN)
    if isinstance(shown.get("quality"), dict):
        shown["quality"].pop("path", None)  # the worker's own disk
    if row.error_code:
        # The message may quote the meeting's URL, whose query can carry its token: shown without it.
        shown["error"] = {"code": row.error_code, "message": redact_urls(row.error_message or "")}
    shown["audio_only"] = not bool(row.spec.get("video", True))
    shown["has_media"] = bool(row.location)
    shown["has_timeline"] = bool(row.timeline_location)
    return web.Response(text=json.dumps(shown), content_type="application/json")


@routes.get("/view/{path:.*}")
@view_route
async def unknown_view(request: web.Request) -> web.Response:
    """Any other path under /view: a 404 with the page's headers (registered last, after every /view route)."""
    raise web.HTTPNotFound()
