"""Name resolution for the egress guard: the guard resolves every name itself, so the address it checks
is the address it connects to (Chromium, behind a SOCKS5 proxy, resolves nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from typing import Protocol

import dns.asyncresolver
import dns.exception

from contract.security.addresses import IPAddress

LOOKUP_TIMEOUT = 5.0


class Resolver(Protocol):
    async def resolve(self, host: str) -> list[IPAddress]:
        """Every address `host` has now; empty when it has none (or the lookup failed)."""
        ...


def _unique(addresses: list[IPAddress]) -> list[IPAddress]:
    return list(dict.fromkeys(addresses))


class SystemResolver:
    """The machine's resolver (getaddrinfo: /etc/hosts, then DNS), run off the event loop."""

    async def resolve(self, host: str) -> list[IPAddress]:
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(host, None, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP), LOOKUP_TIMEOUT
            )
        except (OSError, TimeoutError, UnicodeError):
            return []
        found: list[IPAddress] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            with contextlib.suppress(ValueError):
                found.append(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
        return _unique(found)


class DnsServerResolver:
    """One given DNS server (RECORDER_DNS_SERVER=host:port), asked for A and AAAA records directly."""

    def __init__(self, server: str) -> None:
        self.address, self.port = parse_dns_server(server)
        self._resolver = dns.asyncresolver.Resolver(configure=False)
        self._resolver.nameservers = [self.address]
        self._resolver.port = self.port
        self._resolver.lifetime = LOOKUP_TIMEOUT
        self._resolver.cache = None  # every lookup is fresh, as the checked answer is the one pinned

    async def _records(self, host: str, rdtype: str) -> list[IPAddress]:
        try:
            answer = await self._resolver.resolve(host, rdtype, search=False)
        except (dns.exception.DNSException, OSError):
            return []
        return [ipaddress.ip_address(r.address) for r in answer]

    async def resolve(self, host: str) -> list[IPAddress]:
        v4, v6 = await asyncio.gather(self._records(host, "A"), self._records(host, "AAAA"))
        return _unique([*v4, *v6])


def parse_dns_server(server: str) -> tuple[str, int]:
    """`10.0.0.10`, `10.0.0.10:5353` or `[fd00::10]:53` → (address, port); ValueError says what is wrong."""
    text = server.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(
            f"RECORDER_DNS_SERVER {server!r}: give the DNS server as an IP address with an optional port, "
            "e.g. 10.0.0.10:53"
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"RECORDER_DNS_SERVER {server!r}: the port must be a number from 1 to 65535")
    return str(address), int(port)


def make_resolver(dns_server: str | None) -> Resolver:
    return DnsServerResolver(dns_server) if dns_server else SystemResolver()
