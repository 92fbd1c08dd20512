"""What the egress guard denied during one recording: counts by reason and by host, for rec.json and
the worker's report (`Report.blocked`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import structlog
from pydantic import BaseModel, Field

log = structlog.get_logger(__name__)

MAX_HOSTS = 50  # a page can name any number of hosts; rec.json lists this many and says it was cut


class BlockedSummary(BaseModel):
    """Denied connections of one recording, as written to rec.json under "blocked"."""

    total: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict)
    # {"host": ..., "class": ..., "count": ...}; one line per host and class, whatever the ports.
    hosts: list[dict[str, str | int]] = Field(default_factory=list)
    truncated: bool = False


@dataclass
class Denial:
    host: str
    port: int
    reason: str


@dataclass
class DenialLedger:
    """Counts denials since the last `reset`; one recording at a time runs on a recorder's browser."""

    max_hosts: int = MAX_HOSTS
    total: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    by_host: dict[tuple[str, str], int] = field(default_factory=dict)
    truncated: bool = False
    last_by_host: dict[str, str] = field(default_factory=dict)

    def reset(self) -> None:
        self.total = 0
        self.by_reason = {}
        self.by_host = {}
        self.truncated = False
        self.last_by_host = {}

    def add(self, denial: Denial) -> None:
        denial = Denial(denial.host[:255], denial.port, denial.reason)  # an invalid "host" may be any text
        self.total += 1
        self.by_reason[denial.reason] = self.by_reason.get(denial.reason, 0) + 1
        key = (denial.host, denial.reason)
        if key in self.by_host:
            self.by_host[key] += 1
        elif len(self.by_host) < self.max_hosts:
            self.by_host[key] = 1
            log.warning("egress denied", host=denial.host, port=denial.port, reason=denial.reason)
        else:
            self.truncated = True
        if len(self.last_by_host) < 4 * self.max_hosts or denial.host in self.last_by_host:
            self.last_by_host[denial.host] = denial.reason

    def reason_for(self, host: str) -> str | None:
        """The class of the latest denial of `host` in this recording, if it was denied."""
        return self.last_by_host.get(host.lower().strip("[]"))

    def summary(self) -> BlockedSummary:
        return BlockedSummary(
            total=self.total,
            by_reason=dict(self.by_reason),
            hosts=[{"host": h, "class": r, "count": n} for (h, r), n in self.by_host.items()],
            truncated=self.truncated,
        )
