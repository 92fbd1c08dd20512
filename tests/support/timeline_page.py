"""Test fixture: a page that misbehaves on a schedule, for the recorder's timeline.

It logs START_RECORDING (readiness by signal), then, counted from that moment on its own clock: console
errors and a warning, an uncaught exception, a request to a port nothing listens on and one answered 500,
a request the egress guard blocks (a private address, with a token in its query), a held picture (the
canvas stops changing) and a navigation to a second page. `SCHEDULE` is what the test expects back.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from aiohttp import web

from recorder.reference.page import ThreadedServer
from tests.support.net import free_port

# Seconds after START_RECORDING.
SCHEDULE = {
    "console": 2.0,
    "exception": 3.0,
    "request_failed": 4.0,
    "request_blocked": 4.5,
    "freeze": 5.0,  # the picture holds from here ...
    "thaw": 7.5,  # ... to here
    "navigation": 8.5,
}
BLOCKED_URL = "http://10.255.255.1/private?token=do-not-show-me"

_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>timeline test</title>
<style>html,body{margin:0;background:#223;overflow:hidden}canvas{display:block;width:100vw;height:100vh}</style>
</head><body><canvas width="320" height="180"></canvas><script>
const at = SCHEDULE, dead = DEAD, blocked = BLOCKED;
const canvas = document.querySelector('canvas'), draw = canvas.getContext('2d');
let frozen = false, n = 0;
function paint() {
  if (!frozen) {
    n += 1;
    draw.fillStyle = `hsl(${(n * 7) % 360}, 70%, 50%)`;
    draw.fillRect(0, 0, 320, 180);
    draw.fillStyle = '#fff';
    draw.fillRect((n * 5) % 320, 60, 40, 60);
  }
  requestAnimationFrame(paint);
}
requestAnimationFrame(paint);
const later = (seconds, work) => setTimeout(work, seconds * 1000);
setTimeout(() => {
  console.log('START_RECORDING');
  later(at.console, () => { console.error('timeline-test: first error'); console.error('timeline-test: second error');
                            console.warn('timeline-test: a warning'); });
  later(at.exception, () => { throw new Error('timeline-test: uncaught'); });
  later(at.request_failed, () => { fetch(dead).catch(() => {}); fetch('/status/500').catch(() => {}); });
  later(at.request_blocked, () => { fetch(blocked, {mode: 'no-cors'}).catch(() => {}); });
  later(at.freeze, () => { frozen = true; });
  later(at.thaw, () => { frozen = false; });
  later(at.navigation, () => { location.href = '/after'; });
}, 500);
</script></body></html>"""

_AFTER = """<!doctype html><html><head><meta charset="utf-8"><title>after</title></head>
<body style="margin:0;background:#353"><h1 style="color:#fff">after the navigation</h1></body></html>"""


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _after(request: web.Request) -> web.Response:
    return _html(_AFTER)


async def _broken(request: web.Request) -> web.Response:
    return web.Response(status=500, text="broken on purpose")


async def _no_icon(request: web.Request) -> web.Response:
    return web.Response(status=204)


class TimelinePage(ThreadedServer):
    """The page server, on 127.0.0.1 in a thread with its own event loop."""

    def __init__(self) -> None:
        self.dead_url = f"http://127.0.0.1:{free_port()}/nothing-listens-here"
        app = web.Application()
        app.router.add_get("/timeline", self._page)
        app.router.add_get("/after", _after)
        app.router.add_get("/status/500", _broken)
        app.router.add_get("/favicon.ico", _no_icon)
        super().__init__(app, "timeline-page")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/timeline"

    async def _page(self, request: web.Request) -> web.Response:
        script = (
            _PAGE.replace("SCHEDULE", json.dumps(SCHEDULE))
            .replace("DEAD", json.dumps(self.dead_url))
            .replace("BLOCKED", json.dumps(BLOCKED_URL))
        )
        return _html(script)


@pytest.fixture(scope="module")
def timeline_page() -> Iterator[TimelinePage]:
    page = TimelinePage()
    page.start()
    try:
        yield page
    finally:
        page.stop()
