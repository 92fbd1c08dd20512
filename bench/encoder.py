"""Encoder levers: CPU cost and picture quality of x264 settings, measured on one lossless capture.

    python -m bench encoder [--seconds 10] [--repeat 3] [--candidates today lean ...] [--keep] [--require-quiet]

(`today`, `read` and `convert` run whatever `--candidates` says: sizes are relative to `today`, and the
stages split the cost.)

The benchmark page (the 2x2 grid of playing tiles) is opened on the recorder's own warm sources, as for a
recording, and N seconds of its display are grabbed losslessly (x11grab -> rawvideo bgr0 in NUT). The
sources are then stopped, so Chromium costs nothing while the candidates run. Every candidate re-encodes
that clip as the recorder encodes live (libx264, tune zerolatency, yuv420p, GOP 60, one thread unless it
says otherwise, no audio), reading the raw frames and converting BGR to YUV as the live capture does.

- cost: CPU seconds (user + sys) of the FFmpeg process, from `wait4`, over the clip's seconds = the cores a
  live capture of that clip would use. Candidates alternate round-robin in each repeat, so a drifting load
  hits them all alike; median and min-max are reported. Two stages without an encoder split the cost:
  `read` (demux only) and `convert` (decode + BGR -> yuv420p), so encode = candidate - convert.
- quality: SSIM and PSNR of each output against the lossless clip. The reference is converted to yuv420p
  first, so both sides share the chroma subsampling and only the encoder's loss is measured (the
  conversion's own loss, which every candidate shares, is not). Frames are paired by timestamp from zero.
  The reference is converted with FFmpeg's default swscale flags (bicubic), so an `sws-*` or `via`
  candidate's figures also count how far its cheaper conversion strays from that; it gets a second pair
  against the clip converted as it converts, which is its encoder's loss alone.
- quality in full colour: SSIM and PSNR against the lossless clip in 4:4:4, the encoded file's colour
  brought back up to 4:4:4 alike for every candidate. This counts the conversion's loss as well as the
  encoder's, measured against the page's own pictures rather than against one way of subsampling them,
  so it is the figure that judges a cheaper conversion.
- `libyuv` candidates read the clip converted to I420 beforehand with the paced grab's own converter
  (recorder.capture.grabber.ToI420), as the recorder hands FFmpeg its pictures; their cores add that
  conversion's CPU time, measured apart once per round (`convert-libyuv` is the conversion alone).
- size in bytes and bitrate in kbit/s of each output, and x264's own options string (written in the stream),
  as the difference from `today`: a lever that is already the preset's default changes nothing.

The clip's frame count and distinct frames (an MD5 per raw frame) show that the clip really moved.
Writes bench/results/encoder-<date>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import functools
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from bench import machine, page
from bench.results import write_result
from recorder.capture.command import CaptureSettings, video_encode_options
from recorder.capture.grabber import frame_size
from recorder.procs import preexec_die_with_parent

WIDTH, HEIGHT, FPS = 1280, 720, 30
SETTLE_S = 1.0  # after the page is ready, before the grab: the tiles are playing
# To 4:4:4 for the full-colour measure, with every bit of accuracy swscale has.
UP_TO_444 = "scale=flags=bicubic+accurate_rnd+full_chroma_int,format=yuv444p"
LEAN = "rc-lookahead=0:bframes=0:ref=1:me=dia:subme=1:trellis=0:aq-mode=0"
LEAN_WITH_AQ = "rc-lookahead=0:bframes=0:ref=1:me=dia:subme=1:trellis=0"  # the same, adaptive quantization kept

Stage = Literal["read", "convert", "encode"]


@dataclass(frozen=True)
class Candidate:
    """One way to process the clip; `stage` read and convert have no encoder and split the cost."""

    name: str
    preset: str = "veryfast"
    crf: int = 23
    x264_params: str | None = None
    threads: int = 1
    sws_flags: str | None = None  # the BGR -> yuv420p conversion's; None: FFmpeg's default (bicubic)
    # A pixel format the picture passes through on its way to yuv420p: bgr24 takes swscale's unscaled
    # BGR24 -> YUV 4:2:0 converter, which reads one of each 2x2 block's pixels for its colour.
    via: str | None = None
    # "libyuv": the clip converted to I420 before FFmpeg reads it, as the paced grab converts each picture;
    # its cores include the conversion's, measured apart.
    converter: Literal["swscale", "libyuv"] = "swscale"
    input_args: tuple[str, ...] = ()
    output_args: tuple[str, ...] = ()
    stage: Stage = "encode"

    @property
    def encodes(self) -> bool:
        return self.stage == "encode"

    @property
    def own_conversion(self) -> bool:
        """Converts otherwise than the reference does, so its encoder's loss alone needs a reference of its own."""
        return bool(self.sws_flags or self.via or self.converter == "libyuv")


