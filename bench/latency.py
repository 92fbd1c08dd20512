"""Start latency through the orchestrator: POST /v1/recordings -> first captured frame, warm pool vs cold.

    python -m bench latency [--runs 20] [--modes warm cold] [--pages empty tiles] [--duration 2] [--require-quiet]

`orchestrator serve` runs as a subprocess with its local pool of `recorder worker` processes:
- warm: POOL_SPARE=1 (a worker with Xvfb, PulseAudio and Chromium already up waits for each request);
- cold: POOL_MIN=0, POOL_SPARE=0, POOL_IDLE_COOLDOWN=0 (every request starts a worker from nothing).
Pages: `empty` is ready at once (a plain 200 response); `tiles` is the reference 2x2 grid of playing videos
with the default readiness (DOMContentLoaded); `tiles-load` the same page waiting for `load`, which the
videos delay (the readiness that was the default before). The first frame is the worker's own report
(`timestamps.first_frame`, from FFmpeg's progress), polled with GET /v1/recordings/{id}; each run waits
for the previous recording to complete and the pool to settle. Writes bench/results/latency-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench import machine, page
from bench.orchestrator_proc import RunningOrchestrator, orchestrator
from bench.results import write_result

MODES: dict[str, dict[str, str]] = {
    "warm": {"POOL_MIN": "0", "POOL_SPARE": "1", "POOL_MAX": "2"},
    "cold": {"POOL_MIN": "0", "POOL_SPARE": "0", "POOL_MAX": "2", "POOL_IDLE_COOLDOWN": "0"},
}
TERMINAL = {"completed", "failed", "cancelled"}
PAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "empty": ("/status/200", {}),
    "tiles": ("/grid?tone=1000", {}),
    "tiles-load": ("/grid?tone=1000", {"wait_for": {"kind": "load"}}),
}


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value).timestamp() if value else None


async def _get(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(url) as response:
        response.raise_for_status()
        return await response.json()


async def wait_pool(http: aiohttp.ClientSession, base: str, mode: str, timeout: float = 180.0) -> float:
    """Until the pool is as the mode wants it before a request: one idle worker (warm) or none (cold)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        pool = await _get(http, base + "/v1/pool")
        if mode == "warm" and pool["idle"] >= 1 and pool["active"] == 0:
            return time.monotonic() - began
        if mode == "cold" and not pool["workers"] and pool["active"] == 0:
            return time.monotonic() - began
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the pool did not settle for a {mode} start within {timeout:g} s")


async def one_run(
    http: aiohttp.ClientSession, orch: RunningOrchestrator, url: str, duration: float, extra: dict[str, Any]
) -> dict[str, Any]:
    requested = time.time()
    body = {"url": url, "max_duration": duration, **extra}
    async with http.post(orch.base + "/v1/recordings", json=body) as response:
        body = await response.json()
        if response.status != 202:
            raise RuntimeError(f"POST answered {response.status}: {body}")
    posted = time.time()
    rid = body["id"]
    first_frame = None
    deadline = time.monotonic() + 180
    record: dict[str, Any] = body
    while time.monotonic() < deadline:
        record = await _get(http, f"{orch.base}/v1/recordings/{rid}")
        stamps = record["timestamps"]
        if first_frame is None and stamps.get("first_frame"):
            first_frame = _ts(stamps["first_frame"])
        if record["status"] in TERMINAL:
            break
        await asyncio.sleep(0.05 if first_frame is None else 0.25)
    stamps = record["timestamps"]
    leased = _ts(stamps.get("starting"))
    return {
        "id": rid,
        "status": record["status"],
        "error": record.get("error"),
        "latency_s": round(first_frame - requested, 3) if first_frame else None,
        "post_s": round(posted - requested, 4),
        "to_lease_s": round(leased - requested, 3) if leased else None,
        "lease_to_first_frame_s": round(first_frame - leased, 3) if first_frame and leased else None,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    values = [r["latency_s"] for r in runs if r["latency_s"] is not None]
    lease = [r["to_lease_s"] for r in runs if r["to_lease_s"] is not None]
    if not values:
        return {"runs": len(runs), "measured": 0}
    return {
        "runs": len(runs),
        "measured": len(values),
        "failed": sum(1 for r in runs if r["status"] != "completed"),
        "p50_s": round(percentile(values, 50), 3),
        "p95_s": round(percentile(values, 95), 3),
        "max_s": round(max(values), 3),
        "mean_s": round(statistics.fmean(values), 3),
        "to_lease_p50_s": round(percentile(lease, 50), 3) if lease else None,
    }


async def run_mode(
    mode: str, page_name: str, runs: int, url: str, duration: float, workdir: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    with orchestrator(workdir / f"{mode}-{page_name}", settings=MODES[mode]) as orch:
        async with aiohttp.ClientSession(headers=orch.headers) as http:
            results = []
            for i in range(runs):
                settle = await wait_pool(http, orch.base, mode)
                run = await one_run(http, orch, url, duration, extra)
                run["settled_after_s"] = round(settle, 2)
                results.append(run)
                print(f"{mode} {page_name} {i + 1}/{runs}: {run['latency_s']} s ({run['status']})", flush=True)
    summary = summarise(results)
    return {"mode": mode, "page": page_name, "settings": MODES[mode], "summary": summary, "runs": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=["warm", "cold"])
    parser.add_argument("--pages", nargs="+", choices=sorted(PAGES), default=["empty", "tiles"])
    parser.add_argument("--duration", type=float, default=2.0, help="max_duration of each recording (s)")
    parser.add_argument("--workdir", type=Path, default=None)
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-latency-"))
    results = []
    try:
        with page.serve() as test_page:
            for page_name in args.pages:
                path, extra = PAGES[page_name]
                for mode in args.modes:
                    url = test_page.url(path)
                    result = asyncio.run(run_mode(mode, page_name, args.runs, url, args.duration, workdir, extra))
                    results.append(result)
                    print(f"{mode} {page_name}: {result['summary']}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write:
        path = write_result(
            "latency",
            results,
            options={
                "runs": args.runs,
                "duration_s": args.duration,
                "pages": {name: PAGES[name][0] for name in args.pages},
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="latency = POST sent -> first frame captured by the worker (its progress report), both on this "
            "machine's clock. to_lease = POST -> the worker's lease (status starting). Targets: warm p95 <= 1 s, "
            "cold <= 3 s.",
        )
        print(f"wrote {path}")
    return 0
