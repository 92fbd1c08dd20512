"""Sink clock: how many samples a recording's sink delivers per second of the clock, by the keeper's latency.

    python -m bench sinkclock [--seconds 60] [--keepers 20,30,40,60,100] [--player-ms 10]

The capture counts the audio by its samples and stamps the pictures by the clock, and the page's media is
timed by the same sink, so a sink that renders fast plays the page fast and drifts the sound from the
picture for as long as the recording lasts. For each keeper latency this starts a recorder's PulseAudio,
makes a recording's sink as the recorder does, reads its monitor with FFmpeg as the capture does, and
fits samples against the monotonic clock. With `--player-ms`, a player also writes silence into the sink
at that latency, as Chromium does. Writes bench/results/sinkclock-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import subprocess
import time
from typing import Any

import numpy as np
import pulsectl

from bench import machine
from bench.results import write_result
from recorder.source import audio

SETTLE_S = 3.0
FRAME_BYTES = 4  # s16le, two channels
READ_BYTES = 1 << 16  # a pipe's whole buffer
READ_TIMEOUT_S = 5.0  # FFmpeg delivers every 20 ms; this long without a sample, it has stalled
MIN_SECONDS = 4.0  # a rate, and one for each half, needs a few whole windows
ENVELOPE_S = 1.0  # the least-late read of each such window is fitted


def samples_against_clock(server: audio.AudioServer, source: str, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    """(monotonic seconds, samples so far) at each read of `source` by FFmpeg, reading as the capture does."""
    reader = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error",
         "-f", "pulse", "-sample_rate", str(audio.SAMPLE_RATE), "-channels", "2", "-fragment_size", "3840",
         "-i", source, "-f", "s16le", "pipe:1"],
        stdout=subprocess.PIPE,
        env={**os.environ, **server.client_env()},
    )  # fmt: skip
    assert reader.stdout is not None
    pipe = reader.stdout.fileno()
    times: list[float] = []
    counts: list[int] = []
    received = 0
    start = time.monotonic()
    try:
        while time.monotonic() - start < SETTLE_S + seconds:
            if not select.select([pipe], [], [], READ_TIMEOUT_S)[0]:
                raise RuntimeError(f"FFmpeg gave no sample of {source} for {READ_TIMEOUT_S:g} s")
            chunk = os.read(pipe, READ_BYTES)  # all that waits: a backlog would read as a slow sink
            if not chunk:
                raise RuntimeError(f"FFmpeg stopped reading {source}")
            received += len(chunk)
            if time.monotonic() - start >= SETTLE_S:
                times.append(time.monotonic())
                counts.append(received // FRAME_BYTES)
    finally:
        reader.kill()
        reader.wait()
    return np.asarray(times), np.asarray(counts, dtype=float)


def rate_ppm(times: np.ndarray, counts: np.ndarray) -> float:
    """How far the samples delivered run from SAMPLE_RATE per second of the clock, in parts per million.

    A read can only be late: the reader stamps it after the samples arrived, and a busy machine delays
    the stamp (on a loaded machine a fit through every read measured -84 ppm for a sink at the clock's
    rate). So the fit goes through each ENVELOPE_S window's least-late read: the one with the most
    samples for its time."""
    if not times.size:
        raise ValueError("no reads: a rate needs at least two whole windows")
    elapsed = times - times[0]
    ahead = counts - audio.SAMPLE_RATE * elapsed  # larger for a read stamped closer to its samples
    window = np.floor(elapsed / ENVELOPE_S)
    whole = np.unique(window[window < window[-1]])  # the last window, cut short, may hold only a late read
    best = [int(np.flatnonzero(window == w)[np.argmax(ahead[window == w])]) for w in whole]
    if len(best) < 2:
        raise ValueError(f"{elapsed[-1]:.1f} s of reads: a rate needs at least two whole windows")
    rate = float(np.polyfit(elapsed[best], counts[best], 1)[0])
    return (rate / audio.SAMPLE_RATE - 1) * 1e6


async def measure(keeper_ms: int, seconds: float, player_ms: int | None) -> dict[str, Any]:
    shipped, audio.KEEPER_LATENCY_MS = audio.KEEPER_LATENCY_MS, keeper_ms
    server = audio.AudioServer()
    await server.start()
    player = None
    try:
        sink = await server.take_sink(f"keeper-{keeper_ms}")
        if player_ms is not None:
            player = await asyncio.create_subprocess_exec(
                "pacat", "-d", sink.name, "--raw", f"--rate={audio.SAMPLE_RATE}", "--channels=2",
                "--format=s16le", f"--latency-msec={player_ms}", "/dev/zero",
                env={**os.environ, **server.client_env()},
            )  # fmt: skip
        times, counts = await asyncio.to_thread(samples_against_clock, server, f"{sink.name}.monitor", seconds)
        with pulsectl.Pulse("bench", server=server.server) as pulse:
            block_us = pulse.get_sink_by_name(sink.name).configured_latency
    finally:
        if player is not None:
            player.kill()
            await player.wait()
        await server.stop()
        audio.KEEPER_LATENCY_MS = shipped
    ppm = rate_ppm(times, counts)
    half = len(times) // 2
    halves = [rate_ppm(times[:half], counts[:half]), rate_ppm(times[half:], counts[half:])]
    return {
        "keeper_ms": keeper_ms,
        "player_ms": player_ms,
        "sink_block_us": block_us,
        "seconds": round(float(times[-1] - times[0]), 1),
        "ppm": round(ppm, 1),
        "ppm_halves": [round(x, 1) for x in halves],
        "ms_per_10_min": round(ppm * 600 / 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench sinkclock", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=60.0, help=f"measured seconds per keeper latency (at least {MIN_SECONDS:g})"
    )
    parser.add_argument("--keepers", default="20,30,40,60,100", help="keeper latencies to try, in ms")
    parser.add_argument("--player-ms", type=int, default=None, help="also play silence into the sink at this latency")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    if args.seconds < MIN_SECONDS:
        parser.error(f"--seconds {args.seconds:g}: give at least {MIN_SECONDS:g}, so each half has whole windows")
    quiet = machine.check_quiet(args)
    shipped = audio.KEEPER_LATENCY_MS
    rows = []
    for keeper_ms in (int(x) for x in args.keepers.split(",")):
        row = asyncio.run(measure(keeper_ms, args.seconds, args.player_ms))
        row["shipped"] = keeper_ms == shipped
        print(
            f"keeper {keeper_ms:4d} ms: sink blocks {row['sink_block_us']} us, {row['ppm']:+7.1f} ppm "
            f"(halves {row['ppm_halves'][0]:+.1f} / {row['ppm_halves'][1]:+.1f}), "
            f"{row['ms_per_10_min']:+.1f} ms in 10 min",
            flush=True,
        )
        rows.append(row)
    if not args.no_write:
        path = write_result(
            "sinkclock",
            {"rows": rows},
            options=vars(args) | {"quiet_at_start": quiet, "shipped_keeper_ms": shipped},
            notes="ppm: samples the recording sink's monitor delivered per second of the monotonic clock, "
            "against 48000, by a least-squares fit through each second's least-late read; "
            "positive = the sink renders fast",
        )
        print(f"wrote {path}")
    return 0
