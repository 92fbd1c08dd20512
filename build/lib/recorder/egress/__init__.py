"""The egress guard: every connection a recorded page's browser makes is checked, pinned and counted."""

from recorder.egress.guard import EgressGuard, Verdict, canonical_host
from recorder.egress.ledger import MAX_HOSTS, BlockedSummary, DenialLedger
from recorder.egress.resolve import DnsServerResolver, SystemResolver, parse_dns_server

__all__ = [
    "MAX_HOSTS",
    "BlockedSummary",
    "DenialLedger",
    "DnsServerResolver",
    "EgressGuard",
    "SystemResolver",
    "Verdict",
    "canonical_host",
    "parse_dns_server",
]
