"""The replicated store: PostgreSQL through an asyncpg connection pool, for several orchestrators.

Every write is one transaction on a pooled connection, committed before the call returns; reads take
whatever connection is free. The tables are SQLite's, derived from the same declarations
(`orchestrator.store.schema`), with values encoded the same way, so both stores answer alike.

What several replicas on one database need, and how it is had:
- migrations: `open()` applies each missing version under a transaction-scoped advisory lock and records
  it in `schema_migrations`, so replicas starting together apply each exactly once;
- claims: `SELECT ... FOR UPDATE SKIP LOCKED` picks the oldest queued row no other claim holds, so
  concurrent claims neither lease one recording twice nor wait on each other;
- `max_active`: counting the active recordings and claiming one must be atomic across replicas, and
  row locks cannot give that (two claims of two different rows each count the other's row as queued).
  Those claims take one advisory lock for their transaction instead: they serialize among themselves,
  each counting what the one before committed. Claims without `max_active` never take it;
- retiring: the claim reads the worker's row `FOR SHARE` and `retire_worker` updates it, so the two
  serialize on that row: once a retire is committed, no replica's claim leases to that worker.

The DSN may carry a password: it is never logged nor put into an exception (`redact_dsn`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import asdict, replace
from typing import Any, TypeVar

import asyncpg

from orchestrator.states import ACTIVE, State
from orchestrator.store.base import IdempotencyConflict, NewRecording
from orchestrator.store.factory import redact_dsn
from orchestrator.store.guarded import GuardedWrites
from orchestrator.store.outbox import Backlog, Delivery, DeliveryAttempt, DeliveryStatus, Emit
from orchestrator.store.presence import WorkerPresence
from orchestrator.store.row import RecordingRow
from orchestrator.store.schema import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    POSTGRES_MIGRATIONS,
    attempt_values,
    encoded,
    event_values,
    to_attempt,
    to_delivery,
    to_presence,
    to_row,
)

T = TypeVar("T")

_ACTIVE = [s.value for s in ACTIVE]
# Advisory lock keys (any bigint the farm owns): "orch_mig" and "orch_clm" in ASCII.
_MIGRATION_LOCK = 0x6F7263685F6D6967
_CLAIM_LOCK = 0x6F7263685F636C6D

_SCHEMA_MIGRATIONS = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    applied_at DOUBLE PRECISION NOT NULL
)"""


class StoreUnavailable(RuntimeError):
    """PostgreSQL could not be reached or set up; the message names the server without its password."""


def _placeholders(count: int, start: int = 1) -> str:
    return ", ".join(f"${n}" for n in range(start, start + count))


