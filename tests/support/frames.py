"""Small RGB pictures of a recording's frames, for tests that ask what was on screen when."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

WIDTH, HEIGHT = 32, 18


def frames(path: Path, *, start: float = 0.0, seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(pts in seconds, frames as uint8 [n, HEIGHT, WIDTH, 3]) of `seconds` from `start` (all when None)."""
    window = ["-ss", f"{start:.3f}"] + (["-t", f"{seconds:.3f}"] if seconds is not None else [])
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info", *window, "-i", str(path), "-map", "0:v:0",
         "-vf", f"scale={WIDTH}:{HEIGHT}:flags=area,showinfo", "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.frombuffer(done.stdout, np.uint8).reshape(-1, HEIGHT, WIDTH, 3)
    pts = [
        float(line.split("pts_time:")[1].split()[0])
        for line in done.stderr.decode(errors="replace").splitlines()
        if "pts_time:" in line
    ]
    return np.array(pts[: len(pixels)]) + start, pixels


def share_of_colour(picture: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 40) -> float:
    """The share of a picture's pixels within `tolerance` of `rgb` on every channel."""
    close = np.all(np.abs(picture.astype(np.int16) - np.array(rgb, np.int16)) <= tolerance, axis=-1)
    return float(close.mean())
