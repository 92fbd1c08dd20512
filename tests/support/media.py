"""Test fixtures: media made at test time with FFmpeg lavfi, and the local test page that plays it.

The reference is the sync clip: black, with a white flash of a few frames and a beep at the same
instant every second (first at 0.5 s, so a clip's loop seam never lands on a marker). Under the
beeps lies a faint noise bed (-40 dBFS), so that a dropout in captured audio shows as a silent span
instead of hiding between beeps. Moving tiles change every frame and stay well below the flash's
white, so flashes are found in one tile of a busy page.
"""

from __future__ import annotations

import asyncio
import html
import json
import math
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

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
class TestMedia:
    """The clips the test page plays, by name under `root`."""

    __test__ = False  # not a test class, despite the name

    root: Path

    def sync(self, tone_hz: int = 1000) -> Path:
        return self.root / f"sync-{tone_hz}.webm"

    @property
    def tiles(self) -> list[Path]:
        return [self.root / "tiles-a.webm", self.root / "tiles-b.webm"]


@pytest.fixture(scope="session")
def test_media(tmp_path_factory: pytest.TempPathFactory) -> TestMedia:
    """Sync clips (1 kHz and 440 Hz) and moving tiles, 10 s each, 640x360 at 30 fps, WebM VP8 + Opus."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    media = TestMedia(tmp_path_factory.mktemp("media"))
    width, height = TILE_SIZE
    for tone in SYNC_TONES:
        make_reference_sync_clip(media.sync(tone), CLIP_SECONDS, width=width, height=height, fps=CLIP_FPS, tone_hz=tone)
    for path, pattern in zip(media.tiles, ("testsrc", "testsrc2"), strict=True):
        make_tiles_file(path, CLIP_SECONDS, width=width, height=height, fps=CLIP_FPS, pattern=pattern)
    return media


# --- the test page -------------------------------------------------------------------------------

_GRID_STYLE = """
html, body { margin: 0; padding: 0; width: 100vw; height: 100vh; overflow: hidden; background: #000; }
#grid { display: grid; grid-template-columns: 50vw 50vw; grid-template-rows: 50vh 50vh;
        width: 100vw; height: 100vh; }
video { display: block; width: 50vw; height: 50vh; object-fit: fill; background: #000; }
#ready { position: fixed; right: 0; bottom: 0; width: 16px; height: 16px; background: #111; }
"""


def _page(title: str, body: str, script: str = "") -> web.Response:
    document = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_GRID_STYLE}</style></head>"
        f"<body>{body}<script>{script}</script></body></html>"
    )
    return web.Response(text=document, content_type="text/html", headers={"Cache-Control": "no-store"})


def _grid(tone: int) -> str:
    tiles = [f"/media/sync-{tone}.webm", "/media/tiles-a.webm", "/media/tiles-b.webm", "/media/tiles-a.webm#t=5"]
    videos = "".join(f"<video src='{src}' autoplay loop playsinline></video>" for src in tiles)
    return f"<div id='grid'>{videos}</div>"


def _number(request: web.Request, name: str, default: float | None) -> float | None:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        return float(text)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={text!r} is not a number") from None


async def _favicon(request: web.Request) -> web.Response:
    """Keeps a page's console free of a 404 for the icon the browser asks for."""
    return web.Response(status=204)


async def _grid_page(request: web.Request) -> web.Response:
    """/grid?tone=1000[&ready=selector][&signal=start][&delay=2][&end=5]"""
    tone = int(_number(request, "tone", 1000) or 1000)
    if tone not in SYNC_TONES:
        raise web.HTTPNotFound(text=f"no sync clip at {tone} Hz; there are {SYNC_TONES}")
    delay = _number(request, "delay", 0.0) or 0.0
    end = _number(request, "end", None)
    steps = []
    if request.query.get("ready") == "selector":
        steps.append(
            f"setTimeout(() => {{ const e = document.createElement('div'); e.id = 'ready';"
            f" document.body.appendChild(e); }}, {delay * 1000:.0f});"
        )
    if request.query.get("signal") == "start":
        steps.append(f"setTimeout(() => console.log('START_RECORDING'), {delay * 1000:.0f});")
    if end is not None:
        steps.append(f"setTimeout(() => console.log('END_RECORDING'), {end * 1000:.0f});")
    return _page(f"grid {tone} Hz", _grid(tone), "\n".join(steps))


async def _state_set(request: web.Request) -> web.Response:
    """Leaves a cookie (from the server and from script) and a localStorage item behind."""
    script = (
        "document.cookie = 'rf_script=1; path=/; max-age=3600';"
        "localStorage.setItem('rf_state', 'set');"
        "console.log('STATE_SET');"
    )
    response = _page("state set", "<p>state set</p>", script)
    response.set_cookie("rf_server", "1", path="/", max_age=3600)
    return response


async def _state_report(request: web.Request) -> web.Response:
    """Title and a console line `STATE cookies=<...> storage=<...>`, empty values when nothing crossed."""
    seen = json.dumps("; ".join(f"{k}={v}" for k, v in sorted(request.cookies.items())))
    script = (
        f"const server = {seen};"
        "const storage = JSON.stringify(Object.fromEntries(Object.entries(localStorage)));"
        "const line = `STATE cookies=${document.cookie} server=${server} storage=${storage === '{}' ? '' : storage}`;"
        "document.title = line; console.log(line);"
    )
    return _page("STATE pending", "<p>state report</p>", script)


async def _status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    return web.Response(status=code, text=f"status {code}", content_type="text/plain")


async def _hold(request: web.Request) -> web.Response:
    """A subresource that does not finish for `seconds` (default 60): its page never fires `load`."""
    await asyncio.sleep(_number(request, "seconds", 60.0) or 60.0)
    return web.Response(body=b"", content_type="image/gif")


async def _slow_page(request: web.Request) -> web.Response:
    """Never ready: `load` waits on a held image, no #ready appears, START_RECORDING is never logged."""
    return _page("slow", _grid(1000) + "<img src='/hold?seconds=60' width='1' height='1'>")


def build_app(media: TestMedia) -> web.Application:
    app = web.Application()
    app.router.add_get("/grid", _grid_page)
    app.router.add_get("/state/set", _state_set)
    app.router.add_get("/state/report", _state_report)
    app.router.add_get("/status/{code:[1-5][0-9][0-9]}", _status)
    app.router.add_get("/hold", _hold)
    app.router.add_get("/slow", _slow_page)
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_static("/media", media.root)
    return app


class TestPage:
    """The test page server, run on 127.0.0.1 in a thread with its own event loop."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, media: TestMedia) -> None:
        self.media = media
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(build_app(media), handler_cancellation=True, shutdown_timeout=0.5)
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-page", daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/grid") -> str:
        return self.base + (path if path.startswith("/") else "/" + path)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)

    async def _start(self) -> None:
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()
        self._sock.close()


@pytest.fixture(scope="session")
def test_page(test_media: TestMedia) -> Iterator[TestPage]:
    """The local test page: /grid, /state/set, /state/report, /status/<code>, /slow, /media/<clip>."""
    page = TestPage(test_media)
    page.start()
    try:
        yield page
    finally:
        page.stop()
