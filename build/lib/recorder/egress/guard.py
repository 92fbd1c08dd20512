"""The egress guard: a SOCKS5 server (RFC 1928, CONNECT only) that every connection Chromium makes goes
through.

Why SOCKS5 and not an HTTP proxy: Chromium hands a SOCKS5 proxy the host *name* of every TCP connection
(page loads, redirects, subresources, fetch, beacons, WebSockets, workers, service workers, prefetch)
and resolves nothing itself, and a tunnel carries one host only, so there is no HTTP to parse and no
keep-alive connection that could be reused for another host.

Each CONNECT is judged by the same `AddressPolicy` as the API: the host is canonicalised (WHATWG), an
IP literal is checked directly, a name is resolved by the guard and *every* address it has is checked,
and the guard then connects to an address it checked; it never resolves again, so DNS rebinding cannot
switch it. A denied CONNECT gets reply 0x02 ("not allowed by ruleset"); Chromium fails that one request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from dataclasses import dataclass, field

import structlog

from contract.security import AddressPolicy, UrlRejected, canonical_url, describe_denial
from contract.security.addresses import IPAddress
from recorder.egress.ledger import Denial, DenialLedger
from recorder.egress.resolve import Resolver, make_resolver

log = structlog.get_logger(__name__)

HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
# How long a tunnel stays open once one side has closed. Chromium never half-closes a connection, so
# a server that ignores the end of its client (a hostile page's own) must not hold a tunnel, its task and
# two sockets for the rest of the recorder's life.
LINGER = 10.0
CHUNK = 64 * 1024

# SOCKS5 reply codes (RFC 1928, section 6)
SUCCEEDED = 0x00
GENERAL_FAILURE = 0x01
NOT_ALLOWED = 0x02
HOST_UNREACHABLE = 0x04
CONNECTION_REFUSED = 0x05
COMMAND_NOT_SUPPORTED = 0x07
ADDRESS_TYPE_NOT_SUPPORTED = 0x08

# What a host may look like on the wire before it is canonicalised: a DNS name, an IPv4 literal or an
# IPv6 literal (bracketed or not). Anything else ('/', '@', '\\', spaces) would let the URL parser read
# a different host out of it, so it is refused before parsing.
_HOST_SYNTAX = re.compile(r"[A-Za-z0-9._-]{1,253}|\[?[0-9A-Fa-f:.]{2,45}\]?")


@dataclass
class Verdict:
    """What the guard decided about one host: `reason` is None when allowed, else the class denied."""

    host: str
    port: int
    reason: str | None = None
    addresses: list[IPAddress] = field(default_factory=list)
    detail: str | None = None  # why an input was invalid, when there is more to say than the class

    @property
    def allowed(self) -> bool:
        return self.reason is None

    def explain(self) -> str:
        """A sentence for an error message: which host, and why it is kept out."""
        if self.detail:
            return self.detail
        shown = ", ".join(str(a) for a in self.addresses[:3])
        return describe_denial(self.host, self.reason or "allowed", shown if shown != self.host else "")


def canonical_host(host: str) -> str:
    """The host as Chromium would contact it (lower case, IP literals normalised, no brackets)."""
    if not _HOST_SYNTAX.fullmatch(host):
        raise UrlRejected(f"{host!r} is not a host name or IP address")
    literal = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return canonical_url(f"http://{literal}/", "host").host


class EgressGuard:
    """Checks, pins and relays every connection of one recorder's Chromium; counts what it denies."""

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver | None = None,
        dns_server: str | None = None,
        host: str = "127.0.0.1",
        connect_timeout: float = CONNECT_TIMEOUT,
        linger: float = LINGER,
    ) -> None:
        self.policy = policy
        self.resolver = resolver or make_resolver(dns_server)
        self.host = host
        self.connect_timeout = connect_timeout
        self.linger = linger
        self.ledger = DenialLedger()
        self.connections = 0  # CONNECTs relayed since start, for tests and accounting
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, 0)
            log.info("egress guard listening", address=f"{self.host}:{self.port}")

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the egress guard is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        """Stop listening and cut every tunnel; nothing of the guard is left running."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for writer in list(self._writers):
            writer.close()  # every read of every tunnel now ends, and with it its task
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=2.0)
            for task in stuck:
                task.cancel()
            if stuck:
                await asyncio.wait(stuck)
        await server.wait_closed()

    def chromium_args(self) -> list[str]:
        """The switches that send all of Chromium's traffic here (see docs/security.md for each one)."""
        return [
            f"--proxy-server=socks5://{self.host}:{self.port}",
            # Without this Chromium goes around any proxy for localhost, 127/8, [::1], 169.254/16 and fe80::/10.
            "--proxy-bypass-list=<-loopback>",
            # Chromium's own resolver answers nothing (WebRTC and anything else that would resolve locally).
            f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {self.host}",
            # WebRTC may only use UDP it could proxy, i.e. none: no STUN/media UDP to page-chosen addresses.
            "--webrtc-ip-handling-policy=disable_non_proxied_udp",
            # QUIC is UDP and would not go through the guard.
            "--disable-quic",
        ]

    # -- policy ------------------------------------------------------------------------------------

    async def verdict(self, host: str, port: int) -> Verdict:
        """Canonicalise, resolve and check `host`; the addresses returned are the only ones to connect to."""
        try:
            name = canonical_host(host)
        except UrlRejected:
            return Verdict(host, port, "invalid")
        if not 0 < port < 65536:
            return Verdict(name, port, "invalid")
        try:
            literal: IPAddress | None = ipaddress.ip_address(name)
        except ValueError:
            literal = None
        if literal is not None:
            return Verdict(name, port, self.policy.denial(literal, port), [literal])
        addresses = await self.resolver.resolve(name)
        if not addresses:
            return Verdict(name, port, "unresolvable")
        if not self.policy.host_allowed(name, port):
            for address in addresses:
                why = self.policy.denial(address, port)
                if why is not None:
                    return Verdict(name, port, why, addresses)
        return Verdict(name, port, None, addresses)

    async def check_url(self, url: str) -> Verdict:
        """The verdict on a URL's host, before Chromium is sent to it; an unparseable URL is 'invalid'."""
        try:
            canonical = canonical_url(url)
        except UrlRejected as exc:
            return Verdict(url, 0, "invalid", detail=str(exc))
        return await self.verdict(canonical.host, canonical.port)

    def deny(self, verdict: Verdict) -> None:
        assert verdict.reason is not None
        self.ledger.add(Denial(verdict.host, verdict.port, verdict.reason))

    # -- SOCKS5 ------------------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        upstream: asyncio.StreamWriter | None = None
        try:
            request = await asyncio.wait_for(self._handshake(reader, writer), HANDSHAKE_TIMEOUT)
            if request is None:
                return
            verdict = await self.verdict(*request)
            if not verdict.allowed:
                self.deny(verdict)
                await _reply(writer, NOT_ALLOWED)
                return
            connected = await self._connect(verdict)
            if isinstance(connected, int):
                await _reply(writer, connected)
                return
            up_reader, upstream = connected
            self._writers.add(upstream)
            self.connections += 1
            await _reply(writer, SUCCEEDED)
            await self._relay(reader, writer, up_reader, upstream)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # only `stop` cancels these tasks; ending quietly keeps asyncio from logging each one
        finally:
            for w in (upstream, writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _relay(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        upstream: asyncio.StreamWriter,
    ) -> None:
        """Both directions until both end, or `linger` seconds after the first one did."""
        pipes = {asyncio.ensure_future(_pipe(reader, upstream)), asyncio.ensure_future(_pipe(up_reader, writer))}
        try:
            _, open_ = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            if open_:
                await asyncio.wait(open_, timeout=self.linger)
        finally:
            for pipe in pipes:
                pipe.cancel()
            await asyncio.gather(*pipes, return_exceptions=True)

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> tuple[str, int] | None:
        """Method negotiation (no authentication) and the CONNECT request; None when refused."""
        version, count = await reader.readexactly(2)
        if version != 5:
            return None
        methods = await reader.readexactly(count)
        if 0x00 not in methods:
            writer.write(b"\x05\xff")
            await writer.drain()
            return None
        writer.write(b"\x05\x00")
        await writer.drain()
        version, command, _reserved, address_type = await reader.readexactly(4)
        if address_type == 0x01:
            host = str(ipaddress.IPv4Address(await reader.readexactly(4)))
        elif address_type == 0x04:
            host = str(ipaddress.IPv6Address(await reader.readexactly(16)))
        elif address_type == 0x03:
            length = (await reader.readexactly(1))[0]
            host = (await reader.readexactly(length)).decode("ascii", errors="replace")
        else:
            await _reply(writer, ADDRESS_TYPE_NOT_SUPPORTED)
            return None
        port = int.from_bytes(await reader.readexactly(2), "big")
        if version != 5 or command != 0x01:  # BIND and UDP ASSOCIATE are never offered
            await _reply(writer, COMMAND_NOT_SUPPORTED)
            return None
        return host, port

    async def _connect(self, verdict: Verdict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | int:
        """Connect to the checked addresses in turn (never to a new lookup); a SOCKS error code if none answers.

        `connect_timeout` bounds the whole attempt, not each address: a name with many dead addresses
        cannot hold a tunnel (and Chromium's request) open for minutes."""
        code = HOST_UNREACHABLE
        deadline = asyncio.get_running_loop().time() + self.connect_timeout
        for address in verdict.addresses:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                return await asyncio.wait_for(asyncio.open_connection(str(address), verdict.port), left)
            except ConnectionRefusedError:
                code = CONNECTION_REFUSED
            except (OSError, TimeoutError):
                continue
        return code


async def _reply(writer: asyncio.StreamWriter, code: int) -> None:
    writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
    await writer.drain()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one direction until EOF, then pass the half-close on."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (ConnectionError, OSError):
        sink.close()
