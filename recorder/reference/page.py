"""The reference page: a 2x2 grid of playing clips (one of them the sync clip), served on loopback.

It also serves a meeting (`recorder.reference.meeting`: pre-join, lobby, tiles, end banner), a WebRTC loopback
call (`recorder.reference.webrtc`) and the pages the
tests and the benchmark need: readiness by selector or START_RECORDING,
END_RECORDING after a delay, state set/report pages for isolation checks, HTTP error pages and a page
that never finishes loading.
"""

from __future__ import annotations

import asyncio
import html
import json
import socket
import threading

from aiohttp import web

from recorder.reference import meeting, webrtc
from recorder.reference.media import SYNC_TONES, ReferenceMedia

_GRID_STYLE = """
html, body { margin: 0; padding: 0; width: 100vw; height: 100vh; overflow: hidden; background: #000; }
#grid { display: grid; grid-template-columns: 50vw 50vw; grid-template-rows: 50vh 50vh;
        width: 100vw; height: 100vh; }
video { display: block; width: 50vw; height: 50vh; object-fit: fill; background: #000; }
canvas, .spin-box { display: block; width: 50vw; height: 50vh; background: #123; }
.spin { width: 40vh; height: 40vh; margin: 5vh auto; background: linear-gradient(90deg, #e33, #3e3, #33e);
        animation: spin 2s linear infinite; }
@keyframes spin { to { transform: rotate(360deg); } }
#ready { position: fixed; right: 0; bottom: 0; width: 16px; height: 16px; background: #111; }
"""


def _page(title: str, body: str, script: str = "") -> web.Response:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_GRID_STYLE}</style></head>"
        f"<body>{body}<script>{script}</script></body></html>"
    )
    return web.Response(text=document, content_type="text/html", headers={"Cache-Control": "no-store"})


def _grid(tone: int) -> str:
    tiles = [f"/media/sync-{tone}.webm", "/media/tiles-a.webm", "/media/tiles-b.webm", "/media/tiles-a.webm#t=5"]
    videos = "".join(f"<video src='{src}' autoplay loop playsinline></video>" for src in tiles)
    return f"<div id='grid'>{videos}</div>"


# Two canvases redrawn on every animation frame, by the time (so the picture is right at any frame rate).
_ANIMATION_SCRIPT = """
const canvases = [...document.querySelectorAll('canvas')].map((c) => [c, c.getContext('2d')]);
function draw(now) {
  for (const [index, [canvas, ctx]] of canvases.entries()) {
    ctx.fillStyle = '#123'; ctx.fillRect(0, 0, canvas.width, canvas.height);
    for (let i = 0; i < 150; i++) {
      const angle = now / 1000 * (0.5 + (i % 7) / 5) + i * 2.4 + index;
      const radius = 20 + (i * 37) % 150;
      ctx.fillStyle = `hsl(${(i * 23 + now / 20) % 360}, 80%, 60%)`;
      ctx.beginPath();
      ctx.arc(320 + Math.cos(angle) * radius, 180 + Math.sin(angle) * radius * 0.8, 6 + i % 9, 0, 7);
      ctx.fill();
    }
  }
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);
"""


def _animation(tone: int) -> str:
    """The sync clip beside an animated page: canvases drawn per animation frame and a CSS animation."""
    return (
        f"<div id='grid'><video src='/media/sync-{tone}.webm' autoplay loop playsinline></video>"
        "<canvas width='640' height='360'></canvas><canvas width='640' height='360'></canvas>"
        "<div class='spin-box'><div class='spin'></div></div></div>"
    )


def _number(request: web.Request, name: str, default: float | None) -> float | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={text!r} is not a number") from None


async def _favicon(request: web.Request) -> web.Response:
    """Keeps a page's console free of a 404 for the icon the browser asks for."""
    return web.Response(status=204)


