"""Durable recordings: the repository interface and its embedded SQLite implementation."""

from orchestrator.store.base import IdempotencyConflict, NewRecording, RecordingRow, RecordingStore
from orchestrator.store.sqlite import SQLiteStore

__all__ = ["IdempotencyConflict", "NewRecording", "RecordingRow", "RecordingStore", "SQLiteStore"]