def to_yuv420p(via: str | None) -> str:
    """The filter chain from the grab's BGR to the encoder's yuv420p."""
    return (f"format={via}," if via else "") + "format=yuv420p"


# The recorder's default first; `ref1` and `trellis0` are veryfast's own values (controls for the noise).
CANDIDATES: tuple[Candidate, ...] = (
    Candidate("read", stage="read"),
    Candidate("convert", stage="convert"),
    Candidate("today"),
    Candidate("lean", x264_params=LEAN),
    Candidate("lean-crf25", crf=25, x264_params=LEAN),
    Candidate("lean-crf26", crf=26, x264_params=LEAN),
    Candidate("lean-aq", x264_params=LEAN_WITH_AQ),
    Candidate("lean-aq-crf25", crf=25, x264_params=LEAN_WITH_AQ),
    Candidate("ref1", x264_params="ref=1"),
    Candidate("me-dia", x264_params="me=dia"),
    Candidate("subme1", x264_params="subme=1"),
    Candidate("aq0", x264_params="aq-mode=0"),
    Candidate("trellis0", x264_params="trellis=0"),
    Candidate("superfast", preset="superfast"),
    Candidate("superfast-crf25", preset="superfast", crf=25),
    Candidate("ultrafast", preset="ultrafast"),
    Candidate("ultrafast-crf25", preset="ultrafast", crf=25),
    Candidate("ultrafast-crf26", preset="ultrafast", crf=26),
    Candidate("ultrafast-cabac-crf25", preset="ultrafast", crf=25, x264_params="cabac=1"),
    Candidate("ultrafast-cabac-deblock-crf25", preset="ultrafast", crf=25, x264_params="cabac=1:deblock=1"),
    Candidate("ultrafast-cabac-deblock-crf24", preset="ultrafast", crf=24, x264_params="cabac=1:deblock=1"),
    Candidate("ultrafast-cabac-crf26", preset="ultrafast", crf=26, x264_params="cabac=1"),
    Candidate("ultrafast-cabac-deblock-crf26", preset="ultrafast", crf=26, x264_params="cabac=1:deblock=1"),
    Candidate("ultrafast-crf28", preset="ultrafast", crf=28),
    Candidate("threads2", threads=2),
    Candidate("sws-fast-bilinear", sws_flags="fast_bilinear"),
    Candidate("sws-bilinear", sws_flags="bilinear"),
    Candidate("sws-accurate", sws_flags="bicubic+accurate_rnd"),
    Candidate("sws-neighbor", sws_flags="neighbor"),
    Candidate("convert-via-bgr24", stage="convert", via="bgr24"),
    Candidate("convert-neighbor", stage="convert", sws_flags="neighbor"),
    Candidate("shipped-neighbor", preset="ultrafast", crf=26, x264_params="cabac=1:deblock=1", sws_flags="neighbor"),
    Candidate("convert-libyuv", stage="convert", converter="libyuv"),
    Candidate("shipped-libyuv", preset="ultrafast", crf=26, x264_params="cabac=1:deblock=1", converter="libyuv"),
    Candidate("shipped-via-bgr24", preset="ultrafast", crf=26, x264_params="cabac=1:deblock=1", via="bgr24"),
)
BASELINE = "today"
ALWAYS = (BASELINE, "read", "convert")  # sizes are relative to the baseline; the stages split the cost


