"""The `recordings` table, derived from the columns `RecordingRow` declares.

The migrations, the encoding of values written and the mapping of a result row back to a
`RecordingRow` all come from those declarations, so a column cannot be added to one and forgotten in
another. A migration is what its version added: the columns declared with that `since`, then its steps.

The declarations are written in SQLite's words; PostgreSQL's migrations are the same scripts translated
(`postgres_sql`), so a column or table is added once for both stores. Values are encoded the same way on
both (JSON as text, flags as 0/1, states by name), and the readers take any row indexed by column name
(sqlite3.Row, asyncpg.Record), so one codec serves both.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import astuple, dataclass, fields
from types import NoneType, UnionType
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from orchestrator.states import State
from orchestrator.store.outbox import Delivery, DeliveryAttempt, DeliveryStatus, OutboxEvent
from orchestrator.store.presence import WorkerPresence
from orchestrator.store.row import Changes, RecordingRow, Stamps

_Codec = Callable[[Any], Any]
T = TypeVar("T")
# A result row indexed by column name: sqlite3.Row or asyncpg.Record.
_Reader = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


@dataclass(frozen=True)
class _Column:
    name: str
    sql: str
    since: int
    load: _Codec = _same
    dump: _Codec = _same

    def read(self, r: Any) -> Any:
        value = r[self.name]
        return None if value is None else self.load(value)

    def write(self, value: Any) -> Any:
        return None if value is None else self.dump(value)


def _codec(hint: Any) -> tuple[_Codec, _Codec]:
    """How a value of a field's type is kept: dicts as JSON text, flags as 0/1, states by name."""
    kind = next(a for a in get_args(hint) if a is not NoneType) if isinstance(hint, UnionType) else hint
    if get_origin(kind) is dict:
        return json.loads, _json
    if kind is bool:
        return bool, int
    if kind is State:
        return State, str
    return _same, _same


def _fields() -> Iterator[tuple[str, _Reader, list[_Column]]]:
    """Each field of `RecordingRow`: how it is read back from a result row, and the columns it spans."""
    hints = get_type_hints(RecordingRow, include_extras=True)
    for field in fields(RecordingRow):
        declared = hints[field.name].__metadata__[0]
        if isinstance(declared, Stamps):
            stamps = {name: _Column(f"{name}_at", declared.sql, declared.since_of(name)) for name in declared.names}

            def read(r: Any, stamps: dict[str, _Column] = stamps) -> dict[str, float]:
                return {name: value for name, column in stamps.items() if (value := column.read(r)) is not None}

            yield field.name, read, list(stamps.values())
        else:
            column = _Column(field.name, declared.sql, declared.since, *_codec(hints[field.name].__origin__))
            yield field.name, column.read, [column]


_FIELDS = list(_fields())
_READERS = {name: read for name, read, _ in _FIELDS}
_COLUMNS = {column.name: column for _, _, columns in _FIELDS for column in columns}

# What each schema version did besides adding its columns.
_STEPS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE INDEX recordings_status_seq ON recordings (status, seq);",
        "CREATE INDEX recordings_lease_id ON recordings (lease_id);",
    ),
    # Callers became tenants and files gained an attempt folder. Rows from before keep owner NULL (only
    # the admin token sees them) and are marked legacy, so their media is still found where it was put.
    2: (
        "UPDATE recordings SET legacy_layout = 1;",
        "CREATE INDEX recordings_owner_seq ON recordings (owner, seq);",
    ),
}
# Version 5 (a control plane that survives) added the webhook outbox's two tables and the workers seen by
# every orchestrator on the store: rows from before have no events, which is what they had after a
# restart anyway.
_STEPS[5] = (
    """CREATE TABLE webhook_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    recording_id TEXT NOT NULL,
    owner TEXT,
    url TEXT NOT NULL,
    destination TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    delivered_at REAL,
    last_error TEXT
);""",
    "CREATE INDEX webhook_events_due ON webhook_events (status, next_attempt_at);",
    "CREATE INDEX webhook_events_recording ON webhook_events (recording_id, seq);",
    """CREATE TABLE webhook_attempts (
    event_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    at REAL NOT NULL,
    latency REAL NOT NULL,
    status_code INTEGER,
    error TEXT,
    PRIMARY KEY (event_id, number)
);""",
    # Workers as all orchestrators on the store see them (orchestrator.store.presence).
    """CREATE TABLE workers (
    worker_id TEXT PRIMARY KEY,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    retiring INTEGER NOT NULL DEFAULT 0,
    browser_sandbox INTEGER
);""",
)
# Version 6 (timelines) only added the `timeline_location` column: rows from before have no timeline.
# Version 3 (meetings) only added columns: the `waiting` stamp, pause wished and actual, the stop reason
# and the failure screenshot. Rows from before read as never waited, not paused, without either.
# Version 4 (retention) only added the `purged` stamp: rows from before were never purged.


