"""Turn the crash-safe capture into the MP4 people play: stream copy, `moov` first, nothing re-encoded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import ffmpeg

from contract.errors import ErrorCode, RecorderError
from recorder.quality.probe import probe


def remux_to_mp4(capture: Path, mp4: Path, *, timeout: float = 600.0) -> Path:
    """Remux `capture` to `mp4` with +faststart; the old file is replaced only by a complete new one."""
    if not capture.is_file() or capture.stat().st_size == 0:
        raise RecorderError(ErrorCode.FINALIZE_FAILED, f"nothing was captured: {capture} is missing or empty")
    partial = mp4.with_name(mp4.name + ".part")
    # The file starts with its first video frame: the silence padded before it is dropped.
    facts = probe(capture)
    start = facts.video.start_time if facts.video and facts.video.start_time else 0.0
    argv = (
        ffmpeg.input(str(capture), ss=f"{start:.3f}")
        .output(str(partial), c="copy", map="0", f="mp4", movflags="+faststart", avoid_negative_ts="make_zero")
        .global_args("-hide_banner", "-nostdin", "-loglevel", "error")
        .overwrite_output()
        .compile()
    )
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        partial.unlink(missing_ok=True)
        raise RecorderError(ErrorCode.FINALIZE_FAILED, f"remux of {capture} took longer than {timeout:g} s") from exc
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        detail = done.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RecorderError(ErrorCode.FINALIZE_FAILED, f"remux of {capture} failed: {detail[0]}")
    os.replace(partial, mp4)
    return mp4


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
