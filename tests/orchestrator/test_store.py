"""The stores on their own, SQLite and PostgreSQL through the same tests: durability across reopen,
compare-and-set transitions, keyset cursor, idempotency, atomic claims, lease queries, the webhook outbox
and worker presence. What is SQLite's alone (WAL, PRAGMAs, group commit, migrating an old file) and
PostgreSQL's alone (migrations under replicas, claims across replicas) is tested for that store only.

The PostgreSQL cases run on a private cluster the tests start (tests/support/postgres.py): a fresh
database per test.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from orchestrator.config import OrchestratorSettings
from orchestrator.states import ACTIVE, State
from orchestrator.store import (
    Changes,
    IdempotencyConflict,
    NewRecording,
    PostgresStore,
    RecordingRow,
    RecordingStore,
    SQLiteStore,
    open_store,
)
from orchestrator.store.outbox import DeliveryAttempt, DeliveryStatus, OutboxEvent
from orchestrator.store.row import STAMPS
from orchestrator.store.schema import MIGRATIONS, POSTGRES_MIGRATIONS
from tests.support.postgres import PostgresServer


def new(n: int, key: str | None = None, fingerprint: str | None = None, at: float = 1000.0) -> NewRecording:
    return NewRecording(
        id=f"rec_{n:04d}",
        request={"url": "http://93.184.215.14/", "metadata": {"n": n}},
        spec={"url": "http://93.184.215.14/", "duration": 60.0},
        upload={"bucket": None, "prefix": ""},
        created_at=at + n,
        idempotency_key=key,
        fingerprint=fingerprint,
    )


MakeStore = Callable[[], RecordingStore]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> MakeStore:
    """Makes unopened stores on one database: the same store again, or another replica of it."""
    if request.param == "sqlite":
        return lambda: SQLiteStore(tmp_path / "db" / "orchestrator.db")
    dsn = request.getfixturevalue("postgres_dsn")
    return lambda: PostgresStore(dsn, pool_size=4)


@pytest.fixture
async def store(make_store: MakeStore) -> AsyncIterator[RecordingStore]:
    s = make_store()
    await s.open()
    yield s
    await s.close()


async def test_everything_survives_a_reopen(make_store: MakeStore):
    first = make_store()
    await first.open()
    await first.create(new(1, key="k", fingerprint="f"))
    claimed = await first.claim_next(worker_id="w1", lease_id="L1", at=2000.0, expires_at=2015.0)
    assert claimed is not None
    await first.transition(
        "rec_0001",
        from_states={State.STARTING},
        to=State.RECORDING,
        at=2001.0,
        changes={"progress": {"fps": 30.0}, "quality": {"a": [1, 2]}},
        lease_id="L1",
    )
    await first.close()

    again = make_store()
    await again.open()
    try:
        row = await again.get("rec_0001")
        assert row is not None
        assert row.status is State.RECORDING
        assert (row.worker, row.lease_id, row.lease_expires_at, row.attempts) == ("w1", "L1", 2015.0, 1)
        assert row.progress == {"fps": 30.0}
        assert row.quality == {"a": [1, 2]}
        assert row.timestamps == {"queued": 1001.0, "starting": 2000.0, "recording": 2001.0}
        assert row.request["metadata"] == {"n": 1}
        # The idempotency key is durable too.
        same, created = await again.create(new(2, key="k", fingerprint="f"))
        assert (same.id, created) == ("rec_0001", False)
    finally:
        await again.close()


async def test_wal_mode_and_synchronous_setting(tmp_path: Path):
    s = SQLiteStore(tmp_path / "o.db", synchronous="FULL")
    await s.open()
    try:
        assert s._w is not None
        async with s._w.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"
        async with s._w.execute("PRAGMA synchronous") as cur:
            assert (await cur.fetchone())[0] == 2  # FULL
    finally:
        await s.close()


async def test_transition_is_compare_and_set_on_state_and_lease(store: RecordingStore):
    await store.create(new(1))
    # Wrong current state: nothing happens.
    assert await store.transition("rec_0001", from_states={State.RECORDING}, to=State.FINALIZING, at=1.0) is None
    row = await store.claim_next(worker_id="w", lease_id="L", at=5.0, expires_at=20.0)
    assert row is not None and row.status is State.STARTING
    # Wrong lease: nothing happens.
    assert await store.transition("rec_0001", from_states=ACTIVE, to=State.RECORDING, at=6.0, lease_id="other") is None
    # A lease that has not expired cannot be lapsed.
    assert (
        await store.transition(
            "rec_0001", from_states=ACTIVE, to=State.QUEUED, at=6.0, lease_id="L", lease_expired_before=10.0
        )
        is None
    )
    moved = await store.transition("rec_0001", from_states=ACTIVE, to=State.RECORDING, at=6.0, lease_id="L")
    assert moved is not None and moved.status is State.RECORDING


async def test_concurrent_transitions_have_exactly_one_winner(store: RecordingStore):
    await store.create(new(1))
    results = await asyncio.gather(
        *(
            store.transition("rec_0001", from_states={State.QUEUED}, to=target, at=2.0)
            for target in [State.CANCELLED, State.STARTING] * 5
        )
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert (await store.get("rec_0001")).status is winners[0].status


async def test_concurrent_claims_never_lease_one_recording_twice(store: RecordingStore):
    for n in range(3):
        await store.create(new(n))
    claims = await asyncio.gather(
        *(store.claim_next(worker_id=f"w{i}", lease_id=f"L{i}", at=10.0, expires_at=25.0) for i in range(8))
    )
    got = [c.id for c in claims if c is not None]
    assert sorted(got) == ["rec_0000", "rec_0001", "rec_0002"]


async def test_claims_respect_max_active(store: RecordingStore):
    for n in range(3):
        await store.create(new(n))
    a = await store.claim_next(worker_id="a", lease_id="La", at=1.0, expires_at=2.0, max_active=2)
    b = await store.claim_next(worker_id="b", lease_id="Lb", at=1.0, expires_at=2.0, max_active=2)
    c = await store.claim_next(worker_id="c", lease_id="Lc", at=1.0, expires_at=2.0, max_active=2)
    assert (a.id, b.id, c) == ("rec_0000", "rec_0001", None)
    await store.transition(a.id, from_states=ACTIVE, to=State.COMPLETED, at=3.0, lease_id="La")
    c = await store.claim_next(worker_id="c", lease_id="Lc", at=4.0, expires_at=5.0, max_active=2)
    assert c is not None and c.id == "rec_0002"


async def test_a_lapsed_worker_is_shunned_for_a_while(store: RecordingStore):
    await store.create(new(1))
    await store.claim_next(worker_id="lost", lease_id="L", at=10.0, expires_at=12.0)
    await store.transition(
        "rec_0001",
        from_states=ACTIVE,
        to=State.QUEUED,
        at=13.0,
        lease_id="L",
        changes={"lease_id": None, "avoid_worker": "lost"},
    )
    assert await store.claim_next(worker_id="lost", lease_id="L2", at=14.0, expires_at=30.0, shun_after=12.0) is None
    again = await store.claim_next(worker_id="lost", lease_id="L2", at=16.0, expires_at=30.0, shun_after=14.0)
    assert again is not None and again.attempts == 2


async def test_idempotency_same_fingerprint_returns_it_other_fingerprint_conflicts(store: RecordingStore):
    row, created = await store.create(new(1, key="c:k", fingerprint="f1"))
    assert created
    same, created = await store.create(new(2, key="c:k", fingerprint="f1"))
    assert (same.id, created) == (row.id, False)
    with pytest.raises(IdempotencyConflict) as info:
        await store.create(new(3, key="c:k", fingerprint="f2"))
    assert info.value.existing.id == row.id
    assert await store.get("rec_0003") is None


async def test_keyset_pages_do_not_shift_when_rows_are_added(store: RecordingStore):
    for n in range(10):
        await store.create(new(n))
    page1 = await store.list(None, 4, None)
    assert [r.id for r in page1] == [f"rec_{n:04d}" for n in (9, 8, 7, 6)]
    for n in range(10, 15):
        await store.create(new(n))
    page2 = await store.list(None, 4, page1[-1].seq)
    assert [r.id for r in page2] == [f"rec_{n:04d}" for n in (5, 4, 3, 2)]
    page3 = await store.list(None, 4, page2[-1].seq)
    assert [r.id for r in page3] == ["rec_0001", "rec_0000"]
    await store.transition("rec_0003", from_states={State.QUEUED}, to=State.CANCELLED, at=1.0)
    filtered = await store.list([State.CANCELLED], 10, None)
    assert [r.id for r in filtered] == ["rec_0003"]


async def test_expired_leases_and_restart_extension(store: RecordingStore):
    for n in range(3):
        await store.create(new(n))
    await store.claim_next(worker_id="a", lease_id="La", at=100.0, expires_at=110.0)
    await store.claim_next(worker_id="b", lease_id="Lb", at=100.0, expires_at=130.0)
    expired = await store.expired_leases(now=120.0)
    assert [r.id for r in expired] == ["rec_0000"]
    # After a restart at t=200 every active lease gets until at least t=215.
    assert await store.extend_leases(until=215.0) == 2
    assert await store.expired_leases(now=214.0) == []
    assert {r.id for r in await store.expired_leases(now=216.0)} == {"rec_0000", "rec_0001"}
    counts = await store.count_by_status()
    assert (counts[State.QUEUED], counts[State.STARTING], counts[State.COMPLETED]) == (1, 2, 0)


async def test_only_known_fields_can_change(store: RecordingStore):
    await store.create(new(1))
    with pytest.raises(ValueError, match="status"):
        await store.update("rec_0001", {"status": "completed"})  # type: ignore[typeddict-unknown-key]
    # The failed write left no transaction open.
    assert await store.update("rec_0001", {"requested_action": "stop"}) is not None


def test_every_change_is_a_column_of_the_same_type():
    row = get_type_hints(RecordingRow)
    for name, kind in get_type_hints(Changes).items():
        if name in row:
            assert kind == row[name], name
        else:
            assert name.removesuffix("_at") in STAMPS.names and kind is float, name


async def test_a_store_migrated_from_the_first_version_has_the_table_of_a_new_one(tmp_path: Path):
    with closing(sqlite3.connect(tmp_path / "old.db")) as db:
        db.executescript(f"BEGIN;\n{MIGRATIONS[0]}\nPRAGMA user_version=1;\nCOMMIT;")
    for name in ("old.db", "new.db"):
        store = SQLiteStore(tmp_path / name)
        await store.open()
        await store.close()

    def table(name: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
        with closing(sqlite3.connect(tmp_path / name)) as db:
            columns = db.execute("PRAGMA table_info(recordings)").fetchall()
            indexes = db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name").fetchall()
        return columns, indexes

    assert table("old.db") == table("new.db")
    assert {c[1] for c in table("new.db")[0]} >= set(Changes.__optional_keys__)


async def test_a_failing_write_in_a_group_commit_spoils_only_itself(tmp_path: Path):
    path = tmp_path / "o.db"
    store = SQLiteStore(path)
    await store.open()
    await store.create(new(0, key="taken", fingerprint="f0"))
    results = await asyncio.gather(
        store.create(new(1)),
        store.create(new(2, key="taken", fingerprint="other")),  # idempotency conflict
        store.create(new(1)),  # the same id again: a constraint violation inside the batch
        store.create(new(3)),
        return_exceptions=True,
    )
    await store.close()
    assert isinstance(results[1], IdempotencyConflict)
    assert isinstance(results[2], Exception) and "UNIQUE" in str(results[2])
    assert [r[0].id for r in (results[0], results[3])] == ["rec_0001", "rec_0003"]

    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        ids = [r.id for r in await reopened.list(None, 10, None)]
        assert ids == ["rec_0003", "rec_0001", "rec_0000"], "the good writes of the batch were committed"
    finally:
        await reopened.close()


# -- the webhook outbox and worker presence, on both stores ------------------------------------------------


def events_for(*kinds: str, url: str = "http://93.184.215.14/hook") -> Callable[[RecordingRow], list[OutboxEvent]]:
    """An `emit` rendering one event per kind for the row as written (ids name the row's status)."""
    destination = url.split("/")[2]

    def emit(row: RecordingRow) -> list[OutboxEvent]:
        at = row.updated_at
        return [
            OutboxEvent(
                id=f"evt_{row.id}_{row.status.value}_{kind}",
                recording_id=row.id,
                owner=row.owner,
                url=url,
                destination=destination,
                payload=f'{{"type":"{kind}","status":"{row.status.value}"}}',
                created_at=at,
                expires_at=at + 3600.0,
            )
            for kind in kinds
        ]

    return emit


def refusing(row: RecordingRow) -> Sequence[OutboxEvent]:
    raise RuntimeError(f"cannot render the event of {row.id}")


async def event_ids(store: RecordingStore, recording_id: str) -> list[str]:
    return [event.id for event, _ in await store.deliveries(recording_id)]


async def test_events_are_written_by_the_transaction_of_their_change(store: RecordingStore):
    row, created = await store.create(new(1, key="k", fingerprint="f"), emit=events_for("created"))
    assert created and await event_ids(store, row.id) == ["evt_rec_0001_queued_created"]
    # An idempotent create that returns the existing row emits nothing.
    _, created = await store.create(new(2, key="k", fingerprint="f"), emit=events_for("again"))
    assert not created and await event_ids(store, row.id) == ["evt_rec_0001_queued_created"]
    # A guard that fails writes no event.
    assert (
        await store.transition(
            row.id, from_states={State.RECORDING}, to=State.FAILED, at=2000.0, emit=events_for("failed")
        )
        is None
    )
    # An emit that raises rolls the whole transition back.
    with pytest.raises(RuntimeError, match="cannot render"):
        await store.transition(row.id, from_states={State.QUEUED}, to=State.CANCELLED, at=2001.0, emit=refusing)
    after = await store.get(row.id)
    assert after is not None and after.status is State.QUEUED and State.CANCELLED.value not in after.timestamps
    assert await event_ids(store, row.id) == ["evt_rec_0001_queued_created"]
    # A claim emits in its own transaction too, with the row as claimed.
    claimed = await store.claim_next(worker_id="w", lease_id="L", at=2002.0, expires_at=2020.0, emit=events_for("s"))
    assert claimed is not None
    assert await event_ids(store, row.id) == ["evt_rec_0001_queued_created", "evt_rec_0001_starting_s"]
    # A create whose emit raises leaves no row behind.
    with pytest.raises(RuntimeError):
        await store.create(new(3), emit=refusing)
    assert await store.get("rec_0003") is None


async def test_a_recordings_events_come_due_in_order(store: RecordingStore):
    await store.create(new(1), emit=events_for("a", "b"))
    await store.create(new(2), emit=events_for("c"))
    due = await store.due_deliveries(now=5000.0, limit=10)
    # rec_0001's second event is held while its first is pending; rec_0002's is due beside it.
    assert [d.id for d in due] == ["evt_rec_0001_queued_a", "evt_rec_0002_queued_c"]
    assert due[0].status is DeliveryStatus.PENDING and due[0].next_attempt_at == 1001.0
    assert await store.next_delivery_at() == 1001.0
    # In flight elsewhere: skipped, and what it holds stays held.
    skipped = await store.due_deliveries(now=5000.0, limit=10, skip=["evt_rec_0001_queued_a"])
    assert [d.id for d in skipped] == ["evt_rec_0002_queued_c"]
    # Not due yet before its time; limit is honoured.
    assert await store.due_deliveries(now=1000.5, limit=10) == []
    assert len(await store.due_deliveries(now=5000.0, limit=1)) == 1
    delivered = await store.record_attempt(
        DeliveryAttempt("evt_rec_0001_queued_a", 1, at=1002.0, latency=0.25, status_code=200, error=None),
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=None,
    )
    assert delivered is not None and delivered.status is DeliveryStatus.DELIVERED
    due = await store.due_deliveries(now=5000.0, limit=10)
    assert [d.id for d in due] == ["evt_rec_0001_queued_b", "evt_rec_0002_queued_c"]


async def test_attempts_are_numbered_by_the_store_and_a_redelivery_in_flight_stands(store: RecordingStore):
    await store.create(new(1), emit=events_for("x"))
    (event,) = await store.due_deliveries(now=5000.0, limit=10)
    # Two attempts that overlap (a deposed leader's and the new one's) both claim number 1: both are logged.
    for at in (1100.0, 1101.0):
        await store.record_attempt(
            DeliveryAttempt(event.id, 1, at=at, latency=0.1, status_code=503, error="HTTP 503"),
            status=DeliveryStatus.PENDING,
            next_attempt_at=1200.0,
        )
    ((stored, attempts),) = await store.deliveries(event.recording_id)
    assert [a.number for a in attempts] == [1, 2] and stored.attempts == 2
    # A redelivery while an attempt is out asks for "now": the attempt's backoff must not push it back.
    await store.redeliver(event.id, at=1300.0, expires_at=9000.0)
    again = await store.record_attempt(
        DeliveryAttempt(event.id, 3, at=1250.0, latency=0.1, status_code=503, error="HTTP 503"),
        status=DeliveryStatus.PENDING,
        next_attempt_at=1900.0,
    )
    assert again is not None and again.next_attempt_at == 1300.0
    # Without a redelivery meanwhile, the backoff is what stands; a final status clears the time.
    later = await store.record_attempt(
        DeliveryAttempt(event.id, 4, at=1310.0, latency=0.1, status_code=503, error="HTTP 503"),
        status=DeliveryStatus.PENDING,
        next_attempt_at=1900.0,
    )
    assert later is not None and later.next_attempt_at == 1900.0
    await store.redeliver(event.id, at=1950.0, expires_at=9000.0)
    done = await store.record_attempt(
        DeliveryAttempt(event.id, 5, at=1920.0, latency=0.1, status_code=204, error=None),
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=None,
    )
    assert done is not None and done.status is DeliveryStatus.DELIVERED and done.next_attempt_at is None


async def test_the_next_due_time_leaves_out_what_is_in_flight_or_held(store: RecordingStore):
    await store.create(new(1), emit=events_for("a", "b"))
    await store.create(new(2), emit=events_for("c", url="http://93.184.215.15/up"))
    # rec_0001's "a" is in flight, its "b" held behind it; rec_0002's "c" is the next thing startable.
    assert await store.next_delivery_at(skip=["evt_rec_0001_queued_a"]) == 1002.0
    assert await store.next_delivery_at(skip=["evt_rec_0001_queued_a"], full=["93.184.215.15"]) is None
    assert await store.next_delivery_at() == 1001.0


async def test_a_full_destination_never_crowds_another_out_of_the_batch(store: RecordingStore):
    for n in range(1, 6):
        await store.create(new(n), emit=events_for("x", url="http://93.184.215.14:81/down"))
    await store.create(new(9), emit=events_for("x", url="http://93.184.215.15/up"))
    # Oldest due first: the busy receiver's five events fill a batch of three.
    assert {d.destination for d in await store.due_deliveries(now=5000.0, limit=3)} == {"93.184.215.14:81"}
    # With that destination full, the other's event is what the batch holds.
    due = await store.due_deliveries(now=5000.0, limit=3, full=["93.184.215.14:81"])
    assert [d.id for d in due] == ["evt_rec_0009_queued_x"]


async def test_an_attempt_sets_where_its_event_stands_only_while_pending(store: RecordingStore):
    await store.create(new(1), emit=events_for("a", "b", "c"))
    a, b, c = (f"evt_rec_0001_queued_{k}" for k in "abc")

    again = await store.record_attempt(
        DeliveryAttempt(a, 1, at=1010.0, latency=1.5, status_code=503, error="HTTP 503"),
        status=DeliveryStatus.PENDING,
        next_attempt_at=1100.0,
    )
    assert again is not None
    assert (again.status, again.attempts, again.next_attempt_at, again.last_error, again.delivered_at) == (
        DeliveryStatus.PENDING,
        1,
        1100.0,
        "HTTP 503",
        None,
    )
    done = await store.record_attempt(
        DeliveryAttempt(a, 2, at=1100.0, latency=0.5, status_code=204, error=None),
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=None,
    )
    assert done is not None
    assert (done.status, done.attempts, done.next_attempt_at, done.delivered_at) == (
        DeliveryStatus.DELIVERED,
        2,
        None,
        1100.5,
    )
    # Once it is not pending, an attempt is logged but changes nothing.
    late = await store.record_attempt(
        DeliveryAttempt(a, 3, at=1200.0, latency=0.1, status_code=500, error="HTTP 500"),
        status=DeliveryStatus.FAILED,
        next_attempt_at=None,
    )
    assert late is None
    assert (await store.get_delivery(a)).status is DeliveryStatus.DELIVERED
    given_up = await store.record_attempt(
        DeliveryAttempt(b, 1, at=1300.0, latency=10.0, status_code=None, error="timed out"),
        status=DeliveryStatus.FAILED,
        next_attempt_at=2000.0,  # ignored: only a pending event has a next attempt
    )
    assert given_up is not None and given_up.status is DeliveryStatus.FAILED and given_up.next_attempt_at is None
    # No such event: nothing logged, nothing answered.
    assert (
        await store.record_attempt(
            DeliveryAttempt("evt_missing", 1, at=1.0, latency=0.1, status_code=200, error=None),
            status=DeliveryStatus.DELIVERED,
            next_attempt_at=None,
        )
        is None
    )
    log = {event.id: attempts for event, attempts in await store.deliveries("rec_0001")}
    assert [(x.number, x.status_code, x.error) for x in log[a]] == [
        (1, 503, "HTTP 503"),
        (2, 204, None),
        (3, 500, "HTTP 500"),
    ]
    assert [(x.number, x.latency, x.status_code) for x in log[b]] == [(1, 10.0, None)]
    assert log[c] == []
    assert await store.get_delivery("evt_missing") is None


async def test_redelivery_makes_an_event_pending_again_and_keeps_its_attempts(store: RecordingStore):
    await store.create(new(1), emit=events_for("a"))
    event_id = "evt_rec_0001_queued_a"
    await store.record_attempt(
        DeliveryAttempt(event_id, 1, at=1010.0, latency=0.2, status_code=410, error="HTTP 410"),
        status=DeliveryStatus.FAILED,
        next_attempt_at=None,
    )
    assert await store.due_deliveries(now=9999.0, limit=10) == []
    again = await store.redeliver(event_id, at=5000.0, expires_at=8600.0)
    assert again is not None
    assert (again.status, again.next_attempt_at, again.expires_at, again.attempts) == (
        DeliveryStatus.PENDING,
        5000.0,
        8600.0,
        1,
    )
    assert [d.id for d in await store.due_deliveries(now=5000.0, limit=10)] == [event_id]
    (_, attempts), *_ = await store.deliveries("rec_0001")
    assert [a.number for a in attempts] == [1]
    assert await store.redeliver("evt_missing", at=1.0, expires_at=2.0) is None


async def test_backlog_is_counted_per_destination(store: RecordingStore):
    await store.create(new(1), emit=events_for("a", "b", url="http://93.184.215.14:8443/hook"))
    await store.create(new(2), emit=events_for("c", url="http://198.51.100.7/x"))
    await store.create(new(3), emit=events_for("d", url="http://198.51.100.7/y"))
    await store.record_attempt(
        DeliveryAttempt("evt_rec_0002_queued_c", 1, at=1010.0, latency=0.1, status_code=200, error=None),
        status=DeliveryStatus.DELIVERED,
        next_attempt_at=None,
    )
    backlog = await store.delivery_backlog()
    assert [(b.destination, b.pending, b.oldest_created_at) for b in backlog] == [
        ("198.51.100.7", 1, 1003.0),
        ("93.184.215.14:8443", 2, 1001.0),
    ]


async def test_deleting_a_recording_takes_its_events_and_attempts(store: RecordingStore):
    await store.create(new(1), emit=events_for("a"))
    await store.create(new(2), emit=events_for("a"))
    await store.record_attempt(
        DeliveryAttempt("evt_rec_0001_queued_a", 1, at=1010.0, latency=0.1, status_code=500, error="HTTP 500"),
        status=DeliveryStatus.PENDING,
        next_attempt_at=1020.0,
    )
    assert not await store.delete("rec_0001", {State.COMPLETED}), "still queued: not deleted"
    assert await event_ids(store, "rec_0001") == ["evt_rec_0001_queued_a"]
    assert await store.delete("rec_0001", {State.QUEUED})
    assert await store.get("rec_0001") is None
    assert await store.deliveries("rec_0001") == []
    assert await store.get_delivery("evt_rec_0001_queued_a") is None
    # The attempt went too: an event made again under the same id starts with an empty log.
    await store.create(NewRecording(**{**new(1).__dict__, "id": "rec_0001"}), emit=events_for("a"))
    (_, attempts), *_ = await store.deliveries("rec_0001")
    assert attempts == []
    assert await event_ids(store, "rec_0002") == ["evt_rec_0002_queued_a"], "another recording's events stay"


async def test_workers_are_seen_and_a_retiring_one_gets_nothing(store: RecordingStore):
    for n in range(2):
        await store.create(new(n))
    assert not await store.retire_worker("w1"), "never seen"
    await store.worker_seen("w1", at=10.0, browser_sandbox=True)
    await store.worker_seen("w1", at=12.0)  # a None sandbox keeps the known one
    await store.worker_seen("w1", at=11.0)  # late news does not move last_seen back
    await store.worker_seen("w2", at=13.0, browser_sandbox=False)
    seen = await store.workers_seen()
    assert [(w.worker_id, w.first_seen, w.last_seen, w.retiring, w.browser_sandbox) for w in seen] == [
        ("w1", 10.0, 12.0, False, True),
        ("w2", 13.0, 13.0, False, False),
    ]
    assert await store.retire_worker("w1")
    assert await store.claim_next(worker_id="w1", lease_id="L1", at=20.0, expires_at=30.0) is None
    assert (await store.get("rec_0000")).status is State.QUEUED
    claimed = await store.claim_next(worker_id="w2", lease_id="L2", at=20.0, expires_at=30.0)
    assert claimed is not None and claimed.worker == "w2"
    assert [w.retiring for w in await store.workers_seen()] == [True, False]
    await store.forget_worker("w1")
    assert [w.worker_id for w in await store.workers_seen()] == ["w2"]
    # Forgotten, it is a worker never seen: it may lease again.
    again = await store.claim_next(worker_id="w1", lease_id="L3", at=21.0, expires_at=31.0)
    assert again is not None and again.id == "rec_0001"


async def test_ended_before_pages_through_what_ended_and_can_keep_to_local_files(store: RecordingStore):
    for n in range(4):
        bucket = "b" if n == 2 else None
        await store.create(NewRecording(**{**new(n).__dict__, "upload": {"bucket": bucket, "prefix": ""}}))
    await store.create(NewRecording(**{**new(4).__dict__, "upload": {"prefix": ""}}))  # no bucket key at all
    for n, state, at in ((0, State.CANCELLED, 50.0), (2, State.CANCELLED, 60.0), (3, State.CANCELLED, 500.0)):
        await store.transition(f"rec_{n:04d}", from_states={State.QUEUED}, to=state, at=at)
    await store.transition("rec_0004", from_states={State.QUEUED}, to=State.FAILED, at=70.0)
    ended = {State.CANCELLED, State.FAILED}
    everything = await store.ended_before(100.0, ended, local_only=False)
    assert [r.id for r in everything] == ["rec_0000", "rec_0002", "rec_0004"]
    local = await store.ended_before(100.0, ended, local_only=True)
    assert [r.id for r in local] == ["rec_0000", "rec_0004"]
    page = await store.ended_before(100.0, ended, local_only=False, after_seq=everything[0].seq, limit=1)
    assert [r.id for r in page] == ["rec_0002"]
    assert await store.ended_before(100.0, (), local_only=False) == []


# -- PostgreSQL alone: several replicas on one database ----------------------------------------------------


async def test_replicas_opening_an_empty_database_at_once_apply_each_migration_once(postgres_dsn: str):
    replicas = [PostgresStore(postgres_dsn, pool_size=2) for _ in range(4)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))
        assert replicas[0]._pool is not None
        rows = await replicas[0]._pool.fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, len(POSTGRES_MIGRATIONS) + 1))
        tables = await replicas[0]._pool.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name"
        )
        assert [t["table_name"] for t in tables] == [
            "recordings",
            "schema_migrations",
            "webhook_attempts",
            "webhook_events",
            "workers",
        ]
        # Every column the row declares is there, so a write of every field round-trips.
        row, _ = await replicas[1].create(new(1))
        assert await replicas[2].get(row.id) == row
    finally:
        for r in replicas:
            await r.close()


