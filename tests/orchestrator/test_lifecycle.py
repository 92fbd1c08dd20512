"""A state change and its event are one call: announced once, only when the compare-and-set applied, and
only after the commit, so a listener reading the store already sees the new state."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from orchestrator.events import EventBus, StateChange
from orchestrator.lifecycle import Lifecycle
from orchestrator.states import State
from orchestrator.store import Changes, NewRecording, SQLiteStore


class Listener:
    """Records each change, and the state the database held for it when it was announced (read on a
    connection of its own, which sees committed writes only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: list[tuple[State | None, State, float, str]] = []

    def __call__(self, change: StateChange) -> None:
        with closing(sqlite3.connect(self.path)) as db:
            (stored,) = db.execute("SELECT status FROM recordings WHERE id = ?", (change.recording.id,)).fetchone()
        self.seen.append((change.old, change.new, change.at, stored))


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "orchestrator.db")
    await s.open()
    yield s
    await s.close()


@pytest.fixture
def listener(store: SQLiteStore) -> Listener:
    return Listener(store.path)


@pytest.fixture
def lifecycle(store: SQLiteStore, listener: Listener) -> Lifecycle:
    bus = EventBus()
    bus.subscribe(listener)
    return Lifecycle(store, bus)


def new(rid: str = "rec_1", at: float = 100.0) -> NewRecording:
    return NewRecording(
        id=rid,
        request={"url": "http://93.184.215.14/"},
        spec={"url": "http://93.184.215.14/", "duration": 60.0},
        upload={"bucket": None, "prefix": ""},
        created_at=at,
        idempotency_key="c:k",
        fingerprint="f",
    )


async def test_each_change_is_announced_once_after_its_commit(lifecycle: Lifecycle, listener: Listener):
    assert (await lifecycle.create(new()))[1] is True
    assert (await lifecycle.create(new("rec_2", at=101.0)))[1] is False, "an idempotent repeat changes nothing"
    claimed = await lifecycle.claim(worker_id="w", lease_id="L", at=110.0, expires_at=125.0)
    assert claimed is not None
    recording = await lifecycle.move(claimed, State.RECORDING, at=111.0, changes=Changes(last_heartbeat_at=111.0))
    assert recording is not None and recording.last_heartbeat_at == 111.0
    assert listener.seen == [
        (None, State.QUEUED, 100.0, "queued"),
        (State.QUEUED, State.STARTING, 110.0, "starting"),
        (State.STARTING, State.RECORDING, 111.0, "recording"),
    ]


async def test_a_move_that_does_not_apply_writes_and_announces_nothing(
    store: SQLiteStore, lifecycle: Lifecycle, listener: Listener
):
    await lifecycle.create(new())
    claimed = await lifecycle.claim(worker_id="w", lease_id="L", at=110.0, expires_at=125.0)
    assert claimed is not None
    moved = await lifecycle.move(claimed, State.RECORDING, at=111.0)
    assert moved is not None
    before = listener.seen[:]

    # Read before someone else moved it: still starting, as far as the caller knows.
    assert await lifecycle.move(claimed, State.FINALIZING, at=112.0) is None
    # Under a lease that is no longer the recording's.
    other = await store.update(moved.id, Changes(lease_id="L2"))
    assert other is not None
    assert await lifecycle.move(moved, State.FAILED, at=113.0) is None
    # Not an edge of the state machine, whatever the caller allows.
    assert await lifecycle.move(other, State.STARTING, at=114.0, from_states=set(State)) is None
    # A lease that has not lapsed cannot be lapsed.
    assert await lifecycle.move(other, State.QUEUED, at=115.0, lease_expired_before=120.0) is None

    assert listener.seen == before
    row = await store.get(moved.id)
    assert row is not None and (row.status, row.updated_at) == (State.RECORDING, 111.0)


async def test_concurrent_moves_announce_only_the_winner(lifecycle: Lifecycle, listener: Listener):
    queued, _ = await lifecycle.create(new())
    results = await asyncio.gather(
        *(lifecycle.move(queued, State.CANCELLED, at=float(n)) for n in range(5)),
        lifecycle.claim(worker_id="w", lease_id="L", at=9.0, expires_at=20.0),
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert len(listener.seen) == 2 and listener.seen[1][1] is winners[0].status
