"""A WebRTC loopback call in one page: what the timeline's WebRTC stats are tested and measured against.

`/webrtc?freeze_at=4&freeze_for=2[&fps=30][&end=S][&delay=S]`

Two RTCPeerConnections in the page, connected to each other in-page (no server, no STUN, no ICE servers:
the candidates of one are handed to the other directly). The first sends an animated canvas (`fps` frames
a second, a moving bar and a frame counter); the second plays what it receives in a full-page <video>.
Once the video plays (plus `delay` seconds), the page logs START_RECORDING; `freeze_at` seconds after that
it stops sending video (`replaceTrack(null)`: no frame leaves the sender, so none is decoded) for
`freeze_for` seconds, then sends the canvas again. `end` logs END_RECORDING that many seconds after
START_RECORDING.

What a test reads (`window.loopback`): `presented`, the frames the receiving <video> presented (counted
with requestVideoFrameCallback), `started`/`froze`/`resumed` (performance.now() milliseconds) and `error`.
The page logs `LOOPBACK_ERROR <message>` when the call cannot be set up.

Under the egress guard's `--webrtc-ip-handling-policy=disable_non_proxied_udp`, Chromium gathers no host
candidate, so this call connects only when the guard is off (RECORDER_EGRESS_GUARD=false) or the switch is
left out: the page says so in `window.loopback.error` rather than hanging.
"""

from __future__ import annotations

import json

from aiohttp import web

_STYLE = """
html, body { margin: 0; padding: 0; width: 100vw; height: 100vh; overflow: hidden; background: #000; }
video { display: block; width: 100vw; height: 100vh; object-fit: fill; background: #000; }
canvas { position: fixed; left: -10000px; top: 0; }
"""

_SCRIPT = """
const options = OPTIONS;
const state = window.loopback = {
  presented: 0, started: null, froze: null, resumed: null, error: null, connected: false,
};
const canvas = document.querySelector('canvas'), video = document.querySelector('video');
const draw = canvas.getContext('2d');
let frame = 0;
function paint() {
  frame += 1;
  draw.fillStyle = `hsl(${(frame * 3) % 360}, 60%, 30%)`;
  draw.fillRect(0, 0, canvas.width, canvas.height);
  draw.fillStyle = '#fff';
  draw.fillRect((frame * 8) % canvas.width, 0, 40, canvas.height);
  draw.font = '64px monospace';
  draw.fillText(String(frame), 40, 120);
}
setInterval(paint, 1000 / options.fps);
paint();
function countPresented() {
  video.requestVideoFrameCallback(() => { state.presented += 1; countPresented(); });
}
function fail(error) {
  state.error = String(error && error.message || error);
  console.log('LOOPBACK_ERROR ' + state.error);
}
async function call() {
  const stream = canvas.captureStream(options.fps);
  const track = stream.getVideoTracks()[0];
  const sending = new RTCPeerConnection(), receiving = new RTCPeerConnection();
  sending.onicecandidate = (e) => { if (e.candidate) receiving.addIceCandidate(e.candidate).catch(fail); };
  receiving.onicecandidate = (e) => { if (e.candidate) sending.addIceCandidate(e.candidate).catch(fail); };
  receiving.ontrack = (e) => { video.srcObject = e.streams[0]; };
  receiving.onconnectionstatechange = () => {
    if (receiving.connectionState === 'connected') state.connected = true;
    if (receiving.connectionState === 'failed') fail('the loopback call failed: no ICE candidate pair connected');
  };
  const sender = sending.addTrack(track, stream);
  await sending.setLocalDescription(await sending.createOffer());
  await receiving.setRemoteDescription(sending.localDescription);
  await receiving.setLocalDescription(await receiving.createAnswer());
  await sending.setRemoteDescription(receiving.localDescription);
  window.loopbackCall = {sending, receiving, sender, track};
  setTimeout(() => {
    if (!state.connected && !state.error) fail('the loopback call did not connect within 10 s');
  }, 10000);
  video.requestVideoFrameCallback(() => setTimeout(start, options.delay * 1000));
  video.play().catch(() => {});
  countPresented();
  function start() {
    state.started = performance.now();
    console.log('START_RECORDING');
    if (options.freeze_at !== null) {
      setTimeout(() => {
        const froze = () => { state.froze = performance.now(); console.log('LOOPBACK_FROZE'); };
        const resumed = () => { state.resumed = performance.now(); console.log('LOOPBACK_RESUMED'); };
        sender.replaceTrack(null).then(froze, fail);
        setTimeout(() => sender.replaceTrack(track).then(resumed, fail), options.freeze_for * 1000);
      }, options.freeze_at * 1000);
    }
    if (options.end !== null) setTimeout(() => console.log('END_RECORDING'), options.end * 1000);
  }
}
call().catch(fail);
"""


def _number(request: web.Request, name: str, default: float | None, *, low: float, high: float) -> float | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise web.HTTPBadRequest(text=f"{name}={text!r} is out of range: between {low:g} and {high:g}")
    return value


async def _loopback_page(request: web.Request) -> web.Response:
    options = {
        "fps": _number(request, "fps", 30.0, low=1, high=60),
        "freeze_at": _number(request, "freeze_at", None, low=0, high=3600),
        "freeze_for": _number(request, "freeze_for", 2.0, low=0, high=3600),
        "end": _number(request, "end", None, low=0, high=86400),
        "delay": _number(request, "delay", 0.0, low=0, high=60),
    }
    document = (
        "<!doctype html><html><head><meta charset='utf-8'><title>WebRTC loopback</title>"
        f"<style>{_STYLE}</style></head><body><canvas width='640' height='360'></canvas>"
        "<video autoplay muted playsinline></video>"
        f"<script>{_SCRIPT.replace('OPTIONS', json.dumps(options))}</script></body></html>"
    )
    return web.Response(text=document, content_type="text/html", headers={"Cache-Control": "no-store"})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/webrtc", _loopback_page)
