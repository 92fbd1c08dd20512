"""Which URLs the farm may open: a guard against turning recorders (and webhooks) into a way into
the private network.

A URL is first canonicalised the way Chromium parses it (`contract.security.canonical_url`, WHATWG),
so the host judged here is the host the browser contacts; the canonical form is what is stored and
leased. The host is then resolved and every address is judged by the same `AddressPolicy` the
recorder's egress guard uses: loopback, private, link-local, metadata and the other non-public classes
are denied unless URL_ALLOWLIST opens the host or a network containing the address.

DNS can change between this check and the recorder's own lookup; the recorder's egress guard checks
every request again. Webhook deliveries close that gap with `GuardedResolver`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from contract.security import AddressPolicy, CanonicalUrl, UrlRejected, canonical_url
from contract.security.addresses import article

Resolve = Callable[[str], Awaitable[list[str]]]


class UrlDenied(Exception):
    """`code` is invalid_url, url_unresolvable or url_not_allowed; `message` says what to change."""

    def __init__(self, code: str, message: str, address: str | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.address = address
        self.reason = reason  # the address class, for url_not_allowed


async def system_resolve(host: str) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]).split("%", 1)[0] for info in infos})


class UrlPolicy:
    def __init__(self, allowlist: Iterable[str] = (), resolve: Resolve = system_resolve) -> None:
        self.addresses = AddressPolicy(allowlist)
        self._resolve = resolve

    def host_allowed(self, host: str, port: int | None = None) -> bool:
        return self.addresses.host_allowed(host, port)

    def address_allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, port: int | None = None) -> bool:
        return self.addresses.address_allowed(ip, port)

    @staticmethod
    def canonical(url: str, field: str = "url") -> CanonicalUrl:
        try:
            return canonical_url(url, field)
        except UrlRejected as exc:
            raise UrlDenied("invalid_url", str(exc)) from None

    async def check(self, url: str, field: str = "url") -> list[str]:
        """Return the addresses the canonical URL's host resolves to, or raise UrlDenied."""
        parsed = self.canonical(url, field)
        host = parsed.host
        if self.host_allowed(host, parsed.port):
            return []
        literal = parsed.ip
        addresses = [str(literal)] if literal is not None else await self._resolve_host(host, field)
        for text in addresses:
            reason = self.addresses.denial(ipaddress.ip_address(text), parsed.port)
            if reason is not None:
                where = "is" if literal is not None else f"resolves to {text},"
                raise UrlDenied(
                    "url_not_allowed",
                    f"{field} host {host!r} {where} {article(reason)} {reason} address; such addresses are"
                    f" denied unless URL_ALLOWLIST names the host or a network containing {text}",
                    address=text,
                    reason=reason,
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


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that only ever connects to addresses the policy allows (no DNS rebinding)."""

    def __init__(self, policy: UrlPolicy, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._inner = inner or DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host, port):
            return results
        allowed = [r for r in results if self._policy.address_allowed(ipaddress.ip_address(r["host"]), port)]
        if not allowed:
            denied: Sequence[str] = [r["host"] for r in results]
            raise OSError(f"{host} resolves only to addresses the URL policy denies: {', '.join(denied)}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()
