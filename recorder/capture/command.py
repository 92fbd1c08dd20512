"""The FFmpeg capture command, built with ffmpeg-python.

Both inputs carry wall-clock times: the screen's frames (from recorder.capture.grabber, stamped from the
origin, or from x11grab, stamped when grabbed) and the PulseAudio monitor's packets. The command keeps
those timestamps (`-copyts`) and subtracts one common origin from the wall-clock ones (`-itsoffset`). A flash and
its beep that happen at the same instant therefore land at the same time in the file, whatever the order
and delay in which FFmpeg opened its two devices. The remaining, systematic latency of the path (Chromium's
audio buffer, the sink) is measured by calibration and subtracted from the audio side.

An audio-only capture (`video=False`) has no screen input and no video encode; its audio keeps the
timestamp of its first packet (nothing to pad back to), so finalize can cut exactly where sound began.

Live detection: when asked, `silencedetect` (in the audio chain, before the padding) and `freezedetect`
(in the video chain) measure the capture itself and log at info level; FFmpeg then runs with
`-loglevel level+info` so each line says its level and the reader can tell them from warnings.
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
    preset: str = "ultrafast"
    crf: int = 26
    threads: int = 1
    x264_params: str = "cabac=1:deblock=1"  # key=value:key=value on top of the preset (RECORDER_X264_PARAMS)
    # damage: recorder.capture.grabber writes the pictures into FFmpeg's standard input on a grid placed by
    # the page's drawing. x11grab: FFmpeg grabs the screen on its own clock (RECORDER_GRABBER).
    grabber: str = "damage"
    # The page is still loading when the capture starts (`from: commit`): the paced grab places its grid
    # after a short watch instead of waiting for the page's drawing to settle.
    loading: bool = False
    audio_bitrate: str = "128k"
    # Positive: audio arrives this many ms late through the capture path and is moved earlier.
    av_offset_ms: float = 0.0
    video: bool = True  # False: the page's audio alone (spec.video)
    # Live detection (spec.stop_when): seconds of silence below silence_db, of an unchanged screen; None: off.
    silence: float | None = None
    silence_db: float = -50.0
    frozen: float | None = None

    @property
    def detects(self) -> bool:
        return self.silence is not None or (self.video and self.frozen is not None)


VIDEO_QUEUE_FRAMES = 8
# The paced grab keeps its own small ring of pictures and its slots keep their times however late they are
# read, so FFmpeg's queue of raw frames needs only to ride out a hiccup.
PIPE_QUEUE_FRAMES = 4
FREEZE_NOISE = "-60dB"  # freezedetect's tolerance: an unchanged screen re-captured is identical to the bit


def build_capture_command(
    settings: CaptureSettings,
    output: Path,
    *,
    origin: float,
    live_dir: Path | None = None,
    part: int = 1,
) -> list[str]:
    """Return argv for a capture whose timestamps count from `origin` (unix time, seconds).

    Ordinarily `output` is Matroska, readable up to its last cluster after a crash. With `live_dir` it is
    a fragmented MP4 instead (`moov` first, append-only: uploaded while it grows, and itself the final
    file) beside HLS segments in `live_dir`. `part` > 1 is a capture resumed after a pause: its HLS
    segments continue the playlist (numbers go on, a discontinuity marks the cut)."""
    s = settings
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
    )["a"]
    streams = [_video_input(s, origin)] if s.video else []
    encode: dict[str, object] = {
        "c:a": "aac",
        "b:a": s.audio_bitrate,
        "ar": 48000,
        "ac": 2,
    }
    if s.video:
        encode |= video_encode_options(s) | {"shortest": None}
    if s.silence is None:
        encode["af"] = _audio_chain(s.video)
    else:
        # Before the padding: the silence padded at either end is not the page's. A filtered input goes
        # through -filter_complex, which excludes -af, so the chain is spelled out as filters.
        audio = audio.filter("silencedetect", n=f"{s.silence_db:g}dB", d=f"{s.silence:g}")
        for name, args in _AUDIO_FILTERS[s.video]:
            audio = audio.filter(name, **args)
    streams.append(audio)
    if live_dir is None:
        out = ffmpeg.output(
            *streams,
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
        # Every audio packet is a keyframe: audio alone is cut into one-second fragments instead.
        mp4 = (
            "f=mp4:movflags=+frag_keyframe+empty_moov+default_base_moof"
            if s.video
            else "f=mp4:movflags=+empty_moov+default_base_moof:frag_duration=1000000"
        )
        hls_flags = "independent_segments" + ("+append_list+discont_start" if part > 1 else "")
        tee = (
            f"[{mp4}]{output}|"
            f"[f=hls:hls_time=2:hls_list_size=0:hls_flags={hls_flags}:"
            f"hls_segment_filename={segments}]{playlist}"
        )
        out = ffmpeg.output(*streams, tee, f="tee", **encode)
    out = out.global_args(
        "-hide_banner",
        "-nostdin",
        # With detection, its filters log at info level; the level tag tells their lines from warnings.
        "-loglevel",
        "level+info" if s.detects else "level+warning",
        "-nostats",
        "-progress",
        "pipe:1",
        "-stats_period",
        "0.25",
        "-copyts",
    ).overwrite_output()
    return out.compile()


def video_encode_options(s: CaptureSettings) -> dict[str, object]:
    """The video encode as FFmpeg output options (also what `python -m bench encoder` measures)."""
    gop = 2 * s.fps
    return {
        "c:v": "libx264",
        "preset": s.preset,
        "tune": "zerolatency",
        "crf": s.crf,
        "pix_fmt": "yuv420p",
        "g": gop,
        "keyint_min": gop,
        "sc_threshold": 0,
        "threads": s.threads,
        **({"x264-params": s.x264_params} if s.x264_params else {}),
        "fps_mode": "cfr",
        "r": s.fps,
    }


# Video: audio runs by its sample count from a start placed by its timestamp; the late first packet is
# padded with silence back to the origin, and the end is padded to the video's last frame.
# Audio only: the sample count runs from the first packet's own timestamp, so the file starts with the sound.
_AUDIO_FILTERS: dict[bool, list[tuple[str, dict[str, object]]]] = {
    True: [("aresample", {"async": 1, "first_pts": 0}), ("apad", {})],
    False: [("aresample", {"async": 1})],
}


def _audio_chain(video: bool) -> str:
    """The same filters as one -af argument."""
    parts = []
    for name, args in _AUDIO_FILTERS[video]:
        options = ":".join(f"{key}={value}" for key, value in args.items())
        parts.append(f"{name}={options}" if options else name)
    return ",".join(parts)


def _video_input(s: CaptureSettings, origin: float) -> ffmpeg.nodes.FilterableStream:
    if s.grabber == "damage":
        # Each frame carries its slot's time from the origin, which is the grabber's first slot: a multiple of
        # the frame interval, so the constant-rate output keeps every frame where it was stamped.
        video = ffmpeg.input(
            "pipe:0", f="matroska", thread_queue_size=PIPE_QUEUE_FRAMES, probesize=32, analyzeduration=0
        )["v"]
        return _detecting(s, video)
    video = ffmpeg.input(
        f"{s.display}+0,0",
        f="x11grab",
        framerate=s.fps,
        video_size=(s.width, s.height),
        draw_mouse=0,
        # Frames wait here with the time they were grabbed, and a full queue holds the grab back. A deep queue
        # on an overloaded machine is worse than memory (3.7 MB a raw 720p frame): frames taken out slowly are
        # grabbed slowly, so 64 queued frames spanned up to 17 s of wall time, all lost when FFmpeg stopped
        # (five at once on two cores gave 9.9-15.8 s files for 20 s). A short queue keeps the backlog to a second
        # or so, which the stop drains (Capture.stop); an encoder that cannot keep up repeats frames instead.
        thread_queue_size=VIDEO_QUEUE_FRAMES,
        probesize=32,
        analyzeduration=0,
        itsoffset=f"{-origin:.6f}",
    )["v"]
    return _detecting(s, video)


def _detecting(s: CaptureSettings, video: ffmpeg.nodes.FilterableStream) -> ffmpeg.nodes.FilterableStream:
    if s.frozen is not None:
        # In the encoder's own pixel format, so the conversion is not done twice.
        video = video.filter("format", "yuv420p").filter("freezedetect", n=FREEZE_NOISE, d=f"{s.frozen:g}")
    return video
