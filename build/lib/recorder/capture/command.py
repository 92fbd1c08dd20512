"""The FFmpeg capture command, built with ffmpeg-python.

Both inputs (x11grab and the PulseAudio monitor) stamp their packets with the wall clock, so the command
keeps those timestamps (`-copyts`) and subtracts one common origin from both (`-itsoffset`). A flash and
its beep that happen at the same instant therefore land at the same time in the file, whatever the order
and delay in which FFmpeg opened its two devices. The remaining, systematic latency of the path (Chromium's
audio buffer, the sink) is measured by calibration and subtracted from the audio side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg


@dataclass(frozen=True)
class CaptureSettings:
    display: str
    audio_source: str
    width: int
    height: int
    fps: int
    preset: str = "veryfast"
    crf: int = 23
    threads: int = 1
    audio_bitrate: str = "128k"
    # Positive: audio arrives this many ms late through the capture path and is moved earlier.
    av_offset_ms: float = 0.0


def build_capture_command(
    settings: CaptureSettings,
    output: Path,
    *,
    origin: float,
    live_dir: Path | None = None,
) -> list[str]:
    """Return argv for a capture whose timestamps count from `origin` (unix time, seconds).

    Ordinarily `output` is Matroska, readable up to its last cluster after a crash. With `live_dir` it is
    a fragmented MP4 instead (`moov` first, append-only: uploaded while it grows, and itself the final
    file) beside HLS segments in `live_dir`."""
    s = settings
    video = ffmpeg.input(
        f"{s.display}+0,0",
        f="x11grab",
        framerate=s.fps,
        video_size=(s.width, s.height),
        draw_mouse=0,
        # Raw 720p frames are 3.7 MB: a deep queue lets an overloaded recorder grow by gigabytes (seen at
        # four at once on two cores) instead of repeating frames; 64 frames caps it near 240 MB.
        thread_queue_size=64,
        probesize=32,
        analyzeduration=0,
        itsoffset=f"{-origin:.6f}",
    )
    audio = ffmpeg.input(
        s.audio_source,
        f="pulse",
        sample_rate=48000,
        channels=2,
        fragment_size=3840,  # 20 ms packets: fine-grained timestamps
        thread_queue_size=512,
        probesize=32,
        analyzeduration=0,
        itsoffset=f"{-origin - s.av_offset_ms / 1000.0:.6f}",
    )
    gop = 2 * s.fps
    encode: dict[str, object] = {
        "c:v": "libx264",
        "preset": s.preset,
        "tune": "zerolatency",
        "crf": s.crf,
        "pix_fmt": "yuv420p",
        "g": gop,
        "keyint_min": gop,
        "sc_threshold": 0,
        "threads": s.threads,
        "fps_mode": "cfr",
        "r": s.fps,
        "c:a": "aac",
        "b:a": s.audio_bitrate,
        "ar": 48000,
        "ac": 2,
        # Audio runs by its sample count from a start placed by its timestamp; the late first packet is
        # padded with silence back to the origin, and the end is padded to the video's last frame.
        "af": "aresample=async=1:first_pts=0,apad",
        "shortest": None,
    }
    if live_dir is None:
        out = ffmpeg.output(
            video["v"],
            audio["a"],
            str(output),
            f="matroska",
            cluster_time_limit=1000,
            cluster_size_limit=2 * 1024 * 1024,
            flush_packets=1,
            **encode,
        )
    else:
        segments = live_dir / "seg_%05d.ts"
        playlist = live_dir / "index.m3u8"
        # MP4 needs codec headers out of band, which the tee muxer only gets when asked for.
        encode["flags"] = "+global_header"
        tee = (
            f"[f=mp4:movflags=+frag_keyframe+empty_moov+default_base_moof]{output}|"
            f"[f=hls:hls_time=2:hls_list_size=0:hls_flags=independent_segments:"
            f"hls_segment_filename={segments}]{playlist}"
        )
        out = ffmpeg.output(video["v"], audio["a"], tee, f="tee", **encode)
    out = out.global_args(
        "-hide_banner",
        "-nostdin",
        "-loglevel", "warning",
        "-nostats",
        "-progress", "pipe:1",
        "-stats_period", "0.25",
        "-copyts",
    ).overwrite_output()
    return out.compile()
