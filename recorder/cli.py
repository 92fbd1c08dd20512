"""`recorder`: record one page, analyze a file, calibrate A/V sync, or run as a farm worker.

Exit codes: 0 success, 1 the recording (or analysis) failed, 2 a usage error naming the bad value.
While `recorder record` runs: SIGUSR1 pauses the capture, SIGUSR2 resumes it, SIGINT or SIGTERM stop it
(the file is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from contract.actions import EVALUATE_REFUSED, evaluate_steps
from contract.envcheck import UnknownVariable
from contract.errors import RecorderError
from contract.fields import field_path
from contract.logs import configure_logging
from contract.protocol import SCREENSHOT_NAME, Progress, WorkerState, media_name
from contract.security import canonical_url
from contract.spec import RecordingSpec, WaitFor
from recorder.attempt import AttemptFolder, check_recording_id
from recorder.config import RecorderSettings, check_recorder_environment
from recorder.control import CaptureControl

if TYPE_CHECKING:
    from recorder.finalize import Finished
    from recorder.storage import StoredResult


def _runs(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of recordings") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"{count} recordings measure nothing; give 1 or more")
    return count


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"{text} s records nothing; give a length above 0")
    return seconds


def _record_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("record", help="record one page to an MP4")
    p.add_argument("url")
    p.add_argument("--duration", type=float, default=60.0, help="maximum length in seconds (default 60)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=int, default=30)
    p.add_argument(
        "--wait-for",
        default="domcontentloaded",
        help="readiness: domcontentloaded (default) | load | signal (page logs START_RECORDING) | selector:CSS;"
        " signal and selector are a waiting room",
    )
    p.add_argument(
        "--wait-timeout", type=float, default=30.0, help="seconds to wait for readiness (the waiting room's length)"
    )
    p.add_argument(
        "--from",
        dest="start_from",
        choices=("ready", "commit"),
        default="ready",
        help="start capturing at readiness (default) or as soon as the navigation commits",
    )
    p.add_argument("--actions", metavar="FILE|-", help="join script: a JSON list of steps, from a file or stdin")
    p.add_argument("--actions-timeout", type=float, default=120.0, help="seconds the whole join script may take")
    p.add_argument("--no-stop-on-signal", action="store_true", help="ignore END_RECORDING logged by the page")
    p.add_argument("--stop-when-selector", metavar="CSS", help="stop when this selector becomes visible")
    p.add_argument("--stop-when-silence", type=float, metavar="SECONDS", help="stop after this much silence")
    p.add_argument("--stop-when-silence-db", type=float, default=-50.0, help="silence threshold (default -50 dB)")
    p.add_argument("--stop-when-frozen", type=float, metavar="SECONDS", help="stop after this long with no change")
    p.add_argument("--stop-when-navigated-away", action="store_true", help="stop when the page leaves its origin")
    p.add_argument(
        "--no-stop-when-page-closed",
        dest="stop_when_page_closed",
        action="store_false",
        help="keep recording (a blank window) when the page closes itself",
    )
    p.add_argument("--audio-only", action="store_true", help="record the page's audio alone, to rec.m4a")
    p.add_argument("--out", type=Path, help="where rec.mp4 goes (default RECORDS_DIR/<id>/attempt-1/rec.mp4)")
    p.add_argument("--id", dest="recording_id", help="recording id (default: a new UUID)")
    p.add_argument(
        "--no-timeline",
        dest="timeline",
        action="store_false",
        default=None,
        help="write no timeline.json (env RECORDER_TIMELINE=false); only to measure its cost",
    )
    _common_recorder_flags(p)
    p.set_defaults(subparser=p)


def _common_recorder_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--records-dir", type=Path, help="env RECORDS_DIR")
    p.add_argument("--chromium", help="env CHROMIUM_PATH")
    p.add_argument("--preset", help="libx264 preset, env RECORDER_PRESET (default ultrafast)")
    p.add_argument("--av-offset-ms", type=float, help="env RECORDER_AV_OFFSET_MS (overrides calibration)")


def _settings(args: argparse.Namespace) -> RecorderSettings:
    overrides = {
        "records_dir": getattr(args, "records_dir", None),
        "chromium_path": getattr(args, "chromium", None),
        "preset": getattr(args, "preset", None),
        "av_offset_ms": getattr(args, "av_offset_ms", None),
        "timeline": getattr(args, "timeline", None),
    }
    return RecorderSettings(**{k: v for k, v in overrides.items() if v is not None})


def _spec(args: argparse.Namespace, parser: argparse.ArgumentParser) -> RecordingSpec:
    fields: dict[str, Any] = {}
    try:
        # Stored and loaded in the browser's own canonical form: what is checked is what Chromium opens.
        url = canonical_url(args.url, "URL").href
        wait_for = WaitFor.flag_fields(args.wait_for, timeout=args.wait_timeout)
        fields = {
            "url": url,
            "duration": args.duration,
            "width": args.width,
            "height": args.height,
            "fps": args.fps,
            "wait_for": wait_for,
            "from": args.start_from,
            "actions": _read_actions(args.actions),
            "actions_timeout": args.actions_timeout,
            "stop_on_signal": not args.no_stop_on_signal,
            "stop_when": {
                "selector": args.stop_when_selector,
                "silence": args.stop_when_silence,
                "silence_db": args.stop_when_silence_db,
                "frozen": args.stop_when_frozen,
                "navigated_away": args.stop_when_navigated_away,
            },
            "video": not args.audio_only,
        }
        return RecordingSpec.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(_describe(err, fields) for err in exc.errors())
        parser.error(problems)
    except ValueError as exc:
        parser.error(str(exc))
    raise AssertionError("unreachable")


def _read_actions(source: str | None) -> list[Any]:
    """The join script, from a file or stdin (`-`): a JSON list of steps (or an object with an `actions` list)."""
    if source is None:
        return []
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise ValueError(f"--actions {source}: cannot read it ({exc.strerror})") from None
    try:
        script = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--actions {source}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from None
    if isinstance(script, dict) and "actions" in script:
        script = script["actions"]
    if not isinstance(script, list):
        example = '[{"do": "click", "selector": "#join"}]'
        raise ValueError(f"--actions {source}: give a JSON list of steps, such as {example}")
    return script


# The flag that sets a spec field, where it is not `--` + the field's path with dashes.
_FLAG = {
    "url": "URL",
    "wait_for": "--wait-for",
    "wait_for.timeout": "--wait-timeout",
    "video": "--audio-only",
    "stop_when": "--stop-when-silence/--stop-when-frozen",
}


def _describe(err: dict, fields: dict[str, Any]) -> str:
    loc = list(err.get("loc", ()))
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    path = field_path(fields, loc)
    if loc and loc[0] == "actions":
        return f"--actions: {path}: {message}"
    name = _FLAG.get(path, "--" + path.replace(".", "-").replace("_", "-"))
    given = err.get("input")
    return f"{name}: {message}" if isinstance(given, dict | list) else f"{name} {given!r}: {message}"


def _check_evaluate(spec: RecordingSpec, settings: RecorderSettings, parser: argparse.ArgumentParser) -> None:
    """Refused before anything starts, in the API's words, unless this machine allows it."""
    refused = [] if settings.allow_evaluate else evaluate_steps(spec.actions)
    if refused:
        parser.error("; ".join(f"--actions: actions[{index}]: {EVALUATE_REFUSED}" for index in refused))


