"""A pause of the capture: when it was paused and resumed, and where the cut sits in the file.

While paused no FFmpeg runs, so nothing of the paused span is captured anywhere; each resume starts the
next capture part, and finalize joins the parts into one file with a continuous timeline.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class PauseSpan(BaseModel):
    started_at: float = Field(description="unix time the capture stopped")
    ended_at: float | None = Field(
        default=None, description="unix time the capture's first frame after the pause (the stop, for a last pause)"
    )
    media_at: float = Field(description="seconds into the file where the cut sits (what came before it is kept)")

    @property
    def length(self) -> float | None:
        """Wall-clock seconds left out of the file; None while still paused."""
        return None if self.ended_at is None else self.ended_at - self.started_at
