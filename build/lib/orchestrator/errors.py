"""Errors the orchestrator reports to callers: a stable code and a message that says what to change.

The service, the scheduler and the media locator raise them; the API maps each code to its HTTP status
(`orchestrator.api.responses.ERROR_STATUS`). Nothing here knows about HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detail:
    field: str
    message: str


class OrchestratorError(Exception):
    def __init__(self, code: str, message: str, details: list[Detail] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


class NotFound(OrchestratorError):
    def __init__(self, what: str) -> None:
        super().__init__("not_found", what)


class Conflict(OrchestratorError):
    """The request is valid but the recording's current state does not allow it."""


class LeaseGone(OrchestratorError):
    """A worker spoke for a lease it no longer holds; it must stop that recording."""

    def __init__(self, message: str) -> None:
        super().__init__("lease_gone", message)
