"""Reference media made with FFmpeg lavfi: the sync clip and moving tiles.

The sync clip is black, with a white flash of a few frames and a beep at the same instant every second
(first at 0.5 s, so a clip's loop seam never lands on a marker). Under the beeps lies a faint noise bed
(-40 dBFS), so that a dropout in captured audio shows as a silent span instead of hiding between
beeps. Moving tiles change every frame and stay well below the flash's white, so flashes are found in
one tile of a busy page. `recorder calibrate`, the benchmark and the tests all record these.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from recorder.quality import analyze_file

SYNC_TONES = (1000, 440)
CLIP_SECONDS = 10.0
TILE_SIZE = (640, 360)
CLIP_FPS = 30
ENCODE_TIMEOUT = 120.0


def _video_codec(path: Path) -> list[str]:
    """VP8 in WebM for the browser; H.264 for .mp4/.mkv/.mov as the recorder writes."""
    if path.suffix == ".webm":
        codec = ["-c:v", "libvpx", "-deadline", "good", "-cpu-used", "4", "-crf", "8", "-b:v", "2M"]
    else:
        codec = ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"]
    return [*codec, "-pix_fmt", "yuv420p", "-g", str(2 * CLIP_FPS)]


def _audio_codec(path: Path) -> list[str]:
    """Opus in WebM; AAC elsewhere."""
    if path.suffix == ".webm":
        return ["-c:a", "libopus", "-b:a", "96k"]
    return ["-c:a", "aac", "-b:a", "128k"]


def run_ffmpeg(args: list[str], *, timeout: float = ENCODE_TIMEOUT) -> None:
    """Run FFmpeg to make test media (killed after `timeout`); a failure shows FFmpeg's own words."""
    done = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-y", *args],
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {done.stderr.decode(errors='replace')[-2000:]}")


@dataclass(frozen=True)
class SyncPattern:
    """Where the sync markers fall: flash k on the frames from (first_at + k*period)*fps on, its beep
    `offset_ms` later. Markers are placed on whole frames so the file's A/V offset is exact."""

    width: int = 320
    height: int = 180
    fps: int = 30
    tone_hz: float = 1000.0
    first_at: float = 0.5
    period: float = 1.0
    flash_frames: int = 3
    beep_ms: float = 100.0
    beep_amplitude: float = 0.5
    noise_dbfs: float | None = -40.0

    def __post_init__(self) -> None:
        if not (float(self.first_at * self.fps).is_integer() and float(self.period * self.fps).is_integer()):
            raise ValueError("first_at and period must be whole numbers of frames")

    def video_source(self, duration: float) -> str:
        first, every = int(self.first_at * self.fps), int(self.period * self.fps)
        flash = (
            "drawbox=x=0:y=0:w=iw:h=ih:color=white:t=fill:"
            f"enable='lt(mod(n-{first}+{every * 1000},{every}),{self.flash_frames})'"
        )
        return f"color=c=black:s={self.width}x{self.height}:r={self.fps}:d={duration},{flash}"

    def audio_source(self, duration: float, offset_ms: float) -> str:
        beep_at = self.first_at + offset_ms / 1000.0
        gate = f"lt(mod(t-{beep_at}+{self.period * 1000},{self.period}),{self.beep_ms / 1000.0})"
        expression = f"{self.beep_amplitude}*sin(2*PI*{self.tone_hz}*t)*{gate}"
        if self.noise_dbfs is not None:  # uniform noise: RMS = amplitude / sqrt(3)
            expression += f"+{10 ** (self.noise_dbfs / 20) * math.sqrt(3):.6f}*(2*random(0)-1)"
        return f"aevalsrc=exprs='{expression}':s=48000:d={duration}"


def make_sync_file(
    path: Path,
    duration: float,
    *,
    width: int = 320,
    height: int = 180,
    fps: int = 30,
    offset_ms: float = 0.0,
    tone_hz: float = 1000.0,
    first_at: float = 0.5,
    period: float = 1.0,
    flash_frames: int = 3,
    beep_ms: float = 100.0,
    beep_amplitude: float = 0.5,
    noise_dbfs: float | None = -40.0,
) -> Path:
    """Write a sync clip whose beeps sit `offset_ms` after their flashes (negative: before).

    The offset holds to the sample in MP4 (H.264 + AAC); the container is chosen by the suffix.
    """
    pattern = SyncPattern(
        width, height, fps, tone_hz, first_at, period, flash_frames, beep_ms, beep_amplitude, noise_dbfs
    )
    run_ffmpeg(
        [
            "-f", "lavfi", "-i", pattern.video_source(duration),
            "-f", "lavfi", "-i", pattern.audio_source(duration, offset_ms),
            *_video_codec(path), *_audio_codec(path), "-t", str(duration), str(path),
        ],
        timeout=ENCODE_TIMEOUT + 2 * duration,
    )  # fmt: skip
    return path


