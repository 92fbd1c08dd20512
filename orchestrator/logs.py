"""Structured JSON logs: the one configuration every process of the farm shares (see recorder.logs)."""

from recorder.logs import configure_logging

__all__ = ["configure_logging"]
