"""When each step of a recording happened: set while capturing, completed by finalize, told by rec.json."""

from __future__ import annotations

from pydantic import BaseModel


class Timings(BaseModel):
    """Unix times of each step; `first_frame` is when the first captured frame was grabbed."""

    started: float
    waiting: float | None = None  # the waiting room began (the page was up, readiness not yet)
    ready: float | None = None
    first_frame: float | None = None
    stopped: float | None = None
    finalized: float | None = None

    @property
    def start_latency(self) -> float | None:
        return None if self.first_frame is None else self.first_frame - self.started