def select(names: Sequence[str] | None, table: Sequence[Candidate] = CANDIDATES) -> list[Candidate]:
    """The candidates named (in the table's order), or all; `ALWAYS` run in any case."""
    if not names:
        return list(table)
    known = {c.name for c in table}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown candidates {unknown}; known: {sorted(known)}")
    wanted = {*names, *ALWAYS}
    return [c for c in table if c.name in wanted]


def rounds(candidates: Sequence[Candidate], repeat: int) -> list[list[Candidate]]:
    """Round-robin order: every candidate once per round, each round starting one further along."""
    n = len(candidates)
    return [[candidates[(r + i) % n] for i in range(n)] for r in range(repeat)] if n else []


def grab_argv(display: str, out: Path) -> list[str]:
    """The live capture's video input, written without loss (bgr0 as x11grab gives it)."""
    return [
        *("ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y"),
        *("-f", "x11grab", "-framerate", str(FPS), "-video_size", f"{WIDTH}x{HEIGHT}", "-draw_mouse", "0"),
        *("-thread_queue_size", "64", "-i", f"{display}+0,0"),
        *("-c:v", "rawvideo", "-f", "nut", str(out)),
    ]


def candidate_argv(candidate: Candidate, source: Path, out: Path) -> list[str]:
    """FFmpeg reading the lossless clip and doing what the candidate says, as the recorder's video encode does."""
    head = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *candidate.input_args, "-i", str(source)]
    video = ["-map", "0:v", "-an", *(("-sws_flags", candidate.sws_flags) if candidate.sws_flags else ())]
    if candidate.stage == "read":
        return [*head, *video, "-c", "copy", *candidate.output_args, "-f", "null", "-"]
    if candidate.stage == "convert":
        return [*head, *video, "-vf", to_yuv420p(candidate.via), *candidate.output_args, "-f", "null", "-"]
    if candidate.via:
        video += ["-vf", to_yuv420p(candidate.via)]
    settings = CaptureSettings(
        display="", audio_source="", width=WIDTH, height=HEIGHT, fps=FPS,
        preset=candidate.preset, crf=candidate.crf, threads=candidate.threads, x264_params=candidate.x264_params or "",
    )  # fmt: skip
    encode = [arg for key, value in video_encode_options(settings).items() for arg in (f"-{key}", str(value))]
    return [*head, *video, *encode, *candidate.output_args, "-f", "mp4", str(out)]


def quality_argv(
    encoded: Path, reference: Path, sws_flags: str | None = None, via: str | None = None, *, full_colour: bool = False
) -> list[str]:
    """SSIM and PSNR in one pass. The reference goes to yuv420p (with these swscale flags and by way of this
    format, else FFmpeg's default conversion) so only the encoder's loss is counted; or, `full_colour`,
    both sides go to 4:4:4 (the encoded file's colour brought back up the same way for every candidate),
    which measures the whole loss against the page's pictures, the conversion's included."""
    if full_colour:
        encoded_chain, reference_chain = f"{UP_TO_444},", f"{UP_TO_444},"
    else:
        encoded_chain, reference_chain = "", f"{to_yuv420p(via)},"
    graph = (
        (f"sws_flags={sws_flags};" if sws_flags and not full_colour else "")
        + f"[0:v]{encoded_chain}setpts=PTS-STARTPTS,split[a1][a2];"
        f"[1:v]{reference_chain}setpts=PTS-STARTPTS,split[b1][b2];"
        "[a1][b1]ssim;[a2][b2]psnr"
    )
    return [
        *("ffmpeg", "-hide_banner", "-nostdin", "-nostats", "-loglevel", "info"),
        *("-i", str(encoded), "-i", str(reference), "-lavfi", graph, "-f", "null", "-"),
    ]


_SSIM = re.compile(r"\bSSIM\b.*?\bAll:\s*([0-9.]+|inf)")
_PSNR = re.compile(r"\bPSNR\b.*?\baverage:\s*([0-9.]+|inf)")


def _last_float(pattern: re.Pattern[str], text: str) -> float | None:
    found = pattern.findall(text)
    return float(found[-1]) if found else None


