"""The media clock: where a wall-clock moment falls in the file.

Media time 0 is the first frame. A pause is cut out of the file, so every moment after it moves back by
the pause's length, and a moment inside a pause falls on the cut itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from recorder.capture.pause import PauseSpan


class MediaClock:
    def __init__(self, first_frame_at: float, pauses: Sequence[PauseSpan] = ()) -> None:
        self.first_frame_at = first_frame_at
        self.pauses = sorted(pauses, key=lambda p: p.started_at)

    def at(self, wall: float) -> float:
        """Seconds into the file of the wall-clock moment `wall` (negative before the first frame)."""
        cut_out = 0.0
        for pause in self.pauses:
            if wall < pause.started_at:
                break
            ended = pause.ended_at if pause.ended_at is not None else float("inf")
            if wall < ended:
                return pause.media_at
            cut_out += ended - pause.started_at
        return wall - self.first_frame_at - cut_out