async def test_a_store_from_a_newer_version_is_refused_with_a_message(postgres_dsn: str):
    first = PostgresStore(postgres_dsn)
    await first.open()
    assert first._pool is not None
    await first._pool.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (99, 0)")
    await first.close()
    with pytest.raises(RuntimeError, match="schema version 99, newer than this orchestrator knows"):
        await PostgresStore(postgres_dsn).open()


async def test_an_unreachable_server_is_named_without_its_password(postgres_server):
    dsn = f"postgresql://postgres:hunter2secret@127.0.0.1:{postgres_server.port}/no_such_database"
    with pytest.raises(RuntimeError) as info:
        await PostgresStore(dsn).open()
    assert "no_such_database" in str(info.value) and "hunter2secret" not in str(info.value)
    assert "hunter2secret" not in repr(PostgresStore(dsn))


async def test_two_replicas_claim_every_recording_exactly_once(postgres_dsn: str):
    replicas = [PostgresStore(postgres_dsn, pool_size=10) for _ in range(2)]
    for r in replicas:
        await r.open()
    try:
        for n in range(200):
            await replicas[n % 2].create(new(n))
        claimed: list[tuple[str, str]] = []

        async def claimer(replica: PostgresStore, name: str) -> None:
            while True:
                row = await replica.claim_next(
                    worker_id=name, lease_id=f"L-{name}-{len(claimed)}", at=5000.0, expires_at=5100.0
                )
                if row is None:
                    if (await replica.count_by_status())[State.QUEUED] == 0:
                        return
                    continue
                claimed.append((row.id, name))

        await asyncio.gather(*(claimer(r, f"w{i}-{t}") for i, r in enumerate(replicas) for t in range(10)))
        ids = [rid for rid, _ in claimed]
        assert len(ids) == 200 and len(set(ids)) == 200, "each recording claimed exactly once"
        counts = await replicas[0].count_by_status()
        assert (counts[State.QUEUED], counts[State.STARTING]) == (0, 200)
        assert {name[:2] for _, name in claimed} == {"w0", "w1"}, "both replicas claimed"
    finally:
        for r in replicas:
            await r.close()


