"""The quality report of a media file: what `recorder analyze FILE` prints and every recording carries."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from contract.errors import ErrorCode, RecorderError
from recorder.quality.audio import AudioReport, AudioSignals, analyze_audio, decode_audio
from recorder.quality.beeps import detect_beeps
from recorder.quality.flashes import detect_flashes
from recorder.quality.probe import probe
from recorder.quality.sync import SyncReport, measure_sync
from recorder.quality.video import VideoReport, VideoSignals, analyze_video, decode_video


class QualityReport(BaseModel):
    """Facts about one file. Times are seconds from the start of the file; spans are {at, length}."""

    path: str
    format: str | None
    size: int | None
    bit_rate: int | None
    duration: float | None = Field(description="container duration")
    video: VideoReport | None
    audio: AudioReport | None
    sync: SyncReport | None = Field(description="A/V offset from flash+beep markers; null when there are none")


def analyze_file(path: Path, *, expected_fps: float | None = None, tone_hz: float = 1000.0) -> QualityReport:
    """Probe and decode `path` once per stream (video and audio in parallel) and report on both.

    `expected_fps` sets the frame interval that gaps are measured against (default: the typical
    step between frames); `tone_hz` is the frequency of the sync beeps and of `audio.tone_level`.
    """
    path = Path(path)
    if not path.is_file():
        raise RecorderError(ErrorCode.INVALID_ARGUMENT, f"{path}: no such file")
    if tone_hz <= 0 or tone_hz >= 24_000:
        raise RecorderError(ErrorCode.INVALID_ARGUMENT, f"tone {tone_hz} Hz: use a frequency between 0 and 24000")
    facts = probe(path)
    video_signals: VideoSignals | None = None
    audio_signals: AudioSignals | None = None
    with ThreadPoolExecutor(max_workers=2) as pool:
        video_job = pool.submit(decode_video, path, facts.video) if facts.video else None
        audio_job = pool.submit(decode_audio, path, facts.audio, tone_hz) if facts.audio else None
        video_signals = video_job.result() if video_job else None
        audio_signals = audio_job.result() if audio_job else None

    video = analyze_video(video_signals, facts.video, expected_fps) if video_signals and facts.video else None
    audio = analyze_audio(audio_signals, facts.audio, tone_hz) if audio_signals and facts.audio else None
    sync = None
    if video_signals is not None:
        flashes = detect_flashes(video_signals.cells, video_signals.pts)
        beeps = detect_beeps(audio_signals) if audio_signals is not None else np.zeros(0)
        sync = measure_sync(flashes, beeps, tone_hz)
    return QualityReport(
        path=str(path),
        format=facts.format_name,
        size=facts.size,
        bit_rate=facts.bit_rate,
        duration=round(facts.duration, 3) if facts.duration else None,
        video=video,
        audio=audio,
        sync=sync,
    )
