"""timeline.json from what was collected: everything put on the media clock, with the analyzer's spans, the
pauses and the waiting room, and the summary rec.json and the report carry.

The collector stamped everything on the wall clock; only now are the first frame and the pauses known
(`recorder.timeline.clock`). Series are re-binned onto a media-time grid of at most MAX_SERIES_POINTS
points: a long recording gets a coarser step, never a shorter series.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from contract.timeline import (
    MAX_SERIES_POINTS,
    MAX_SPANS,
    MAX_TRACKS,
    MIN_LOSS_PACKETS,
    PROBLEM_SPANS,
    Series,
    Timeline,
    TimelineEvent,
    TimelineSpan,
    TimelineSummary,
    Track,
)
from recorder.capture.pause import PauseSpan
from recorder.quality import QualityReport
from recorder.quality.spans import Span
from recorder.timeline.clock import MediaClock
from recorder.timeline.collector import TimelineCollector, WallSeries

log = structlog.get_logger(__name__)

# Page events that count as errors in the summary (console errors are counted by level).
ERROR_KINDS = frozenset({"exception", "request_failed", "request_blocked", "crash"})
WALL_CLOCK_AFTER = 1e9  # a track time above this is a Unix time (the watcher's), below it media seconds


def build_timeline(
    collector: TimelineCollector,
    *,
    first_frame_at: float | None,
    pauses: Sequence[PauseSpan] = (),
    waiting: tuple[float, float | None] | None = None,
    quality: QualityReport | None = None,
    duration: float | None = None,
    console_levels: Mapping[str, int] | None = None,
    recording_id: str | None = None,
    attempt: int | None = None,
) -> Timeline:
    """The timeline of one recording. Without a first frame (nothing captured) times count from the
    collector's start. `waiting` is the waiting room's (entered, admitted) on the wall clock; `console_levels`
    counts console messages by level, including those over the cap."""
    clock = MediaClock(first_frame_at if first_frame_at is not None else collector.started_at, pauses)
    if duration is None and quality is not None:
        duration = quality.duration
    events = sorted(
        (
            TimelineEvent(
                t=_round(clock.at(e.at)),
                source=e.source,
                kind=e.kind,
                level=e.level,
                message=e.message,
                track=e.track,
                data=e.data,
            )
            for e in collector.events
        ),
        key=lambda e: e.t,
    )
    dropped = dict(collector.dropped)
    spans = [*_control_spans(clock, pauses, waiting), *_analyzer_spans(quality)]
    spans += [
        TimelineSpan(
            start=_round(clock.at(s.start)),
            end=_round(clock.at(s.end)),
            kind=s.kind,
            source=s.source,
            message=s.message,
            track=s.track,
        )
        for s in collector.spans
    ]
    if len(spans) > MAX_SPANS:
        dropped["spans"] = dropped.get("spans", 0) + len(spans) - MAX_SPANS
        spans = _keep_spans(spans)
    spans.sort(key=lambda s: (s.start, s.end))
    series = [s for s in (_series(w, clock) for w in collector.series.values()) if s is not None]
    tracks = _tracks(collector.tracks, clock, dropped)
    summary = summarize(events, spans, tracks, dropped, console_levels)
    return Timeline(
        recording_id=recording_id,
        attempt=attempt,
        duration=duration,
        first_frame_at=first_frame_at,
        events=events,
        spans=spans,
        series=series,
        tracks=tracks,
        summary=summary,
        dropped=dropped,
    )


def summarize(
    events: Sequence[TimelineEvent],
    spans: Sequence[TimelineSpan],
    tracks: Sequence[Track],
    dropped: Mapping[str, int],
    console_levels: Mapping[str, int] | None = None,
) -> TimelineSummary:
    """Errors count every one that happened (kept or over the cap); problems add the problem spans."""
    if console_levels is None:
        kept = [e for e in events if e.source == "page" and e.kind == "console"]
        console_levels = {
            "error": sum(e.level == "error" for e in kept),
            "warning": sum(e.level == "warning" for e in kept),
        }
    page_errors = sum(1 for e in events if e.source == "page" and e.kind in ERROR_KINDS)
    page_errors += sum(dropped.get(f"page.{kind}", 0) for kind in ERROR_KINDS)
    errors = console_levels.get("error", 0) + page_errors
    warnings = console_levels.get("warning", 0)
    problem_spans = sum(1 for s in spans if s.kind in PROBLEM_SPANS)
    return TimelineSummary(
        worst_inbound_loss=max((t.worst_loss for t in tracks), default=None),
        inbound_loss=whole_recording_loss(tracks),
        freeze_seconds={t.id: round(t.freeze_seconds, 3) for t in tracks if t.kind == "video"},
        errors=errors,
        warnings=warnings,
        problems=problem_spans + errors,
    )


def whole_recording_loss(tracks: Sequence[Track]) -> float | None:
    """The share of its packets the worst inbound track lost over the recording (what the regional alert
    judges: one bad second of an hour-long call must not mark it); None without WebRTC."""
    if not tracks:
        return None
    shares = [
        t.packets_lost / (t.packets_lost + t.packets_received)
        for t in tracks
        if t.packets_lost + t.packets_received >= MIN_LOSS_PACKETS
    ]
    return round(max(shares, default=0.0), 4)


def write_timeline(path: Path, timeline: Timeline) -> Path:
    """timeline.json, compact (it is read by programs), replaced whole."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(timeline.model_dump(mode="json"), separators=(",", ":")) + "\n")
    os.replace(partial, path)
    return path


# -- spans -------------------------------------------------------------------------------------------


def _control_spans(
    clock: MediaClock, pauses: Sequence[PauseSpan], waiting: tuple[float, float | None] | None
) -> list[TimelineSpan]:
    spans = []
    if waiting is not None:
        entered, admitted = waiting
        end = admitted if admitted is not None else clock.first_frame_at
        spans.append(
            TimelineSpan(
                start=_round(clock.at(entered)),
                end=_round(clock.at(max(entered, end))),
                kind="waiting",
                source="control",
                message="in the waiting room",
            )
        )
    for pause in pauses:
        length = pause.length
        spans.append(
            TimelineSpan(
                start=_round(pause.media_at),
                end=_round(pause.media_at),
                kind="paused",
                source="control",
                message=f"paused for {length:.1f} s" if length is not None else "paused until the end",
                wall_seconds=round(length, 3) if length is not None else None,
            )
        )
    return spans


def _analyzer_spans(quality: QualityReport | None) -> list[TimelineSpan]:
    if quality is None:
        return []
    found: list[tuple[str, Sequence[Span], str]] = []
    if quality.video is not None:
        found += [
            ("frozen", quality.video.frozen, "the picture did not change"),
            ("black", quality.video.black, "the picture was black"),
            ("gap", quality.video.gaps, "no frame"),
        ]
    if quality.audio is not None:
        found.append(("silent", quality.audio.silent, "silence"))
    return [
        TimelineSpan(
            start=_round(s.at),
            end=_round(s.at + s.length),
            kind=kind,  # type: ignore[arg-type]
            source="analyzer",
            message=f"{what} for {s.length:.1f} s",
        )
        for kind, listed, what in found
        for s in listed
    ]


def _keep_spans(spans: list[TimelineSpan]) -> list[TimelineSpan]:
    """Over MAX_SPANS: the control and analyzer spans first (they describe the file), then the longest."""
    ranked = sorted(spans, key=lambda s: (s.source not in ("control", "analyzer"), -(s.end - s.start)))
    return ranked[:MAX_SPANS]


# -- series ------------------------------------------------------------------------------------------


def _series(wall: WallSeries, clock: MediaClock) -> Series | None:
    """The wall-clock cells re-binned onto a media-time grid (means weighted by sample counts)."""
    cells = [
        (clock.at(wall.origin + (i + 0.5) * wall.step), total, n)
        for i, (total, n) in enumerate(zip(wall.sums, wall.counts, strict=True))
        if n
    ]
    if not cells:
        return None
    first = min(t for t, _, _ in cells)
    last = max(t for t, _, _ in cells)
    step = wall.step
    t0 = math.floor(first / step) * step
    while math.floor((last - t0) / step) + 1 > MAX_SERIES_POINTS:
        step *= 2
        t0 = math.floor(first / step) * step
    count = math.floor((last - t0) / step) + 1
    sums = [0.0] * count
    counts = [0] * count
    for t, total, n in cells:
        index = min(count - 1, int((t - t0) // step))
        sums[index] += total
        counts[index] += n
    values = [round(total / n, 4) if n else None for total, n in zip(sums, counts, strict=True)]
    return Series(name=wall.name, unit=wall.unit, track=wall.track, t0=_round(t0), step=step, values=values)


# -- tracks ------------------------------------------------------------------------------------------


def _tracks(found: Sequence[Mapping[str, Any]], clock: MediaClock, dropped: dict[str, int]) -> list[Track]:
    tracks: list[Track] = []
    for facts in found:
        if len(tracks) >= MAX_TRACKS:
            dropped["webrtc.track"] = dropped.get("webrtc.track", 0) + 1
            continue
        data = dict(facts)
        for key in ("first_seen", "last_seen"):
            value = data.get(key)
            if isinstance(value, int | float) and value > WALL_CLOCK_AFTER:
                data[key] = _round(clock.at(float(value)))
        try:
            tracks.append(Track.model_validate(data))
        except ValidationError as exc:
            log.warning("a WebRTC track's facts were left out", track=str(data.get("id"))[:80], error=str(exc)[:300])
            dropped["webrtc.track"] = dropped.get("webrtc.track", 0) + 1
    return tracks


def _round(value: float) -> float:
    return round(value, 3)
