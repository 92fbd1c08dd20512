"""Which machines have a recording behind real time, so that their workers take no more leases.

Several workers share a machine's cores (the local pool's processes, or pods on one node). A capture that
falls behind real time says those cores are not enough: another recording there would degrade every one
of them, so the scheduler holds back leases for that machine until its captures catch up.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

# A behind mark not renewed by a heartbeat within this many heartbeat intervals lapses (the worker died).
BEHIND_HOLD_INTERVALS = 3
# Past this many remembered workers, those not heard from for a while are forgotten.
HOSTS_KEPT = 4000


@dataclass
class BehindMark:
    """A worker whose capture is behind real time, holding back its host until `until`."""

    host: str
    recording_id: str
    until: float


class BehindHosts:
    """Which machines have a recording behind real time: their cores are not enough, so another recording
    there would degrade every one of them. In this process only (a heartbeat that reaches another replica
    is not seen here). A worker's host is what its last poll said; a mark lapses unless a heartbeat renews
    it within `hold` seconds, so a worker that dies does not block its host for good."""

    def __init__(self, hold: float, forget_after: float) -> None:
        self.hold = hold
        self.forget_after = forget_after
        self._hosts: dict[str, tuple[str, float]] = {}  # worker: (host, last heard from)
        self._marks: dict[str, BehindMark] = {}  # worker: its mark

    def polled(self, worker_id: str, host: str, now: float) -> None:
        self._hosts[worker_id] = (host, now)
        if len(self._hosts) > HOSTS_KEPT:
            self._hosts = {
                w: (h, seen)
                for w, (h, seen) in self._hosts.items()
                if w in self._marks or now - seen < self.forget_after
            }

    def heard(self, worker_id: str, now: float) -> None:
        """A heartbeat: the worker is alive, so its host is kept for however long it records."""
        known = self._hosts.get(worker_id)
        if known is not None:
            self._hosts[worker_id] = (known[0], now)

    def mark(self, worker_id: str, recording_id: str, now: float) -> str | None:
        """Mark (or renew) the worker behind; its host when that host was not behind before, else None."""
        known = self._hosts.get(worker_id)
        if known is None:
            return None  # never polled here (e.g. before a restart): its machine is not known
        host = known[0]
        started = not self.is_behind(host)
        self._marks[worker_id] = BehindMark(host, recording_id, now + self.hold)
        return host if started else None

    def clear(self, worker_id: str) -> str | None:
        """The worker caught up; its host when that host is no longer behind."""
        return self._end(lambda w, _m: w == worker_id)

    def ended(self, recording_id: str) -> str | None:
        """The recording ended or went back to the queue; its host when that host is no longer behind."""
        return self._end(lambda _w, m: m.recording_id == recording_id)

    def lapse(self, now: float) -> list[str]:
        """Drop marks no heartbeat renewed in time; the hosts no longer behind."""
        lapsed = [w for w, m in self._marks.items() if m.until <= now]
        hosts = [self.clear(w) for w in lapsed]
        return [h for h in hosts if h is not None]

    def blocker(self, host: str, worker_id: str) -> BehindMark | None:
        """The mark of another worker on `host` that holds back this worker's lease, if any."""
        return next((m for w, m in self._marks.items() if m.host == host and w != worker_id), None)

    def is_behind(self, host: str) -> bool:
        return any(m.host == host for m in self._marks.values())

    def count(self) -> int:
        return len({m.host for m in self._marks.values()})

    def _end(self, matches: Callable[[str, BehindMark], bool]) -> str | None:
        gone = [w for w, m in self._marks.items() if matches(w, m)]
        if not gone:
            return None
        host = self._marks[gone[0]].host
        for w in gone:
            del self._marks[w]
        return None if self.is_behind(host) else host
