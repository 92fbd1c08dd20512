"""One recording with a peer's capture command on the recorder's own sources (used by `bench.runner`).

The recorder's display, PulseAudio server and Chromium are warm; the page is opened in a fresh context on
a fresh sink exactly as for our own capture, and then the peer's command grabs that display and that
sink's monitor for the recording's length. It is stopped the way its project stops it (SIGINT: FFmpeg
finishes its file, gst-launch -e sends EOS so mp4mux writes its index), and the file is analysed with
the same quality report as ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.capture_options import CaptureOptions
from bench.metrics import quality_summary
from bench.peer_commands import PEERS, Sources
from bench.runner import Job
from contract.spec import RecordingSpec
from recorder import procs
from recorder.quality import analyze_file

# Seconds after the peer starts before its capture window opens (its devices opening, the encoder warming).
START_ALLOWANCE = 2.0


async def record_with_peer(recorder: Any, job: Job, options: CaptureOptions, out_dir: Path) -> dict[str, Any]:
    peer = PEERS[job.peer or ""]
    await recorder.start()
    audio, browser, display = recorder.audio, recorder.browser, recorder.display
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    out = out_dir / peer.output_name
    sink = await audio.take_sink(job.recording_id)
    session = await browser.open_ready(RecordingSpec(url=job.url))
    sources = Sources(display.name, sink.monitor, options.width, options.height, options.fps)
    argv = peer.argv(sources, out)
    env = {**os.environ, **audio.client_env(), "DISPLAY": display.name}
    error: str | None = None
    started = stopped = time.time()
    try:
        proc = await procs.spawn(argv, env=env, stderr=asyncio.subprocess.PIPE)
        stderr = asyncio.ensure_future(procs.drain_stderr(proc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), job.duration)
            error = f"{peer.name} exited early with {proc.returncode}"
        stopped = time.time()
        code = await procs.stop(proc, sig=signal.SIGINT, timeout=30.0, name=peer.name)
        lines = await stderr
        if error is None and code not in (0, 255, -signal.SIGINT, 130):
            error = f"{peer.name} exited with {code}"
        if error:
            error += ": " + " | ".join(lines[-3:])
    finally:
        await session.close()
        await audio.remove_sink(sink)
        with contextlib.suppress(Exception):
            await audio.prepare()
    quality = None
    if out.is_file() and out.stat().st_size > 0:
        try:
            report = await asyncio.to_thread(analyze_file, out, expected_fps=options.fps, tone_hz=job.tone_hz)
            quality = report.model_dump(mode="json")
        except Exception as exc:  # the peer's file is what it is; say why it could not be read
            error = error or f"analysis failed: {exc}"
    elif error is None:
        error = f"{peer.name} wrote no file"
    return {
        "ok": error is None and quality is not None,
        "error": error,
        "peer": peer.name,
        "argv": argv,
        "mp4": str(out),
        "capture_from": started + START_ALLOWANCE,
        "capture_to": stopped,
        "progress": {},
        "quality": quality_summary(quality),
    }
