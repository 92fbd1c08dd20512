"""Errors a person can act on: a stable machine code plus a message that says what to fix."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    UNREACHABLE = "unreachable"
    URL_NOT_ALLOWED = "url_not_allowed"
    HTTP_ERROR = "http_error"
    READINESS_TIMEOUT = "readiness_timeout"
    BROWSER_CRASHED = "browser_crashed"
    BROWSER_FAILED = "browser_failed"
    DISPLAY_FAILED = "display_failed"
    AUDIO_FAILED = "audio_failed"
    CAPTURE_FAILED = "capture_failed"
    FINALIZE_FAILED = "finalize_failed"
    UPLOAD_FAILED = "upload_failed"
    UPLOAD_DENIED = "upload_denied"
    UPLOAD_PENDING = "upload_pending"
    LEASE_LOST = "lease_lost"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    INTERNAL = "internal"


class RecorderError(Exception):
    """Raised by any stage; `code` is stable, `message` tells a person what happened and what to do."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def as_dict(self) -> dict[str, str]:
        return {"code": str(self.code), "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
