"""A meeting-like test page: a pre-join screen, a lobby, a meeting of playing tiles, and its end.

`/meeting?lobby=2&end=8[&frame=1[&frame_origin=URL][&swap=S]][&after=navigate|close][&to=URL][&trickle=S][&spin=S]`

1. Pre-join (magenta): a name field (`#name`) and a Join button (`#join`), enabled once a name is typed.
   With `frame=1` both sit inside a same-origin iframe (`iframe#prejoin-frame`); `frame_origin` serves that
   iframe from another origin (`http://localhost:<port>`), which a join script must refuse to enter.
2. Lobby (dark blue, `#lobby`): "waiting for the host" for `lobby` seconds (negative: never admitted).
3. Meeting (`#meeting`): the 2x2 grid of playing tiles, one of them the sync clip; logs ADMITTED.
4. After `end` seconds in the meeting: a banner (`#ended`, "The meeting has ended") over a still screen,
   every tile paused, so the page is silent and frozen from then on. `after=navigate` then leaves for `to`
   (another origin) a second later; `after=close` closes the window.

`trickle=S` sends the document's head at once and its body S seconds later: the navigation commits at once,
DOMContentLoaded comes S seconds after it.

Hostile variants: `swap=S` (with `frame=1&frame_origin=URL`) starts the iframe on an empty same-origin
document and points it at `frame_origin` S seconds later, after a join script has entered it; `spin=S`
makes the page busy in a script of its own, for ever, S seconds after it loaded.
"""

from __future__ import annotations

import asyncio
import html
import json

from aiohttp import web

PREJOIN_COLOR = "#c000c0"
LOBBY_COLOR = "#000060"

_STYLE = f"""
html, body {{ margin: 0; padding: 0; width: 100vw; height: 100vh; overflow: hidden; background: #000;
  font: 28px sans-serif; color: #fff; }}
.screen {{ position: fixed; inset: 0; display: none; align-items: center; justify-content: center;
  flex-direction: column; gap: 16px; }}
#prejoin {{ background: {PREJOIN_COLOR}; display: flex; }}
#prejoin-frame {{ border: 0; width: 100vw; height: 100vh; }}
#lobby {{ background: {LOBBY_COLOR}; }}
#meeting {{ display: none; }}
#grid {{ display: grid; grid-template-columns: 50vw 50vw; grid-template-rows: 50vh 50vh; width: 100vw; height: 100vh; }}
video {{ display: block; width: 50vw; height: 50vh; object-fit: fill; background: #000; }}
#ended {{ position: fixed; left: 10vw; right: 10vw; top: 40vh; padding: 24px; background: #333; text-align: center;
  display: none; }}
input, button {{ font: inherit; padding: 8px 16px; }}
"""

_FORM = "<input id='name' placeholder='Your name' autocomplete='off'><button id='join' disabled>Join</button>"

_FORM_SCRIPT = """
const nameField = document.getElementById('name'), joinButton = document.getElementById('join');
nameField.addEventListener('input', () => { joinButton.disabled = !nameField.value.trim(); });
joinButton.addEventListener('click', () => { (window.parent.join || window.join)(nameField.value.trim()); });
nameField.addEventListener('keydown', (e) => { if (e.key === 'Enter' && nameField.value.trim()) joinButton.click(); });
"""


def _head(title: str) -> str:
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{_STYLE}</style></head>"


def _tail(body: str, script: str) -> str:
    return f"<body>{body}<script>{script}</script></body></html>"


def _document(title: str, body: str, script: str) -> web.Response:
    text = _head(title) + _tail(body, script)
    return web.Response(text=text, content_type="text/html", headers={"Cache-Control": "no-store"})


