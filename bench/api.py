"""API throughput: req/s and latency percentiles for POST /v1/recordings and GET /v1/recordings/{id}.

    python -m bench api [--concurrency 16] [--requests 3000] [--seconds 30] [--synchronous FULL NORMAL]
                        [--db sqlite postgresql]

`orchestrator serve` runs as a subprocess on 127.0.0.1 with no pool (POOL_BACKEND=none: recordings stay
queued, so only the API and the store are measured) and its store on this machine's disk: SQLite (once
per --synchronous mode), and with `--db postgresql` a private PostgreSQL server started here the way the
tests start theirs (tests/support/postgres.py) but with the server's default durability (fsync on, each
commit synced: the peer of SQLite FULL); the CPU of its processes is reported beside the orchestrator's. An
aiohttp client keeps `concurrency` requests in flight, for at most `requests` requests or `seconds`,
whichever comes first: first POSTs (each a durable insert), then GETs of the recordings just created.
Client and server share the machine's cores; the CPU each used is reported. Writes
bench/results/api-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from bench import machine
from bench.latency import percentile
from bench.orchestrator_proc import RunningOrchestrator, orchestrator
from bench.procstats import CLK_TCK, read_proc
from bench.results import write_result


async def load(
    http: aiohttp.ClientSession,
    make_request: Any,
    *,
    concurrency: int,
    requests: int,
    seconds: float,
) -> dict[str, Any]:
    """Keep `concurrency` requests in flight until `requests` are done or `seconds` have passed."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    issued = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal issued
        while issued < requests and time.monotonic() < deadline:
            issued += 1
            began = time.perf_counter()
            status = await make_request(http)
            latencies.append(time.perf_counter() - began)
            statuses[status] = statuses.get(status, 0) + 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - began
    return {
        "requests": len(latencies),
        "seconds": round(elapsed, 3),
        "req_per_s": round(len(latencies) / elapsed, 1) if elapsed else None,
        "p50_ms": round(1000 * percentile(latencies, 50), 2),
        "p99_ms": round(1000 * percentile(latencies, 99), 2),
        "max_ms": round(1000 * max(latencies), 2) if latencies else None,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
    }


def _cpu_s(pid: int) -> float:
    info = read_proc(pid)
    return info.ticks / CLK_TCK if info else 0.0


def _tree_cpu_s(pid: int) -> float:
    """A server and its live children (PostgreSQL's backends, one per pooled connection)."""
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                pids.append(int(entry.name))
    return sum(_cpu_s(p) for p in pids)


def _self_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


async def measure(
    orch: RunningOrchestrator,
    url: str,
    concurrency: int,
    requests: int,
    seconds: float,
    database_pid: int | None = None,
) -> dict[str, Any]:
    created: list[str] = []
    body = {"url": url, "max_duration": 60, "metadata": {"bench": "api"}}

    async def post(http: aiohttp.ClientSession) -> int:
        async with http.post(orch.base + "/v1/recordings", json=body) as response:
            data = await response.json()
            if response.status == 202:
                created.append(data["id"])
            return response.status

    rng = random.Random(1)

    async def get(http: aiohttp.ClientSession) -> int:
        rid = rng.choice(created)
        async with http.get(f"{orch.base}/v1/recordings/{rid}") as response:
            await response.read()
            return response.status

    connector = aiohttp.TCPConnector(limit=concurrency)
    results: dict[str, Any] = {}
    async with aiohttp.ClientSession(headers=orch.headers, connector=connector) as http:
        # A short warm-up: connections, the first SQLite pages, Python's caches.
        await load(http, post, concurrency=concurrency, requests=min(100, requests), seconds=seconds)
        for name, request in (("POST /v1/recordings", post), ("GET /v1/recordings/{id}", get)):
            server0, client0 = _cpu_s(orch.process.pid), _self_cpu_s()
            database0 = _tree_cpu_s(database_pid) if database_pid else 0.0
            result = await load(http, request, concurrency=concurrency, requests=requests, seconds=seconds)
            result["server_cpu_s"] = round(_cpu_s(orch.process.pid) - server0, 2)
            if database_pid:
                result["database_cpu_s"] = round(_tree_cpu_s(database_pid) - database0, 2)
            result["client_cpu_s"] = round(_self_cpu_s() - client0, 2)
            results[name] = result
            print(f"  {name}: {result}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench api", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000, help="at most this many requests per route")
    parser.add_argument("--seconds", type=float, default=30.0, help="at most this long per route")
    parser.add_argument(
        "--synchronous", nargs="+", choices=["FULL", "NORMAL"], default=["FULL"], help="ORCHESTRATOR_DB_SYNCHRONOUS"
    )
    parser.add_argument(
        "--db", nargs="+", choices=["sqlite", "postgresql"], default=["sqlite"], help="the stores to measure"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="store location (default: a temp dir)")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    quiet = machine.check_quiet(args)
    info = machine.describe()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-api-", dir=os.environ.get("BENCH_API_DIR")))
    url = "http://127.0.0.1:9/page"  # never recorded: there is no pool
    runs = []
    try:
        for mode in args.synchronous if "sqlite" in args.db else []:
            settings = {"POOL_BACKEND": "none", "ORCHESTRATOR_DB_SYNCHRONOUS": mode}
            print(f"SQLite, ORCHESTRATOR_DB_SYNCHRONOUS={mode}", flush=True)
            with orchestrator(workdir / mode, settings=settings) as orch:
                result = asyncio.run(measure(orch, url, args.concurrency, args.requests, args.seconds))
            runs.append({"db": "sqlite", "synchronous": mode, "routes": result})
        if "postgresql" in args.db:
            with postgres_server() as server:
                settings = {"POOL_BACKEND": "none", "ORCHESTRATOR_DB": server.create_database("bench_api")}
                print("PostgreSQL (private server, fsync on)", flush=True)
                with orchestrator(workdir / "postgresql", settings=settings) as orch:
                    result = asyncio.run(
                        measure(orch, url, args.concurrency, args.requests, args.seconds, server.process.pid)
                    )
                server_kind = "private, PostgreSQL 15 defaults (fsync on)"
                runs.append({"db": "postgresql", "server": server_kind, "routes": result})
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write:
        path = write_result(
            "api",
            runs,
            options={
                "concurrency": args.concurrency,
                "requests": args.requests,
                "seconds": args.seconds,
                "store": f"SQLite WAL on {_filesystem(workdir)}",
                "db": args.db,
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="client (aiohttp, this process) and server share the machine's cores; loopback HTTP with a "
            "bearer token. POST = validation + URL policy + a durable insert; GET = one row rendered. "
            "Target: >= 500 req/s with p99 < 50 ms.",
        )
        print(f"wrote {path}")
    return 0


@contextlib.contextmanager
def postgres_server() -> Iterator[Any]:
    """A private PostgreSQL server, as the tests start theirs but with the server's own durability (fsync on,
    synchronous commits), so it stands beside SQLite FULL; stopped on the way out."""
    from tests.support.postgres import PostgresServer  # the tests' helper; needs the server binaries

    server = PostgresServer(durable=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _filesystem(path: Path) -> str:
    """The mount the store lives on, e.g. '/ (ext4 on /dev/vda)'."""
    best = ("", "?", "?")
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if str(path.resolve()).startswith(mount) and len(mount) > len(best[0]):
                best = (mount, fstype, device)
    except OSError:
        pass
    return f"{best[0]} ({best[1]} on {best[2]})"
