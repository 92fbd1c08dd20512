"""What a recording leaves for finalize: the capture file and the facts rec.json will tell about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import RecorderError
from contract.protocol import Progress
from contract.spec import RecordingSpec, StopReason
from recorder.attempt import AttemptFolder
from recorder.capture.pause import PauseSpan
from recorder.egress.ledger import BlockedSummary
from recorder.timeline.collector import TimelineCollector
from recorder.timings import Timings


@dataclass
class Captured:
    """What one recording left on disk, before finalize.

    It carries everything rec.json needs from the recorder (versions, the A/V correction applied), so
    finalize works from this alone, on any thread, after the browser has moved on to the next page."""

    folder: AttemptFolder
    spec: RecordingSpec
    capture_file: Path  # folder.capture(live=spec.live_upload)
    progress: Progress
    timings: Timings
    stop_reason: StopReason
    error: RecorderError | None
    blocked: BlockedSummary | None  # None when the egress guard is off
    versions: dict[str, str]
    av_offset_correction_ms: float
    presentation_lateness_ms: float | None = None  # recorder.source.presentation, over the capture
    audio_shift_ms: float = 0.0  # finalize moves the sound this much earlier still (its lateness's share)
    behind_real_time: bool = False
    screenshot: Path | None = None  # failure.png: the page when the recording failed
    # Capture.files: one file per FFmpeg process, the first being capture_file; more after each resume.
    capture_files: list[Path] = field(default_factory=list)
    pauses: list[PauseSpan] = field(default_factory=list)  # Capture.pauses
    # What happened meanwhile, on the wall clock (None with RECORDER_TIMELINE off), and the page's console
    # messages by level, including those over the timeline's cap.
    timeline: TimelineCollector | None = None
    console_levels: dict[str, int] = field(default_factory=dict)
    # Unix time the file was meant to end (the duration's end, or when the stop came); None when FFmpeg
    # ended by itself. Finalize cuts what an overloaded capture wrote past it.
    ends_at: float | None = None

    @property
    def parts(self) -> list[Path]:
        """The capture parts finalize joins, in order."""
        return self.capture_files or [self.capture_file]

    @property
    def has_media(self) -> bool:
        """FFmpeg wrote something; a failure before the first frame leaves no file or an empty one."""
        return self.capture_file.is_file() and self.capture_file.stat().st_size > 0