def parse_ssim(stderr: str) -> float | None:
    """`All:` of the ssim filter's summary line (None if FFmpeg printed none)."""
    return _last_float(_SSIM, stderr)


def parse_psnr(stderr: str) -> float | None:
    """`average:` of the psnr filter's summary line, in dB (inf for identical pictures)."""
    return _last_float(_PSNR, stderr)


@dataclass(frozen=True)
class ClipFrames:
    frames: int
    distinct: int
    seconds: float


def parse_framemd5(text: str, fps: int = FPS) -> ClipFrames:
    """Frames, frames unlike the one before, and the span they cover (first to last pts, plus one frame)."""
    base = 1.0 / 1_000_000
    hashes: list[str] = []
    stamps: list[int] = []
    for line in text.splitlines():
        if line.startswith("#tb 0:"):
            num, _, den = line.split(":", 1)[1].strip().partition("/")
            base = int(num) / int(den)
        elif line and not line.startswith("#"):
            fields = [f.strip() for f in line.split(",")]
            if len(fields) >= 6 and fields[0] == "0":
                stamps.append(int(fields[1]))
                hashes.append(fields[5])
    distinct = sum(1 for i, h in enumerate(hashes) if i == 0 or h != hashes[i - 1])
    seconds = (stamps[-1] - stamps[0]) * base + 1.0 / fps if stamps else 0.0
    return ClipFrames(frames=len(hashes), distinct=distinct, seconds=round(seconds, 3))


_X264_OPTIONS = re.compile(rb"x264 - core .*? options: ([ -~]+)")


def x264_options(path: Path, limit: int = 4 * 1024 * 1024) -> dict[str, str]:
    """The options x264 writes into its first SEI: what a candidate actually ran with."""
    with path.open("rb") as f:
        found = _X264_OPTIONS.search(f.read(limit))
    if not found:
        return {}
    pairs = (item.split("=", 1) for item in found.group(1).decode().split() if "=" in item)
    return {key: value for key, value in pairs}


def options_changed(options: dict[str, str], baseline: dict[str, str]) -> dict[str, str]:
    """x264 options that differ from the baseline's, as `new (was old)`."""
    keys = sorted(options.keys() | baseline.keys())
    return {k: f"{options.get(k)} (was {baseline.get(k)})" for k in keys if options.get(k) != baseline.get(k)}


@dataclass(frozen=True)
class Run:
    candidate: str
    round: int
    cpu_s: float
    wall_s: float
    cores: float
    exit_code: int


def run_measured(argv: list[str], clip_seconds: float) -> tuple[float, float, float, int, str]:
    """Run FFmpeg to the end; its own CPU seconds (user + sys, every thread) from wait4, wall seconds, code."""
    began = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=functools.partial(preexec_die_with_parent, signal.SIGKILL),
    )
    assert proc.stderr is not None
    try:
        stderr = proc.stderr.read().decode(errors="replace")
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - began
    cpu = usage.ru_utime + usage.ru_stime
    return cpu, wall, cpu / clip_seconds, proc.returncode, stderr


async def grab_clip(seconds: float, url: str, out: Path, records_dir: Path) -> None:
    """`seconds` of the page on the recorder's warm display, without loss; every process stopped after."""
    from contract.spec import RecordingSpec
    from recorder import procs
    from recorder.pipeline import Recorder

    # The page is the benchmark's own, on loopback: the egress guard may reach it, and only for this.
    settings = page.recorder_settings(url, records_dir=records_dir)
    recorder = Recorder(settings, width=WIDTH, height=HEIGHT)
    try:
        await recorder.start()
        audio, browser, display = recorder.audio, recorder.browser, recorder.display
        assert audio is not None and browser is not None and display is not None and display.name is not None
        sink = await audio.take_sink("encoder")
        session = await browser.open_ready(RecordingSpec(url=url))
        try:
            await asyncio.sleep(SETTLE_S)
            env = {**os.environ, "DISPLAY": display.name}
            proc = await procs.spawn(grab_argv(display.name, out), env=env, death_signal=signal.SIGKILL)
            stderr = asyncio.ensure_future(procs.drain_stderr(proc))
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), seconds)
            finally:
                # SIGINT: FFmpeg finishes the file; the exit code says whether it ran the whole time.
                early = proc.returncode
                code = await procs.stop(proc, sig=signal.SIGINT, timeout=30.0, name="ffmpeg grab")
                lines = await stderr
            if early is not None or code not in (0, 255, -signal.SIGINT, 130):
                raise RuntimeError(
                    f"the grab exited with {code} (early: {early is not None}): {' | '.join(lines[-3:])}"
                )
        finally:
            await session.close()
            await audio.remove_sink(sink)
    finally:
        await recorder.close()


