"""What the egress guard costs: warm start latency and CPU per recording, guard on against guard off.

    python -m bench guard [--latency-runs 40] [--blocks 4] [--warmup 1] [--cpu-pairs 4] [--duration 20]

Both arms run the same build on the same page in one run; only RECORDER_EGRESS_GUARD differs.
- latency: the warm pool through the orchestrator (as `python -m bench latency --modes warm`), one
  orchestrator per arm, arms alternating in blocks so a drifting machine load hits both;
- cpu: `recorder record` of the 2x2 sync page (as `python -m bench fidelity`), arms alternating per
  recording; the guard runs inside the recorder's own process, so the figure compared is the whole
  process tree's cores over the capture window (`all_cores`), beside the capture processes' alone.
The page is on 127.0.0.1, which URL_ALLOWLIST opens for both arms: with the guard on, every request the
page makes still goes through the guard and is checked. Writes bench/results/guard-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import machine, page
from bench.fidelity import record_once
from bench.latency import MODES, one_run, summarise, wait_pool
from bench.orchestrator_proc import orchestrator
from bench.order import alternating
from bench.results import write_result

ARMS = {"on": "true", "off": "false"}
ALLOW = "127.0.0.1,localhost"


async def latency_block(
    arm: str, runs: int, url: str, duration: float, workdir: Path, warmup: int
) -> list[dict[str, Any]]:
    settings = {**MODES["warm"], "RECORDER_EGRESS_GUARD": ARMS[arm], "URL_ALLOWLIST": ALLOW}
    with orchestrator(workdir / f"latency-{arm}-{time.monotonic_ns()}", settings=settings) as orch:
        async with aiohttp.ClientSession(headers=orch.headers) as http:
            results = []
            for i in range(warmup + runs):
                await wait_pool(http, orch.base, "warm")
                run = await one_run(http, orch, url, duration)
                # The first recordings after an orchestrator starts meet a worker nobody has used yet; they are
                # kept in the results but left out of the summary, in both arms alike.
                run["warmup"] = i < warmup
                results.append(run)
                count = f"{i + 1}/{warmup + runs}"
                print(f"latency guard {arm} {count}: {run['latency_s']} s ({run['status']})", flush=True)
    return results


def cpu_run(arm: str, url: str, duration: float, out: Path) -> dict[str, Any]:
    env = {**os.environ, "RECORDER_EGRESS_GUARD": ARMS[arm], "URL_ALLOWLIST": ALLOW}
    env.setdefault("RECORDER_LOG_LEVEL", "warning")
    figures = record_once(url, duration, out, env)
    keep = ("ok", "error", "all_cores", "capture_cores", "capture_peak_pss_mb", "distinct_fps", "start_latency_s")
    return {"arm": arm, **{k: figures.get(k) for k in keep}}


def ratio(on: float | None, off: float | None) -> float | None:
    return round(on / off, 3) if on and off else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench guard", description=__doc__.splitlines()[0])
    parser.add_argument("--latency-runs", type=int, default=12, help="warm recordings per arm")
    parser.add_argument("--blocks", type=int, default=2, help="latency blocks per arm, alternating")
    parser.add_argument("--warmup", type=int, default=1, help="recordings per block left out of the summary")
    parser.add_argument("--cpu-pairs", type=int, default=3, help="recordings per arm for CPU, alternating")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each CPU recording")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet = machine.quiet()[1]
    info = machine.describe()
    workdir = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    latency: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    cpu: list[dict[str, Any]] = []
    per_block = max(1, args.latency_runs // args.blocks)
    try:
        with page.serve() as test_page:
            status_url = test_page.url("/status/200")
            for _ in range(args.blocks):
                for arm in ARMS:
                    latency[arm] += asyncio.run(latency_block(arm, per_block, status_url, 2.0, workdir, args.warmup))
            grid = page.grid_url(test_page)
            for i, arm in alternating(list(ARMS), args.cpu_pairs):
                run = cpu_run(arm, grid, args.duration, workdir / f"cpu-{arm}-{i}" / "rec.mp4")
                cpu.append(run)
                print(json.dumps(run), flush=True)
                time.sleep(3)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    summary: dict[str, Any] = {}
    for arm in ARMS:
        runs = [r for r in cpu if r["arm"] == arm and r.get("ok") and r.get("all_cores")]
        summary[arm] = {
            "latency": summarise([r for r in latency[arm] if not r["warmup"]]),
            "latency_with_warmup": summarise(latency[arm]),
            "cpu_runs": len(runs),
            # The guard runs in the recorder's own process: all_cores (the whole process tree) is what it costs.
            "all_cores_mean": round(statistics.fmean(r["all_cores"] for r in runs), 3) if runs else None,
            "capture_cores_mean": round(statistics.fmean(r["capture_cores"] for r in runs), 3) if runs else None,
        }
    summary["on_vs_off"] = {
        "warm_p95_latency": ratio(summary["on"]["latency"].get("p95_s"), summary["off"]["latency"].get("p95_s")),
        "all_cores": ratio(summary["on"]["all_cores_mean"], summary["off"]["all_cores_mean"]),
    }
    print(json.dumps(summary, indent=2))
    if not args.no_write:
        path = write_result(
            "guard",
            {"summary": summary, "latency_runs": latency, "cpu_runs": cpu},
            options=vars(args) | {"quiet_check": quiet, "allowlist": ALLOW},
            machine_info=info,
            notes="Same build, same page, one run; only RECORDER_EGRESS_GUARD differs. Target: on/off within 5% "
            "for warm p95 start latency and the recorder tree's cores.",
        )
        print(f"wrote {path}")
    return 0