class _LiveStatus:
    """One status line on a terminal; nothing when output is not a terminal (logs carry the facts)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()

    def __call__(self, state: WorkerState, p: Progress) -> None:
        if not self.enabled:
            return
        mins, secs = divmod(int(p.elapsed), 60)
        line = (
            f"\r{state:<10} {mins:02d}:{secs:02d}  fps {p.fps:5.1f}  speed {p.speed:4.2f}x  "
            f"size {p.bytes / 1e6:7.1f} MB  drop {p.dropped} dup {p.duplicated}{'  BEHIND' if p.behind else ''}"
        )
        sys.stderr.write(line)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _recording_id(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    if args.recording_id is None:
        return uuid.uuid4().hex[:12]
    try:
        return check_recording_id(args.recording_id)
    except RecorderError as exc:
        parser.error(f"--id: {exc.message}")
    raise AssertionError("unreachable")


def _folder(
    args: argparse.Namespace, recording_id: str, settings: RecorderSettings, spec: RecordingSpec
) -> AttemptFolder:
    """The worker's layout under RECORDS_DIR; with --out, a work folder of its own beside the output."""
    media = media_name(spec.video)
    if args.out:
        root = args.out.parent / f".{args.out.stem}.work"
        return AttemptFolder(root=root, recording_id=recording_id, attempt=1, media_name=media)
    return AttemptFolder.under(settings.records_dir, recording_id, media_name=media)


