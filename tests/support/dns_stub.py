"""A DNS server for tests: answers A queries from a script, so a test can rebind a name between lookups.

`DnsStub({"rebind.test": ["127.0.0.2", "127.0.0.1"]})` answers the first A query for rebind.test with
127.0.0.2 and every later one with 127.0.0.1 (TTL 0), the way a hostile name server would.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


@dataclass
class DnsStub:
    """Runs on 127.0.0.1 (UDP) in a thread of its own, so it answers a subprocess as well as the test."""

    answers: dict[str, list[str]]
    queries: list[tuple[str, str]] = field(default_factory=list)  # (name, type) in the order asked
    port: int = 0
    _served: dict[str, int] = field(default_factory=dict)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def asked(self, name: str) -> int:
        return sum(1 for n, t in self.queries if n == name and t == "A")

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        kind = dns.rdatatype.to_text(question.rdtype)
        self.queries.append((name, kind))
        script = self.answers.get(name)
        if script is None:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A:
            n = self._served.get(name, 0)
            self._served[name] = n + 1
            address = script[min(n, len(script) - 1)]
            response.answer.append(dns.rrset.from_text(question.name, 0, dns.rdataclass.IN, dns.rdatatype.A, address))
        return response.to_wire()

    def start(self) -> None:
        ready = threading.Event()
        stub = self

        class Protocol(asyncio.DatagramProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                self.transport.sendto(stub._answer(data), addr)  # type: ignore[attr-defined]

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            transport, _ = loop.run_until_complete(loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0)))
            self.port = transport.get_extra_info("sockname")[1]
            ready.set()
            loop.run_forever()
            transport.close()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._thread = threading.Thread(target=run, name="dns-stub", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the DNS stub did not start")

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
