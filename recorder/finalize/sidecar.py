"""`rec.json`: everything a person (or a machine) needs to know about a recording, next to the file."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from contract.protocol import ErrorInfo, Progress
from contract.spec import RecordingSpec, StopReason
from contract.timeline import TimelineSummary
from recorder.capture.pause import PauseSpan
from recorder.egress.ledger import BlockedSummary
from recorder.quality import QualityReport
from recorder.timings import Timings


def iso(ts: float | None) -> str | None:
    return datetime.fromtimestamp(ts, UTC).isoformat() if ts else None


class Sidecar(BaseModel):
    recording_id: str
    url: str
    spec: RecordingSpec
    timings: Timings
    start_latency: float | None = Field(default=None, description="seconds from start to the first frame")
    stop_reason: StopReason = Field(description="what ended the capture")
    file: str | None = None
    size: int | None = None
    duration: float | None = None
    video: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    capture: Progress
    pauses: list[PauseSpan] = Field(
        default_factory=list,
        description="when the capture was paused (unix times) and where each cut sits in the file (media_at)",
    )
    behind_real_time: bool = False
    av_offset_correction_ms: float
    presentation_lateness_ms: float | None = Field(
        default=None,
        description="how late Chromium presented the page's audible video against the video's own clock, the mean"
        " over the capture (ms); None without such a video, or with too few of its frames",
    )
    presentation_shift_ms: float = Field(
        default=0.0,
        description="how much earlier the remux moved the sound for that lateness (ms); part of"
        " av_offset_correction_ms. 0 where no correction by it applies (a live upload left as one file, an"
        " offset set by hand, a calibration without it) or the move failed",
    )
    versions: dict[str, str]
    quality: QualityReport | None = None
    error: ErrorInfo | None = None
    screenshot: str | None = Field(default=None, description="failure.png beside rec.json: the page when it failed")
    # Connections the egress guard denied: totals by address class, and the hosts (capped).
    blocked: BlockedSummary | None = None
    # timeline.json's summary (worst inbound loss, freeze seconds per track, errors); None without a timeline.
    timeline: TimelineSummary | None = None

    def set_quality(self, quality: QualityReport) -> None:
        """The analysis comes last (it may run while rec.mp4 uploads); its headline figures sit on top."""
        self.quality = quality
        self.duration = quality.duration
        self.video = quality.video.model_dump(mode="json") if quality.video else None
        self.audio = quality.audio.model_dump(mode="json") if quality.audio else None


def write_sidecar(path: Path, sidecar: Sidecar) -> Path:
    data = sidecar.model_dump(mode="json")
    data["timings_iso"] = {k: iso(v) for k, v in sidecar.timings.model_dump().items()}
    for pause, shown in zip(sidecar.pauses, data["pauses"], strict=True):
        shown["started_at_iso"], shown["ended_at_iso"] = iso(pause.started_at), iso(pause.ended_at)
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)
    return path