async def _grid_page(request: web.Request) -> web.Response:
    """/grid?tone=1000[&ready=selector][&signal=start][&delay=2][&end=5]"""
    tone = int(_number(request, "tone", 1000) or 1000)
    if tone not in SYNC_TONES:
        raise web.HTTPNotFound(text=f"no sync clip at {tone} Hz; there are {SYNC_TONES}")
    delay = _number(request, "delay", 0.0) or 0.0
    end = _number(request, "end", None)
    steps = []
    if request.query.get("ready") == "selector":
        steps.append(
            f"setTimeout(() => {{ const e = document.createElement('div'); e.id = 'ready';"
            f" document.body.appendChild(e); }}, {delay * 1000:.0f});"
        )
    if request.query.get("signal") == "start":
        steps.append(f"setTimeout(() => console.log('START_RECORDING'), {delay * 1000:.0f});")
    if end is not None:
        steps.append(f"setTimeout(() => console.log('END_RECORDING'), {end * 1000:.0f});")
    return _page(f"grid {tone} Hz", _grid(tone), "\n".join(steps))


async def _animation_page(request: web.Request) -> web.Response:
    """/animation?tone=1000: what an animated page costs to draw, with the sync clip for A/V."""
    tone = int(_number(request, "tone", 1000) or 1000)
    if tone not in SYNC_TONES:
        raise web.HTTPNotFound(text=f"no sync clip at {tone} Hz; there are {SYNC_TONES}")
    return _page(f"animation {tone} Hz", _animation(tone), _ANIMATION_SCRIPT)


async def _state_set(request: web.Request) -> web.Response:
    """Leaves a cookie (from the server and from script) and a localStorage item behind."""
    script = (
        "document.cookie = 'rf_script=1; path=/; max-age=3600';"
        "localStorage.setItem('rf_state', 'set');"
        "console.log('STATE_SET');"
    )
    response = _page("state set", "<p>state set</p>", script)
    response.set_cookie("rf_server", "1", path="/", max_age=3600)
    return response


async def _state_report(request: web.Request) -> web.Response:
    """Title and a console line `STATE cookies=<...> storage=<...>`, empty values when nothing crossed."""
    seen = json.dumps("; ".join(f"{k}={v}" for k, v in sorted(request.cookies.items())))
    script = (
        f"const server = {seen};"
        "const storage = JSON.stringify(Object.fromEntries(Object.entries(localStorage)));"
        "const line = `STATE cookies=${document.cookie} server=${server} storage=${storage === '{}' ? '' : storage}`;"
        "document.title = line; console.log(line);"
    )
    return _page("STATE pending", "<p>state report</p>", script)


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code}", content_type="text/plain")


async def _hold(request: web.Request) -> web.Response:
    """A subresource that does not finish for `seconds` (default 60): its page never fires `load`."""
    await asyncio.sleep(_number(request, "seconds", 60.0) or 60.0)
    return web.Response(body=b"", content_type="image/gif")


async def _slow_page(request: web.Request) -> web.Response:
    """Never ready: `load` waits on a held image, no #ready appears, START_RECORDING is never logged."""
    return _page("slow", _grid(1000) + "<img src='/hold?seconds=60' width='1' height='1'>")


def build_app(media: ReferenceMedia) -> web.Application:
    app = web.Application()
    app.router.add_get("/grid", _grid_page)
    app.router.add_get("/animation", _animation_page)
    app.router.add_get("/state/set", _state_set)
    app.router.add_get("/state/report", _state_report)
    app.router.add_get("/status/{code:[1-5][0-9][0-9]}", _status)
    app.router.add_get("/hold", _hold)
    app.router.add_get("/slow", _slow_page)
    app.router.add_get("/favicon.ico", _favicon)
    meeting.add_routes(app)
    webrtc.add_routes(app)
    app.router.add_static("/media", media.root)
    return app


class ThreadedServer:
    """An aiohttp application on 127.0.0.1, in a thread with its own event loop: a page a recorder in the
    same process (or a subprocess) can open while the caller's own code stays synchronous."""

    def __init__(self, app: web.Application, name: str) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()
        self._sock.close()


class ReferencePage(ThreadedServer):
    """The reference page server."""

    def __init__(self, media: ReferenceMedia) -> None:
        self.media = media
        super().__init__(build_app(media), "test-page")

    def url(self, path: str = "/grid") -> str:
        return self.base + (path if path.startswith("/") else "/" + path)
