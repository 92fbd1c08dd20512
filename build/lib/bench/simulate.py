"""Warm-pool simulation at internet scale: static pool, reactive warm pool, predictive warm pool.

    python -m bench simulate [--per-day 1000 50000 1000000] [--seed 1] [--tick S] [--no-write]

For each daily volume: one simulated day (after a warm-up) per policy, all driven by the orchestrator's
own `decide`. The static size and the reactive spare are sized from another day's sample ("yesterday");
"reactive, spare 1" is the orchestrator as shipped (POOL_SPARE=1). Pods are single-use with a 20-60 s
cold start and no cluster ceiling. Writes bench/results/simulate-<date>.json.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from bench.results import write_result
from bench.sim.engine import PodModel, SimResult, Simulation
from bench.sim.policies import PoolPolicy, PredictivePool, ReactivePool, StaticPool
from bench.sim.sizing import size_from_history
from bench.sim.workload import Workload

UNLIMITED = 10_000_000
TARGET_P99_S = 2.0
TARGET_IDLE_SHARE = 0.10


def default_tick(per_day: float) -> float:
    """2 s up to 200k recordings a day, 10 s above (the policy loop dominates the run time at scale)."""
    return 2.0 if per_day <= 200_000 else 10.0


def policies_for(workload: Workload, pods: PodModel, tick: float, seed: int) -> list[PoolPolicy]:
    horizon = pods.cold_start_max + max(10.0, 2 * tick)
    sizing = size_from_history(workload, horizon=horizon, finalize=pods.finalize, seed=seed + 1000)
    return [
        StaticPool(size=sizing.static_size, name=f"static, {sizing.static_size} pods (yesterday's peak need)"),
        ReactivePool(spare=1, max_pods=UNLIMITED, name="reactive, spare 1 (as shipped)"),
        ReactivePool(
            spare=sizing.spare,
            max_pods=UNLIMITED,
            name=f"reactive, spare {sizing.spare} (yesterday's worst {horizon:g} s)",
        ),
        PredictivePool(max_pods=UNLIMITED, horizon=horizon),
    ]


def run_scale(per_day: float, *, seed: int, tick: float | None, pods: PodModel) -> list[SimResult]:
    workload = Workload(per_day)
    tick = tick or default_tick(per_day)
    results = []
    for policy in policies_for(workload, pods, tick, seed):
        result = Simulation(workload, policy, pods=pods, seed=seed, tick=tick).run()
        results.append(result)
        print(_row(result), flush=True)
    return results


def _row(r: SimResult) -> str:
    return (
        f"{r.per_day:>9,.0f}/day  {r.policy:<48} p50 {r.p50_wait:6.2f} s  p99 {r.p99_wait:6.2f} s  "
        f">5 s {100 * r.share_over_5s:6.2f} %  idle {100 * r.idle_share:5.1f} %  "
        f"peak {r.peak_pods:>6} pods  ({r.runtime_s:.1f} s)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench simulate", description=__doc__.splitlines()[0])
    parser.add_argument("--per-day", type=float, nargs="+", default=[1_000, 50_000, 1_000_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tick", type=float, default=None, help="policy step in seconds (default: 2, 10 above 200k)")
    parser.add_argument("--cold-start", type=float, nargs=2, default=[20.0, 60.0], metavar=("MIN", "MAX"))
    parser.add_argument("--finalize", type=float, default=5.0, help="seconds a pod stays busy after recording")
    parser.add_argument("--no-write", action="store_true", help="print only; write no result file")
    args = parser.parse_args(argv)
    pods = PodModel(cold_start_min=args.cold_start[0], cold_start_max=args.cold_start[1], finalize=args.finalize)

    rows: list[dict[str, Any]] = []
    for per_day in args.per_day:
        for result in run_scale(per_day, seed=args.seed, tick=args.tick, pods=pods):
            row = result.summary()
            row["meets_50k_target"] = result.p99_wait <= TARGET_P99_S and result.idle_share <= TARGET_IDLE_SHARE
            rows.append(row)
    if not args.no_write:
        workload = asdict(Workload(1.0))
        workload.pop("per_day")
        path = write_result(
            "simulate",
            rows,
            options={
                "per_day": args.per_day,
                "seed": args.seed,
                "tick": args.tick or "2 s up to 200k/day, 10 s above",
                "pods": asdict(pods),
                "workload": workload,
                "measured_day_hours": 24,
                "warmup_hours": 6,
            },
            notes="wait = time from request to a pod taking the recording (queue wait; the warm start itself "
            "is measured by the latency benchmark). idle_share = idle pod-hours / all pod-hours "
            f"(starting + idle + busy) during the day. Targets at 50k/day: p99 <= {TARGET_P99_S:g} s, "
            f"idle <= {100 * TARGET_IDLE_SHARE:g} %. A 6 h warm-up precedes the measured day.",
        )
        print(f"wrote {path}")
    return 0
