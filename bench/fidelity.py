"""Fidelity: one 720p30 recording of the 2x2 sync page with `recorder record`, exactly as a user runs it.

    python -m bench fidelity [--duration 60|600] [--repeat 1] [--preset P --crf C --threads T] [--require-quiet]

The command starts cold (no recorder running): its start latency is command start -> first frame, split
into warm-up (Xvfb, PulseAudio, Chromium), page load and capture start. The quality report of the file
gives distinct fps, gaps, frozen spans, A/V offset (mean, p95, std, drift), size and bitrate; the
recorder's process tree is sampled from /proc for CPU cores and peak memory over the capture window.
Writes bench/results/fidelity-<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import machine, page
from bench.concurrent import usage_summary
from bench.metrics import FPS_TARGET, recording_figures
from bench.procstats import TreeSampler
from bench.results import write_result

TARGETS = {
    "fps": f">= {FPS_TARGET} distinct, no gap",
    "av_mean_ms": "|mean| <= 15",
    "av_p95_abs_ms": "<= 30",
    "av_drift_ms": "<= 10 over 10 min",
    "capture_cores": "<= 0.4",
    "capture_peak_pss_mb": "<= 350",
}


def record_once(url: str, duration: float, out: Path, env: dict[str, str], extra: Sequence[str] = ()) -> dict[str, Any]:
    """Run `recorder record` (with `extra` flags) for one file; return its figures, start latency and the
    command's outcome."""
    argv = [sys.executable, "-m", "recorder.cli", "record", url, "--duration", f"{duration:g}", "--out", str(out)]
    argv += extra
    sampler = TreeSampler(interval=1.0).start()
    command_start = time.time()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    sampler.watch("rec", proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=2 * duration + 300)
    except subprocess.TimeoutExpired:
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        command_end = time.time()
        sampler.stop()
    sidecar_path = out.with_suffix(".json")
    if proc.returncode != 0 or not sidecar_path.exists():
        return {"ok": False, "error": stderr.decode(errors="replace")[-2000:], "exit": proc.returncode}
    sidecar = json.loads(sidecar_path.read_text())
    timings = sidecar["timings"]
    quality = sidecar.get("quality") or {}
    done = {
        "ok": True,
        "quality": {
            "size": quality.get("size"),
            "bit_rate": quality.get("bit_rate"),
            "duration": quality.get("duration"),
            "video": quality.get("video"),
            "audio": quality.get("audio"),
            "sync": quality.get("sync"),
        },
        "progress": sidecar.get("capture"),
    }
    usage = usage_summary(sampler, "rec", timings.get("first_frame"), timings.get("stopped"))
    whole = usage_summary(sampler, "rec", None, None)
    figures = recording_figures(done, usage)
    first = timings.get("first_frame")
    figures.update(
        {
            "start_latency_s": round(first - command_start, 3) if first else None,
            "start_breakdown_s": {
                "command_to_recorder_warm": round(timings["started"] - command_start, 3),
                "page_load": round(timings["ready"] - timings["started"], 3) if timings.get("ready") else None,
                "capture_start": round(first - timings["ready"], 3) if first and timings.get("ready") else None,
            },
            "stop_to_finalized_s": round(timings["finalized"] - timings["stopped"], 3)
            if timings.get("finalized") and timings.get("stopped")
            else None,
            "command_total_s": round(command_end - command_start, 3),
            "whole_command_usage": whole,
            # Everything the machine did while capturing; well above capture_cores means another load ran too.
            "machine_cores_during_capture": round(m, 3)
            if (m := sampler.machine_cores(timings.get("first_frame"), timings.get("stopped"))) is not None
            else None,
            "av_offset_correction_ms": sidecar.get("av_offset_correction_ms"),
            "stop_reason": sidecar.get("stop_reason"),
            "timings": timings,
            "versions": sidecar.get("versions"),
            "sync_markers": (quality.get("sync") or {}).get("markers"),
            "output": stdout.decode(errors="replace").strip(),
        }
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fidelity", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60; 600 for drift)")
    parser.add_argument("--repeat", type=int, default=1, help="recordings, one after another")
    parser.add_argument("--preset", help="libx264 preset (env RECORDER_PRESET)")
    parser.add_argument("--crf", type=int, help="libx264 CRF (env RECORDER_CRF)")
    parser.add_argument("--threads", type=int, help="encoder threads (env RECORDER_ENCODER_THREADS)")
    parser.add_argument("--x264-params", help="libx264 options on top of the preset (env RECORDER_X264_PARAMS)")
    parser.add_argument("--screen-mode", choices=("on", "off"), help="the display's mode at the capture rate")
    parser.add_argument("--workdir", type=Path, default=None, help="where recordings go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the recordings")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)

    env = dict(os.environ)
    for name, value in (
        ("RECORDER_PRESET", args.preset),
        ("RECORDER_CRF", args.crf),
        ("RECORDER_ENCODER_THREADS", args.threads),
        ("RECORDER_X264_PARAMS", args.x264_params),
        ("RECORDER_SCREEN_MODE", {"on": "true", "off": "false"}.get(args.screen_mode or "")),
    ):
        if value is not None:
            env[name] = str(value)
    env.setdefault("RECORDER_LOG_LEVEL", "warning")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-fidelity-"))
    runs = []
    try:
        with page.serve() as test_page:
            url = page.grid_url(test_page)
            env.setdefault("URL_ALLOWLIST", page.allowlist_entry(url))
            quiet = machine.check_quiet(args)
            info = machine.describe()
            for i in range(args.repeat):
                figures = record_once(url, args.duration, workdir / f"run{i}" / "rec.mp4", env)
                runs.append(figures)
                print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}), flush=True)
                time.sleep(5 if i + 1 < args.repeat else 0)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write:
        path = write_result(
            "fidelity",
            {"targets": TARGETS, "runs": runs},
            options={
                "duration_s": args.duration,
                "repeat": args.repeat,
                "preset": args.preset,
                "crf": args.crf,
                "threads": args.threads,
                "x264_params": args.x264_params,
                "screen_mode": args.screen_mode,
                "page": "/grid?tone=1000 (2x2 grid: sync clip + moving tiles, 640x360 VP8 each), 1280x720 at 30",
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="start latency = `recorder record` command start -> first captured frame (cold: no recorder "
            "running; disk cache warm). CPU and memory over the capture window (first frame -> stop); capture = "
            "Chromium + FFmpeg + Xvfb + PulseAudio; whole_command_usage covers the whole command incl. finalize.",
        )
        print(f"wrote {path}")
    return 0 if all(r.get("ok") for r in runs) else 1
