"""Test support for the egress guard: a "public" site on 127.0.0.2 and an internal canary on 127.0.0.1.

Both listen on the same port number, so a host that is re-resolved from 127.0.0.2 to 127.0.0.1 lands on
the canary; the canary remembers every connection and request it receives, and a test passes only if
that list stays empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

PUBLIC_HOST = "127.0.0.2"
CANARY_HOST = "127.0.0.1"


def shared_port() -> int:
    """A TCP port free on both 127.0.0.1 and 127.0.0.2."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind((CANARY_HOST, 0))
            port = int(a.getsockname()[1])
            with socket.socket() as b:
                try:
                    b.bind((PUBLIC_HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no port free on both 127.0.0.1 and 127.0.0.2")


@dataclass
class TcpTarget:
    """A TCP server that answers every line with its name, and logs who connected."""

    name: str
    host: str
    port: int
    connections: list[tuple[str, int]] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections.append(writer.get_extra_info("peername")[:2])
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(f"{self.name}:".encode() + data)
                await writer.drain()
        writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class Canary:
    """The internal service a hostile page wants to reach: logs every TCP connection and its first line,
    whatever the protocol (HTTP, WebSocket upgrade, anything), and answers a small HTTP 200."""

    port: int
    host: str = CANARY_HOST
    hits: list[str] = field(default_factory=list)
    _server: asyncio.Server | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.hits.append(f"connection from {peer[0]}:{peer[1]}")
        with contextlib.suppress(ConnectionError, OSError, asyncio.TimeoutError):
            line = await asyncio.wait_for(reader.readline(), 2)
            self.hits.append(line.decode("latin-1").strip())
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\ncanary")
            await writer.drain()
        writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


ATTACKS_PAGE = """<!doctype html><html><head><title>hostile</title></head>
<body style="background:#246;color:#fff"><h1>hostile page</h1><script>
const C = "http://127.0.0.1:PORT", WS = "ws://127.0.0.1:PORT/ws", P = "PORT";
const wait = (ms, v) => new Promise(r => setTimeout(() => r(v), ms));
const img = src => Promise.race([wait(4000, "timeout"), new Promise(r => {
  const i = new Image(); i.onload = () => r("loaded"); i.onerror = () => r("error"); i.src = src;
  document.body.appendChild(i); })]);
const frame = src => Promise.race([wait(2000, "timeout"), new Promise(r => {
  const f = document.createElement("iframe"); f.onload = () => r("load"); f.src = src;
  document.body.appendChild(f); })]);
const get = u => fetch(u, {mode: "no-cors", cache: "no-store"}).then(() => "fetched", () => "error");
const ws = u => Promise.race([wait(4000, "timeout"), new Promise(r => {
  try { const s = new WebSocket(u); s.onopen = () => r("open"); s.onerror = () => r("error"); }
  catch (e) { r("throw"); } })]);
const worker = () => Promise.race([wait(4000, "timeout"), new Promise(r => {
  const w = new Worker("/worker.js?target=" + encodeURIComponent(C + "/from-worker"));
  w.onmessage = e => r(e.data); w.onerror = () => r("worker error"); })]);
const sw = () => navigator.serviceWorker
  ? navigator.serviceWorker.register("/sw.js?target=" + encodeURIComponent(C + "/from-sw"))
      .then(reg => wait(1500, "registered"), e => "sw error: " + e)
  : Promise.resolve("no service worker");
const es = u => Promise.race([wait(4000, "timeout"), new Promise(r => {
  const s = new EventSource(u); s.onerror = () => { s.close(); r("error"); }; s.onopen = () => r("open"); })]);
const link = (rel, u) => { const l = document.createElement("link"); l.rel = rel; l.href = u;
  document.head.appendChild(l); return wait(300, "added"); };
(async () => {
  const attacks = {
    img: img(C + "/img"),
    iframe: frame(C + "/iframe"),
    fetch: get(C + "/fetch"),
    xhr: new Promise(r => { const x = new XMLHttpRequest(); x.open("GET", C + "/xhr");
      x.onload = () => r("loaded"); x.onerror = () => r("error"); x.send(); }),
    beacon: Promise.resolve(String(navigator.sendBeacon(C + "/beacon", "x"))),
    websocket: ws(WS),
    worker: worker(),
    service_worker: sw(),
    eventsource: es(C + "/events"),
    prefetch: link("prefetch", C + "/prefetch"),
    preconnect: link("preconnect", C + "/"),
    metadata: img("http://169.254.169.254/latest/meta-data/"),
    hex_host: img("http://0x7f.1:" + P + "/hex"),
    int_host: img("http://2130706433:" + P + "/int"),
    short_host: img("http://127.1:" + P + "/short"),
    mapped_v6: img("http://[::ffff:127.0.0.1]:" + P + "/v6"),
    v6_loopback: img("http://[::1]:" + P + "/v6-loopback"),
    localhost: img("http://localhost:" + P + "/localhost"),
    allowed: get("/seen"),
  };
  const results = {};
  for (const [name, attempt] of Object.entries(attacks)) results[name] = await attempt;
  await fetch("/report", {method: "POST", body: JSON.stringify(results)});
  console.log("START_RECORDING");
})();
</script></body></html>"""

WORKER_JS = """const target = new URL(location).searchParams.get("target");
fetch(target, {mode: "no-cors"}).then(() => postMessage("fetched"), () => postMessage("error"));"""

SERVICE_WORKER_JS = """const target = new URL(location).searchParams.get("target");
self.addEventListener("install", e => e.waitUntil(fetch(target, {mode: "no-cors"}).catch(() => null)));
self.addEventListener("activate",
  e => e.waitUntil(fetch(target + "-activate", {mode: "no-cors"}).catch(() => null)));"""

PLAIN_PAGE = "<!doctype html><html><body style='background:#363'><h1>public</h1>BODY</body></html>"
META_REFRESH = "<meta http-equiv='refresh' content='0;url=TARGET'>"
SCRIPT_NAVIGATION = "<script>setTimeout(() => { location.href = 'TARGET'; }, AFTER);</script>"
# WebRTC: ICE gathering against a STUN server, and connectivity checks to a remote candidate, both at a
# UDP port the test listens on. Either sends UDP straight from Chromium unless the IP handling policy stops it.
WEBRTC = """<script>(async () => {
  const target = "127.0.0.1", port = UDPPORT, out = {};
  try {
    const a = new RTCPeerConnection({iceServers: [{urls: "stun:" + target + ":" + port}]});
    const b = new RTCPeerConnection();
    a.createDataChannel("x");
    await a.setLocalDescription(await a.createOffer());
    await b.setRemoteDescription(a.localDescription);
    await b.setLocalDescription(await b.createAnswer());
    await a.setRemoteDescription(b.localDescription);
    await a.addIceCandidate({candidate: "candidate:1 1 udp 2122260223 " + target + " " + port + " typ host",
                             sdpMid: "0", sdpMLineIndex: 0});
    await new Promise(r => setTimeout(r, 2500));
    out.state = a.iceConnectionState;
  } catch (e) { out.error = String(e); }
  await fetch("/report", {method: "POST", body: JSON.stringify({webrtc: out})});
  console.log("START_RECORDING");
})();</script>"""

FETCH_NAMED = """<script>(async () => {
  const out = [];
  for (let n = 0; n < 3; n++) {
    out.push(await fetch("TARGET?n=" + n, {mode: "no-cors", cache: "no-store"}).then(() => "fetched", () => "error"));
  }
  await fetch("/report", {method: "POST", body: JSON.stringify({rebind: out})});
  console.log("START_RECORDING");
})();</script>"""


@dataclass
class PublicSite:
    """The allowlisted "public" site on 127.0.0.2: hostile pages that aim at the canary's port."""

    port: int
    host: str = PUBLIC_HOST
    requests: list[tuple[str, str]] = field(default_factory=list)  # (Host header, path)
    reports: list[dict[str, Any]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def canary(self) -> str:
        return f"http://{CANARY_HOST}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def _app(self) -> web.Application:
        port = str(self.port)

        def html(body: str, **headers: str) -> web.Response:
            return web.Response(text=body, content_type="text/html", headers=headers)

        @web.middleware
        async def log_requests(request: web.Request, handler: Any) -> web.StreamResponse:
            self.requests.append((request.host, request.path_qs))
            return await handler(request)

        async def plain(request: web.Request) -> web.Response:
            return html(PLAIN_PAGE.replace("BODY", ""))

        async def attacks(request: web.Request) -> web.Response:
            return html(ATTACKS_PAGE.replace("PORT", port))

        async def worker(request: web.Request) -> web.Response:
            return web.Response(text=WORKER_JS, content_type="text/javascript")

        async def service_worker(request: web.Request) -> web.Response:
            return web.Response(text=SERVICE_WORKER_JS, content_type="text/javascript")

        async def redirect(request: web.Request) -> web.Response:
            raise web.HTTPFound(request.query.get("to", self.canary + "/redirected"))

        async def meta(request: web.Request) -> web.Response:
            target = request.query.get("to", self.canary + "/meta-refreshed")
            return html(PLAIN_PAGE.replace("BODY", META_REFRESH.replace("TARGET", target)))

        async def navigate(request: web.Request) -> web.Response:
            target = request.query.get("to", self.canary + "/navigated")
            script = SCRIPT_NAVIGATION.replace("TARGET", target).replace("AFTER", request.query.get("after", "1000"))
            return html(PLAIN_PAGE.replace("BODY", script))

        async def fetch_named(request: web.Request) -> web.Response:
            return html(PLAIN_PAGE.replace("BODY", FETCH_NAMED.replace("TARGET", request.query["target"])))

        async def webrtc(request: web.Request) -> web.Response:
            return html(PLAIN_PAGE.replace("BODY", WEBRTC.replace("UDPPORT", request.query["port"])))

        async def hello(request: web.Request) -> web.Response:
            # A new connection for every request, so each fetch of a name is a new CONNECT to the guard.
            return web.Response(text="hello", headers={"Connection": "close", "Access-Control-Allow-Origin": "*"})

        async def report(request: web.Request) -> web.Response:
            self.reports.append(json.loads(await request.read()))
            return web.Response(status=204)

        app = web.Application(middlewares=[log_requests])
        app.router.add_get("/", plain)
        app.router.add_get("/attacks", attacks)
        app.router.add_get("/worker.js", worker)
        app.router.add_get("/sw.js", service_worker)
        app.router.add_get("/redirect", redirect)
        app.router.add_get("/meta", meta)
        app.router.add_get("/navigate", navigate)
        app.router.add_get("/fetch-named", fetch_named)
        app.router.add_get("/hello", hello)
        app.router.add_get("/webrtc", webrtc)
        app.router.add_get("/seen", hello)
        app.router.add_post("/report", report)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class UdpListener(asyncio.DatagramProtocol):
    """Counts datagrams to a UDP port on 127.0.0.1: where a page points WebRTC's STUN and candidates."""

    def __init__(self) -> None:
        self.datagrams: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.datagrams.append(data)

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    @classmethod
    async def start(cls) -> UdpListener:
        _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(cls, local_addr=(CANARY_HOST, 0))
        return protocol

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.close()