async def test_max_active_holds_across_replicas(postgres_dsn: str):
    replicas = [PostgresStore(postgres_dsn, pool_size=10) for _ in range(2)]
    for r in replicas:
        await r.open()
    try:
        for n in range(200):
            await replicas[n % 2].create(new(n))
        # Counted after a claim commits and before its completion starts, so never above the true number.
        active = 0
        most = 0
        done = 0

        async def claimer(replica: PostgresStore, name: str) -> None:
            nonlocal active, most, done
            while done < 200:
                row = await replica.claim_next(
                    worker_id=name, lease_id=f"L-{name}-{done}", at=5000.0, expires_at=5100.0, max_active=5
                )
                if row is None:
                    await asyncio.sleep(0.001)
                    continue
                active += 1
                most = max(most, active)
                await asyncio.sleep(0.002)
                active -= 1
                finished = await replica.transition(
                    row.id, from_states=ACTIVE, to=State.COMPLETED, at=5001.0, lease_id=row.lease_id
                )
                assert finished is not None
                done += 1

        await asyncio.gather(*(claimer(r, f"w{i}-{t}") for i, r in enumerate(replicas) for t in range(10)))
        assert most <= 5, f"{most} recordings were active at once with max_active=5"
        assert most >= 2, "the claims ran concurrently"
        counts = await replicas[1].count_by_status()
        assert counts[State.COMPLETED] == 200
    finally:
        for r in replicas:
            await r.close()


