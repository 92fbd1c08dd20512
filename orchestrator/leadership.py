"""Which orchestrator runs the loops there must be only one of: lease expiry, the autoscaler, webhook
delivery and retention.

Every replica serves the API and the worker protocol; only the leader runs those loops. One
orchestrator on its own store (SQLite) is always the leader. Replicas on one PostgreSQL server elect
theirs with an advisory lock held by a connection of its own: the server releases it when that
connection ends, so a leader that dies, even by SIGKILL, hands over within the followers' retry time.

How long a handover takes (`AdvisoryLockLeader`'s defaults):

- the leader dies (crash, SIGKILL, OOM): its kernel closes the socket, the server ends the session and
  frees the lock at once; a follower takes it with its next try, within `RETRY` (1.5 s).
- the leader is cut off (network partition, frozen node): the leader checks its connection every
  `CHECK` s with a `CHECK_TIMEOUT` s bound and is deposed by the first failed check, within 3.5 s. The
  server notices the silent peer through TCP keepalive and `tcp_user_timeout`, set on the leader's
  session (`SERVER_SETTINGS`): within 10 s of the last packet it got, always later than the leader's
  own deposition. A follower then takes the lock within `RETRY`: well under 15 s in all.

The lock needs a session of its own on the server itself: a transaction-pooling proxy (PgBouncer in
transaction mode) between the orchestrator and PostgreSQL cannot hold it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import structlog

if TYPE_CHECKING:
    import asyncpg

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


# The advisory lock the replicas of one database compete for: "orch_ldr" in ASCII, beside the store's own
# locks ("orch_mig", "orch_clm"). pg_locks shows a bigint key as classid (high half) and objid (low half).
LOCK_KEY = 0x6F7263685F6C6472
# A follower tries to take the lock this often.
RETRY = 1.5
# The leader checks that its session still holds the lock this often, and gives a check this long.
CHECK = 2.0
CHECK_TIMEOUT = 1.5
# How long a connection attempt may take before it counts as failed.
CONNECT_TIMEOUT = 5.0
# On the election session only: the server declares the peer gone after 5 s without a packet plus 5
# unanswered probes 1 s apart, and gives up on unacknowledged data after 10 s (see the module docstring).
SERVER_SETTINGS = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "1",
    "tcp_keepalives_count": "5",
    "tcp_user_timeout": "10000",
}

_HOLDS_LOCK = """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
                   AND pid = pg_backend_pid() AND classid = $1::bigint::oid AND objid = $2::bigint::oid
                   AND objsubid = 1)"""


def replica_identity() -> str:
    """Who this replica is, in logs and in `pg_stat_activity`: the pod's name (or the host's) and the pid."""
    host = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host}:{os.getpid()}"


class AdvisoryLockLeader:
    """One of several replicas on one PostgreSQL database: the leader while its own session holds the lock.

    The session is a dedicated connection, never one of the store's pool (a pooled connection would
    hand the lock to whatever query borrows it next, and survive a deposition)."""

    def __init__(
        self,
        dsn: str,
        *,
        identity: str | None = None,
        retry: float = RETRY,
        check: float = CHECK,
        check_timeout: float = CHECK_TIMEOUT,
        key: int = LOCK_KEY,
    ) -> None:
        self.dsn = dsn
        self.identity = identity or replica_identity()
        self.retry = retry
        self.check = check
        self.check_timeout = check_timeout
        self.key = key
        self._leading = False
        self._hooks: tuple[Hook, Hook] | None = None
        self._stopping = False
        self._interrupt = asyncio.Event()  # stop() was called, or the session ended: stop waiting
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading

    async def start(self, elected: Hook, deposed: Hook) -> None:
        self._hooks = (elected, deposed)
        self._stopping = False
        self._interrupt = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="leadership")

    async def stop(self) -> None:
        self._stopping = True
        self._interrupt.set()
        task, self._task = self._task, None
        if task is not None:
            # Every wait in `_run` is bounded (connect, queries) or ends on `_interrupt`: no cancel needed.
            with contextlib.suppress(Exception):
                await task
        await self._depose("stopping")
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.execute("SELECT pg_advisory_unlock($1)", self.key, timeout=self.check_timeout)
            await _close(conn)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._take_part()
            except Exception as exc:  # the connection failed, a check timed out, or a hook failed
                why = f"{type(exc).__name__}: {exc}"
                log.warning("leadership_session_lost", replica=self.identity, leading=self._leading, error=why)
                try:
                    await self._depose(why)
                except Exception:
                    log.exception("deposing_failed", replica=self.identity)
                conn, self._conn = self._conn, None
                if conn is not None:
                    await _close(conn)  # ends the session: the server frees the lock if it still held it
                await self._pause(self.retry)

    async def _take_part(self) -> None:
        import asyncpg  # the PostgreSQL extra; SoleLeader never needs it

        if self._conn is None or self._conn.is_closed():
            name = f"orchestrator leadership {self.identity}"[:63]  # what pg_stat_activity shows
            self._conn = await asyncpg.connect(
                self.dsn, timeout=CONNECT_TIMEOUT, server_settings={**SERVER_SETTINGS, "application_name": name}
            )
            # A session that ends (the server went away, an admin ended it) wakes the leader's wait at once.
            self._conn.add_termination_listener(lambda _conn: self._interrupt.set())
        conn = self._conn
        while not self._stopping:
            if not self._leading:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key, timeout=self.check_timeout):
                    await self._elect()
                    continue
                await self._pause(self.retry)
            else:
                await self._pause(self.check)
                if self._stopping:
                    return
                held = await conn.fetchval(
                    _HOLDS_LOCK, self.key >> 32, self.key & 0xFFFFFFFF, timeout=self.check_timeout
                )
                if not held:
                    raise RuntimeError("the session no longer holds the leader's lock")

    async def _elect(self) -> None:
        assert self._hooks is not None
        self._leading = True
        log.info("elected", replica=self.identity, lock=self.key)
        await self._hooks[0]()

    async def _depose(self, why: str) -> None:
        if not self._leading:
            return
        self._leading = False
        if why == "stopping":
            log.info("leadership_handed_over", replica=self.identity)
        else:
            log.warning("deposed", replica=self.identity, why=why)
        assert self._hooks is not None
        await self._hooks[1]()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._interrupt.wait(), timeout=seconds)
        if not self._stopping:
            self._interrupt.clear()


async def _close(conn: Any) -> None:
    """Close politely within a second, else drop the socket (the server then frees the lock on its own)."""
    try:
        await asyncio.wait_for(conn.close(), timeout=1.0)
    except Exception:
        conn.terminate()


class RoleGauge(Protocol):
    def set(self, value: float) -> None: ...


class Reported:
    """A leadership whose role is shown as a gauge (1 while leading): which replica leads is visible."""

    def __init__(self, leadership: Leadership, gauge: RoleGauge) -> None:
        self.leadership = leadership
        self.gauge = gauge
        gauge.set(0)

    @property
    def is_leader(self) -> bool:
        return self.leadership.is_leader

    async def start(self, elected: Hook, deposed: Hook) -> None:
        async def on_elected() -> None:
            await elected()
            self.gauge.set(1)

        async def on_deposed() -> None:
            self.gauge.set(0)
            await deposed()

        await self.leadership.start(on_elected, on_deposed)

    async def stop(self) -> None:
        await self.leadership.stop()


def leadership_for(database_url: str | None, gauge: RoleGauge) -> Leadership:
    """The sole leader on an embedded store (None); the advisory-lock election on a PostgreSQL URL."""
    chosen: Leadership = AdvisoryLockLeader(database_url) if database_url else SoleLeader()
    return Reported(chosen, gauge)
