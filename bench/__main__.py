"""`python -m bench <name> [options]`: run one benchmark; `python -m bench <name> --help` for its options."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "fidelity": "one 720p30 recording of the 2x2 sync page: fps, gaps, A/V offset, CPU, memory, start latency",
    "density": "N concurrent recordings: per-recording fps, gaps, A/V offset, CPU and memory; the largest N that holds",
    "latency": "request -> first frame through the orchestrator, warm pool vs cold",
    "api": "orchestrator API throughput and p99 latency for POST and GET",
    "finalize": "stop -> object confirmed in S3 (loopback server), 1/10/60-minute files",
    "soak": "a long recording with the memory of every process sampled each minute",
    "peers": "the peers' published capture pipelines against ours, same page, same sources",
    "meeting": "audio-only against video, a join script's start cost, end banner -> file closed",
    "guard": "the egress guard's cost: warm start latency and CPU per recording, guard on against off",
    "simulate": "discrete-event simulation of the warm pool at 1k, 50k and 1M recordings a day",
    "webhooks": "a healthy webhook receiver's delivery latency while 16 receivers fail, against none failing",
    "webrtc": "the timeline's WebRTC wrapper: Chromium and recorder CPU on a loopback call, wrapper on against off",
    "failover": "two orchestrator replicas on PostgreSQL: leader SIGKILL -> the other one leading, over a few runs",
    "levers": "capture levers one at a time against the shipped settings: fps, repeats, A/V, cores and PSS by process",
    "sync": "the A/V offset of many single recordings one after another (warm or cold): its spread between files",
    "timeline": "the timeline's cost: CPU per recording with it against without it, and timeline.json's size",
    "phase": "where Chromium presents each page's video on the clock, load after load, page after page",
    "sinkclock": "samples a recording's sink delivers per second of the clock, by the keeper's latency",
    "encoder": "x264 settings on one lossless capture of the 2x2 page: CPU cores, SSIM/PSNR and size per candidate",
}


def usage() -> str:
    lines = ["usage: python -m bench <name> [options]", "", "benchmarks:"]
    lines += [f"  {name:<10} {text}" for name, text in BENCHMARKS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in {"-h", "--help"}:
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