async def test_a_retire_waits_for_a_claim_in_flight_so_none_commits_after_it(
    postgres_server: PostgresServer,
    postgres_dsn: str,
):
    """The claim's read of the worker row and its commit must not straddle a retire's commit."""
    database = postgres_dsn.rsplit("/", 1)[1]
    claimer = PostgresStore(postgres_dsn, pool_size=2)
    await claimer.open()
    try:
        await claimer.create(new(1))
        await claimer.worker_seen("w", at=1.0)
        seen: dict[str, Any] = {}

        def retire_elsewhere() -> None:
            async def retire() -> None:
                other = PostgresStore(postgres_dsn, pool_size=1)
                await other.open()
                try:
                    seen["retired"] = await other.retire_worker("w")
                finally:
                    await other.close()

            asyncio.run(retire())

        def emit(row: RecordingRow) -> list[OutboxEvent]:
            # Inside the claim's transaction, after it read the worker's row: another replica retires now.
            thread = threading.Thread(target=retire_elsewhere)
            thread.start()
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline and thread.is_alive():
                waiting = postgres_server.psql("SELECT count(*) FROM pg_locks WHERE NOT granted", database).strip()
                if waiting != "0":
                    break
                time.sleep(0.02)
            seen["blocked"] = thread.is_alive()
            seen["thread"] = thread
            return []

        claimed = await claimer.claim_next(worker_id="w", lease_id="L", at=5.0, expires_at=20.0, emit=emit)
        seen["thread"].join(timeout=30)
        assert claimed is not None
        assert seen["blocked"], "the retire committed while a claim that had read the worker was still open"
        assert seen.get("retired") is True
        await claimer.create(new(2))
        assert await claimer.claim_next(worker_id="w", lease_id="L2", at=6.0, expires_at=20.0) is None
    finally:
        await claimer.close()


