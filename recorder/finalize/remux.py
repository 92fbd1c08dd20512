"""Turn the crash-safe capture into the MP4 people play: stream copy, `moov` first, nothing re-encoded.

A paused recording left one capture part per FFmpeg process: each is cut at its first frame (the sound
before it is dropped, as in a single capture) and the parts are joined end to end by the concat demuxer,
so the file's timeline runs on across every cut.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ffmpeg

from contract.errors import ErrorCode, RecorderError
from recorder.quality.probe import probe


def remux_to_mp4(
    capture: Path, mp4: Path, *, length: float | None = None, audio_shift_ms: float = 0.0, timeout: float = 600.0
) -> Path:
    """Remux `capture` to `mp4` with +faststart; the old file is replaced only by a complete new one.
    `length` (seconds) cuts what an overloaded capture wrote past the end asked for: a stop drains the
    encoder up to its moment, and its last input frames can fill a few frames beyond it. `audio_shift_ms`
    moves the sound that much earlier against the picture (later when negative)."""
    if not capture.is_file() or capture.stat().st_size == 0:
        raise RecorderError(ErrorCode.FINALIZE_FAILED, f"nothing was captured: {capture} is missing or empty")
    partial = mp4.with_name(mp4.name + ".part")
    limit = {"t": f"{length:.3f}"} if length else {}
    _trimmed_copy(
        capture, partial, f="mp4", movflags="+faststart", audio_shift_ms=audio_shift_ms, timeout=timeout, **limit
    )
    os.replace(partial, mp4)
    return mp4


def join_parts(parts: list[Path], mp4: Path, *, timeout: float = 600.0) -> list[float]:
    """Join capture parts into `mp4` (stream copy, +faststart): each cut at its first frame, then end to
    end. Returns each part's length in the file, so a cut's place is the sum of the lengths before it."""
    if not parts:
        raise RecorderError(ErrorCode.FINALIZE_FAILED, "nothing was captured: there are no capture parts")
    for part in parts:
        if not part.is_file() or part.stat().st_size == 0:
            raise RecorderError(ErrorCode.FINALIZE_FAILED, f"capture part {part} is missing or empty")
    trimmed = [mp4.with_name(f".join-{n:03d}.mkv") for n in range(1, len(parts) + 1)]
    listing = mp4.with_name(".join.ffconcat")
    partial = mp4.with_name(mp4.name + ".part")
    try:
        lengths = []
        for part, cut in zip(parts, trimmed, strict=True):
            _trimmed_copy(part, cut, f="matroska", timeout=timeout)
            lengths.append(_length(cut))
        # Each part ends with its last frame (the padded sound after it is dropped) and the next one starts
        # right after it, so the cut is one frame interval like any other.
        lines = ["ffconcat version 1.0"]
        for cut, length in zip(trimmed, lengths, strict=True):
            lines += [f"file '{_quoted(cut)}'", f"outpoint {length:.6f}"]
        listing.write_text("\n".join(lines) + "\n")
        joined = ffmpeg.input(str(listing), f="concat", safe=0).output(
            str(partial), c="copy", map="0", f="mp4", movflags="+faststart"
        )
        _run(_compiled(joined), f"joining {len(parts)} capture parts", timeout)
        os.replace(partial, mp4)
    finally:
        for leftover in (*trimmed, listing, partial):
            leftover.unlink(missing_ok=True)
    return lengths


def _length(part: Path) -> float:
    """Where a trimmed part ends: its video's end (last frame plus its interval), else its sound's."""
    facts = probe(part)
    first = facts.video or facts.audio
    return (first.duration if first and first.duration else None) or facts.duration or 0.0


def _trimmed_copy(capture: Path, out: Path, *, timeout: float, audio_shift_ms: float = 0.0, **options: str) -> None:
    """Stream copy of `capture` from its first frame (the first sound for audio alone) to `out`.

    The silence padded before the first frame is dropped, and the copy's timestamps start at zero. A sound
    moved against the picture is first copied on its own with its timestamps moved and what falls before
    the first frame dropped; the picture is then copied beside it untouched."""
    facts = probe(capture)
    first = facts.video or facts.audio
    start = f"{first.start_time if first and first.start_time else 0.0:.6f}"
    copy = {"c": "copy", "avoid_negative_ts": "make_zero", **options}
    try:
        if audio_shift_ms and facts.video and facts.audio:
            with _moved_sound(capture, out, float(start) + audio_shift_ms / 1000.0, timeout) as sound:
                picture = ffmpeg.input(str(capture), ss=start)["v"]
                _run(_compiled(ffmpeg.output(picture, sound, str(out), **copy)), f"remux of {capture}", timeout)
        else:
            whole = ffmpeg.input(str(capture), ss=start).output(str(out), map="0", **copy)
            _run(_compiled(whole), f"remux of {capture}", timeout)
    except RecorderError:
        out.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _moved_sound(capture: Path, out: Path, by: float, timeout: float) -> Iterator[ffmpeg.nodes.FilterableStream]:
    """The capture's sound with its time `by` (seconds: the first frame's, plus the move) at zero, copied
    alone beside `out` (a hidden file, gone afterwards), as an input stream. Each input's timeline starts at
    its first packet; the moved sound's starts after zero (a packet holds 21 ms), and keeps its place only
    when given back what that would take from it."""
    sound = out.with_name(f".{out.name}.sound.mka")
    try:
        shifted = ffmpeg.input(str(capture), itsoffset=f"{-by:.6f}")["a"]
        alone = ffmpeg.output(shifted, str(sound), c="copy", ss=0, f="matroska")
        _run(_compiled(alone), f"moving the sound of {capture}", timeout)
        moved = probe(sound).audio
        moved_start = moved.start_time if moved and moved.start_time else 0.0
        yield ffmpeg.input(str(sound), itsoffset=f"{moved_start:.6f}")["a"]
    finally:
        sound.unlink(missing_ok=True)


def _compiled(output: ffmpeg.nodes.OutputStream) -> list[str]:
    return output.global_args("-hide_banner", "-nostdin", "-loglevel", "error").overwrite_output().compile()


def _run(argv: list[str], what: str, timeout: float) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise RecorderError(ErrorCode.FINALIZE_FAILED, f"{what} took longer than {timeout:g} s") from exc
    if done.returncode != 0:
        detail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RecorderError(ErrorCode.FINALIZE_FAILED, f"{what} failed: {detail[0]}")


def _quoted(path: Path) -> str:
    """A path inside single quotes of an ffconcat file."""
    return str(path.resolve()).replace("'", "'\\''")


def top_level_boxes(mp4: Path) -> list[str]:
    """The MP4's top-level box types in file order (so `moov` before `mdat` can be checked)."""
    boxes: list[str] = []
    with mp4.open("rb") as f:
        size_total = mp4.stat().st_size
        offset = 0
        while offset + 8 <= size_total:
            f.seek(offset)
            header = f.read(16)
            size = int.from_bytes(header[:4], "big")
            kind = header[4:8].decode("latin-1")
            if size == 1:
                size = int.from_bytes(header[8:16], "big")
            elif size == 0:
                size = size_total - offset
            if size < 8:
                break
            boxes.append(kind)
            offset += size
    return boxes
