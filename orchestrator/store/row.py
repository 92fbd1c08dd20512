"""A stored recording, column by column.

Each field of `RecordingRow` carries its column in its annotation, and the store derives the rest from
there: the table and its migrations, the mapping of a result row back to a `RecordingRow`, and how a
value is written. `Changes` names the columns a caller may set; nothing else can be changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from orchestrator.states import State


@dataclass(frozen=True)
class Column:
    """The field's SQL declaration, and the schema version that added it: a store from before that
    version gets the column by ALTER TABLE, which is why a NOT NULL column added later needs a DEFAULT."""

    sql: str
    since: int = 1


@dataclass(frozen=True)
class Stamps:
    """A field spread over one `<name>_at` column per name: when each milestone was first reached.

    `added` names the stamps a later schema version brought (a state added to the machine), with that
    version: a store from before gets their columns by ALTER TABLE, like any column added later."""

    names: tuple[str, ...]
    sql: str = "REAL"
    since: int = 1
    added: tuple[tuple[str, int], ...] = ()

    def since_of(self, name: str) -> int:
        return dict(self.added).get(name, self.since)


# Every state is stamped when a transition reaches it; the first frame when a heartbeat reports it.
STAMPS = Stamps((*(s.value for s in State), "first_frame"), added=((State.WAITING.value, 3), (State.PURGED.value, 4)))


@dataclass(frozen=True, kw_only=True)
class RecordingRow:
    """A recording as stored; the table keeps the fields in this order."""

    seq: Annotated[int, Column("INTEGER PRIMARY KEY AUTOINCREMENT")]
    id: Annotated[str, Column("TEXT NOT NULL UNIQUE")]
    status: Annotated[State, Column("TEXT NOT NULL")]
    request: Annotated[dict[str, Any], Column("TEXT NOT NULL")]
    spec: Annotated[dict[str, Any], Column("TEXT NOT NULL")]
    upload: Annotated[dict[str, Any], Column("TEXT NOT NULL")]
    idempotency_key: Annotated[str | None, Column("TEXT UNIQUE")]
    # Hash of the normalised request: the same key with another body is a conflict.
    fingerprint: Annotated[str | None, Column("TEXT")]
    created_at: Annotated[float, Column("REAL NOT NULL")]
    updated_at: Annotated[float, Column("REAL NOT NULL")]
    timestamps: Annotated[dict[str, float], STAMPS]
    attempts: Annotated[int, Column("INTEGER NOT NULL DEFAULT 0")]
    worker: Annotated[str | None, Column("TEXT")]
    lease_id: Annotated[str | None, Column("TEXT")]
    lease_expires_at: Annotated[float | None, Column("REAL")]
    last_heartbeat_at: Annotated[float | None, Column("REAL")]
    avoid_worker: Annotated[str | None, Column("TEXT")]
    requested_action: Annotated[str | None, Column("TEXT")]
    keep_file: Annotated[bool, Column("INTEGER NOT NULL DEFAULT 1")]
    location: Annotated[str | None, Column("TEXT")]
    metadata_location: Annotated[str | None, Column("TEXT")]
    quality: Annotated[dict[str, Any] | None, Column("TEXT")]
    progress: Annotated[dict[str, Any] | None, Column("TEXT")]
    error_code: Annotated[str | None, Column("TEXT")]
    error_message: Annotated[str | None, Column("TEXT")]
    # The caller's name (API_TOKENS); None only for rows created before callers had names.
    owner: Annotated[str | None, Column("TEXT", since=2)]
    # Stored before attempt folders existed: media may still be at the old place.
    legacy_layout: Annotated[bool, Column("INTEGER NOT NULL DEFAULT 0", since=2)]
    # Meetings: the caller's wish to pause (API) and the worker's reported fact (heartbeat), kept apart.
    pause_requested: Annotated[bool, Column("INTEGER NOT NULL DEFAULT 0", since=3)]
    paused: Annotated[bool, Column("INTEGER NOT NULL DEFAULT 0", since=3)]
    # What ended the capture (contract.spec.StopReason), as the worker reported it.
    stop_reason: Annotated[str | None, Column("TEXT", since=3)]
    # failure.png of the lease's attempt: the page when the recording failed.
    screenshot_location: Annotated[str | None, Column("TEXT", since=3)]
    # timeline.json of the lease's attempt: what happened during the recording, on the media clock.
    timeline_location: Annotated[str | None, Column("TEXT", since=6)]


class Changes(TypedDict, total=False):
    """Columns a caller may set. A key left out leaves its column alone while None clears it, which is
    the difference a partial update needs. `status` and the state stamps are not here: only a transition
    moves a recording, and it stamps the time itself."""

    attempts: int
    worker: str | None
    lease_id: str | None
    lease_expires_at: float | None
    last_heartbeat_at: float | None
    avoid_worker: str | None
    requested_action: str | None
    keep_file: bool
    location: str | None
    metadata_location: str | None
    quality: dict[str, Any] | None
    progress: dict[str, Any] | None
    error_code: str | None
    error_message: str | None
    first_frame_at: float
    pause_requested: bool
    paused: bool
    stop_reason: str | None
    screenshot_location: str | None
    timeline_location: str | None
