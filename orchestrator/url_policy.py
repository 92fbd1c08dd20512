"""Which URLs the farm may open: a guard against turning recorders (and webhooks) into a way into
the private network.

Only http and https. The host is resolved (as a recorder would resolve it) and every address must be
public: loopback, private, link-local, multicast, reserved, unspecified, shared (CGNAT) and cloud
metadata addresses are denied, including IPv4 hidden in IPv6 (mapped, 6to4, NAT64). URL_ALLOWLIST
opens hosts by name (`localhost`, `*.corp.example`) or by address (`127.0.0.1`, `10.0.0.0/8`).

DNS can change between this check and the recorder's own lookup; the recorder pods' NetworkPolicy
is the second line. Webhook deliveries close that gap with `GuardedResolver`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolve = Callable[[str], Awaitable[list[str]]]

METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UrlDenied(Exception):
    """`code` is invalid_url, url_unresolvable or url_not_allowed; `message` says what to change."""

    def __init__(self, code: str, message: str, address: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.address = address


async def system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


def denial(ip: IPAddress) -> str | None:
    """Why an address is not public (e.g. 'loopback'), or None when it is."""
    if ip in METADATA:
        return "cloud metadata"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        reason = denial(embedded)
        return f"{reason} (inside {ip})" if reason else None
    for reason, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return reason
    return None if ip.is_global else "non-public"


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class UrlPolicy:
    def __init__(self, allowlist: Iterable[str] = (), resolve: Resolve = system_resolve) -> None:
        self._hosts: set[str] = set()
        self._suffixes: list[str] = []
        self._networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in (e.strip().lower() for e in allowlist):
            if not entry:
                continue
            try:
                self._networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if entry.startswith("*."):
                    self._suffixes.append(entry[1:])
                else:
                    self._hosts.add(entry.rstrip("."))
        self._resolve = resolve

    def host_allowed(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self._hosts or any(host.endswith(suffix) for suffix in self._suffixes)

    def address_allowed(self, ip: IPAddress) -> bool:
        if denial(ip) is None:
            return True
        candidates = [ip, *filter(None, [_embedded_ipv4(ip)])]
        return any(c in net for c in candidates for net in self._networks if net.version == c.version)

    async def check(self, url: str, field: str = "url") -> list[str]:
        """Return the addresses the URL's host resolves to, or raise UrlDenied."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UrlDenied("invalid_url", f"{field} {url!r}: only http and https URLs with a host are accepted")
        host = parts.hostname
        if self.host_allowed(host):
            return []
        literal = _literal_ip(host)
        addresses = [str(literal)] if literal is not None else await self._resolve_host(host, field)
        for text in addresses:
            ip = ipaddress.ip_address(text)
            if not self.address_allowed(ip):
                reason = denial(ip) or "denied"
                where = "is" if literal is not None else f"resolves to {text},"
                raise UrlDenied(
                    "url_not_allowed",
                    f"{field} host {host!r} {where} {_article(reason)} {reason} address; such addresses are"
                    f" denied unless URL_ALLOWLIST names the host or a network containing {text}",
                    address=text,
                )
        return addresses

    async def _resolve_host(self, host: str, field: str) -> list[str]:
        try:
            addresses = await self._resolve(host)
        except OSError as exc:
            raise UrlDenied(
                "url_unresolvable", f"{field} host {host!r} does not resolve here ({exc}); check the name"
            ) from exc
        if not addresses:
            raise UrlDenied("url_unresolvable", f"{field} host {host!r} resolves to no address")
        return addresses


def _literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only ever connects to addresses the policy allows (no DNS rebinding)."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host):
            return results
        allowed = [r for r in results if self._policy.address_allowed(ipaddress.ip_address(r["host"]))]
        if not allowed:
            denied: Sequence[str] = [r["host"] for r in results]
            raise OSError(f"{host} resolves only to addresses the URL policy denies: {', '.join(denied)}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
