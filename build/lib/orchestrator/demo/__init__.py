"""The demo page, served at `/demo/`: something the farm can record with no network at all.

`index.html` draws on a canvas and makes its sound with WebAudio: moving shapes, and once a second a
white flash with a 1 kHz beep (the sync marker the quality report measures). It needs no token, since
the browser that records it has none; it reveals nothing about the farm.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()


def page() -> bytes:
    return resources.files(__package__).joinpath("index.html").read_bytes()


@routes.get("/demo")
async def demo_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/demo/" + (f"?{request.query_string}" if request.query_string else ""))


@routes.get("/demo/")
async def demo(request: web.Request) -> web.Response:
    return web.Response(body=page(), content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"})