async def _trickled(request: web.Request, title: str, body: str, script: str, seconds: float) -> web.StreamResponse:
    """The head now, the body `seconds` later: a document that commits long before it is parsed."""
    response = web.StreamResponse(headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"})
    await response.prepare(request)
    # Padding past the parser's first read, so Chromium commits on this chunk rather than waiting for more.
    await response.write((_head(title) + "<!--" + " " * 2048 + "-->").encode())
    await asyncio.sleep(seconds)
    await response.write(_tail(body, script).encode())
    await response.write_eof()
    return response


def _seconds(request: web.Request, name: str, default: float) -> float:
    try:
        return float(request.query.get(name, default))
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number of seconds") from None


async def meeting_page(request: web.Request) -> web.StreamResponse:
    lobby = _seconds(request, "lobby", 2.0)
    end = _seconds(request, "end", -1.0)
    after = request.query.get("after", "")
    target = request.query.get("to", "about:blank")
    tiles = ["/media/sync-1000.webm", "/media/tiles-a.webm", "/media/tiles-b.webm", "/media/tiles-a.webm#t=5"]
    frame_src = request.query.get("frame_origin", "").rstrip("/") + "/meeting/prejoin"
    swap = _seconds(request, "swap", -1.0)
    first_src = html.escape("/meeting/prejoin?form=0" if swap >= 0 else frame_src, quote=True)
    spin = _seconds(request, "spin", -1.0)
    prejoin = (
        f"<div id='prejoin' class='screen'><iframe id='prejoin-frame' src='{first_src}'></iframe></div>"
        if request.query.get("frame") == "1"
        else f"<div id='prejoin' class='screen'><div>Ready to join?</div>{_FORM}</div>"
    )
    body = (
        prejoin
        + "<div id='lobby' class='screen'>Waiting for the host to let you in…</div>"
        + "<div id='meeting'><div id='grid'></div></div>"
        + "<div id='ended'>The meeting has ended</div>"
    )
    script = f"""
const LOBBY = {lobby}, END = {end}, AFTER = {json.dumps(after)}, TARGET = {json.dumps(target)};
const TILES = {json.dumps(tiles)};
const show = (id, how) => {{ document.getElementById(id).style.display = how; }};
function admit() {{
  show('lobby', 'none'); show('meeting', 'block');
  const grid = document.getElementById('grid');
  for (const src of TILES) {{
    const v = document.createElement('video'); v.src = src; v.autoplay = true; v.loop = true;
    v.playsInline = true; grid.appendChild(v);
  }}
  console.log('ADMITTED');
  if (END >= 0) setTimeout(finish, END * 1000);
}}
function finish() {{
  for (const v of document.querySelectorAll('video')) v.pause();
  show('ended', 'block');
  console.log('MEETING_ENDED');
  if (AFTER === 'navigate') setTimeout(() => {{ location.href = TARGET; }}, 1000);
  if (AFTER === 'close') setTimeout(() => window.close(), 1000);
}}
const SWAP = {swap}, FRAME_SRC = {json.dumps(frame_src)}, SPIN = {spin};
if (SWAP >= 0) setTimeout(() => {{ document.getElementById('prejoin-frame').src = FRAME_SRC; }}, SWAP * 1000);
if (SPIN >= 0) setTimeout(() => {{ for (;;) {{}} }}, SPIN * 1000);
window.join = (name) => {{
  console.log('JOINED as ' + name);
  show('prejoin', 'none'); show('lobby', 'flex');
  if (LOBBY >= 0) setTimeout(admit, LOBBY * 1000);
}};
"""
    if request.query.get("frame") != "1":
        script += _FORM_SCRIPT
    trickle = _seconds(request, "trickle", 0.0)
    if trickle > 0:
        return await _trickled(request, "meeting", body, script, trickle)
    return _document("meeting", body, script)


async def prejoin_frame(request: web.Request) -> web.Response:
    """The pre-join form alone, for the page to embed as an iframe; `form=0`: an empty frame (still loading)."""
    form = _FORM if request.query.get("form") != "0" else "<div>Loading…</div>"
    body = f"<div class='screen' style='display:flex;background:{PREJOIN_COLOR}'>{form}</div>"
    return _document("pre-join", body, _FORM_SCRIPT if form == _FORM else "")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/meeting", meeting_page)
    app.router.add_get("/meeting/prejoin", prejoin_frame)
