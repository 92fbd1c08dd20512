"""Durable recordings: the repository interface and its embedded SQLite implementation."""

from orchestrator.store.base import IdempotencyConflict, NewRecording, RecordingStore
from orchestrator.store.row import Changes, RecordingRow
from orchestrator.store.sqlite import SQLiteStore

__all__ = ["Changes", "IdempotencyConflict", "NewRecording", "RecordingRow", "RecordingStore", "SQLiteStore"]
