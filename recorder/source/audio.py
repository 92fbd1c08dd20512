"""Audio: a private PulseAudio server per recorder and a null sink per recording.

Chromium plays into the server's default sink; before each recording a fresh null sink is made the default
(and any stream still open is moved onto it), and FFmpeg records that sink's monitor.

A new null sink renders in blocks of up to two seconds until a low-latency reader is attached, so the first
reader of a fresh sink can wait that long for its first sample. Each sink therefore gets a small
low-latency "keeper" (a loopback from its monitor into a discard sink), is suspended and resumed so its
clock restarts at that latency at once, and is prepared ahead of time, so a recording's audio starts as
fast as its video and Chromium meets a sink whose latency no longer changes under it.

The keeper's latency also sets the sink's clock. PulseAudio gives the sink blocks of a third of it, and
blocks that are not a whole number of microseconds were measured to make the sink render faster than
real time: the keeper's old 20 ms gave 6,666 us blocks, and the monitor delivered 125 ppm more samples
than the clock (75 ms of A/V drift over ten minutes, the page's own clip playing fast with it); 13,333 us
gave 38 ppm. 30 ms gives 10 ms blocks and the clock's rate (docs/benchmarks.md, "The sink's clock").

Because every recorder has its own server, two recordings on one machine can never hear each other;
because every recording has its own sink, nothing from the previous page bleeds into the next file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pulsectl
import structlog

from contract.errors import ErrorCode, RecorderError
from recorder import procs

log = structlog.get_logger(__name__)

SAMPLE_RATE = 48000


DISCARD_SINK = "discard"
# The keeper asks for this; PulseAudio then gives the recording's sink blocks of a third of it (10 ms).
KEEPER_LATENCY_MS = 30
# A block lasts a whole number of microseconds when its length is a multiple of 125 us (6 frames at 48 kHz).
WHOLE_BLOCK_US = 125


@dataclass(frozen=True)
class Sink:
    name: str
    module_index: int
    keeper_index: int
    created_at: float

    @property
    def monitor(self) -> str:
        return f"{self.name}.monitor"


class AudioServer:
    """A PulseAudio daemon in its own runtime directory, owned and stopped by this recorder."""

    def __init__(self, *, start_timeout: float = 10.0) -> None:
        self.start_timeout = start_timeout
        self._dir: Path | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._next: Sink | None = None
        self._count = 0
        self._warned_blocks = False  # the sink's blocks are the same for every sink: said once

    @property
    def server(self) -> str:
        if self._dir is None:
            raise RuntimeError("audio server not started")
        return f"unix:{self._dir / 'native'}"

    def client_env(self) -> dict[str, str]:
        """Environment that points a client (Chromium, FFmpeg) at this server and nowhere else."""
        return {"PULSE_SERVER": self.server, "PULSE_RUNTIME_PATH": str(self._dir)}

    async def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="recorder-pulse-"))
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(self._dir),
            "PULSE_RUNTIME_PATH": str(self._dir),
            "PULSE_STATE_PATH": str(self._dir / "state"),
            "HOME": str(self._dir),
        }
        env.pop("DISPLAY", None)
        env.pop("PULSE_SERVER", None)
        self._proc = await procs.spawn(
            [
                "pulseaudio",
                "--daemonize=no",
                "--use-pid-file=no",
                "--exit-idle-time=-1",
                "--disallow-exit",
                "--log-target=stderr",
                "--log-level=error",
                "-n",  # no default.pa: nothing but what we load below
                "-L", f"module-native-protocol-unix socket={self._dir / 'native'} auth-anonymous=1",
                "-L", f"module-null-sink sink_name={DISCARD_SINK} rate={SAMPLE_RATE}",
            ],
            env=env,
        )
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        while True:
            if self._proc.returncode is not None:
                err = await procs.drain_stderr(self._proc)
                await self.stop()
                raise RecorderError(ErrorCode.AUDIO_FAILED, f"PulseAudio exited: {' | '.join(err[-3:])}")
            if await asyncio.to_thread(self._ping):
                break
            if asyncio.get_running_loop().time() > deadline:
                await self.stop()
                raise RecorderError(ErrorCode.AUDIO_FAILED, "PulseAudio did not accept connections in time")
            await asyncio.sleep(0.05)
        log.info("audio server started", server=self.server, pid=self._proc.pid)

    def _ping(self) -> bool:
        try:
            with pulsectl.Pulse("recorder-ping", server=self.server, connect=True):
                return True
        except pulsectl.PulseError:
            return False

    async def prepare(self) -> None:
        """Create the next recording's sink now, so it is warm when the recording starts."""
        if self._next is None:
            self._next = await asyncio.to_thread(self._create_sink)

    async def take_sink(self, recording_id: str) -> Sink:
        """The sink for one recording, made the default so the browser plays into it."""
        sink, self._next = self._next, None
        if sink is None:
            sink = await asyncio.to_thread(self._create_sink)
        await asyncio.to_thread(self._route_to, sink)
        log.info("audio sink ready", sink=sink.name, recording_id=recording_id)
        return sink

    def _create_sink(self) -> Sink:
        self._count += 1
        name = f"rec_{self._count}"
        try:
            with pulsectl.Pulse("recorder", server=self.server) as pulse:
                index = pulse.module_load(
                    "module-null-sink",
                    f"sink_name={name} rate={SAMPLE_RATE} channels=2 format=s16le "
                    f"sink_properties=device.description={name}",
                )
                keeper = pulse.module_load(
                    "module-loopback",
                    f"source={name}.monitor sink={DISCARD_SINK} latency_msec={KEEPER_LATENCY_MS} "
                    "source_dont_move=true sink_dont_move=true",
                )
                # Suspending and resuming restarts the sink's clock at the keeper's low latency now,
                # instead of after the first long block. A browser stream that opened on a sink still in
                # its first block was measured to sit ~70 ms further off in A/V sync.
                index_of_sink = pulse.get_sink_by_name(name).index
                pulse.sink_suspend(index_of_sink, 1)
                pulse.sink_suspend(index_of_sink, 0)
                block_us = pulse.sink_info(index_of_sink).configured_latency
        except pulsectl.PulseError as exc:
            raise RecorderError(ErrorCode.AUDIO_FAILED, f"could not create sink {name}: {exc}") from exc
        if block_us % WHOLE_BLOCK_US and not self._warned_blocks:
            self._warned_blocks = True
            # Another PulseAudio may split the keeper's latency otherwise: say so rather than drift unseen.
            log.warning(
                "audio sink's blocks are not whole microseconds: its clock may run fast, and A/V drift",
                sink=name, block_us=block_us, keeper_latency_ms=KEEPER_LATENCY_MS,
            )
        return Sink(name=name, module_index=index, keeper_index=keeper, created_at=time.monotonic())

    def _route_to(self, sink: Sink) -> None:
        try:
            with pulsectl.Pulse("recorder", server=self.server) as pulse:
                target = pulse.get_sink_by_name(sink.name)
                pulse.sink_default_set(target)
                # Streams a long-lived browser still holds open follow the new recording's sink.
                for stream in pulse.sink_input_list():
                    if stream.owner_module != sink.keeper_index and stream.sink != target.index:
                        pulse.sink_input_move(stream.index, target.index)
        except pulsectl.PulseError as exc:
            raise RecorderError(ErrorCode.AUDIO_FAILED, f"could not route audio to {sink.name}: {exc}") from exc

    async def remove_sink(self, sink: Sink) -> None:
        await asyncio.to_thread(self._remove_sink, sink)

    def _remove_sink(self, sink: Sink) -> None:
        with contextlib.suppress(pulsectl.PulseError), pulsectl.Pulse("recorder", server=self.server) as pulse:
            pulse.module_unload(sink.keeper_index)
            pulse.module_unload(sink.module_index)

    async def sink_names(self) -> list[str]:
        def names() -> list[str]:
            with pulsectl.Pulse("recorder", server=self.server) as pulse:
                return [s.name for s in pulse.sink_list() if s.name != DISCARD_SINK]

        return await asyncio.to_thread(names)

    async def stop(self) -> None:
        self._next = None
        proc, self._proc = self._proc, None
        await procs.stop(proc, name="pulseaudio", timeout=3.0)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