def convert_with_libyuv(raw: Path, out: Path | None) -> float:
    """The lossless clip to I420 with the grab's own converter, written (unless `out` is None) as raw yuv420p
    in NUT at the clip's rate; the conversion's CPU seconds (this thread's, the decode and the writing left
    out)."""
    from recorder.capture.grabber import ToI420

    size = WIDTH * HEIGHT * 4
    source = ctypes.create_string_buffer(size)
    target = ctypes.create_string_buffer(frame_size(WIDTH, HEIGHT, "I420"))
    to_i420 = ToI420(WIDTH, HEIGHT)
    decode = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(raw)]
    decode += ["-f", "rawvideo", "-pix_fmt", "bgr0", "-"]
    encode = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "rawvideo"]
    encode += ["-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-framerate", str(FPS), "-i", "-"]
    encode += ["-c:v", "rawvideo", "-f", "nut", str(out)]
    spent = 0.0
    with contextlib.ExitStack() as stack:
        reader = stack.enter_context(subprocess.Popen(decode, stdout=subprocess.PIPE))
        writer = stack.enter_context(subprocess.Popen(encode, stdin=subprocess.PIPE)) if out else None
        assert reader.stdout is not None
        while (read := reader.stdout.readinto(memoryview(source).cast("B"))) == size:
            began = time.thread_time()
            to_i420(ctypes.addressof(source), ctypes.addressof(target))
            spent += time.thread_time() - began
            if writer is not None and writer.stdin is not None:
                writer.stdin.write(target.raw)
        if writer is not None and writer.stdin is not None:
            writer.stdin.close()
    codes = (reader.returncode, writer.returncode if writer else 0)
    if read not in (0, None) or any(codes):
        raise RuntimeError(f"the libyuv conversion of {raw} failed (exit codes {codes})")
    return spent


