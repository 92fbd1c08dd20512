"""Leader failover: SIGKILL the leading replica, time until another one leads.

    python -m bench failover [--runs 5]

Two `orchestrator serve` replicas (POOL_BACKEND=none) on one private PostgreSQL server, started here
the way the tests start theirs (tests/support/postgres.py). Each run finds the leader (the replica whose
`orchestrator_leader` gauge is 1), SIGKILLs its process group, and polls the survivor's /metrics every
20 ms until it leads; then a fresh replica replaces the killed one and joins as a follower. The
measured time is from the kill to the survivor's first answer as leader (its loops have started by
then). Writes bench/results/failover-<date>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench import machine
from bench.api import postgres_server
from bench.orchestrator_proc import RunningOrchestrator, orchestrator
from bench.results import write_result

_LEADER = re.compile(rb"^orchestrator_leader\s+([0-9.eE+-]+)\s*$", re.M)
# The bound on a handover after the leader dies.
BOUND = 15.0


def leads(orch: RunningOrchestrator) -> bool | None:
    """What the replica's gauge says; None when it does not answer."""
    request = urllib.request.Request(orch.base + "/metrics", headers=orch.headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            found = _LEADER.search(response.read())
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None
    return found is not None and float(found.group(1)) == 1.0


def wait_for_one_leader(replicas: list[RunningOrchestrator], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        roles = [leads(r) for r in replicas]
        if roles.count(True) == 1 and roles.count(False) == len(replicas) - 1:
            return roles.index(True)
        time.sleep(0.05)
    raise TimeoutError(f"no single leader within {timeout:g} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench failover", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet = machine.quiet()[1]
    info = machine.describe()
    workdir = Path(tempfile.mkdtemp(prefix="bench-failover-"))
    times: list[float] = []
    try:
        with postgres_server() as server, contextlib.ExitStack() as stack:
            settings = {"POOL_BACKEND": "none", "ORCHESTRATOR_DB": server.create_database("bench_failover")}
            made = 0

            def replica() -> RunningOrchestrator:
                nonlocal made
                made += 1
                return stack.enter_context(orchestrator(workdir / f"replica-{made}", settings=settings))

            replicas = [replica(), replica()]
            for run in range(args.runs):
                leader = wait_for_one_leader(replicas)
                survivor = replicas[1 - leader]
                killed_at = time.monotonic()
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(replicas[leader].process.pid, signal.SIGKILL)
                while leads(survivor) is not True:
                    if time.monotonic() - killed_at > 4 * BOUND:
                        raise TimeoutError("the survivor never took over")
                    time.sleep(0.02)
                took = time.monotonic() - killed_at
                times.append(round(took, 3))
                print(f"  run {run + 1}: the survivor leads {took:.2f} s after the kill", flush=True)
                replicas[leader] = replica()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary: dict[str, Any] = {
        "runs_s": times,
        "min_s": min(times),
        "median_s": round(statistics.median(times), 3),
        "max_s": max(times),
        "bound_s": BOUND,
    }
    print(f"  {summary}", flush=True)
    if not args.no_write:
        path = write_result(
            "failover",
            summary,
            options={"runs": args.runs, "replicas": 2, "quiet_check": quiet},
            machine_info=info,
            notes="SIGKILL of the leader's process group: its kernel closes the election session's socket, "
            "PostgreSQL frees the advisory lock at once, and the survivor takes it with its next try "
            "(every 1.5 s). A leader cut off by the network is slower: see orchestrator/leadership.py.",
        )
        print(f"wrote {path}")
    return 0
