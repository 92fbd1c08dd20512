"""The embedded store: SQLite in WAL mode through aiosqlite.

One connection writes, another only reads, so API reads never wait behind a write and never see one
that is not committed. `synchronous=FULL` by default: in WAL mode that fsyncs the log at every
commit, so a transition the API acknowledged survives power loss, not just a process crash; NORMAL
(configurable) keeps the latter guarantee at a fraction of the cost.

Writes are group-committed: a single writer task takes every write waiting at that moment, runs each
in its own savepoint inside one transaction, commits once, and only then answers them. Under load one
fsync serves many requests; an idle store commits each write at once, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from orchestrator.states import ACTIVE, State
from orchestrator.store.base import IdempotencyConflict, NewRecording
from orchestrator.store.guarded import GuardedWrites
from orchestrator.store.outbox import Backlog, Delivery, DeliveryAttempt, DeliveryStatus, Emit
from orchestrator.store.presence import WorkerPresence
from orchestrator.store.row import RecordingRow
from orchestrator.store.schema import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    MIGRATIONS,
    attempt_values,
    encoded,
    event_values,
    to_attempt,
    to_delivery,
    to_presence,
    to_row,
)

_ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in ACTIVE)

T = TypeVar("T")
_WriteOp = Callable[[aiosqlite.Connection], Awaitable[T]]


class SQLiteStore(GuardedWrites):
    def __init__(self, path: Path, synchronous: Literal["FULL", "NORMAL"] = "FULL") -> None:
        self.path = path
        self.synchronous = synchronous
        self._w: aiosqlite.Connection | None = None
        self._r: aiosqlite.Connection | None = None
        self._queue: list[tuple[_WriteOp[Any], asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> None:
        # Every caller's requests (URLs with meeting passwords) are in here: a new store and a new folder
        # for it are this user's alone, not readable by the unprivileged user Chromium runs as. SQLite
        # gives the WAL and shared-memory files the mode of the database. Existing files keep theirs.
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._w = await self._connect()
        await self._w.execute("PRAGMA journal_mode=WAL")
        await self._migrate(self._w)
        self._r = await self._connect()
        await self._r.execute("PRAGMA query_only=ON")

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.path, isolation_level=None)
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute(f"PRAGMA synchronous={self.synchronous}")
        return db

    async def _migrate(self, db: aiosqlite.Connection) -> None:
        async with db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")

    async def close(self) -> None:
        if self._writer is not None:
            await asyncio.wait([self._writer])
        for db in (self._r, self._w):
            if db is not None:
                await db.close()
        self._r = self._w = None

    @property
    def _reader(self) -> aiosqlite.Connection:
        if self._r is None:
            raise RuntimeError("store is not open")
        return self._r

    async def _write(self, op: _WriteOp[T]) -> T:
        """Run `op` in the next group commit; return once that commit is durable."""
        if self._w is None:
            raise RuntimeError("store is not open")
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((op, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="sqlite-writer")
        # Shielded: a caller that goes away does not take the write (or its batch) with it.
        return await asyncio.shield(done)

    async def _drain(self) -> None:
        db = self._w
        assert db is not None
        while self._queue:
            batch, self._queue = self._queue, []
            outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
            try:
                await db.execute("BEGIN IMMEDIATE")
                for op, done in batch:
                    await db.execute("SAVEPOINT op")
                    try:
                        result = await op(db)
                    except Exception as exc:
                        await db.execute("ROLLBACK TO op")
                        outcomes.append((done, None, exc))
                    else:
                        outcomes.append((done, result, None))
                    await db.execute("RELEASE op")
                await db.execute("COMMIT")
            except Exception as exc:
                with contextlib.suppress(Exception):
                    await db.execute("ROLLBACK")
                outcomes = [(done, None, exc) for _, done in batch]
            for done, result, error in outcomes:
                if done.done():
                    continue
                if error is not None:
                    done.set_exception(error)
                else:
                    done.set_result(result)

    async def ping(self) -> None:
        async with self._reader.execute("SELECT 1") as cur:
            await cur.fetchone()
        if self._w is None:
            raise RuntimeError("store is not open")

    async def create(self, new: NewRecording, *, emit: Emit | None = None) -> tuple[RecordingRow, bool]:
        async def op(db: aiosqlite.Connection) -> tuple[RecordingRow, bool]:
            if new.idempotency_key is not None:
                existing = await _one(db, "SELECT * FROM recordings WHERE idempotency_key = ?", new.idempotency_key)
                if existing is not None:
                    if existing.fingerprint != new.fingerprint:
                        raise IdempotencyConflict(existing)
                    return existing, False
            values = asdict(new) | {
                "status": State.QUEUED,
                "updated_at": new.created_at,
                f"{State.QUEUED.value}_at": new.created_at,
            }
            row = await _one(
                db,
                f"INSERT INTO recordings ({', '.join(values)}) VALUES ({', '.join('?' for _ in values)}) RETURNING *",
                *encoded(values),
            )
            assert row is not None
            await _emit(db, row, emit)
            return row, True

        return await self._write(op)

    async def get(self, recording_id: str) -> RecordingRow | None:
        return await _one(self._reader, "SELECT * FROM recordings WHERE id = ?", recording_id)

    async def get_by_lease(self, lease_id: str) -> RecordingRow | None:
        return await _one(self._reader, "SELECT * FROM recordings WHERE lease_id = ?", lease_id)

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
            where.append("owner = ?")
            params.append(owner)
        if statuses:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params += [State(s).value for s in statuses]
        if before_seq is not None:
            where.append("seq < ?")
            params.append(before_seq)
        sql = "SELECT * FROM recordings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY seq DESC LIMIT ?"
        return await _all(self._reader, sql, *params, limit)

    async def _guarded_update(
        self,
        recording_id: str,
        sets: Mapping[str, Any],
        statuses: Collection[State] | None,
        lease_id: str | None,
        lease_expired_before: float | None,
        emit: Emit | None = None,
    ) -> RecordingRow | None:
        where, params = ["id = ?"], [recording_id]
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params += [State(s).value for s in statuses]
        if lease_id is not None:
            where.append("lease_id = ?")
            params.append(lease_id)
        if lease_expired_before is not None:
            where.append("lease_expires_at < ?")
            params.append(lease_expired_before)
        setting = ", ".join(f"{column} = ?" for column in sets)
        sql = f"UPDATE recordings SET {setting} WHERE {' AND '.join(where)} RETURNING *"

        async def op(db: aiosqlite.Connection) -> RecordingRow | None:
            row = await _one(db, sql, *encoded(sets), *params)
            if row is not None:
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
        async with self._reader.execute("SELECT 1 FROM recordings WHERE status = 'queued' LIMIT 1") as cur:
            if await cur.fetchone() is None:
                return None

        async def op(db: aiosqlite.Connection) -> RecordingRow | None:
            if max_active is not None:
                async with db.execute(f"SELECT COUNT(*) FROM recordings WHERE status IN ({_ACTIVE_SQL})") as cur:
                    (active,) = await cur.fetchone() or (0,)
                if active >= max_active:
                    return None
            async with db.execute("SELECT retiring FROM workers WHERE worker_id = ?", (worker_id,)) as cur:
                mark = await cur.fetchone()
            if mark is not None and mark[0]:
                return None
            pick = "SELECT id FROM recordings WHERE status = 'queued'"
            params: list[Any] = []
            if shun_after is not None:
                pick += " AND (avoid_worker IS NULL OR avoid_worker != ? OR queued_at <= ?)"
                params += [worker_id, shun_after]
            async with db.execute(pick + " ORDER BY seq LIMIT 1", params) as cur:
                found = await cur.fetchone()
            if found is None:
                return None
            row = await _one(
                db,
                # The claim time was read before this write: never let it precede the queueing it follows.
                """UPDATE recordings SET status = 'starting', starting_at = MAX(?, queued_at), updated_at = ?,
                          attempts = attempts + 1, worker = ?, lease_id = ?, lease_expires_at = ?,
                          last_heartbeat_at = ?, avoid_worker = NULL, progress = NULL
                   WHERE id = ? AND status = 'queued' RETURNING *""",
                at,
                at,
                worker_id,
                lease_id,
                expires_at,
                at,
                found[0],
            )
            if row is not None:
                await _emit(db, row, emit)
            return row

        return await self._write(op)

    async def expired_leases(self, now: float) -> list[RecordingRow]:
        return await _all(
            self._reader,
            f"SELECT * FROM recordings WHERE status IN ({_ACTIVE_SQL}) AND lease_expires_at < ? ORDER BY seq",
            now,
        )

    async def extend_leases(self, until: float) -> int:
        async def op(db: aiosqlite.Connection) -> int:
            cur = await db.execute(
                f"""UPDATE recordings SET lease_expires_at = ?
                    WHERE status IN ({_ACTIVE_SQL}) AND (lease_expires_at IS NULL OR lease_expires_at < ?)""",
                (until, until),
            )
            return cur.rowcount

        return await self._write(op)

    async def count_by_status(self) -> dict[State, int]:
        async with self._reader.execute("SELECT status, COUNT(*) FROM recordings GROUP BY status") as cur:
            rows = await cur.fetchall()
        counts = dict.fromkeys(State, 0)
        counts.update({State(status): n for status, n in rows})
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
        sql = f"""SELECT * FROM recordings
                  WHERE status IN ({", ".join("?" for _ in statuses)}) AND seq > ?
                    AND COALESCE(completed_at, failed_at, cancelled_at) < ?"""
        if local_only:
            sql += " AND json_extract(upload, '$.bucket') IS NULL"
        sql += " ORDER BY seq LIMIT ?"
        return await _all(self._reader, sql, *(State(s).value for s in statuses), after_seq, cutoff, limit)

    async def delete(self, recording_id: str, statuses: Collection[State]) -> bool:
        if not statuses:
            return False

        async def op(db: aiosqlite.Connection) -> bool:
            cur = await db.execute(
                f"DELETE FROM recordings WHERE id = ? AND status IN ({', '.join('?' for _ in statuses)})",
                (recording_id, *(State(s).value for s in statuses)),
            )
            if cur.rowcount == 0:
                return False
            await db.execute(
                "DELETE FROM webhook_attempts WHERE event_id IN (SELECT id FROM webhook_events WHERE recording_id = ?)",
                (recording_id,),
            )
            await db.execute("DELETE FROM webhook_events WHERE recording_id = ?", (recording_id,))
            return True

        return await self._write(op)

    # the webhook outbox

    async def due_deliveries(
        self, now: float, limit: int, *, skip: Collection[str] = (), full: Collection[str] = ()
    ) -> list[Delivery]:
        eligible, params = _eligible(skip, full)
        sql = f"""SELECT * FROM webhook_events AS e WHERE {eligible} AND e.next_attempt_at <= ?
                  ORDER BY e.next_attempt_at, e.seq LIMIT ?"""
        async with self._reader.execute(sql, (*params, now, limit)) as cur:
            return [to_delivery(r) for r in await cur.fetchall()]

    async def next_delivery_at(self, *, skip: Collection[str] = (), full: Collection[str] = ()) -> float | None:
        eligible, params = _eligible(skip, full)
        async with self._reader.execute(
            f"SELECT MIN(e.next_attempt_at) FROM webhook_events AS e WHERE {eligible}", params
        ) as cur:
            row = await cur.fetchone()
        return None if row is None or row[0] is None else float(row[0])

    async def record_attempt(
        self, attempt: DeliveryAttempt, *, status: DeliveryStatus, next_attempt_at: float | None
    ) -> Delivery | None:
        async def op(db: aiosqlite.Connection) -> Delivery | None:
            # The store numbers attempts: two overlapping ones (a deposed leader's and the new one's) both stay.
            async with db.execute(
                "UPDATE webhook_events SET attempts = attempts + 1 WHERE id = ? RETURNING attempts",
                (attempt.event_id,),
            ) as cur:
                counted = await cur.fetchone()
            if counted is None:
                return None
            await db.execute(
                f"INSERT INTO webhook_attempts ({', '.join(ATTEMPT_COLUMNS)})"
                f" VALUES ({', '.join('?' for _ in ATTEMPT_COLUMNS)})",
                attempt_values(dataclasses.replace(attempt, number=counted[0])),
            )
            # A redelivery asked for while this attempt was out moved next_attempt_at past the attempt's
            # start: the earlier of the two times stands, so "send it now" is not undone by a backoff.
            async with db.execute(
                """UPDATE webhook_events
                   SET status = ?,
                       next_attempt_at = CASE WHEN next_attempt_at > ? THEN MIN(next_attempt_at, ?) ELSE ? END,
                       last_error = ?,
                       delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END
                   WHERE id = ? AND status = 'pending' RETURNING *""",
                (
                    status.value,
                    attempt.at,
                    next_attempt_at if status is DeliveryStatus.PENDING else None,
                    next_attempt_at if status is DeliveryStatus.PENDING else None,
                    attempt.error,
                    status.value,
                    attempt.at + attempt.latency,
                    attempt.event_id,
                ),
            ) as cur:
                row = await cur.fetchone()
            return to_delivery(row) if row is not None else None

        return await self._write(op)

    async def get_delivery(self, event_id: str) -> Delivery | None:
        async with self._reader.execute("SELECT * FROM webhook_events WHERE id = ?", (event_id,)) as cur:
            row = await cur.fetchone()
        return to_delivery(row) if row is not None else None

    async def deliveries(self, recording_id: str) -> list[tuple[Delivery, list[DeliveryAttempt]]]:
        async with self._reader.execute(
            "SELECT * FROM webhook_events WHERE recording_id = ? ORDER BY seq", (recording_id,)
        ) as cur:
            events = [to_delivery(r) for r in await cur.fetchall()]
        async with self._reader.execute(
            """SELECT a.* FROM webhook_attempts AS a JOIN webhook_events AS e ON e.id = a.event_id
               WHERE e.recording_id = ? ORDER BY a.event_id, a.number""",
            (recording_id,),
        ) as cur:
            attempts = [to_attempt(r) for r in await cur.fetchall()]
        by_event: dict[str, list[DeliveryAttempt]] = {}
        for attempt in attempts:
            by_event.setdefault(attempt.event_id, []).append(attempt)
        return [(event, by_event.get(event.id, [])) for event in events]

    async def redeliver(self, event_id: str, *, at: float, expires_at: float) -> Delivery | None:
        async def op(db: aiosqlite.Connection) -> Delivery | None:
            async with db.execute(
                """UPDATE webhook_events SET status = 'pending', next_attempt_at = ?, expires_at = ?
                   WHERE id = ? RETURNING *""",
                (at, expires_at, event_id),
            ) as cur:
                row = await cur.fetchone()
            return to_delivery(row) if row is not None else None

        return await self._write(op)

    async def delivery_backlog(self) -> list[Backlog]:
        async with self._reader.execute(
            """SELECT destination, COUNT(*), MIN(created_at) FROM webhook_events
               WHERE status = 'pending' GROUP BY destination ORDER BY destination"""
        ) as cur:
            rows = await cur.fetchall()
        return [Backlog(destination, int(n), float(oldest)) for destination, n, oldest in rows]

    # workers

    async def worker_seen(self, worker_id: str, at: float, browser_sandbox: bool | None = None) -> None:
        sandbox = None if browser_sandbox is None else int(browser_sandbox)

        async def op(db: aiosqlite.Connection) -> None:
            await db.execute(
                """INSERT INTO workers (worker_id, first_seen, last_seen, browser_sandbox) VALUES (?, ?, ?, ?)
                   ON CONFLICT (worker_id) DO UPDATE SET last_seen = MAX(last_seen, excluded.last_seen),
                       browser_sandbox = COALESCE(excluded.browser_sandbox, browser_sandbox)""",
                (worker_id, at, at, sandbox),
            )

        await self._write(op)

    async def retire_worker(self, worker_id: str) -> bool:
        async def op(db: aiosqlite.Connection) -> bool:
            cur = await db.execute("UPDATE workers SET retiring = 1 WHERE worker_id = ?", (worker_id,))
            return cur.rowcount > 0

        return await self._write(op)

    async def forget_worker(self, worker_id: str) -> None:
        async def op(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))

        await self._write(op)

    async def workers_seen(self) -> list[WorkerPresence]:
        async with self._reader.execute("SELECT * FROM workers ORDER BY worker_id") as cur:
            return [to_presence(r) for r in await cur.fetchall()]


def _eligible(skip: Collection[str], full: Collection[str]) -> tuple[str, list[Any]]:
    """The events the delivery loop could start, whenever due: pending, not in flight (`skip`), not to a
    destination with no free slot (`full`), and not behind an earlier pending event of their recording."""
    skipping, crowded = list(skip), list(full)
    sql = f"""e.status = 'pending'
              AND e.id NOT IN ({", ".join("?" for _ in skipping)})
              AND e.destination NOT IN ({", ".join("?" for _ in crowded)})
              AND NOT EXISTS (SELECT 1 FROM webhook_events AS earlier
                              WHERE earlier.recording_id = e.recording_id AND earlier.seq < e.seq
                                AND earlier.status = 'pending')"""
    return sql, [*skipping, *crowded]


async def _emit(db: aiosqlite.Connection, row: RecordingRow, emit: Emit | None) -> None:
    """Insert the events `emit` renders for `row`, in the transaction that wrote it."""
    if emit is None:
        return
    for event in emit(row):
        await db.execute(
            f"INSERT INTO webhook_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})",
            event_values(event),
        )


async def _one(db: aiosqlite.Connection, sql: str, *params: Any) -> RecordingRow | None:
    async with db.execute(sql, params) as cur:
        rows = await cur.fetchall()
    return to_row(rows[0]) if rows else None


async def _all(db: aiosqlite.Connection, sql: str, *params: Any) -> list[RecordingRow]:
    async with db.execute(sql, params) as cur:
        rows = await cur.fetchall()
    return [to_row(r) for r in rows]