async def _record(args: argparse.Namespace, spec: RecordingSpec, settings: RecorderSettings, recording_id: str) -> int:
    from recorder.calibrate import ensure_calibrated
    from recorder.pipeline import Recorder

    folder = _folder(args, recording_id, settings, spec)
    control = CaptureControl()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, control.stop, "api")
    loop.add_signal_handler(signal.SIGTERM, control.stop, "shutdown")
    loop.add_signal_handler(signal.SIGUSR1, control.want_paused, True)
    loop.add_signal_handler(signal.SIGUSR2, control.want_paused, False)
    status = _LiveStatus()
    await ensure_calibrated(settings)
    async with Recorder(settings, width=spec.width, height=spec.height, fps=spec.fps) as recorder:
        finished = await recorder.record(spec, folder=folder, on_progress=status, control=control)
    status.done()
    mp4 = finished.mp4
    stored = await _store(finished, settings, keep=args.out is not None) if mp4 is not None else None
    if stored is None and mp4 is not None:
        return 1
    picture = finished.screenshot
    if args.out and mp4 is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        mp4 = Path(shutil.move(mp4, args.out))
        if finished.sidecar is not None:
            shutil.move(finished.sidecar, args.out.with_suffix(".json"))
        if finished.timeline is not None and finished.timeline.is_file():
            shutil.move(finished.timeline, args.out.with_name(f"{args.out.stem}.timeline.json"))
        if picture is not None and picture.is_file():
            picture = Path(shutil.move(picture, args.out.with_name(f"{args.out.stem}.failure.png")))
        folder.remove_if_empty()
    remote = stored is not None and not stored.location.startswith("file:")
    if finished.error is not None:
        where = stored.location if remote and stored is not None and not args.out else (mp4 or folder.root)
        kept = f"; what was captured is in {where}" if (mp4 or set(finished.files) - {SCREENSHOT_NAME}) else ""
        seen = f"; the page when it failed: {picture}" if picture is not None and picture.is_file() else ""
        print(f"recording failed: {finished.error.message}{kept}{seen}", file=sys.stderr)
        return 1
    print(stored.location if remote and stored is not None else str(mp4 or folder.media))
    if remote and stored is not None:
        print(f"metadata: {stored.metadata_location}", file=sys.stderr)
        if args.out:
            print(f"local copy: {mp4}", file=sys.stderr)
    elif not args.out:
        print(f"metadata: {folder.metadata}", file=sys.stderr)
        if finished.timeline is not None:
            print(f"timeline: {folder.timeline}", file=sys.stderr)
    return 0


async def _store(finished: Finished, settings: RecorderSettings, *, keep: bool) -> StoredResult | None:
    """The same destination a worker would use: S3_BUCKET when set, else the attempt folder. None (and a
    message saying where the files are) when the upload could not be made."""
    from recorder.storage import destination_for

    started_at = datetime.fromtimestamp(finished.timings.started, UTC)
    destination = destination_for(settings, finished.folder, started_at=started_at)
    try:
        stored = await asyncio.to_thread(destination.store, dict(finished.files), keep_files=keep)
    except RecorderError as exc:
        where = finished.folder.root
        print(f"upload to {destination.name} failed: {exc.message}; the recording is kept at {where}", file=sys.stderr)
        return None
    if stored.pending:
        print(
            f"upload to {destination.name} is pending: {stored.reason}; the recording is kept at "
            f"{finished.folder.root} and `recorder worker` resumes the upload",
            file=sys.stderr,
        )
        return None
    return stored


def _analyze(args: argparse.Namespace) -> int:
    from recorder.quality import analyze_file

    try:
        report = analyze_file(args.file, expected_fps=args.fps, tone_hz=args.tone)
    except RecorderError as exc:
        print(f"analyze failed: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(report.model_dump(mode="json"), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recorder", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("RECORDER_LOG_LEVEL", "info"))
    sub = parser.add_subparsers(dest="command", required=True)
    _record_parser(sub)
    a = sub.add_parser("analyze", help="print the quality report of a media file as JSON")
    a.add_argument("file", type=Path)
    a.add_argument("--fps", type=float, default=None, help="expected frame rate (default: from the file)")
    a.add_argument("--tone", type=float, default=1000.0, help="sync beep frequency in Hz (default 1000)")
    c = sub.add_parser("calibrate", help="measure this machine's A/V offset with the sync clip and store it")
    from recorder.capture.calibration import RUN_SECONDS, RUNS, TRIM_FROM

    c.add_argument(
        "--duration", type=_seconds, default=RUN_SECONDS, help=f"seconds per recording (default {RUN_SECONDS:g})"
    )
    drops = f"from {TRIM_FROM} on, the highest and the lowest are left out"
    remade = "a run that stepped within its file is made again, up to twice the runs"
    c.add_argument("--runs", type=_runs, default=RUNS, help=f"steady recordings (default {RUNS}); {drops}; {remade}")
    _common_recorder_flags(c)
    w = sub.add_parser("worker", help="run as a farm worker: lease jobs from the orchestrator")
    from recorder.worker.cli import add_worker_arguments

    add_worker_arguments(w)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_recorder_environment()  # a misspelt WORKER_/RECORDER_ variable is never silently ignored
    except UnknownVariable as exc:
        print(f"recorder {args.command}: {exc}", file=sys.stderr)
        return 2
    if args.command == "record":
        spec = _spec(args, args.subparser)
        settings = _settings(args)
        _check_evaluate(spec, settings, args.subparser)
        recording_id = _recording_id(args, args.subparser)
        # On a terminal the status line tells the story; only problems are logged over it.
        configure_logging("warning" if sys.stderr.isatty() else args.log_level)
        return asyncio.run(_record(args, spec, settings, recording_id))
    configure_logging(args.log_level)
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "calibrate":
        from recorder.calibrate import run_calibration

        return asyncio.run(run_calibration(_settings(args), duration=args.duration, runs=args.runs))
    from recorder.worker.cli import run_worker

    return run_worker(args)


if __name__ == "__main__":
    sys.exit(main())
