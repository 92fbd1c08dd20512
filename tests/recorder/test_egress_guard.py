"""The egress guard alone, driven by SOCKS5 clients: what it lets through, what it denies and why, and
that the address it connects to is the address it checked (DNS rebinding)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator

import pytest

from contract.security import AddressPolicy
from recorder.egress import EgressGuard
from recorder.egress.guard import COMMAND_NOT_SUPPORTED, NOT_ALLOWED, SUCCEEDED
from tests.support.dns_stub import DnsStub
from tests.support.hostile import CANARY_HOST, PUBLIC_HOST, TcpTarget, shared_port


class Targets:
    def __init__(self, port: int) -> None:
        self.port = port
        self.public = TcpTarget("public", PUBLIC_HOST, port)
        self.canary = TcpTarget("canary", CANARY_HOST, port)


@pytest.fixture
async def targets() -> AsyncIterator[Targets]:
    t = Targets(shared_port())
    await t.public.start()
    await t.canary.start()
    yield t
    await t.public.stop()
    await t.canary.stop()
    assert t.canary.connections == [], f"the canary was reached: {t.canary.connections}"


@pytest.fixture
def stub() -> Iterator[DnsStub]:
    s = DnsStub({"rebind.test": ["127.0.0.2", "127.0.0.1"], "public.test": ["127.0.0.2"], "both.test": []})
    s.start()
    yield s
    s.stop()


@pytest.fixture
async def guard() -> AsyncIterator[EgressGuard]:
    g = EgressGuard(AddressPolicy([PUBLIC_HOST]))
    await g.start()
    yield g
    await g.stop()


async def socks_connect(
    guard: EgressGuard, host: str, port: int, *, address_type: int | None = None, command: int = 1
) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """RFC 1928 client: the reply code and the open stream."""
    reader, writer = await asyncio.open_connection(guard.host, guard.port)
    writer.write(b"\x05\x01\x00")
    assert await reader.readexactly(2) == b"\x05\x00"
    if address_type is None:
        try:
            address_type = 4 if ipaddress.ip_address(host).version == 6 else 1
        except ValueError:
            address_type = 3
    if address_type == 1:
        addr = ipaddress.IPv4Address(host).packed
    elif address_type == 4:
        addr = ipaddress.IPv6Address(host).packed
    else:
        addr = bytes([len(host.encode())]) + host.encode()
    writer.write(bytes([5, command, 0, address_type]) + addr + port.to_bytes(2, "big"))
    reply = await asyncio.wait_for(reader.readexactly(10), 10)
    return reply[1], reader, writer


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(1024), 5)
    writer.close()
    return answer


@pytest.mark.parametrize(("host", "address_type"), [(PUBLIC_HOST, 1), (PUBLIC_HOST, 3), ("0x7f.0.0.2", 3)])
async def test_an_allowlisted_address_is_relayed_both_ways(
    guard: EgressGuard, targets: Targets, host: str, address_type: int
) -> None:
    code, reader, writer = await socks_connect(guard, host, targets.port, address_type=address_type)
    assert code == SUCCEEDED
    assert await exchange(reader, writer, b"ping") == b"public:ping"
    assert len(targets.public.connections) == 1
    assert guard.ledger.total == 0


@pytest.mark.parametrize(
    ("host", "address_type", "reason"),
    [
        ("127.0.0.1", 1, "loopback"),
        ("127.0.0.1", 3, "loopback"),
        ("0x7f.1", 3, "loopback"),  # what inet_aton (and so getaddrinfo) would read as 127.0.0.1
        ("2130706433", 3, "loopback"),
        ("0177.0.0.1", 3, "loopback"),
        ("localhost", 3, "loopback"),  # resolved by the guard: /etc/hosts says 127.0.0.1
        ("::ffff:127.0.0.1", 4, "loopback"),
        ("[::ffff:127.0.0.1]", 3, "loopback"),
        ("::ffff:7f00:1", 3, "loopback"),
        ("64:ff9b::7f00:1", 4, "loopback"),  # NAT64 form
        ("2002:7f00:1::", 4, "loopback"),  # 6to4 form
        ("::1", 4, "loopback"),
        ("169.254.169.254", 1, "cloud-metadata"),
        ("0xa9fea9fe", 3, "cloud-metadata"),
        ("10.1.2.3", 1, "private"),
        ("0.0.0.0", 1, "unspecified"),
        ("no-such-host.invalid", 3, "unresolvable"),
        ("127.0.0.1/@127.0.0.2", 3, "invalid"),  # a URL parser would see a host in this; the guard does not
        ("127.0.0.1\\@127.0.0.2", 3, "invalid"),
        ("1.2.3.4.5", 3, "invalid"),
    ],
)
async def test_internal_and_invalid_hosts_are_denied_with_their_class(
    guard: EgressGuard, targets: Targets, host: str, address_type: int, reason: str
) -> None:
    code, reader, writer = await socks_connect(guard, host, targets.port, address_type=address_type)
    assert code == NOT_ALLOWED
    assert await asyncio.wait_for(reader.read(), 5) == b"", "a denied tunnel is closed"
    writer.close()
    assert guard.ledger.by_reason == {reason: 1}
    assert guard.ledger.summary().hosts[0]["class"] == reason


async def test_denials_are_counted_per_host_capped_and_reset_per_recording(
    guard: EgressGuard, targets: Targets
) -> None:
    for _ in range(3):
        code, _, writer = await socks_connect(guard, "169.254.169.254", 80)
        writer.close()
        assert code == NOT_ALLOWED
    for n in range(guard.ledger.max_hosts + 5):
        code, _, writer = await socks_connect(guard, f"10.0.{n // 250}.{n % 250 + 1}", 80)
        writer.close()
    summary = guard.ledger.summary()
    assert summary.total == 3 + guard.ledger.max_hosts + 5
    assert summary.by_reason == {"cloud-metadata": 3, "private": guard.ledger.max_hosts + 5}
    assert len(summary.hosts) == guard.ledger.max_hosts and summary.truncated
    assert summary.hosts[0] == {"host": "169.254.169.254", "class": "cloud-metadata", "count": 3}
    assert guard.ledger.reason_for("169.254.169.254") == "cloud-metadata"
    guard.ledger.reset()
    assert guard.ledger.summary().total == 0 and not guard.ledger.summary().hosts


async def test_rebinding_cannot_switch_the_address_the_guard_checked(targets: Targets, stub: DnsStub) -> None:
    guard = EgressGuard(AddressPolicy([PUBLIC_HOST]), dns_server=stub.address)
    await guard.start()
    try:
        # First lookup: 127.0.0.2, allowed; the tunnel goes to that address, not to a second lookup.
        code, reader, writer = await socks_connect(guard, "rebind.test", targets.port)
        assert code == SUCCEEDED
        assert await exchange(reader, writer, b"ping") == b"public:ping"
        assert stub.asked("rebind.test") == 1, "the guard resolved once and connected to what it checked"
        # The name now answers 127.0.0.1: a new connection is judged on that answer, and denied.
        code, _, writer = await socks_connect(guard, "rebind.test", targets.port)
        writer.close()
        assert code == NOT_ALLOWED
        assert guard.ledger.by_reason == {"loopback": 1}
        assert guard.ledger.reason_for("rebind.test") == "loopback"
        # A name without an answer is unresolvable, not passed to another resolver.
        code, _, writer = await socks_connect(guard, "nothing.test", targets.port)
        writer.close()
        assert code == NOT_ALLOWED and guard.ledger.by_reason["unresolvable"] == 1
    finally:
        await guard.stop()


async def test_an_allowlisted_name_may_resolve_to_a_private_address(targets: Targets, stub: DnsStub) -> None:
    guard = EgressGuard(AddressPolicy(["public.test"]), dns_server=stub.address)
    await guard.start()
    try:
        code, reader, writer = await socks_connect(guard, "PUBLIC.test", targets.port)
        assert code == SUCCEEDED
        assert await exchange(reader, writer, b"x") == b"public:x"
        code, _, writer = await socks_connect(guard, PUBLIC_HOST, targets.port)
        writer.close()
        assert code == NOT_ALLOWED, "naming a host opens that host, not its address for every name"
    finally:
        await guard.stop()


async def test_only_connect_without_authentication_is_spoken(guard: EgressGuard, targets: Targets) -> None:
    code, _, writer = await socks_connect(guard, PUBLIC_HOST, targets.port, command=2)  # BIND
    writer.close()
    assert code == COMMAND_NOT_SUPPORTED
    reader, writer = await asyncio.open_connection(guard.host, guard.port)
    writer.write(b"\x05\x01\x02")  # username/password only
    assert await reader.readexactly(2) == b"\x05\xff"
    writer.close()
    assert targets.public.connections == []


async def test_stop_cuts_open_tunnels_and_closes_the_port(targets: Targets) -> None:
    guard = EgressGuard(AddressPolicy([PUBLIC_HOST]))
    await guard.start()
    port = guard.port
    code, reader, writer = await socks_connect(guard, PUBLIC_HOST, targets.port)
    assert code == SUCCEEDED
    await guard.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b"", "the open tunnel was cut"
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_an_allowlisted_port_opens_that_port_and_no_other(targets: Targets) -> None:
    """`127.0.0.1:P` in URL_ALLOWLIST opens one service on loopback, not the canary beside it."""
    opened = TcpTarget("opened", CANARY_HOST, shared_port())
    await opened.start()
    g = EgressGuard(AddressPolicy([f"{CANARY_HOST}:{opened.port}", f"localhost:{opened.port}"]))
    await g.start()
    try:
        for host in (CANARY_HOST, "localhost"):
            code, reader, writer = await socks_connect(g, host, opened.port)
            assert code == SUCCEEDED, host
            assert await exchange(reader, writer, b"hi") == b"opened:hi"
            code, _, writer = await socks_connect(g, host, targets.port)
            writer.close()
            assert code == NOT_ALLOWED, f"{host}:{targets.port} is not the allowlisted port"
        assert g.ledger.by_reason == {"loopback": 2}
    finally:
        await g.stop()
        await opened.stop()


async def test_a_server_that_ignores_its_client_closing_does_not_hold_the_tunnel() -> None:
    """Chromium closed its side; the page's server never closes: the tunnel still ends after the linger."""
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # reads nothing, answers nothing, closes nothing

    server = await asyncio.start_server(silent, PUBLIC_HOST, shared_port())
    port = server.sockets[0].getsockname()[1]
    g = EgressGuard(AddressPolicy([PUBLIC_HOST]), linger=0.3)
    await g.start()
    try:
        for _ in range(3):
            code, _reader, writer = await socks_connect(g, PUBLIC_HOST, port)
            assert code == SUCCEEDED
            writer.close()
            await writer.wait_closed()
        for _ in range(50):
            if not g._tasks:
                break
            await asyncio.sleep(0.1)
        assert not g._tasks, f"{len(g._tasks)} tunnels outlived their client"
    finally:
        await g.stop()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