def clip_frames(raw: Path) -> ClipFrames:
    """One MD5 per raw frame, copied as stored (no decode)."""
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(raw)]
    out = subprocess.run(
        [*argv, "-map", "0:v", "-c", "copy", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
    )
    return parse_framemd5(out.stdout)


@dataclass
class Outcome:
    candidate: Candidate
    runs: list[Run] = field(default_factory=list)
    ssim: float | None = None
    psnr_db: float | None = None
    size_bytes: int | None = None
    kbit_s: float | None = None
    # sws and via candidates only: against the clip converted as the candidate converts (the encoder's loss alone)
    ssim_own_conversion: float | None = None
    psnr_own_conversion_db: float | None = None
    # Against the lossless clip in full colour (4:4:4): the conversion's loss counted too
    ssim_full_colour: float | None = None
    psnr_full_colour_db: float | None = None
    x264_options: dict[str, str] = field(default_factory=dict)

    def cores(self) -> dict[str, float] | None:
        values = [r.cores for r in self.runs if r.exit_code == 0]
        if not values:
            return None
        return {
            "median": round(statistics.median(values), 4),
            "min": round(min(values), 4),
            "max": round(max(values), 4),
        }


def measure(candidates: list[Candidate], repeat: int, raw: Path, clip: ClipFrames, outdir: Path) -> list[Outcome]:
    outcomes = {c.name: Outcome(c) for c in candidates}
    i420 = outdir / "i420.nut"
    # The libyuv conversion once per round (written the first time): its cores go with the candidates that read it.
    libyuv_s = (
        [convert_with_libyuv(raw, i420 if r == 0 else None) for r in range(repeat)]
        if any(c.converter == "libyuv" for c in candidates)
        else []
    )
    for number, order in enumerate(rounds(candidates, repeat), start=1):
        for candidate in order:
            out = outdir / f"{candidate.name}.mp4"
            converted = libyuv_s[number - 1] if candidate.converter == "libyuv" else 0.0
            if candidate.converter == "libyuv" and candidate.stage == "convert":
                cores = converted / clip.seconds
                outcomes[candidate.name].runs.append(
                    Run(candidate.name, number, round(converted, 3), 0.0, round(cores, 4), 0)
                )
                print(f"round {number}/{repeat} {candidate.name}: {cores:.3f} cores", flush=True)
                continue
            source = i420 if candidate.converter == "libyuv" else raw
            cpu, wall, cores, code, stderr = run_measured(candidate_argv(candidate, source, out), clip.seconds)
            cpu, cores = cpu + converted, cores + converted / clip.seconds
            outcomes[candidate.name].runs.append(
                Run(candidate.name, number, round(cpu, 3), round(wall, 3), round(cores, 4), code)
            )
            shown = f"{cores:.3f} cores" if code == 0 else f"FAILED ({code}): {stderr.strip()[-300:]}"
            print(f"round {number}/{repeat} {candidate.name}: {shown}", flush=True)
    for outcome in outcomes.values():
        out = outdir / f"{outcome.candidate.name}.mp4"
        if not outcome.candidate.encodes or not out.is_file():
            continue
        quality = subprocess.run(quality_argv(out, raw), capture_output=True, text=True)
        outcome.ssim = parse_ssim(quality.stderr)
        outcome.psnr_db = parse_psnr(quality.stderr)
        outcome.size_bytes = out.stat().st_size
        outcome.kbit_s = round(outcome.size_bytes * 8 / clip.seconds / 1000, 1)
        outcome.x264_options = x264_options(out)
        full = subprocess.run(quality_argv(out, raw, full_colour=True), capture_output=True, text=True)
        outcome.ssim_full_colour = parse_ssim(full.stderr)
        outcome.psnr_full_colour_db = parse_psnr(full.stderr)
        if outcome.candidate.own_conversion:
            if outcome.candidate.converter == "libyuv":
                own_argv = quality_argv(out, i420)  # already I420: the encoder's loss alone
            else:
                own_argv = quality_argv(out, raw, outcome.candidate.sws_flags, outcome.candidate.via)
            own = subprocess.run(own_argv, capture_output=True, text=True)
            outcome.ssim_own_conversion = parse_ssim(own.stderr)
            outcome.psnr_own_conversion_db = parse_psnr(own.stderr)
    return list(outcomes.values())


def summary(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    by_name = {o.candidate.name: o for o in outcomes}
    base = by_name.get(BASELINE)
    rows = []
    for o in outcomes:
        size_vs = (
            round(100.0 * (o.size_bytes / base.size_bytes - 1.0), 1)
            if base and base.size_bytes and o.size_bytes is not None
            else None
        )
        rows.append(
            {
                "candidate": o.candidate.name,
                "settings": asdict(o.candidate),
                "cores": o.cores(),
                "ssim": o.ssim,
                "psnr_db": _db(o.psnr_db),
                "ssim_own_conversion": o.ssim_own_conversion,
                "psnr_own_conversion_db": _db(o.psnr_own_conversion_db),
                "ssim_full_colour": o.ssim_full_colour,
                "psnr_full_colour_db": _db(o.psnr_full_colour_db),
                "size_bytes": o.size_bytes,
                "kbit_s": o.kbit_s,
                "size_vs_today_pct": size_vs,
                "x264_changed_vs_today": options_changed(o.x264_options, base.x264_options)
                if base and o.x264_options
                else None,
                "runs": [asdict(r) for r in o.runs],
            }
        )
    return rows


def _db(value: float | None) -> float | None:
    """PSNR for JSON: identical pictures (inf) have none."""
    return None if value is None or math.isinf(value) else round(value, 3)


def cost_split(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """read, convert (over read) and encode (over convert) in cores, from the medians."""
    median = {r["candidate"]: (r["cores"] or {}).get("median") for r in rows}
    read, convert, today = median.get("read"), median.get("convert"), median.get(BASELINE)

    def less(a: float | None, b: float | None) -> float | None:
        return round(a - b, 4) if a is not None and b is not None else None

    return {"read": read, "convert_only": less(convert, read), "encode_only_today": less(today, convert)}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'candidate':<18} {'cores median [min-max]':<26} {'SSIM':>8} {'PSNR dB':>8} {'kbit/s':>8} {'size':>8}"
        f"  {'SSIM 4:4:4':>10} {'PSNR 4:4:4':>10}"
    ]
    for r in rows:
        c = r["cores"]
        cores = f"{c['median']:.3f} [{c['min']:.3f}-{c['max']:.3f}]" if c else "failed"
        ssim = f"{r['ssim']:.5f}" if r["ssim"] is not None else "-"
        psnr = f"{r['psnr_db']:.2f}" if r["psnr_db"] is not None else "-"
        kbit = f"{r['kbit_s']:.0f}" if r["kbit_s"] is not None else "-"
        size = f"{r['size_vs_today_pct']:+.1f}%" if r["size_vs_today_pct"] is not None else "-"
        full_ssim = f"{r['ssim_full_colour']:.5f}" if r["ssim_full_colour"] is not None else "-"
        full_psnr = f"{r['psnr_full_colour_db']:.2f}" if r["psnr_full_colour_db"] is not None else "-"
        lines.append(
            f"{r['candidate']:<18} {cores:<26} {ssim:>8} {psnr:>8} {kbit:>8} {size:>8}  {full_ssim:>10} {full_psnr:>10}"
        )
    for r in rows:
        if r["ssim_own_conversion"] is not None:
            lines.append(
                f"  {r['candidate']}: against the clip converted with its own flags, SSIM "
                f"{r['ssim_own_conversion']:.5f}, PSNR {r['psnr_own_conversion_db']} dB (the encoder's loss alone)"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench encoder", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of the page grabbed (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of every candidate, round-robin (default 3)")
    parser.add_argument(
        "--candidates", nargs="+", default=None, help="only these (default: all); today, read and convert always run"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="the run's directory goes under it (default: temp)")
    parser.add_argument("--keep", action="store_true", help="keep the clip and the outputs")
    machine.add_quiet_arguments(parser)
    args = parser.parse_args(argv)
    try:
        candidates = select(args.candidates)
    except ValueError as exc:
        parser.error(str(exc))
    quiet = machine.check_quiet(args)
    info = machine.describe()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-encoder-", dir=args.workdir))
    raw = workdir / "raw.nut"
    try:
        with page.serve() as test_page:
            asyncio.run(grab_clip(args.seconds, page.grid_url(test_page), raw, workdir / "records"))
        clip = clip_frames(raw)
        print(
            f"clip: {clip.frames} frames ({clip.distinct} distinct) over {clip.seconds:.2f} s, "
            f"{raw.stat().st_size / 1e6:.0f} MB",
            flush=True,
        )
        outcomes = measure(candidates, args.repeat, raw, clip, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = summary(outcomes)
    split = cost_split(rows)
    print(table(rows))
    print(f"cost split (cores, medians): {split}")
    if args.keep:
        print(f"kept {workdir}")
    if not args.no_write:
        path = write_result(
            "encoder",
            {"clip": asdict(clip), "cost_split": split, "candidates": rows},
            options={
                "seconds": args.seconds,
                "repeat": args.repeat,
                "candidates": [c.name for c in candidates],
                "size": f"{WIDTH}x{HEIGHT}",
                "fps": FPS,
                "quiet_check": quiet,
            },
            machine_info=info,
            notes="cores = FFmpeg's CPU seconds (user + sys, wait4) / clip seconds: what a live capture of the clip "
            "would use for reading the frames, BGR -> yuv420p and the encode. read = demux only; convert = decode "
            "+ yuv420p, no encoder. Candidates alternate round-robin. SSIM (All) and PSNR (average) against the "
            "lossless clip converted to yuv420p, so only the encoder's loss counts. Chromium was stopped before "
            "the candidates ran. ref1 and trellis0 are veryfast's own values: they show the run-to-run noise.",
        )
        print(f"wrote {path}")
    return 0
