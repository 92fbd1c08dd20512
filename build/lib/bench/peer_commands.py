"""The capture command lines other recorders publish, adapted only as far as needed to run on our sources.

Every peer grabs the same Xvfb display (the recorder's, Chromium already on the page) and records the same
PulseAudio sink monitor, so what differs is the capture and encode pipeline alone. Where each came from:

- `jibri`: Jitsi Jibri, `jibri.ffmpeg.command-linux-recording` in src/main/resources/reference.conf
  (jitsi/jibri, commit 02964b9b39fe73037a4353be80d7a4f9daaa253b): x11grab + ALSA `plug:bsnoop`,
  `-acodec aac -strict -2 -ar 44100 -b:a 128k -af aresample=async=1`, `-c:v libx264 -pix_fmt yuv420p -r 30
  -crf 25 -preset ultrafast -profile:v main -level 3.1 -timestamp now -f mp4`.
- `jibri-streaming`: the same file's `command-linux-streaming` (preset veryfast, `-tune zerolatency -g 60
  -maxrate 2976k -bufsize 5952k`, FLV), which is also what Jibri's older hard-coded command used
  (src/main/kotlin/org/jitsi/jibri/capture/ffmpeg/Commands.kt: veryfast, crf 25, zerolatency, g 60).
- `livekit`: LiveKit Egress's web source and encoder (livekit/egress pkg/pipeline/builder/video.go,
  buildWebInput and addEncoder; pkg/pipeline/builder/audio.go, buildWebInput; pkg/pipeline/builder/file.go;
  preset H264_720P_30 in pkg/config/encoding.go, defaults in pkg/config/pipeline.go): ximagesrc
  (use-damage=false, show-pointer=false) ! queue ! videoconvert ! videorate skip-to-first=true !
  framerate=30/1 ! x264enc speed-preset=veryfast bitrate=3000 vbv-buf-capacity=2000 ! profile=main ! mp4mux;
  pulsesrc ! audioconvert ! audioresample ! S16LE 44100 Hz stereo ! faac bitrate=128000. Expressed with
  gst-launch; `faac` is not packaged by Debian, so `voaacenc` (a standalone AAC encoder taking the same
  S16LE input at the same bitrate) takes its place, and Egress's latency-bounded queues are plain queues.
- `attendee`: attendee-labs/attendee, bots/bot_controller/screen_and_audio_recorder.py, the FFmpeg form of
  `ScreenAndAudioRecorder.start_recording`: `-thread_queue_size 256 -framerate 30 -f x11grab -draw_mouse 0
  -probesize 32`, audio `-thread_queue_size 4096 -f pulse -i <sink>.monitor` (its isolated-sink path; ALSA
  `default` otherwise), `-vf crop=W:H:10:10 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -g 30 -c:a aac
  -strict experimental -b:a 128k`, MP4. Its screen is 10 px larger than the recording and cropped; ours is
  exactly the capture size, so the crop keeps its place with a zero offset.
- `attendee-gst`: the GStreamer form of the same file (commit 93bba0e75788c78ce20a46000779e4cb50ffcba3):
  ximagesrc use-damage=0 ! framerate=30/1 ! videocrop ! videoconvert ! x264enc tune=zerolatency
  speed-preset=ultrafast key-int-max=30 ! mp4mux faststart=true; alsasrc (here pulsesrc on the monitor) !
  audioconvert ! voaacenc bitrate=128000.

Common adaptations: the display is ours instead of `:0`, the size is the page's 1280x720 (Jibri's default is
1080p), audio comes from our sink's monitor through PulseAudio (Jibri and attendee read an ALSA device that
their images route to PulseAudio).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class Sources:
    display: str
    monitor: str
    width: int
    height: int
    fps: int


@dataclass(frozen=True)
class PeerCapture:
    name: str
    kind: Literal["ffmpeg", "gstreamer"]
    output_name: str
    build: Callable[[Sources, Path], list[str]]
    source: str

    def argv(self, sources: Sources, out: Path) -> list[str]:
        return self.build(sources, out)


def _jibri_inputs(s: Sources) -> list[str]:
    return [
        "-f", "x11grab", "-draw_mouse", "0", "-r", str(s.fps), "-s", f"{s.width}x{s.height}",
        "-thread_queue_size", "4096", "-i", f"{s.display}.0+0,0",
        "-f", "pulse", "-thread_queue_size", "4096", "-i", s.monitor,
    ]  # fmt: skip


_JIBRI_AUDIO = ["-acodec", "aac", "-strict", "-2", "-ar", "44100", "-b:a", "128k", "-af", "aresample=async=1"]


def jibri(s: Sources, out: Path) -> list[str]:
    return [
        "ffmpeg", "-y", "-v", "info", *_jibri_inputs(s), *_JIBRI_AUDIO,
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", str(s.fps), "-crf", "25",
        "-preset", "ultrafast", "-profile:v", "main", "-level", "3.1", "-timestamp", "now", "-f", "mp4", str(out),
    ]  # fmt: skip


def jibri_streaming(s: Sources, out: Path) -> list[str]:
    return [
        "ffmpeg", "-y", "-v", "info", *_jibri_inputs(s), *_JIBRI_AUDIO,
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-r", str(s.fps), "-crf", "25",
        "-preset", "veryfast", "-tune", "zerolatency", "-g", str(2 * s.fps), "-maxrate", "2976k",
        "-bufsize", "5952k", "-timestamp", "now", "-f", "flv", str(out),
    ]  # fmt: skip


def livekit(s: Sources, out: Path) -> list[str]:
    pipeline = (
        f"ximagesrc display-name={s.display} use-damage=false show-pointer=false endx={s.width - 1} "
        f"endy={s.height - 1} ! queue ! videoconvert ! videorate skip-to-first=true ! "
        f"video/x-raw,framerate={s.fps}/1 ! queue ! "
        "x264enc speed-preset=veryfast bitrate=3000 vbv-buf-capacity=2000 ! video/x-h264,profile=main ! queue ! mux. "
        f"pulsesrc device={s.monitor} ! queue ! audioconvert ! audioresample ! "
        "audio/x-raw,format=S16LE,layout=interleaved,rate=44100,channels=2 ! voaacenc bitrate=128000 ! queue ! mux. "
        f"mp4mux name=mux ! filesink location={out} sync=false"
    )
    return ["gst-launch-1.0", "-e", "-q", *pipeline.split()]


def attendee(s: Sources, out: Path) -> list[str]:
    return [
        "ffmpeg", "-y", "-thread_queue_size", "256", "-framerate", str(s.fps), "-video_size", f"{s.width}x{s.height}",
        "-f", "x11grab", "-draw_mouse", "0", "-probesize", "32", "-i", s.display,
        "-thread_queue_size", "4096", "-f", "pulse", "-i", s.monitor,
        "-vf", f"crop={s.width}:{s.height}:0:0", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
        "-g", "30", "-c:a", "aac", "-strict", "experimental", "-b:a", "128k", str(out),
    ]  # fmt: skip


def attendee_gst(s: Sources, out: Path) -> list[str]:
    pipeline = (
        f"ximagesrc display-name={s.display} use-damage=0 ! "
        f"video/x-raw,framerate={s.fps}/1,width={s.width},height={s.height} ! "
        "videocrop top=0 left=0 right=0 bottom=0 ! "
        f"video/x-raw,width={s.width},height={s.height} ! videoconvert ! "
        "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! queue ! mux. "
        f"pulsesrc device={s.monitor} ! audio/x-raw ! audioconvert ! voaacenc bitrate=128000 ! queue ! mux. "
        f"mp4mux name=mux faststart=true ! filesink location={out} sync=false"
    )
    return ["gst-launch-1.0", "-e", "-q", *pipeline.split()]


PEERS: dict[str, PeerCapture] = {
    p.name: p
    for p in (
        PeerCapture("jibri", "ffmpeg", "jibri.mp4", jibri, "jitsi/jibri src/main/resources/reference.conf"),
        PeerCapture(
            "jibri-streaming", "ffmpeg", "jibri.flv", jibri_streaming, "jitsi/jibri src/main/resources/reference.conf"
        ),
        PeerCapture("livekit", "gstreamer", "livekit.mp4", livekit, "livekit/egress pkg/pipeline/builder/*.go"),
        PeerCapture(
            "attendee",
            "ffmpeg",
            "attendee.mp4",
            attendee,
            "attendee-labs/attendee bots/bot_controller/screen_and_audio_recorder.py",
        ),
        PeerCapture(
            "attendee-gst",
            "gstreamer",
            "attendee-gst.mp4",
            attendee_gst,
            "attendee-labs/attendee bots/bot_controller/screen_and_audio_recorder.py@93bba0e",
        ),
    )
}
