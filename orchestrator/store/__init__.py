"""Durable recordings: the repository interface, its embedded SQLite and its replicated PostgreSQL
implementations, and the choice between them (`open_store`)."""

from orchestrator.store.base import IdempotencyConflict, NewRecording, RecordingStore
from orchestrator.store.factory import open_store
from orchestrator.store.postgres import PostgresStore
from orchestrator.store.row import Changes, RecordingRow
from orchestrator.store.sqlite import SQLiteStore

__all__ = [
    "Changes",
    "IdempotencyConflict",
    "NewRecording",
    "PostgresStore",
    "RecordingRow",
    "RecordingStore",
    "SQLiteStore",
    "open_store",
]
