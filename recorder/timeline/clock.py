"""The media clock: where a wall-clock moment falls in the file.

Media time 0 is the first frame. A pause is cut out of the file, and a moment inside a pause falls on the
cut itself (`pause.media_at`, what the capture actually wrote before it stopped: frames captured while
FFmpeg was stopping are in the file). A moment after a pause is therefore anchored on the last cut before
it, `media_at + (wall - ended_at)`, rather than counted from the first frame with the pauses' wall-clock
lengths taken away; the two differ by the stop latency, which adds up over several pauses. A moment
before a cut is never placed past it, so times never go backwards across a cut.
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
        media = wall - self.first_frame_at
        for pause in self.pauses:
            if wall < pause.started_at:
                # Before this cut: never past it (a capture running behind wrote less than the wall time).
                return min(media, pause.media_at)
            if pause.ended_at is None or wall < pause.ended_at:
                return pause.media_at
            media = pause.media_at + (wall - pause.ended_at)
        return media
