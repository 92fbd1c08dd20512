"""Webhook isolation: a healthy receiver's delivery latency while 16 receivers fail, against none failing.

    python -m bench webhooks [--events 50] [--failing 16] [--per-failing 4] [--timeout 5]

`orchestrator serve` runs as a subprocess (POOL_BACKEND=none: recordings stay queued, so each one sends
its `queued` event and nothing else). The receivers are aiohttp servers in this process, each on a port
of its own (a destination of its own): half of the failing ones answer 503 at once, the other half hang
past ORCHESTRATOR_WEBHOOK_TIMEOUT. Each failing receiver first gets `per-failing` recordings, whose
events keep failing and being retried (backoff 0.2 s, at most 1 s) during the whole measurement. Then
`events` recordings are created one after the other for the healthy receiver; the latency of each is
from just before its POST /v1/recordings to the moment the receiver has the event. The same is measured
with no failing receivers. Writes bench/results/webhooks-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench import machine
from bench.latency import percentile
from bench.orchestrator_proc import RunningOrchestrator, orchestrator
from bench.results import write_result

PAGE = "http://127.0.0.1:9/page"  # never recorded: there is no pool


class Receivers:
    """The healthy receiver (arrival time by recording id) and the failing ones, on 127.0.0.1."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.failed_attempts = 0
        self._runners: list[web.AppRunner] = []

    async def _serve(self, handler: Any) -> str:
        app = web.Application()
        app.router.add_post("/hook", handler)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runners.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}/hook"

    async def healthy(self) -> str:
        async def handle(request: web.Request) -> web.Response:
            event = await request.json()
            self.arrived.setdefault(event["recording_id"], time.perf_counter())
            return web.Response(status=204)

        return await self._serve(handle)

    async def unavailable(self) -> str:
        async def handle(request: web.Request) -> web.Response:
            self.failed_attempts += 1
            return web.Response(status=503)

        return await self._serve(handle)

    async def hanging(self) -> str:
        async def handle(request: web.Request) -> web.Response:
            self.failed_attempts += 1
            await asyncio.sleep(3600)
            return web.Response(status=204)

        return await self._serve(handle)

    async def close(self) -> None:
        for runner in self._runners:
            await runner.cleanup()


async def measure(orch: RunningOrchestrator, events: int, failing: int, per_failing: int) -> dict[str, Any]:
    receivers = Receivers()
    try:
        good = await receivers.healthy()
        bad = [await (receivers.unavailable() if i % 2 == 0 else receivers.hanging()) for i in range(failing)]
        async with aiohttp.ClientSession(headers=orch.headers) as http:

            async def create(hook: str) -> str:
                async with http.post(f"{orch.base}/v1/recordings", json={"url": PAGE, "webhook_url": hook}) as r:
                    body = await r.json()
                    assert r.status == 202, body
                    return str(body["id"])

            for hook in bad:
                for _ in range(per_failing):
                    await create(hook)
            if bad:
                await asyncio.sleep(2.0)  # every failing event tried at least once; retries under way
            latencies: list[float] = []
            for _ in range(events):
                sent = time.perf_counter()
                rid = await create(good)
                deadline = time.monotonic() + 30
                while rid not in receivers.arrived:
                    if time.monotonic() > deadline:
                        raise AssertionError(f"event of {rid} not delivered in 30 s")
                    await asyncio.sleep(0.002)
                latencies.append(receivers.arrived[rid] - sent)
                await asyncio.sleep(0.05)
        return {
            "failing_receivers": failing,
            "failing_events": failing * per_failing,
            "failed_attempts_during_run": receivers.failed_attempts,
            "events": len(latencies),
            "p50_s": round(percentile(latencies, 50), 4),
            "p95_s": round(percentile(latencies, 95), 4),
            "max_s": round(max(latencies), 4),
        }
    finally:
        await receivers.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench webhooks", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50, help="healthy events measured per scenario")
    parser.add_argument("--failing", type=int, default=16, help="failing receivers (half 503, half hanging)")
    parser.add_argument("--per-failing", type=int, default=4, help="recordings (events) per failing receiver")
    parser.add_argument("--timeout", type=float, default=5.0, help="ORCHESTRATOR_WEBHOOK_TIMEOUT")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args(argv)
    quiet = machine.quiet()[1]
    info = machine.describe()
    workdir = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    settings = {
        "POOL_BACKEND": "none",
        "URL_ALLOWLIST": "127.0.0.1",
        "ORCHESTRATOR_WEBHOOK_SECRET": "bench-webhook-secret",
        "ORCHESTRATOR_WEBHOOK_BACKOFF": "0.2",
        "ORCHESTRATOR_WEBHOOK_MAX_BACKOFF": "1",
        "ORCHESTRATOR_WEBHOOK_TIMEOUT": str(args.timeout),
    }
    runs: dict[str, Any] = {}
    try:
        for name, failing in (("none_failing", 0), (f"{args.failing}_failing", args.failing)):
            print(f"{name}: {args.events} events to the healthy receiver", flush=True)
            with orchestrator(workdir / name, settings=settings) as orch:
                runs[name] = asyncio.run(measure(orch, args.events, failing, args.per_failing))
            print(f"  {runs[name]}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_write:
        path = write_result(
            "webhooks",
            runs,
            options={**vars(args), "settings": settings, "quiet_check": quiet},
            machine_info=info,
            notes="latency = POST /v1/recordings sent -> the healthy receiver has the event (the outbox write, "
            "the loop's wake-up, one signed POST). Receivers run in this process, the orchestrator in another; "
            "both share the machine's cores with the failing receivers' retries.",
        )
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
