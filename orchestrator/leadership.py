"""Which orchestrator runs the loops there must be only one of: lease expiry, the autoscaler, webhook
delivery and retention.

Every replica serves the API and the worker protocol; only the leader runs those loops. One
orchestrator on its own store (SQLite) is always the leader. Replicas on one PostgreSQL server elect
theirs with an advisory lock held by a connection of its own: the server releases it when that
connection ends, so a leader that dies, even by SIGKILL, hands over within the followers' retry time.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

log = structlog.get_logger("orchestrator.leadership")

Hook = Callable[[], Awaitable[None]]


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...

    async def start(self, elected: Hook, deposed: Hook) -> None:
        """Begin taking part: `elected` runs each time this orchestrator becomes the leader, `deposed` each
        time it stops being one (its loops must stop then, before another leader's start)."""

    async def stop(self) -> None:
        """Stop taking part; a leader runs `deposed` and lets go, so another takes over at once."""


class SoleLeader:
    """The only orchestrator on its store: the leader from start to stop."""

    def __init__(self) -> None:
        self._deposed: Hook | None = None

    @property
    def is_leader(self) -> bool:
        return self._deposed is not None

    async def start(self, elected: Hook, deposed: Hook) -> None:
        await elected()
        self._deposed = deposed

    async def stop(self) -> None:
        deposed, self._deposed = self._deposed, None
        if deposed is not None:
            await deposed()
