"""The SQLite store on its own: durability across reopen, compare-and-set transitions, keyset cursor,
idempotency, atomic claims and lease queries."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import get_type_hints

import pytest

from orchestrator.states import ACTIVE, State
from orchestrator.store import Changes, IdempotencyConflict, NewRecording, RecordingRow, SQLiteStore
from orchestrator.store.row import STAMPS
from orchestrator.store.schema import MIGRATIONS


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


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "db" / "orchestrator.db")
    await s.open()
    yield s
    await s.close()


async def test_everything_survives_a_reopen(tmp_path: Path):
    path = tmp_path / "orchestrator.db"
    first = SQLiteStore(path)
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

    again = SQLiteStore(path)
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


async def test_transition_is_compare_and_set_on_state_and_lease(store: SQLiteStore):
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


async def test_concurrent_transitions_have_exactly_one_winner(store: SQLiteStore):
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


async def test_concurrent_claims_never_lease_one_recording_twice(store: SQLiteStore):
    for n in range(3):
        await store.create(new(n))
    claims = await asyncio.gather(
        *(store.claim_next(worker_id=f"w{i}", lease_id=f"L{i}", at=10.0, expires_at=25.0) for i in range(8))
    )
    got = [c.id for c in claims if c is not None]
    assert sorted(got) == ["rec_0000", "rec_0001", "rec_0002"]


async def test_claims_respect_max_active(store: SQLiteStore):
    for n in range(3):
        await store.create(new(n))
    a = await store.claim_next(worker_id="a", lease_id="La", at=1.0, expires_at=2.0, max_active=2)
    b = await store.claim_next(worker_id="b", lease_id="Lb", at=1.0, expires_at=2.0, max_active=2)
    c = await store.claim_next(worker_id="c", lease_id="Lc", at=1.0, expires_at=2.0, max_active=2)
    assert (a.id, b.id, c) == ("rec_0000", "rec_0001", None)
    await store.transition(a.id, from_states=ACTIVE, to=State.COMPLETED, at=3.0, lease_id="La")
    c = await store.claim_next(worker_id="c", lease_id="Lc", at=4.0, expires_at=5.0, max_active=2)
    assert c is not None and c.id == "rec_0002"


async def test_a_lapsed_worker_is_shunned_for_a_while(store: SQLiteStore):
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


async def test_idempotency_same_fingerprint_returns_it_other_fingerprint_conflicts(store: SQLiteStore):
    row, created = await store.create(new(1, key="c:k", fingerprint="f1"))
    assert created
    same, created = await store.create(new(2, key="c:k", fingerprint="f1"))
    assert (same.id, created) == (row.id, False)
    with pytest.raises(IdempotencyConflict) as info:
        await store.create(new(3, key="c:k", fingerprint="f2"))
    assert info.value.existing.id == row.id
    assert await store.get("rec_0003") is None


async def test_keyset_pages_do_not_shift_when_rows_are_added(store: SQLiteStore):
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


async def test_expired_leases_and_restart_extension(store: SQLiteStore):
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


async def test_only_known_fields_can_change(store: SQLiteStore):
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
