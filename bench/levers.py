"""Levers: named capture variants against the shipped settings, one lever each, N recordings at once.

    python -m bench levers [--n 1] [--rounds 2] [--duration 20] [--page grid|animation] [--levers shipped low-end ...]

Every round runs each lever once, in turn (shipped first), so slow drift of the machine spreads over all
of them instead of favouring whichever ran first. Per lever: the median over rounds of each recording's
distinct fps, longest repeat, A/V offset, cores and PSS by process (Chromium, FFmpeg, Xvfb, PulseAudio),
and whether every recording held. Writes bench/results/levers-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import machine, page
from bench.capture_options import CaptureOptions
from bench.density import run_n
from bench.results import write_result
from recorder.source.browser import DISABLED_FEATURES


@dataclass(frozen=True)
class Lever:
    name: str
    what: str
    changes: dict[str, Any] = field(default_factory=dict)  # CaptureOptions fields to change


def _features_back(*names: str) -> dict[str, Any]:
    """The shipped flags with `names` no longer in --disable-features: Chromium's defaults for them."""
    kept = [name for name in DISABLED_FEATURES if name not in names]
    return {"chromium_drop": ("--disable-features",), "chromium_add": (f"--disable-features={','.join(kept)}",)}


OMNIBOX_PAGES = _features_back("WebUIOmniboxPopup", "WebUIOmniboxAimPopup")
LEVERS: tuple[Lever, ...] = (
    Lever("shipped", "the recorder's defaults"),
    Lever("screen-30hz", "the screen mode: Chromium draws at the capture rate", {"screen_mode": True}),
    Lever("x11grab", "FFmpeg's own grab on its own clock (RECORDER_GRABBER=x11grab)", {"grabber": "x11grab"}),
    Lever(
        "grab-bgr0",
        "the paced grab hands FFmpeg the screen's BGR0 and FFmpeg's swscale converts it, as before",
        {"grab_pixel_format": "BGR0"},
    ),
    Lever(
        "encoder-before",
        "the encoder shipped before: veryfast, CRF 23, no extra parameters",
        {"preset": "veryfast", "crf": 23, "x264_params": ""},
    ),
    Lever("low-end", "Chromium --enable-low-end-device-mode", {"chromium_add": ("--enable-low-end-device-mode",)}),
    Lever(
        "in-process-gpu",
        "Chromium --in-process-gpu (the display compositor in the browser process)",
        {"chromium_add": ("--in-process-gpu",)},
    ),
    Lever(
        "low-end+in-process-gpu",
        "both of the above",
        {"chromium_add": ("--enable-low-end-device-mode", "--in-process-gpu")},
    ),
    Lever("renderer-limit-1", "Chromium --renderer-process-limit=1", {"chromium_add": ("--renderer-process-limit=1",)}),
    Lever("xvfb-glx", "Xvfb with its GL extension (Mesa loaded), as before", {"xvfb_glx": True}),
    Lever("omnibox-pages", "Chromium's omnibox dropdown pages kept loaded, as before", OMNIBOX_PAGES),
    Lever(
        "memory-before", "xvfb-glx and omnibox-pages: the memory as shipped before", {"xvfb_glx": True, **OMNIBOX_PAGES}
    ),
)
BY_NAME = {lever.name: lever for lever in LEVERS}
FIGURES = (
    "steady_fps",
    "longest_repeat_frames",
    "av_mean_ms",
    "av_p95_abs_ms",
    "capture_cores",
    "capture_cores_with_recorder",
    "capture_peak_pss_mb",
)


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def summarize(lever: Lever, runs: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [row for run in runs for row in run["recordings"]]
    summary: dict[str, Any] = {"lever": lever.name, "what": lever.what, "changes": lever.changes}
    summary |= {key: _median([row.get(key) for row in rows]) for key in FIGURES}
    summary["min_steady_fps"] = min((row["steady_fps"] or 0.0 for row in rows), default=None)
    summary["max_longest_repeat"] = max((row.get("longest_repeat_frames") or 0 for row in rows), default=None)
    offsets = [abs(row["av_mean_ms"]) for row in rows if row["av_mean_ms"] is not None]
    summary["max_abs_av_mean_ms"] = max(offsets, default=None)
    for key in ("cores_by_process", "pss_mb_by_process"):
        names = sorted({name for row in rows for name in (row.get(key) or {})})
        summary[key] = {name: _median([(row.get(key) or {}).get(name) for row in rows]) for name in names}
    summary["every_run_held"] = all(run["holds"] for run in runs)
    summary["machine_cores_while_all_capture"] = _median([run["machine_cores_while_all_capture"] for run in runs])
    return summary


def _line(s: dict[str, Any]) -> str:
    return (
        f"{s['lever']:<24} fps {s['steady_fps']} (min {s['min_steady_fps']})  repeat<= {s['max_longest_repeat']}  "
        f"A/V {s['av_mean_ms']} ms (|max| {s['max_abs_av_mean_ms']})  cores {s['capture_cores']} "
        f"(with the recorder {s['capture_cores_with_recorder']})  "
        f"PSS {s['capture_peak_pss_mb']} MB  {s['cores_by_process']}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench levers", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1, help="recordings at once (default 1)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every lever, in turn (default 2)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per recording (default 20)")
    parser.add_argument("--levers", nargs="+", choices=sorted(BY_NAME), default=[lever.name for lever in LEVERS])
    parser.add_argument("--page", choices=sorted(page.PAGES), default="grid", help="the page recorded")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of rest between runs")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    chosen = [BY_NAME[name] for name in dict.fromkeys(["shipped", *args.levers])]
    quiet = machine.check_quiet(args)
    info = machine.describe()
    workdir = Path(tempfile.mkdtemp(prefix="bench-levers-"))
    runs: dict[str, list[dict[str, Any]]] = {lever.name: [] for lever in chosen}
    try:
        with page.serve() as test_page:
            url = page.page_url(test_page, args.page)
            for round_number in range(args.rounds):
                for lever in chosen:
                    options = replace(CaptureOptions.defaults(), **lever.changes)
                    where = workdir / f"{lever.name}-{round_number}"
                    result = asyncio.run(run_n(args.n, url, args.duration, options.as_dict(), where))
                    runs[lever.name].append(result)
                    fps = result["steady_fps"] or {}
                    print(f"round {round_number + 1}/{args.rounds} {lever.name}: fps min {fps.get('min')}", flush=True)
                    time.sleep(args.settle)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summaries = [summarize(lever, runs[lever.name]) for lever in chosen]
    for summary in summaries:
        print(_line(summary))
    if not args.no_write:
        path = write_result(
            "levers",
            {"summaries": summaries, "runs": runs},
            options={
                "page": page.PAGES[args.page],
                "n": args.n,
                "rounds": args.rounds,
                "duration_s": args.duration,
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="Each lever changes one thing from the shipped settings; medians over every recording of every "
            "round. capture = Chromium + FFmpeg + Xvfb + PulseAudio; PSS splits shared pages fairly.",
        )
        print(f"wrote {path}")
    return 0
