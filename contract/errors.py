"""Errors a person can act on: a stable machine code plus a message that says what to fix."""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_ARGUMENT = "invalid_argument"
    UNREACHABLE = "unreachable"
    URL_NOT_ALLOWED = "url_not_allowed"
    HTTP_ERROR = "http_error"
    READINESS_TIMEOUT = "readiness_timeout"
    WAITING_ROOM_TIMEOUT = "waiting_room_timeout"
    ACTION_FAILED = "action_failed"
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


# Failures that come from the page or the request, not from the farm: what the caller asked for could not be
# done (a lobby never admitted the recorder, a join step found no button, the page answered 404). Alerts on
# system failures skip them. Unreachable pages and readiness timeouts stay system-side: a broken resolver or
# an overloaded recorder shows as those.
CALLER_SIDE: frozenset[ErrorCode] = frozenset(
    {
        ErrorCode.INVALID_ARGUMENT,
        ErrorCode.URL_NOT_ALLOWED,
        ErrorCode.HTTP_ERROR,
        ErrorCode.WAITING_ROOM_TIMEOUT,
        ErrorCode.ACTION_FAILED,
        ErrorCode.CANCELLED,
    }
)


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