def make_reference_sync_clip(path: Path, duration: float, *, width: int, height: int, fps: int, tone_hz: float) -> Path:
    """A sync clip whose flashes and beeps coincide as a player presents them, checked by the analyzer.

    Muxing can shift one stream against the other: FFmpeg's WebM muxer moves the video 7 ms later
    to make room for Opus pre-skip. So the clip is measured after muxing and, while it is off by more
    than 1 ms, its audio is made again with the beeps moved by what was measured (the video is encoded
    once). The recorder's A/V calibration must never absorb an error of the test media.
    """
    pattern = SyncPattern(width=width, height=height, fps=fps, tone_hz=tone_hz)
    video = path.with_name(f"{path.stem}.video{path.suffix}")
    audio = path.with_name(f"{path.stem}.audio{path.suffix}")
    timeout = ENCODE_TIMEOUT + 2 * duration
    run_ffmpeg(
        ["-f", "lavfi", "-i", pattern.video_source(duration), *_video_codec(path), "-an", str(video)], timeout=timeout
    )
    offset_ms = measured = 0.0
    try:
        for _ in range(3):
            run_ffmpeg(
                ["-f", "lavfi", "-i", pattern.audio_source(duration, offset_ms), *_audio_codec(path), str(audio)]
            )
            run_ffmpeg(["-i", str(video), "-i", str(audio), "-map", "0:v", "-map", "1:a", "-c", "copy", str(path)])
            measured = _offset_ms(path, tone_hz)
            if abs(measured) <= 1.0:
                return path
            offset_ms -= measured
    finally:
        video.unlink(missing_ok=True)
        audio.unlink(missing_ok=True)
    raise RuntimeError(f"{path}: flashes and beeps are {measured:+.1f} ms apart even after correction")


def _offset_ms(path: Path, tone_hz: float) -> float:
    sync = analyze_file(path, tone_hz=tone_hz).sync
    if sync is None or sync.mean_ms is None:
        raise RuntimeError(f"{path}: no sync markers found in a freshly made sync clip")
    return sync.mean_ms


def make_tiles_file(
    path: Path,
    duration: float,
    *,
    width: int = 320,
    height: int = 180,
    fps: int = 30,
    pattern: str = "testsrc2",
) -> Path:
    """Write a silent clip that moves every frame (testsrc draws a frame counter, testsrc2 moving shapes),
    dimmed to at most about half of white so it can never pass for a flash."""
    run_ffmpeg(
        [
            "-f", "lavfi", "-i", f"{pattern}=s={width}x{height}:r={fps}:d={duration},lutyuv=y=val*0.55",
            *_video_codec(path), "-an", "-t", str(duration), str(path),
        ],
        timeout=ENCODE_TIMEOUT + 2 * duration,
    )  # fmt: skip
    return path


@dataclass(frozen=True)
class ReferenceMedia:
    """The clips the reference page plays, by name under `root`."""

    root: Path

    def sync(self, tone_hz: int = 1000) -> Path:
        return self.root / f"sync-{tone_hz}.webm"

    @property
    def tiles(self) -> list[Path]:
        return [self.root / "tiles-a.webm", self.root / "tiles-b.webm"]


def make_reference_media(root: Path) -> ReferenceMedia:
    """Sync clips (1 kHz and 440 Hz) and moving tiles, 10 s each, 640x360 at 30 fps, WebM VP8 + Opus."""
    root.mkdir(parents=True, exist_ok=True)
    media = ReferenceMedia(root)
    width, height = TILE_SIZE
    for tone in SYNC_TONES:
        make_reference_sync_clip(media.sync(tone), CLIP_SECONDS, width=width, height=height, fps=CLIP_FPS, tone_hz=tone)
    for path, pattern in zip(media.tiles, ("testsrc", "testsrc2"), strict=True):
        make_tiles_file(path, CLIP_SECONDS, width=width, height=height, fps=CLIP_FPS, pattern=pattern)
    return media