def _migration(version: int) -> str:
    added = [f"{c.name} {c.sql}" for c in _COLUMNS.values() if c.since == version]
    if version == 1:
        table = ["CREATE TABLE recordings (\n    " + ",\n    ".join(added) + "\n);"]
    else:
        table = [f"ALTER TABLE recordings ADD COLUMN {column};" for column in added]
    return "\n".join([*table, *_STEPS.get(version, ())])


# The script of each schema version, in order: PRAGMA user_version counts how many a store has run.
MIGRATIONS = [_migration(v) for v in range(1, max(*_STEPS, *(c.since for c in _COLUMNS.values())) + 1)]

# SQLite's type words and what PostgreSQL calls them. INTEGER stays INTEGER except as the row id, whose
# sequence must outlive 2^31 inserts; REAL (8 bytes in SQLite) is PostgreSQL's DOUBLE PRECISION.
_POSTGRES_WORDS = (
    (re.compile(r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b"), "BIGSERIAL PRIMARY KEY"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
)


def postgres_sql(script: str) -> str:
    """A migration script in SQLite's words, as PostgreSQL runs it."""
    for pattern, replacement in _POSTGRES_WORDS:
        script = pattern.sub(replacement, script)
    return script


# The same versions for PostgreSQL, where the `schema_migrations` table records which ran.
POSTGRES_MIGRATIONS = [postgres_sql(script) for script in MIGRATIONS]


def to_row(r: Any) -> RecordingRow:
    return RecordingRow(**{name: read(r) for name, read in _READERS.items()})


# The columns of a new outbox event: its fields, then where its delivery stands (pending, due at once).
EVENT_COLUMNS = (*(f.name for f in fields(OutboxEvent)), "status", "next_attempt_at")
ATTEMPT_COLUMNS = tuple(f.name for f in fields(DeliveryAttempt))


def event_values(event: OutboxEvent) -> tuple[Any, ...]:
    """A new event's values for EVENT_COLUMNS: pending, due at once."""
    return (*astuple(event), DeliveryStatus.PENDING.value, event.created_at)


def attempt_values(attempt: DeliveryAttempt) -> tuple[Any, ...]:
    return astuple(attempt)


def _read(cls: type[T], r: Any, **converted: Any) -> T:
    """A dataclass from a result row whose columns carry its fields' names; `converted` overrides."""
    return cls(**{f.name: r[f.name] for f in fields(cls)} | converted)


def to_delivery(r: Any) -> Delivery:
    return _read(Delivery, r, status=DeliveryStatus(r["status"]))


def to_presence(r: Any) -> WorkerPresence:
    sandbox = None if r["browser_sandbox"] is None else bool(r["browser_sandbox"])
    return _read(WorkerPresence, r, retiring=bool(r["retiring"]), browser_sandbox=sandbox)


def to_attempt(r: Any) -> DeliveryAttempt:
    return _read(DeliveryAttempt, r)


def encoded(values: Mapping[str, Any]) -> list[Any]:
    """`values` (by column name) as both stores keep them."""
    return [_COLUMNS[name].write(value) for name, value in values.items()]


def assignments(changes: Changes | None) -> dict[str, Any]:
    """`changes` as columns to set. A type checker already refuses any other key; this refuses it from a
    caller that is not checked, before it reaches SQL."""
    unknown = set(changes or {}) - Changes.__optional_keys__
    if unknown:
        raise ValueError(f"not a mutable recording field: {sorted(unknown)}")
    return dict(changes or {})
