"""A finalized recording: rec.mp4 (or the capture kept when none could be made) and rec.json to be."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from contract.errors import RecorderError
from contract.protocol import SCREENSHOT_NAME, TIMELINE_NAME, Progress
from contract.spec import StopReason
from recorder.attempt import AttemptFolder
from recorder.egress.ledger import BlockedSummary
from recorder.finalize.sidecar import Sidecar, write_sidecar
from recorder.quality import analyze_file
from recorder.timeline.build import build_timeline, write_timeline
from recorder.timeline.collector import TimelineCollector
from recorder.timings import Timings

log = structlog.get_logger(__name__)


@dataclass
class Finished:
    """What finalize made of a capture. rec.json is written once, by `complete`, so that rec.mp4 can be
    uploaded while the analysis (minutes of CPU for a long recording) runs."""

    folder: AttemptFolder
    mp4: Path | None  # rec.mp4; None when nothing playable came out
    metadata: Sidecar  # rec.json's content; without quality until analyzed
    error: RecorderError | None
    stop_reason: StopReason
    progress: Progress
    blocked: BlockedSummary | None
    quality: dict[str, Any] | None = None  # set by `complete`
    sidecar: Path | None = None  # rec.json once written (None before, or when writing failed)
    files: dict[str, Path] = field(default_factory=dict)  # what is kept, by name
    collected: TimelineCollector | None = None  # the timeline as collected; None with RECORDER_TIMELINE off
    console_levels: dict[str, int] = field(default_factory=dict)

    @property
    def screenshot(self) -> Path | None:
        """failure.png, when the recording failed and the page could still be pictured."""
        return self.files.get(SCREENSHOT_NAME)

    @property
    def timeline(self) -> Path | None:
        """timeline.json, once `complete` wrote it."""
        return self.files.get(TIMELINE_NAME)

    @property
    def ok(self) -> bool:
        return self.error is None and self.mp4 is not None

    @property
    def timings(self) -> Timings:
        return self.metadata.timings

    def complete(self, *, analyze: bool = True) -> None:
        """Blocking: analyze rec.mp4 (when `analyze` and there is one), then write rec.json, the one write.

        A failed analysis is logged and leaves rec.json without a quality report; the recording stands. So
        does a timeline that cannot be built or written: rec.json goes without it."""
        if analyze and self.mp4 is not None and self.quality is None:
            self._analyze(self.mp4)
        if self.collected is not None and self.timeline is None:
            self._write_timeline(self.collected)
        try:
            self.sidecar = write_sidecar(self.folder.metadata, self.metadata)
        except OSError as exc:
            log.error("could not write rec.json", error=str(exc), path=str(self.folder.metadata))
            self.sidecar = None
            return
        self.files[self.sidecar.name] = self.sidecar

    def _write_timeline(self, collected: TimelineCollector) -> None:
        """timeline.json beside rec.json, on the media clock; its summary goes into rec.json and the quality."""
        timings = self.metadata.timings
        waiting = (timings.waiting, timings.ready) if timings.waiting is not None else None
        try:
            timeline = build_timeline(
                collected,
                first_frame_at=timings.first_frame,
                pauses=self.metadata.pauses,
                waiting=waiting,
                quality=self.metadata.quality,
                duration=self.metadata.duration,
                console_levels=self.console_levels,
                recording_id=self.folder.recording_id,
                attempt=self.folder.attempt,
            )
            path = write_timeline(self.folder.timeline, timeline)
        except Exception as exc:  # never worth the recording
            log.exception("the timeline could not be made", recording_id=self.folder.recording_id, error=str(exc))
            return
        self.files[path.name] = path
        self.metadata.timeline = timeline.summary
        if self.quality is not None:
            self.quality["timeline"] = timeline.summary.model_dump(mode="json")

    def _analyze(self, mp4: Path) -> None:
        try:
            report = analyze_file(mp4, expected_fps=self.metadata.spec.fps)
        except RecorderError as exc:
            log.error("analysis failed", recording_id=self.folder.recording_id, error=str(exc))
            return
        self.quality = report.model_dump(mode="json")
        self.metadata.set_quality(report)
