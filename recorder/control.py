"""What whoever runs a capture wants of it while it runs: stop (and why), and paused or not.

The worker's job steers it from the orchestrator's heartbeat replies, `recorder record` from signals. The
capture follows it and writes back the one fact the steering side reports: whether it is paused now.
"""

from __future__ import annotations

import asyncio

from contract.spec import StopReason


class CaptureControl:
    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self.stop_reason: StopReason = "api"
        self.pause_wanted = False
        self.pause_changed = asyncio.Event()
        self.paused = False  # written by the capture: nothing is being recorded right now

    def stop(self, reason: StopReason = "api") -> None:
        """Stop gracefully; the first reason given is the one reported."""
        if not self.stopping.is_set():
            self.stop_reason = reason
            self.stopping.set()

    def want_paused(self, paused: bool) -> None:
        if paused != self.pause_wanted:
            self.pause_wanted = paused
            self.pause_changed.set()
