"""Which addresses a page, a recording URL or a webhook may reach: public ones, plus what
URL_ALLOWLIST opens.

Denial is decided by an explicit table, not by `ipaddress.is_global`, which on Python 3.11 calls
168.63.129.16, `64:ff9b::7f00:1` (NAT64 of 127.0.0.1), `2002:7f00:1::` (6to4 of 127.0.0.1),
`::ffff:0:7f00:1` (SIIT of 127.0.0.1) and 192.0.0.8 global. IPv4 carried inside IPv6 (mapped,
compatible, SIIT-translated, NAT64, 6to4, Teredo) is unwrapped and judged as the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (network, class): the class is what a denial reports ("loopback", "private", ...). Most specific first.
_DENIED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), why)
    for net, why in (
        ("169.254.169.254/32", "cloud-metadata"),
        ("168.63.129.16/32", "cloud-metadata"),
        ("100.100.100.200/32", "cloud-metadata"),
        ("fd00:ec2::254/128", "cloud-metadata"),
        ("0.0.0.0/8", "unspecified"),
        ("10.0.0.0/8", "private"),
        ("100.64.0.0/10", "shared"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "reserved"),
        ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        # The rest of ::/8 (IETF-reserved) once the forms carrying IPv4 were unwrapped: nothing public.
        ("::/8", "reserved"),
        ("64:ff9b:1::/48", "private"),
        ("100::/64", "reserved"),
        ("2001::/23", "reserved"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("fc00::/7", "private"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "private"),
        ("ff00::/8", "multicast"),
    )
)
# Every reason a request can be denied for: the address classes, plus a name that does not resolve.
# Metrics labels take only these, whatever a worker reports.
BLOCK_REASONS = frozenset({why for _, why in _DENIED} | {"unresolvable", "invalid"})

_MAPPED = ipaddress.ip_network("::ffff:0:0/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT (RFC 2765): a translator reaches the IPv4 inside
_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (mapped, compatible, SIIT, NAT64, 6to4, Teredo), if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip in _MAPPED or ip in _TRANSLATED or ip in _NAT64 or (ip in _COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)
    if ip in _TEREDO:
        return ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)  # the client's address, obfuscated
    return None


def address_class(ip: IPAddress) -> str | None:
    """Why an address is not public ('loopback', 'private', 'cloud-metadata', ...), or None when it is."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        return address_class(inner)
    for network, why in _DENIED:
        if network.version == ip.version and ip in network:
            return why
    return None


class AddressPolicy:
    """Public addresses are allowed; URL_ALLOWLIST opens hosts by name (`localhost`, `*.corp.example`)
    or by address (`127.0.0.2`, `10.0.0.0/8`), each on every port or, written `entry:port`, on one."""

    def __init__(self, allowlist: Iterable[str] = ()) -> None:
        # Each entry opens every port (None) or one port of its host, suffix or network.
        self._hosts: list[tuple[str, int | None]] = []
        self._suffixes: list[tuple[str, int | None]] = []
        self._networks: list[tuple[IPNetwork, int | None]] = []
        for entry in (e.strip().lower() for e in allowlist):
            if not entry:
                continue
            target, port = _split_port(entry)
            try:
                self._networks.append((ipaddress.ip_network(target, strict=False), port))
            except ValueError:
                if target.startswith("*."):
                    self._suffixes.append((target[1:], port))
                else:
                    self._hosts.append((target.rstrip("."), port))

    def host_allowed(self, host: str, port: int | None = None) -> bool:
        """A host named in the allowlist may reach whatever it resolves to (on the entry's port, if it has one)."""
        host = host.lower().rstrip(".")
        return any(host == name and _port_ok(p, port) for name, p in self._hosts) or any(
            host.endswith(suffix) and _port_ok(p, port) for suffix, p in self._suffixes
        )

    def denial(self, ip: IPAddress, port: int | None = None) -> str | None:
        """The address class that keeps `ip` (on `port`) out, or None when it may be reached."""
        why = address_class(ip)
        if why is None:
            return None
        candidates = [ip, *filter(None, [embedded_ipv4(ip)])]
        for net, p in self._networks:
            if _port_ok(p, port) and any(c in net for c in candidates if net.version == c.version):
                return None
        return why

    def address_allowed(self, ip: IPAddress, port: int | None = None) -> bool:
        return self.denial(ip, port) is None


def _port_ok(entry_port: int | None, port: int | None) -> bool:
    """An entry without a port opens every port; one with a port opens only that one."""
    return entry_port is None or entry_port == port


def _split_port(entry: str) -> tuple[str, int | None]:
    """`127.0.0.1:8080`, `[::1]:8080`, `meet.corp.example:443` → (target, port); anything else → (entry, None)."""
    if entry.startswith("["):
        close = entry.find("]")
        rest = entry[close + 1 :] if close > 0 else None
        if rest == "":
            return entry[1:close], None
        if rest is not None and rest.startswith(":"):
            return entry[1:close], _port(entry, rest[1:])
        raise ValueError(f"URL_ALLOWLIST entry {entry!r}: write an IPv6 address with a port as [addr]:port")
    head, sep, tail = entry.rpartition(":")
    if sep and ":" not in head:
        return head, _port(entry, tail)
    return entry, None


def _port(entry: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"URL_ALLOWLIST entry {entry!r}: the port must be a number from 1 to 65535")
    return int(text)


def describe_denial(host: str, reason: str, addresses: str = "") -> str:
    """Which host was kept out and why, with what to change if it should not have been."""
    if reason == "unresolvable":
        return f"{host} does not resolve to any address"
    if reason == "invalid":
        return f"{host!r} is not a valid host"
    where = f" ({addresses})" if addresses else ""
    return (
        f"{host}{where} is {article(reason)} {reason} address; "
        "add the host or its network to URL_ALLOWLIST if recorded pages may reach it"
    )


def article(word: str) -> str:
    """'a' or 'an' before an address class: "a loopback", "an unspecified"."""
    return "an" if word[:1] in "aeiou" else "a"