def _affected(status: str) -> int:
    """The row count of a command status such as 'UPDATE 3'."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# The events the delivery loop could start, whenever due: pending, not in flight ($1), not to a destination
# with no free slot ($2), and not behind an earlier pending event of their recording.
_ELIGIBLE = """e.status = 'pending' AND e.id <> ALL($1::text[]) AND e.destination <> ALL($2::text[])
               AND NOT EXISTS (SELECT 1 FROM webhook_events AS earlier
                               WHERE earlier.recording_id = e.recording_id AND earlier.seq < e.seq
                                 AND earlier.status = 'pending')"""


class PostgresStore(GuardedWrites):
    def __init__(self, dsn: str, pool_size: int = 10) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        self._dsn = dsn
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresStore({redact_dsn(self._dsn)!r}, pool_size={self.pool_size})"

    @property
    def where(self) -> str:
        """The server and database, fit to log."""
        return redact_dsn(self._dsn)

    async def open(self) -> None:
        try:
            pool = await asyncpg.create_pool(
                self._dsn,
                min_size=min(2, self.pool_size),
                max_size=self.pool_size,
                server_settings={"application_name": "orchestrator"},
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            raise StoreUnavailable(f"cannot open the PostgreSQL store at {self.where}: {exc}") from None
        try:
            await self._migrate(pool)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def _migrate(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as db, db.transaction():
            # Taken before anything is read, so a replica starting at the same moment waits here and
            # then finds every version this one applied.
            await db.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await db.execute(_SCHEMA_MIGRATIONS)
            applied = {r["version"] for r in await db.fetch("SELECT version FROM schema_migrations")}
            newer = sorted(v for v in applied if v > len(POSTGRES_MIGRATIONS))
            if newer:
                raise StoreUnavailable(
                    f"the PostgreSQL store at {self.where} has schema version {newer[-1]}, newer than this"
                    f" orchestrator knows ({len(POSTGRES_MIGRATIONS)}): run the newer orchestrator version"
                )
            for version, script in enumerate(POSTGRES_MIGRATIONS, start=1):
                if version in applied:
                    continue
                await db.execute(script)
                await db.execute(
                    "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)", version, time.time()
                )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def _db(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def _write(self, op: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `op` in a transaction of its own; return once it is committed."""
        async with self._db.acquire() as db, db.transaction():
            return await op(db)

    async def ping(self) -> None:
        await self._db.fetchval("SELECT 1")

    async def create(self, new: NewRecording, *, emit: Emit | None = None) -> tuple[RecordingRow, bool]:
        values = asdict(new) | {
            "status": State.QUEUED,
            "updated_at": new.created_at,
            f"{State.QUEUED.value}_at": new.created_at,
        }
        insert = f"INSERT INTO recordings ({', '.join(values)}) VALUES ({_placeholders(len(values))})"
        if new.idempotency_key is not None:
            # A concurrent create with the same key waits here for the other to commit, then finds its row.
            insert += " ON CONFLICT (idempotency_key) DO NOTHING"

        async def op(db: asyncpg.Connection) -> tuple[RecordingRow, bool]:
            while True:
                inserted = await db.fetchrow(insert + " RETURNING *", *encoded(values))
                if inserted is not None:
                    row = to_row(inserted)
                    await _emit(db, row, emit)
                    return row, True
                existing = await db.fetchrow("SELECT * FROM recordings WHERE idempotency_key = $1", new.idempotency_key)
                if existing is None:
                    continue  # the row holding the key was deleted (retention) between the two statements
                row = to_row(existing)
                if row.fingerprint != new.fingerprint:
                    raise IdempotencyConflict(row)
                return row, False

        return await self._write(op)

    async def get(self, recording_id: str) -> RecordingRow | None:
        found = await self._db.fetchrow("SELECT * FROM recordings WHERE id = $1", recording_id)
        return to_row(found) if found is not None else None

    async def get_by_lease(self, lease_id: str) -> RecordingRow | None:
        found = await self._db.fetchrow("SELECT * FROM recordings WHERE lease_id = $1", lease_id)
        return to_row(found) if found is not None else None

    async def list(
        self,
        statuses: Collection[State] | None,
        limit: int,
        before_seq: int | None,
        owner: str | None = None,
    ) -> list[RecordingRow]:
        where: list[str] = []
        params: list[Any] = []
        if owner is not None:
            params.append(owner)
            where.append(f"owner = ${len(params)}")
        if statuses:
            params.append([State(s).value for s in statuses])
            where.append(f"status = ANY(${len(params)}::text[])")
        if before_seq is not None:
            params.append(before_seq)
            where.append(f"seq < ${len(params)}")
        sql = "SELECT * FROM recordings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        params.append(limit)
        sql += f" ORDER BY seq DESC LIMIT ${len(params)}"
        return [to_row(r) for r in await self._db.fetch(sql, *params)]

    async def _guarded_update(
        self,
        recording_id: str,
        sets: Mapping[str, Any],
        statuses: Collection[State] | None,
        lease_id: str | None,
        lease_expired_before: float | None,
        emit: Emit | None = None,
    ) -> RecordingRow | None:
        params: list[Any] = [*encoded(sets), recording_id]
        setting = ", ".join(f"{column} = ${n}" for n, column in enumerate(sets, start=1))
        where = [f"id = ${len(params)}"]
        if statuses is not None:
            params.append([State(s).value for s in statuses])
            where.append(f"status = ANY(${len(params)}::text[])")
        if lease_id is not None:
            params.append(lease_id)
            where.append(f"lease_id = ${len(params)}")
        if lease_expired_before is not None:
            params.append(lease_expired_before)
            where.append(f"lease_expires_at < ${len(params)}")
        sql = f"UPDATE recordings SET {setting} WHERE {' AND '.join(where)} RETURNING *"

        async def op(db: asyncpg.Connection) -> RecordingRow | None:
            found = await db.fetchrow(sql, *params)
            if found is None:
                return None
            row = to_row(found)
            await _emit(db, row, emit)
            return row

        return await self._write(op)

    async def claim_next(
        self,
        *,
        worker_id: str,
        lease_id: str,
        at: float,
        expires_at: float,
        max_active: int | None = None,
        shun_after: float | None = None,
        emit: Emit | None = None,
    ) -> RecordingRow | None:
        # Idle workers poll often; when nothing is queued that must not cost a write transaction.
        if await self._db.fetchval("SELECT 1 FROM recordings WHERE status = 'queued' LIMIT 1") is None:
            return None
        pick = "SELECT id FROM recordings WHERE status = 'queued'"
        params: list[Any] = []
        if shun_after is not None:
            pick += " AND (avoid_worker IS NULL OR avoid_worker <> $1 OR queued_at <= $2)"
            params += [worker_id, shun_after]
        pick += " ORDER BY seq LIMIT 1 FOR UPDATE SKIP LOCKED"

        async def op(db: asyncpg.Connection) -> RecordingRow | None:
            if max_active is not None:
                # See the module docstring: the count and the claim are one step for every replica.
                await db.execute("SELECT pg_advisory_xact_lock($1)", _CLAIM_LOCK)
                active = await db.fetchval("SELECT COUNT(*) FROM recordings WHERE status = ANY($1::text[])", _ACTIVE)
                if active >= max_active:
                    return None
            # FOR SHARE: a retire_worker in flight is waited for, and one that comes later waits for this.
            retiring = await db.fetchval("SELECT retiring FROM workers WHERE worker_id = $1 FOR SHARE", worker_id)
            if retiring:
                return None
            found = await db.fetchval(pick, *params)
            if found is None:
                return None
            claimed = await db.fetchrow(
                # The claim time was read before this write: never let it precede the queueing it follows.
                """UPDATE recordings SET status = 'starting', starting_at = GREATEST($1, queued_at), updated_at = $1,
                          attempts = attempts + 1, worker = $2, lease_id = $3, lease_expires_at = $4,
                          last_heartbeat_at = $1, avoid_worker = NULL, progress = NULL
                   WHERE id = $5 AND status = 'queued' RETURNING *""",
                float(at),
                worker_id,
                lease_id,
                float(expires_at),
                found,
            )
            if claimed is None:
                return None
            row = to_row(claimed)
            await _emit(db, row, emit)
            return row

        return await self._write(op)

    async def expired_leases(self, now: float) -> list[RecordingRow]:
        rows = await self._db.fetch(
            "SELECT * FROM recordings WHERE status = ANY($1::text[]) AND lease_expires_at < $2 ORDER BY seq",
            _ACTIVE,
            now,
        )
        return [to_row(r) for r in rows]

    async def extend_leases(self, until: float) -> int:
        async def op(db: asyncpg.Connection) -> int:
            status = await db.execute(
                """UPDATE recordings SET lease_expires_at = $1
                   WHERE status = ANY($2::text[]) AND (lease_expires_at IS NULL OR lease_expires_at < $1)""",
                until,
                _ACTIVE,
            )
            return _affected(status)

        return await self._write(op)

    async def count_by_status(self) -> dict[State, int]:
        rows = await self._db.fetch("SELECT status, COUNT(*) AS n FROM recordings GROUP BY status")
        counts = dict.fromkeys(State, 0)
        counts.update({State(r["status"]): int(r["n"]) for r in rows})
        return counts

    async def ended_before(
        self,
        cutoff: float,
        statuses: Collection[State],
        *,
        local_only: bool,
        after_seq: int = 0,
        limit: int = 100,
    ) -> list[RecordingRow]:
        if not statuses:
            return []
        sql = """SELECT * FROM recordings
                 WHERE status = ANY($1::text[]) AND seq > $2
                   AND COALESCE(completed_at, failed_at, cancelled_at) < $3"""
        if local_only:
            # JSON null and a missing key both mean "no bucket", as json_extract reads them on SQLite.
            sql += " AND (upload::jsonb ->> 'bucket') IS NULL"
        sql += " ORDER BY seq LIMIT $4"
        rows = await self._db.fetch(sql, [State(s).value for s in statuses], after_seq, cutoff, limit)
        return [to_row(r) for r in rows]

    async def delete(self, recording_id: str, statuses: Collection[State]) -> bool:
        if not statuses:
            return False

        async def op(db: asyncpg.Connection) -> bool:
            status = await db.execute(
                "DELETE FROM recordings WHERE id = $1 AND status = ANY($2::text[])",
                recording_id,
                [State(s).value for s in statuses],
            )
            if _affected(status) == 0:
                return False
            await db.execute(
                """DELETE FROM webhook_attempts
                   WHERE event_id IN (SELECT id FROM webhook_events WHERE recording_id = $1)""",
                recording_id,
            )
            await db.execute("DELETE FROM webhook_events WHERE recording_id = $1", recording_id)
            return True

        return await self._write(op)

    # the webhook outbox

    async def due_deliveries(
        self, now: float, limit: int, *, skip: Collection[str] = (), full: Collection[str] = ()
    ) -> list[Delivery]:
        sql = f"""SELECT * FROM webhook_events AS e WHERE {_ELIGIBLE} AND e.next_attempt_at <= $3
                  ORDER BY e.next_attempt_at, e.seq LIMIT $4"""
        return [to_delivery(r) for r in await self._db.fetch(sql, list(skip), list(full), now, limit)]

    async def next_delivery_at(self, *, skip: Collection[str] = (), full: Collection[str] = ()) -> float | None:
        sql = f"SELECT MIN(e.next_attempt_at) FROM webhook_events AS e WHERE {_ELIGIBLE}"
        soonest = await self._db.fetchval(sql, list(skip), list(full))
        return None if soonest is None else float(soonest)

    async def record_attempt(
        self, attempt: DeliveryAttempt, *, status: DeliveryStatus, next_attempt_at: float | None
    ) -> Delivery | None:
        columns = ", ".join(ATTEMPT_COLUMNS)

        async def op(db: asyncpg.Connection) -> Delivery | None:
            # The store numbers attempts (the row lock orders them): two overlapping ones both stay logged.
            number = await db.fetchval(
                "UPDATE webhook_events SET attempts = attempts + 1 WHERE id = $1 RETURNING attempts", attempt.event_id
            )
            if number is None:
                return None
            await db.execute(
                f"INSERT INTO webhook_attempts ({columns}) VALUES ({_placeholders(len(ATTEMPT_COLUMNS))})",
                *attempt_values(replace(attempt, number=number)),
            )
            # A redelivery asked for while this attempt was out moved next_attempt_at past the attempt's
            # start: the earlier of the two times stands, so "send it now" is not undone by a backoff.
            found = await db.fetchrow(
                """UPDATE webhook_events
                   SET status = $1,
                       next_attempt_at = CASE WHEN $2::double precision IS NULL THEN NULL
                                              WHEN next_attempt_at > $6 THEN LEAST(next_attempt_at, $2)
                                              ELSE $2 END,
                       last_error = $3,
                       delivered_at = CASE WHEN $1 = 'delivered' THEN $4 ELSE delivered_at END
                   WHERE id = $5 AND status = 'pending' RETURNING *""",
                status.value,
                next_attempt_at if status is DeliveryStatus.PENDING else None,
                attempt.error,
                attempt.at + attempt.latency,
                attempt.event_id,
                attempt.at,
            )
            return to_delivery(found) if found is not None else None

        return await self._write(op)

    async def get_delivery(self, event_id: str) -> Delivery | None:
        found = await self._db.fetchrow("SELECT * FROM webhook_events WHERE id = $1", event_id)
        return to_delivery(found) if found is not None else None

    async def deliveries(self, recording_id: str) -> list[tuple[Delivery, list[DeliveryAttempt]]]:
        async with self._db.acquire() as db, db.transaction(isolation="repeatable_read", readonly=True):
            # One snapshot for both reads: no attempt of an event the first read did not see.
            events = [
                to_delivery(r)
                for r in await db.fetch(
                    "SELECT * FROM webhook_events WHERE recording_id = $1 ORDER BY seq", recording_id
                )
            ]
            attempts = [
                to_attempt(r)
                for r in await db.fetch(
                    """SELECT a.* FROM webhook_attempts AS a JOIN webhook_events AS e ON e.id = a.event_id
                       WHERE e.recording_id = $1 ORDER BY a.event_id, a.number""",
                    recording_id,
                )
            ]
        by_event: dict[str, list[DeliveryAttempt]] = {}
        for attempt in attempts:
            by_event.setdefault(attempt.event_id, []).append(attempt)
        return [(event, by_event.get(event.id, [])) for event in events]

    async def redeliver(self, event_id: str, *, at: float, expires_at: float) -> Delivery | None:
        async def op(db: asyncpg.Connection) -> Delivery | None:
            found = await db.fetchrow(
                """UPDATE webhook_events SET status = 'pending', next_attempt_at = $1, expires_at = $2
                   WHERE id = $3 RETURNING *""",
                at,
                expires_at,
                event_id,
            )
            return to_delivery(found) if found is not None else None

        return await self._write(op)

    async def delivery_backlog(self) -> list[Backlog]:
        rows = await self._db.fetch(
            """SELECT destination, COUNT(*) AS n, MIN(created_at) AS oldest FROM webhook_events
               WHERE status = 'pending' GROUP BY destination ORDER BY destination"""
        )
        return [Backlog(r["destination"], int(r["n"]), float(r["oldest"])) for r in rows]

    # workers

    async def worker_seen(self, worker_id: str, at: float, browser_sandbox: bool | None = None) -> None:
        sandbox = None if browser_sandbox is None else int(browser_sandbox)

        async def op(db: asyncpg.Connection) -> None:
            await db.execute(
                """INSERT INTO workers (worker_id, first_seen, last_seen, browser_sandbox) VALUES ($1, $2, $2, $3)
                   ON CONFLICT (worker_id) DO UPDATE SET
                       last_seen = GREATEST(workers.last_seen, excluded.last_seen),
                       browser_sandbox = COALESCE(excluded.browser_sandbox, workers.browser_sandbox)""",
                worker_id,
                at,
                sandbox,
            )

        await self._write(op)

    async def retire_worker(self, worker_id: str) -> bool:
        async def op(db: asyncpg.Connection) -> bool:
            # An UPDATE, not a flag elsewhere: it waits for claims holding the row FOR SHARE (claim_next).
            return _affected(await db.execute("UPDATE workers SET retiring = 1 WHERE worker_id = $1", worker_id)) > 0

        return await self._write(op)

    async def forget_worker(self, worker_id: str) -> None:
        async def op(db: asyncpg.Connection) -> None:
            await db.execute("DELETE FROM workers WHERE worker_id = $1", worker_id)

        await self._write(op)

    async def workers_seen(self) -> list[WorkerPresence]:
        return [to_presence(r) for r in await self._db.fetch("SELECT * FROM workers ORDER BY worker_id")]


async def _emit(db: asyncpg.Connection, row: RecordingRow, emit: Emit | None) -> None:
    """Insert the events `emit` renders for `row`, in the transaction that wrote it."""
    if emit is None:
        return
    events = [event_values(event) for event in emit(row)]
    if events:
        await db.executemany(
            f"INSERT INTO webhook_events ({', '.join(EVENT_COLUMNS)}) VALUES ({_placeholders(len(EVENT_COLUMNS))})",
            events,
        )
