"""Meetings: what audio-only saves, what a join script adds to the start, how soon a meeting's end is left.

    python -m bench meeting [--duration 20] [--repeat 2] [--require-quiet]

Each figure comes from `recorder record`, exactly as a user runs it, on the reference pages:
- **audio-only against video**: the 2x2 grid (`/grid`), recorded with and without `--audio-only`, one
  after the other; the capture's CPU cores and peak memory over the capture window (first frame → stop).
- **the join script's start cost**: the meeting page with no lobby, joined by a two-step script (fill the
  name, click Join) and ready when its tiles appear, against the grid with the default readiness
  (DOMContentLoaded); the figure is `ready - started` of each (the recorder's own timings).
- **from the end banner to the file closed**: the meeting ends `--end` s after admission with a banner
  over a silent, still screen; stopped by `stop_when` selector, silence (3 s) or frozen (3 s). Admission
  is the recording's readiness, so the banner shows at `ready + end` (within the page's own timer's
  accuracy, a few ms); the file is closed at `stopped`.
Writes bench/results/meeting-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import machine, page
from bench.fidelity import record_once
from bench.results import write_result

JOIN = [{"do": "fill", "selector": "#name", "value": "Recorder"}, {"do": "click", "selector": "#join"}]
IN_MEETING = "selector:#meeting video"
STOPS = {
    "selector": ["--stop-when-selector", "#ended"],
    "silence": ["--stop-when-silence", "3"],
    "frozen": ["--stop-when-frozen", "3"],
}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _ready_after_start(run: dict[str, Any]) -> float | None:
    timings = run.get("timings") or {}
    return round(timings["ready"] - timings["started"], 3) if timings.get("ready") else None


def audio_against_video(url: str, duration: float, repeat: int, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {"video": [], "audio_only": []}
    for i in range(repeat):
        for kind, extra, name in (("video", [], "rec.mp4"), ("audio_only", ["--audio-only"], "rec.m4a")):
            run = record_once(url, duration, workdir / f"{kind}-{i}" / name, env, extra)
            rows[kind].append(
                {
                    "ok": run.get("ok"),
                    "capture_cores": run.get("capture_cores"),
                    "cores_by_process": run.get("cores_by_process"),
                    "capture_peak_pss_mb": run.get("capture_peak_pss_mb"),
                    "size_bytes": run.get("size_bytes"),
                    "error": run.get("error"),
                }
            )
            print(f"{kind} {i + 1}/{repeat}: {rows[kind][-1]['capture_cores']} cores", flush=True)
            time.sleep(3)
    summary = {
        kind: {
            "capture_cores_median": _median([r["capture_cores"] for r in runs if r["capture_cores"] is not None]),
            "capture_peak_pss_mb_median": _median(
                [r["capture_peak_pss_mb"] for r in runs if r["capture_peak_pss_mb"] is not None]
            ),
        }
        for kind, runs in rows.items()
    }
    video, audio = summary["video"]["capture_cores_median"], summary["audio_only"]["capture_cores_median"]
    summary["cores_saved"] = round(video - audio, 3) if video is not None and audio is not None else None
    summary["saved_share"] = round((video - audio) / video, 3) if video and audio is not None else None
    return {"summary": summary, "runs": rows}


def join_cost(test_page: Any, repeat: int, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    script = workdir / "join.json"
    script.write_text(json.dumps(JOIN))
    rows: dict[str, list[float | None]] = {"tiles_default_readiness": [], "meeting_two_step_join": []}
    for i in range(repeat):
        plain = record_once(page.grid_url(test_page), 3, workdir / f"plain-{i}" / "rec.mp4", env)
        joined = record_once(
            test_page.url("/meeting?lobby=0"),
            3,
            workdir / f"join-{i}" / "rec.mp4",
            env,
            ["--actions", str(script), "--wait-for", IN_MEETING],
        )
        rows["tiles_default_readiness"].append(_ready_after_start(plain))
        rows["meeting_two_step_join"].append(_ready_after_start(joined))
        print(f"join {i + 1}/{repeat}: {rows['tiles_default_readiness'][-1]} s, {rows['meeting_two_step_join'][-1]} s")
    medians = {k: _median([v for v in values if v is not None]) for k, values in rows.items()}
    plain_s, joined_s = medians["tiles_default_readiness"], medians["meeting_two_step_join"]
    return {
        "ready_after_start_s": rows,
        "medians_s": medians,
        "added_by_join_s": round(joined_s - plain_s, 3) if plain_s is not None and joined_s is not None else None,
    }


def leaving(test_page: Any, end: float, repeat: int, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    script = workdir / "join.json"
    script.write_text(json.dumps(JOIN))
    out: dict[str, Any] = {}
    for reason, flags in STOPS.items():
        lags = []
        for i in range(repeat):
            run = record_once(
                test_page.url(f"/meeting?lobby=0&end={end:g}"),
                end + 60,
                workdir / f"stop-{reason}-{i}" / "rec.mp4",
                env,
                ["--actions", str(script), "--wait-for", IN_MEETING, *flags],
            )
            timings = run.get("timings") or {}
            lag = None
            if run.get("stop_reason") == reason and timings.get("ready") and timings.get("stopped"):
                lag = round(timings["stopped"] - (timings["ready"] + end), 3)
            lags.append({"stop_reason": run.get("stop_reason"), "banner_to_closed_s": lag, "error": run.get("error")})
            print(f"stop by {reason} {i + 1}/{repeat}: {lag} s", flush=True)
        values = [row["banner_to_closed_s"] for row in lags if row["banner_to_closed_s"] is not None]
        out[reason] = {"runs": lags, "median_s": _median(values), "max_s": round(max(values), 3) if values else None}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench meeting", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each audio/video recording")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--end", type=float, default=6.0, help="seconds from admission to the end banner")
    parser.add_argument("--workdir", type=Path, default=None)
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    env = dict(os.environ)
    env.setdefault("RECORDER_LOG_LEVEL", "warning")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-meeting-"))
    try:
        with page.serve() as test_page:
            env.setdefault("URL_ALLOWLIST", page.allowlist_entry(test_page.base))
            quiet = machine.check_quiet(args)
            info = machine.describe()
            results = {
                "audio_only": audio_against_video(page.grid_url(test_page), args.duration, args.repeat, workdir, env),
                "join": join_cost(test_page, args.repeat, workdir, env),
                "leaving": leaving(test_page, args.end, args.repeat, workdir, env),
            }
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    headline = {
        "audio_only": results["audio_only"]["summary"],
        "join": results["join"]["medians_s"] | {"added_by_join_s": results["join"]["added_by_join_s"]},
        "leaving": {reason: row["median_s"] for reason, row in results["leaving"].items()},
    }
    print(json.dumps(headline, indent=2))
    if not args.no_write:
        path = write_result(
            "meeting",
            results,
            options={"duration_s": args.duration, "repeat": args.repeat, "end_s": args.end, "quiet_check": quiet},
            machine_info=info,
            notes="capture cores over the capture window (first frame -> stop): Chromium + FFmpeg + Xvfb + PulseAudio."
            " Join cost = ready - started of `recorder record` (each run starts its own recorder). Banner to"
            " closed = stopped - (ready + end).",
        )
        print(f"wrote {path}")
    return 0
