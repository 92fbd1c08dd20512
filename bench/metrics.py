"""What each capture benchmark reports about one recording, read off its quality report and process usage.

The file is constant frame rate, so FFmpeg fills any frame the screen grab missed with a copy of the one
before: the file always has 30 frames a second and no timestamp gaps. What a viewer sees is the rate of
distinct pictures, so that is the fps figure here: (frames - repeated frames) / duration. The test page
changes every frame (four 30 fps videos), so on a faithful capture nearly every frame is distinct; a
few repeats come from the screen grab and Chromium's compositor running on clocks of their own.

A picture held at the very start of the file (FFmpeg filling frames while its inputs open) is reported on
its own (`start_freeze_s`); `steady_fps` is the distinct rate after it, and the density criterion uses
that and the frozen spans after the start.
"""

from __future__ import annotations

import statistics
from typing import Any

FPS_TARGET = 29.9
FPS_HOLD = 29.5
START_WINDOW = 0.5  # a frozen span that begins this close to the start is the start freeze


def quality_summary(quality: dict[str, Any] | None) -> dict[str, Any] | None:
    """The parts of a quality report the benchmarks keep (black spans and the like are left out)."""
    if not quality:
        return None
    video = quality.get("video") or {}
    return {
        "size": quality.get("size"),
        "bit_rate": quality.get("bit_rate"),
        "duration": quality.get("duration"),
        "video": {k: v for k, v in video.items() if k != "black"},
        "audio": quality.get("audio"),
        "sync": quality.get("sync"),
    }


def recording_figures(done: dict[str, Any] | None, usage: dict[str, Any] | None) -> dict[str, Any]:
    """The flat row of figures for one recording (None where a figure could not be measured)."""
    quality = (done or {}).get("quality") or {}
    video = quality.get("video") or {}
    sync = quality.get("sync") or {}
    progress = (done or {}).get("progress") or {}
    duration = video.get("duration") or quality.get("duration")
    frames = video.get("frames")
    repeated = video.get("repeated_frames")
    distinct_fps = (frames - repeated) / duration if duration and frames is not None and repeated is not None else None
    frozen = video.get("frozen") or []
    start_freeze = next((span["length"] for span in frozen if span["at"] < START_WINDOW), 0.0)
    steady_fps = None
    if distinct_fps is not None and duration and duration > start_freeze:
        # The held start shows one distinct picture; the rest of the file is what a viewer watches.
        steady_fps = (frames - repeated - (1 if start_freeze else 0)) / (duration - start_freeze)
    usage = usage or {}
    return {
        "ok": bool(done and done.get("ok")),
        "error": (done or {}).get("error"),
        "duration_s": duration,
        "frames": frames,
        "file_fps": video.get("delivered_fps"),
        "distinct_fps": round(distinct_fps, 3) if distinct_fps is not None else None,
        "steady_fps": round(steady_fps, 3) if steady_fps is not None else None,
        "start_freeze_s": start_freeze,
        "repeated_frames": repeated,
        "longest_repeat_frames": video.get("longest_repeat"),
        "frozen_spans": len(frozen) - (1 if start_freeze else 0) if video else None,
        "frozen_total_s": video.get("frozen_total"),
        "gaps": video.get("gap_count"),
        "longest_gap_s": video.get("longest_gap"),
        "ffmpeg_duplicated": progress.get("duplicated"),
        "ffmpeg_dropped": progress.get("dropped"),
        "speed": progress.get("speed"),
        "behind": progress.get("behind"),
        "av_markers": sync.get("markers"),
        "av_mean_ms": sync.get("mean_ms"),
        "av_p95_abs_ms": sync.get("p95_abs_ms"),
        "av_std_ms": sync.get("std_ms"),
        "av_drift_ms": sync.get("drift_ms"),
        "size_bytes": quality.get("size"),
        "bitrate_kbps": round(quality["bit_rate"] / 1000, 1) if quality.get("bit_rate") else None,
        "capture_cores": usage.get("capture_cores"),
        "all_cores": usage.get("cpu_cores_total"),
        "cores_by_process": usage.get("cpu_cores"),
        "capture_peak_pss_mb": usage.get("capture_peak_pss_mb"),
        "capture_peak_rss_mb": usage.get("capture_peak_rss_mb"),
        "all_peak_pss_mb": usage.get("peak_pss_mb"),
        "all_peak_rss_mb": usage.get("peak_rss_mb"),
        "pss_mb_by_process": usage.get("peak_pss_mb_by_category"),
    }


def holds(row: dict[str, Any]) -> bool:
    """The density criterion: >= 29.5 distinct pictures a second after the start, no gap, no frozen span
    after the start, real time kept."""
    return (
        row["ok"]
        and (row["steady_fps"] or 0.0) >= FPS_HOLD
        and not row["gaps"]
        and not row["frozen_spans"]
        and not row["behind"]
    )


def spread(rows: list[dict[str, Any]], key: str) -> dict[str, float] | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return None
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }
