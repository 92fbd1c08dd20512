"""One recording in a process of its own, started on cue, so concurrent recordings can be measured apart.

    python -m bench.runner '<job as JSON>'

The process warms a `Recorder` (Xvfb, PulseAudio, Chromium), prints `{"event": "ready", ...}` on stdout,
waits for a line `go` on stdin, records, prints `{"event": "done", ...}` and stops everything. With a
`peer` in the job, the recorder's sources are used as they are (its display, its sink, Chromium on the
page) but the capture is the peer's command line instead of ours (`bench.peer_commands`).
Logs go to stderr; stdout carries only the JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.capture_options import CaptureOptions
from bench.metrics import quality_summary


@dataclass
class Job:
    url: str
    duration: float
    out_dir: str
    recording_id: str = "bench"
    options: dict[str, Any] = field(default_factory=dict)
    peer: str | None = None
    tone_hz: float = 1000.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))


def emit(event: str, **data: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **data}, default=str) + "\n")
    sys.stdout.flush()


def _apply_process_flags(options: CaptureOptions) -> None:
    """Chromium's flags, Xvfb's extensions and the grab's pixel format are the modules' own, not settings."""
    from recorder.capture import grabber
    from recorder.source import browser, display

    browser.CHROMIUM_ARGS = options.chromium_flags()
    if options.xvfb_glx:
        display.EXTENSIONS_OFF = tuple(name for name in display.EXTENSIONS_OFF if name != "GLX")
    grabber.PIXEL_FORMAT = options.grab_pixel_format


async def _wait_for_go() -> bool:
    line = await asyncio.to_thread(sys.stdin.readline)
    return line.strip() == "go"


async def run(job: Job) -> int:
    from contract.spec import RecordingSpec
    from recorder.attempt import AttemptFolder
    from recorder.config import RecorderSettings
    from recorder.pipeline import Recorder

    options = CaptureOptions.from_dict(job.options)
    _apply_process_flags(options)
    from bench.page import allowlist_entry

    settings = RecorderSettings(
        preset=options.preset,
        crf=options.crf,
        encoder_threads=options.threads,
        x264_params=options.x264_params,
        screen_mode=options.screen_mode,
        grabber=options.grabber,
        url_allowlist=[*RecorderSettings().url_allowlist, allowlist_entry(job.url)],
    )
    spec = RecordingSpec(
        url=job.url, duration=job.duration, width=options.width, height=options.height, fps=options.fps
    )
    out_dir = Path(job.out_dir)
    began = time.time()
    recorder = Recorder(settings, width=options.width, height=options.height, fps=options.fps)
    try:
        await recorder.start()
        emit("ready", pid=os.getpid(), warm_s=round(time.time() - began, 3))
        if not await _wait_for_go():
            return 1
        go = time.time()
        if job.peer:
            from bench.peer_capture import record_with_peer

            done = await record_with_peer(recorder, job, options, out_dir)
            emit("done", go_at=go, **done)
            return 0 if done.get("ok") else 1
        result = await recorder.record(spec, folder=AttemptFolder(out_dir, job.recording_id))
        timings = result.timings.model_dump()
        emit(
            "done",
            go_at=go,
            ok=result.ok,
            error=str(result.error.message) if result.error else None,
            mp4=str(result.mp4) if result.mp4 else None,
            timings=timings,
            capture_from=timings.get("first_frame"),
            capture_to=timings.get("stopped"),
            progress=result.progress.model_dump(mode="json"),
            quality=quality_summary(result.quality),
            chromium_version=recorder.browser.version if recorder.browser else None,
        )
        return 0 if result.ok else 1
    finally:
        await recorder.close()


def main(argv: list[str] | None = None) -> int:
    from contract.logs import configure_logging

    argv = sys.argv[1:] if argv is None else argv
    configure_logging(os.environ.get("BENCH_LOG_LEVEL", "warning"))
    job = Job(**json.loads(argv[0]))
    # The parent ends a run with SIGTERM: leave through `finally` so every process of the recorder stops.
    loop = asyncio.new_event_loop()
    task = loop.create_task(run(job))
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return loop.run_until_complete(task)
    except asyncio.CancelledError:
        return 130
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


if __name__ == "__main__":
    sys.exit(main())
