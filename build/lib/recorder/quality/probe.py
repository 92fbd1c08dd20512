"""What the container says about a file (ffprobe), before anything is decoded."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from recorder.quality.ffmpeg import FFPROBE, run_json


class StreamFacts(BaseModel):
    index: int
    codec: str | None = None
    duration: float | None = None
    start_time: float | None = None
    # video
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    # audio
    sample_rate: int | None = None
    channels: int | None = None


class ProbeFacts(BaseModel):
    format_name: str | None = None
    duration: float | None = None
    size: int | None = None
    bit_rate: int | None = None
    video: StreamFacts | None = None
    audio: StreamFacts | None = None


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is "unknown"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _rate(text: Any) -> float | None:
    try:
        rate = Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        return None
    return float(rate) if rate > 0 else None


def _clock(text: Any) -> float | None:
    """Matroska keeps stream durations only as a `HH:MM:SS.fraction` tag."""
    if not isinstance(text, str) or text.count(":") != 2:
        return None
    hours, minutes, seconds = text.split(":")
    try:
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _stream(raw: dict[str, Any]) -> StreamFacts:
    duration = _float(raw.get("duration"))
    if duration is None:
        duration = _clock((raw.get("tags") or {}).get("DURATION"))
    return StreamFacts(
        index=int(raw.get("index", 0)),
        codec=raw.get("codec_name"),
        duration=duration,
        start_time=_float(raw.get("start_time")),
        width=_int(raw.get("width")),
        height=_int(raw.get("height")),
        frame_rate=_rate(raw.get("r_frame_rate")) if raw.get("codec_type") == "video" else None,
        sample_rate=_int(raw.get("sample_rate")),
        channels=_int(raw.get("channels")),
    )


def probe(path: Path) -> ProbeFacts:
    """The first video and first audio stream (attached pictures such as cover art are not video)."""
    data = run_json([FFPROBE, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)])
    video = audio = None
    for raw in data.get("streams", []):
        kind = raw.get("codec_type")
        if kind == "video" and video is None and not (raw.get("disposition") or {}).get("attached_pic"):
            video = _stream(raw)
        elif kind == "audio" and audio is None:
            audio = _stream(raw)
    fmt = data.get("format", {})
    return ProbeFacts(
        format_name=fmt.get("format_name"),
        duration=_float(fmt.get("duration")),
        size=_int(fmt.get("size")),
        bit_rate=_int(fmt.get("bit_rate")),
        video=video,
        audio=audio,
    )