# -- choosing the store ----------------------------------------------------------------------------------


def test_orchestrator_db_chooses_the_store(tmp_path: Path):
    sqlite = OrchestratorSettings(db=tmp_path / "o.db")
    assert isinstance(open_store(sqlite), SQLiteStore) and not sqlite.replicated and sqlite.db_url is None
    dsn = "postgresql://farm:s3cret-pw@db.internal:5433/farm"
    postgres = OrchestratorSettings(db=dsn, db_pool_size=7)
    store = open_store(postgres)
    assert isinstance(store, PostgresStore) and store.pool_size == 7
    assert postgres.replicated and postgres.db_url == dsn
    assert postgres.db_label == "postgresql://farm:***@db.internal:5433/farm"
    assert OrchestratorSettings(db="postgres://db.internal/farm?password=x1&sslmode=require").db_label == (
        "postgres://db.internal/farm?password=***&sslmode=require"
    )


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("postgresql://farm:s3cret-pw@db.internal:notaport/farm", "not a valid DSN"),
        ("postgresql://farm:s3cret-pw@/farm", "names no server"),
        ("mysql://farm:s3cret-pw@db.internal/farm", "neither a SQLite file path nor a PostgreSQL DSN"),
    ],
)
def test_a_bad_dsn_is_refused_at_start_saying_what_to_fix(value: str, says: str):
    with pytest.raises(ValueError) as info:
        OrchestratorSettings(db=value)
    message = "\n".join(str(e["msg"]) for e in info.value.errors())  # type: ignore[attr-defined]
    assert says in message and "s3cret-pw" not in message
