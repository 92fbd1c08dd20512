"""The screen grab paced by the page (recorder/capture/grabber.py), on a real Xvfb.

A drawer paints the screen a new grey level every 1/30 s around a fixed phase, a few ms early or late, as
Chromium draws (levels two apart, so each stays its own in the I420 pictures' luma). The grabber places its
grid half a frame from the draws and each slot carries the next level: no picture twice, none skipped (a grid
on the draws themselves fails this, half the draws landing after their slot). Slots come at the capture rate
whatever the content, the pipe ends at the slot asked for, and nothing of the grabber (thread, shared memory,
pipe) outlives it, even when its reader stops reading.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import xcffib
import xcffib.xproto

from recorder.capture import grabber as grabber_module
from recorder.capture.command import CaptureSettings
from recorder.capture.ffmpeg import Capture
from recorder.capture.grabber import (
    BEHIND_SLOTS,
    FOLLOW_SLACK_BACK,
    PHASE_HOLDS,
    PHASE_SETTLE,
    PHASE_WINDOW,
    PIPE_BYTES,
    START_MARGIN,
    GrabberError,
    ScreenGrabber,
    frame_size,
    stream_header,
)
from recorder.source.display import Display
from tests.support.leaks import own_segments

WIDTH, HEIGHT, FPS = 320, 240, 30
PERIOD = 1.0 / FPS
FRAME = frame_size(WIDTH, HEIGHT, "I420")
LEVELS = 128  # grey levels the drawer cycles through, 2 apart (0, 2, ... 254)


def level_of(frame: bytes) -> int:
    """The drawer's level from the first pixel's luma (BT.601, limited range: grey g is 16 + 219 g / 255)."""
    return round((frame[0] - 16) * 255 / 219 / 2) % LEVELS


def step(a: int, b: int) -> int:
    return (b - a) % LEVELS


@pytest.fixture
async def display(no_leaks: None) -> AsyncIterator[str]:
    screen = Display(WIDTH, HEIGHT)
    name = await screen.start()
    try:
        yield name
    finally:
        await screen.stop()


class Drawer:
    """Fills the screen with grey level 1, 2, 3, ... one per `period`, `phase` seconds past each period give
    or take `jitter` (or, with `phases`, at each of them in turn)."""

    def __init__(
        self,
        display: str,
        phase: float,
        jitter: float = 0.004,
        *,
        period: float = PERIOD,
        phases: tuple[float, ...] = (),
    ) -> None:
        self.conn = xcffib.connect(display=display)
        screen = self.conn.get_setup().roots[0]
        self.root = screen.root
        self.gc = self.conn.generate_id()
        self.conn.core.CreateGC(self.gc, self.root, 0, [])
        self.phases = phases or (phase,)
        self.period = period
        self.jitter = jitter
        self.random = random.Random(7)
        self.level = 0
        self.drawn: list[float] = []  # when each fill was on the screen (monotonic): a loaded machine draws late
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def fill(self, level: int) -> None:
        grey = 2 * (level % LEVELS)
        self.conn.core.ChangeGC(self.gc, xcffib.xproto.GC.Foreground, [grey << 16 | grey << 8 | grey])
        self.conn.core.PolyFillRectangle(
            self.root, self.gc, 1, [xcffib.xproto.RECTANGLE.synthetic(0, 0, WIDTH, HEIGHT)]
        )
        self.conn.core.GetInputFocus().reply()  # a round trip: the fill is on the screen when this returns

    def _run(self) -> None:
        period = math.floor(time.monotonic() / self.period)
        while not self.halt.is_set():
            period += 1
            phase = self.phases[period % len(self.phases)]
            due = period * self.period + phase + self.random.uniform(-self.jitter, self.jitter)
            time.sleep(max(0.0, due - time.monotonic()))
            self.level += 1
            self.fill(self.level)
            self.drawn.append(time.monotonic())

    def drawn_phase(self, period: float = PERIOD) -> float:
        """Where the fills landed on the `period`'s circle (their circular mean), late draws included: what
        the grabber saw, where the asked phase is only what the drawer aimed at."""
        angles = [2 * math.pi * (at % period) / period for at in self.drawn]
        mean = math.atan2(sum(map(math.sin, angles)), sum(map(math.cos, angles)))
        return mean / (2 * math.pi) * period % period

    def __enter__(self) -> Drawer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.halt.set()
        self.thread.join(2)
        self.conn.disconnect()


def read_frames(fd: int, pixel_format: str = "I420") -> Iterator[tuple[float, bytes]]:
    """(seconds from the first slot, frame) from the grabber's Matroska stream until it ends: the stream
    header, then per frame a Cluster (unknown size, its Timecode) and one SimpleBlock."""
    with os.fdopen(fd, "rb") as pipe:
        header = stream_header(WIDTH, HEIGHT, pixel_format)
        frame_bytes = frame_size(WIDTH, HEIGHT, pixel_format)
        assert pipe.read(len(header)) == header
        while head := pipe.read(4 + 8 + 1):  # Cluster id, unknown size, Timecode id
            assert head[:4] == b"\x1f\x43\xb6\x75" and head[12] == 0xE7, head
            length = pipe.read(1)[0] & 0x7F
            ticks = int.from_bytes(pipe.read(length), "big")
            assert pipe.read(1) == b"\xa3"
            first = pipe.read(1)[0]
            width = 8 - first.bit_length() + 1  # the size's own length, from its leading bit
            size = int.from_bytes(bytes([first & (0xFF >> width)]) + pipe.read(width - 1), "big")
            assert size == 4 + frame_bytes and pipe.read(4) == b"\x81\x00\x00\x80"
            frame = pipe.read(frame_bytes)
            if len(frame) < frame_bytes:
                return
            yield ticks / 1e6, frame


def on_the_grid(frames: list[tuple[float, bytes]]) -> list[int]:
    """The slot each frame is stamped with, checking that the stamp is that slot's time to the microsecond."""
    slots = [round(at * FPS) for at, _ in frames]
    on_grid = all(abs(at - slot / FPS) <= 1e-6 for (at, _), slot in zip(frames, slots, strict=True))
    assert on_grid, [at for at, _ in frames[:5]]
    return slots


def circular_gap(a: float, b: float) -> float:
    """The distance between two phases on the period's circle."""
    d = (a - b) % PERIOD
    return min(d, PERIOD - d)


@pytest.mark.media
async def test_each_slot_carries_the_next_picture_on_a_grid_between_the_draws(display: str):
    segments_before = own_segments()
    draw_phase = 0.011
    with Drawer(display, draw_phase) as drawer:
        grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
        opened_at = time.time()
        grabber.open()
        t0 = grabber.place_grid()  # right away: it waits for the rest of the phase window
        assert opened_at + PHASE_WINDOW < t0 <= time.time() + START_MARGIN + PERIOD
        # Half a frame from the draws (on the monotonic clock the drawer keeps), within a few ms of jitter.
        t0_mono = t0 - (time.time() - time.monotonic())
        assert circular_gap(t0_mono % PERIOD, drawer.drawn_phase() + PERIOD / 2) < 0.006

        read_fd, write_fd = os.pipe()
        grabber.start(write_fd)
        seconds = 3.0
        grabber.end_at(t0 + seconds)
        frames = list(read_frames(read_fd))
        grabber.join(5)

    assert not grabber.running and grabber.error is None
    # Every slot, each stamped with its place on the grid (the reader keeps up: no repeat is left out).
    assert on_the_grid(frames) == list(range(round(seconds * FPS)))
    levels = [level_of(frame) for _, frame in frames]
    steps = [step(a, b) for a, b in itertools.pairwise(levels)]
    off_beat = sum(step != 1 for step in steps)
    # One picture per slot; a loaded machine may delay a draw past the half frame now and then.
    assert off_beat <= len(steps) // 10, steps
    assert own_segments() <= segments_before


def placed(grabber: ScreenGrabber) -> tuple[float, float]:
    """The grid's phase on the monotonic clock the drawers keep, and how long placing it took."""
    asked = time.time()
    t0 = grabber.place_grid()
    took = time.time() - asked
    assert asked + START_MARGIN <= t0 <= asked + took + START_MARGIN + PERIOD
    return (t0 - (time.time() - time.monotonic())) % PERIOD, took


@pytest.mark.media
async def test_a_page_drawing_steadily_while_it_loaded_gets_its_grid_without_a_wait(display: str):
    # The watch runs from open(); the grid is placed by the last PHASE_WINDOW of it, whatever came before.
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
    grabber.open()
    try:
        with Drawer(display, phase=0.004):
            await asyncio.sleep(1.0)
        draw_phase = 0.021  # the page's drawing changed phase: only the newest draws count
        with Drawer(display, draw_phase) as drawer:
            await asyncio.sleep(PHASE_WINDOW + 0.2)
            phase, took = placed(grabber)
    finally:
        grabber.close()
    assert took < PHASE_WINDOW - 0.05, took  # no watch of its own, only the first picture's round trip
    assert circular_gap(phase, drawer.drawn_phase() + PERIOD / 2) < 0.006


@pytest.mark.media
async def test_a_page_that_has_just_loaded_is_waited_for_until_its_drawing_settles(display: str):
    # Loading draws in no rhythm (here half of them half a frame from where the video will draw, so a grid
    # placed by them would sit on the video's draws); the video then starts as the capture is asked for.
    draw_phase = 0.009
    opposite = draw_phase + PERIOD / 2
    loading = (opposite, opposite, opposite + PERIOD / 3, opposite + 2 * PERIOD / 3)
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
    grabber.open()
    try:
        with Drawer(display, 0.0, phases=loading):
            await asyncio.sleep(0.6)
        with Drawer(display, draw_phase) as drawer:
            phase, took = placed(grabber)
    finally:
        grabber.close()
    assert PHASE_WINDOW / 2 <= took < PHASE_SETTLE, took
    assert circular_gap(phase, drawer.drawn_phase() + PERIOD / 2) < 0.006


@pytest.mark.media
async def test_the_phase_the_part_before_saw_places_the_next_part_at_once_and_is_learnt_again(
    display: str,
):
    # Known from the part before (a pause, an FFmpeg restarted), the phase the page's video is presented at
    # places the grid of a page not yet drawing in a rhythm without waiting, and each part learns it anew.
    presented = 0.013
    loading = (0.0, 0.0, PERIOD / 3, 2 * PERIOD / 3)
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS, presentation_phase=presented, phase_seen_at=time.monotonic())
    grabber.open()
    try:
        with Drawer(display, 0.0, phases=loading):
            await asyncio.sleep(PHASE_WINDOW + 0.1)
            phase, took = placed(grabber)
        assert took < PHASE_WINDOW - 0.05, took
        # Half a tick after it: should this page's video take the other tick, it is half a tick off too.
        assert circular_gap(phase, presented + PERIOD / 4) < 0.002
        assert grabber.stamp_delay == pytest.approx(PERIOD / 4)
        given_at = grabber.phase_seen_at

        read_fd, write_fd = os.pipe()
        grabber.start(write_fd)
        reading = asyncio.ensure_future(asyncio.to_thread(lambda: list(read_frames(read_fd))))
        now_presented = 0.027  # another machine, or the browser changed its mind: the recording teaches it
        with Drawer(display, 0.0, phases=loading):  # the recording began as the page still loaded
            await asyncio.sleep(0.6)
        with Drawer(display, now_presented) as drawer:
            await asyncio.sleep(1.2)
            grabber.end_at(time.time())
            frames = await reading
    finally:
        grabber.halt()
        grabber.join(5)
        grabber.close()
    assert not grabber.running and len(frames) >= FPS
    assert grabber.presentation_phase is not None
    assert circular_gap(grabber.presentation_phase, drawer.drawn_phase()) < 0.004
    assert grabber.phase_seen_at is not None and grabber.phase_seen_at > given_at + 1.0, "seen anew"


@pytest.mark.media
async def test_a_phase_seen_too_long_ago_is_not_placed_by(display: str):
    # Chromium's ticks drift 0.04 ms a second against the grid: a phase from minutes ago places nothing.
    loading = (0.0, 0.0, PERIOD / 3, 2 * PERIOD / 3)
    seen_at = time.monotonic() - PHASE_HOLDS - 1
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS, presentation_phase=0.013, phase_seen_at=seen_at)
    grabber.open()
    try:
        with Drawer(display, 0.0, phases=loading):
            await asyncio.sleep(PHASE_WINDOW + 0.1)
            _, took = placed(grabber)
    finally:
        grabber.close()
    assert took >= PHASE_SETTLE - 0.05, "a loading page without a fresh phase is waited for"
    assert grabber.stamp_delay is None and grabber.phase_seen_at == seen_at


@pytest.mark.media
async def test_a_still_page_gets_its_grid_at_once_half_a_tick_from_the_ticks_it_loaded_on(display: str):
    tick = PERIOD / 2
    loaded_on = 0.005
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
    grabber.open()
    try:
        with Drawer(display, loaded_on, jitter=0.002, period=tick) as drawer:
            await asyncio.sleep(0.5)
        await asyncio.sleep(PHASE_WINDOW + 0.1)  # loaded, and still since
        phase, took = placed(grabber)
    finally:
        grabber.close()
    assert took < 0.1, took
    gap = (phase - drawer.drawn_phase(tick)) % tick
    assert abs(gap - tick / 2) < 0.005, gap


@pytest.mark.media
async def test_a_page_animating_at_60_hz_gets_slots_half_a_tick_from_its_draws_and_unlearns_the_video_phase(
    display: str,
):
    tick = PERIOD / 2
    draw_phase = 0.003
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS, presentation_phase=0.010, phase_seen_at=time.monotonic())
    grabber.open()
    try:
        with Drawer(display, draw_phase, jitter=0.002, period=tick) as drawer:
            await asyncio.sleep(PHASE_WINDOW + 0.2)
            phase, took = placed(grabber)
            read_fd, write_fd = os.pipe()
            grabber.start(write_fd)
            reading = asyncio.ensure_future(asyncio.to_thread(lambda: list(read_frames(read_fd))))
            await asyncio.sleep(1.0)
            grabber.end_at(time.time())
            await reading
    finally:
        grabber.halt()
        grabber.join(5)
        grabber.close()
    assert took < PHASE_WINDOW - 0.05, took
    gap = (phase - drawer.drawn_phase(tick)) % tick
    assert abs(gap - tick / 2) < 0.005, gap  # a slot never sits on either tick's draws
    assert grabber.stamp_delay is None  # no video phase: the audio is not moved
    # Drawn on both ticks, in no one phase of the capture rate: the phase given no longer holds.
    assert grabber.presentation_phase is None and grabber.phase_seen_at is not None


@pytest.mark.media
async def test_a_still_screen_still_gets_every_slot_and_a_stalled_reader_cannot_hold_the_grabber(display: str):
    segments_before = own_segments()
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
    grabber.open()
    t0 = grabber.place_grid()  # nothing draws: the grid is placed anywhere
    read_fd, write_fd = os.pipe()
    grabber.start(write_fd)
    frames = read_frames(read_fd)
    first = [next(frames) for _ in range(15)]
    assert time.time() >= t0 + 14 * PERIOD  # slots come at their time, not as fast as the reader takes them
    assert on_the_grid(first) == list(range(15))
    assert len({frame[:64] for _, frame in first}) == 1

    # The reader stops reading and lets go: the grabber, blocked on a full pipe, ends.
    grabber.halt()
    frames.close()
    grabber.join(5)
    assert not grabber.running
    assert own_segments() <= segments_before


@pytest.mark.media
@pytest.mark.parametrize("reader", ["stalled", "keeping up"])
async def test_an_end_asked_for_late_ends_the_stream_at_its_slot(display: str, reader: str):
    # The stop comes after the moment it asks for, as a drain's does. FFmpeg behind (here: not reading at all)
    # on a still screen: past two slots waiting, repeats were left out, and the last one must still come.
    # FFmpeg keeping up: what it was sent meanwhile stays (finalize cuts a file at its end), and nothing
    # more is sent.
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
    grabber.open()
    t0 = grabber.place_grid()
    read_fd, write_fd = os.pipe()
    grabber.start(write_fd)
    read_all = asyncio.to_thread(lambda: list(read_frames(read_fd)))
    reading = asyncio.ensure_future(read_all) if reader == "keeping up" else None
    await asyncio.sleep(max(0.0, t0 - time.time()) + 1.0)
    until = time.time()
    await asyncio.sleep(0.3)
    grabber.end_at(until)
    asked = time.time()
    frames = await (reading or read_all)
    grabber.join(5)

    assert not grabber.running and grabber.error is None
    slots = on_the_grid(frames)
    assert slots == sorted(set(slots))
    if reader == "stalled":
        # What the pipe holds, the frame the feed is blocked in, the slots sealed before repeats were left
        # out, and the last one.
        held = PIPE_BYTES // FRAME + 1 + BEHIND_SLOTS + 1
        assert grabber.skipped > 10 and len(slots) <= held, "the reader kept up: no repeat was left out"
        assert slots[-1] == math.ceil((until - t0) * FPS) - 1  # the last slot before the end asked for
    else:
        assert slots == list(range(len(slots)))
        assert math.ceil((until - t0) * FPS) - 1 <= slots[-1] <= (asked - t0) * FPS + 1


@pytest.mark.media
async def test_a_display_that_is_not_there_is_a_clear_error():
    grabber = ScreenGrabber(":4242", WIDTH, HEIGHT, FPS)
    with pytest.raises(Exception, match=":4242"):
        grabber.open()


@pytest.mark.media
@pytest.mark.parametrize(
    ("rgb", "yuv"),
    [((255, 0, 0), (82, 90, 240)), ((0, 0, 255), (41, 240, 110)), ((255, 255, 255), (235, 128, 128))],
    ids=["red", "blue", "white"],
)
async def test_pictures_reach_ffmpeg_in_the_colours_the_screen_showed(
    display: str, rgb: tuple[int, int, int], yuv: tuple[int, int, int]
):
    # BT.601 limited range, as FFmpeg's own conversion gave: a swap of red and blue, or a full-range or BT.709
    # matrix, moves these by far more than the margin.
    segments_before = own_segments()
    with Drawer(display, phase=0.0) as drawer:
        drawer.halt.set()
        drawer.thread.join(2)
        red, green, blue = rgb
        drawer.conn.core.ChangeGC(drawer.gc, xcffib.xproto.GC.Foreground, [red << 16 | green << 8 | blue])
        drawer.conn.core.PolyFillRectangle(
            drawer.root, drawer.gc, 1, [xcffib.xproto.RECTANGLE.synthetic(0, 0, WIDTH, HEIGHT)]
        )
        drawer.conn.core.GetInputFocus().reply()
        grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
        grabber.open()
        pictures = await grab_pictures(grabber, 0.2)
    y_plane = WIDTH * HEIGHT
    assert pictures
    for picture in pictures:
        luma, u, v = picture[0], picture[y_plane], picture[y_plane + y_plane // 4]
        assert all(abs(got - want) <= 2 for got, want in zip((luma, u, v), yuv, strict=True)), (luma, u, v)
        assert len(set(picture[:y_plane])) == 1  # the whole screen, one colour
    assert own_segments() <= segments_before


@pytest.mark.media
async def test_a_machine_without_libyuv_is_told_what_to_install(display: str, monkeypatch: pytest.MonkeyPatch):
    real = grabber_module.ctypes.CDLL

    def without_libyuv(name: str, *args: object, **kwargs: object) -> object:
        if "libyuv" in name:
            raise OSError(f"{name}: cannot open shared object file")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(grabber_module.ctypes, "CDLL", without_libyuv)
    grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
    with pytest.raises(GrabberError, match="install libyuv0") as failed:
        grabber.open()
    assert "RECORDER_GRABBER=x11grab" in str(failed.value)
    grabber.close()
    # The screen's own pixels need no libyuv: FFmpeg converts them.
    bgr = ScreenGrabber(display, WIDTH, HEIGHT, FPS, pixel_format="BGR0")
    bgr.open()
    frames = await grab_pictures(bgr, 0.2, pixel_format="BGR0")
    assert frames and all(len(frame) == WIDTH * HEIGHT * 4 for frame in frames)


# -- how the capture uses the grab (recorder/capture/ffmpeg.py) -----------------------------------------


class StubGrab:
    """What Capture reads of a grabber, and a blocking set-up step that counts."""

    def __init__(self, stamp_delay: float | None = None) -> None:
        self.period = PERIOD
        self.stamp_delay = stamp_delay
        self.closed_after_step = False
        self.step_done = threading.Event()

    def step(self) -> float:
        time.sleep(0.3)
        self.step_done.set()
        return 1.0

    def close(self) -> None:
        self.closed_after_step = self.step_done.is_set()


@pytest.mark.parametrize(("stamp_delay", "shift_ms"), [(None, 0.0), (PERIOD / 2, 0.0), (PERIOD / 4, 1000 * PERIOD / 4)])
def test_a_grid_with_a_known_stamp_delay_moves_the_audio_by_its_difference_from_half_a_frame(
    tmp_path: Path, stamp_delay: float | None, shift_ms: float
):
    # The calibrated offset holds for slots half a frame after the draws: a quarter frame stamps the video a
    # quarter frame earlier, so the audio is moved that much earlier too (a positive offset moves it earlier).
    settings = CaptureSettings(display=":1", audio_source="s", width=WIDTH, height=HEIGHT, fps=FPS, av_offset_ms=12.0)
    capture = Capture(settings, tmp_path / "capture.mkv")
    used = capture._part_settings(StubGrab(stamp_delay))  # type: ignore[arg-type]
    assert used.av_offset_ms == pytest.approx(12.0 + shift_ms, abs=1e-3)


async def test_a_grab_set_up_cancelled_twice_is_closed_only_once_its_step_is_over():
    grab = StubGrab()
    task = asyncio.ensure_future(Capture._in_thread(grab, grab.step))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    task.cancel()
    await asyncio.sleep(0.05)
    task.cancel()  # a second cancel while it waits for the step
    with pytest.raises(asyncio.CancelledError):
        await task
    assert grab.step_done.is_set() and grab.closed_after_step


class TickDrawer(Drawer):
    """Draws as Chromium shows a video of `rate` frames a second: frame n on the first screen tick (`tick`
    apart from monotonic zero) after it is due, `latency` later."""

    def __init__(self, display: str, *, tick: float, rate: float, latency: float = 0.003) -> None:
        super().__init__(display, 0.0, jitter=0.001)
        self.tick, self.rate, self.latency = tick, rate, latency

    def _run(self) -> None:
        frame = math.floor(time.monotonic() * self.rate)
        while not self.halt.is_set():
            frame += 1
            shown = math.ceil(frame / self.rate / self.tick) * self.tick + self.latency
            time.sleep(max(0.0, shown + self.random.uniform(-self.jitter, self.jitter) - time.monotonic()))
            self.level = frame
            self.fill(self.level)


async def grab_pictures(grabber: ScreenGrabber, seconds: float, pixel_format: str = "I420") -> list[bytes]:
    """Place the grid and send `seconds` of slots to a reader that keeps up: each slot's picture."""
    t0 = grabber.place_grid()
    read_fd, write_fd = os.pipe()
    grabber.start(write_fd)
    grabber.end_at(t0 + seconds)
    frames = await asyncio.to_thread(lambda: list(read_frames(read_fd, pixel_format)))
    grabber.join(5)
    assert not grabber.running and grabber.error is None
    assert on_the_grid(frames) == list(range(round(seconds * FPS)))
    return [frame for _, frame in frames]


async def grab_for(grabber: ScreenGrabber, seconds: float) -> list[int]:
    """Each slot's grey level over `seconds` (grab_pictures)."""
    return [level_of(frame) for frame in await grab_pictures(grabber, seconds)]


def off_beats(levels: list[int]) -> int:
    return sum(step(a, b) != 1 for a, b in itertools.pairwise(levels))


@pytest.mark.media
async def test_pictures_follow_a_video_drawn_a_little_faster_than_the_grid_skipping_one_frame_as_they_must(
    display: str,
):
    # Chromium draws on ticks 16.666 ms apart, so a video's draws drift earlier against a true 30 Hz grid,
    # by 0.04 ms a second; here 6 ms a second, so that half a frame passes in under three seconds. A grid
    # that stood still would then have the draws on its slots: pictures taken twice, others skipped.
    drift = 0.0002
    with Drawer(display, 0.011, period=PERIOD - drift):
        grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
        grabber.open()
        levels = await grab_for(grabber, 6.0)
    steps = [step(a, b) for a, b in itertools.pairwise(levels)]
    # The video has 6 s x 6 ms/s = 1.1 frames more than the grid: one is skipped, once the pictures have
    # followed it half a frame and 3 ms from their slots, and no picture repeats (a loaded machine may
    # draw one late: a repeat and a skip more).
    assert steps.count(2) - steps.count(0) == 1 and steps.count(0) <= 1, "".join(map(str, steps))
    assert set(steps) <= {0, 1, 2}, "".join(map(str, steps))
    assert grabber.moves >= 5 and grabber.widest_lead <= PERIOD / 2 + FOLLOW_SLACK_BACK + 0.002


@pytest.mark.media
async def test_pictures_follow_a_video_slower_than_the_grid_across_its_jumps_to_the_next_tick(display: str):
    # A 29.8 fps video on 60 Hz ticks (as 29.97 fps on Chromium's, faster): each frame is shown on the
    # first tick after it is due, so its draws jump a tick later every 2.5 s. The pictures follow each
    # jump the way that keeps each slot's frame, and repeat one only where the video is behind the grid.
    with TickDrawer(display, tick=1 / 60, rate=29.8):
        grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
        grabber.open()
        levels = await grab_for(grabber, 8.0)
    steps = [step(a, b) for a, b in itertools.pairwise(levels)]
    # 8 s x 0.2 frames/s: one or two repeats are the video's own, as the pictures go back at every other
    # jump. A jump is seen only once its draws are on the pictures' times: at each (three or four), a
    # picture or two may come a slot late (a repeat, then a skip).
    assert steps.count(0) - steps.count(2) in (1, 2), "".join(map(str, steps))
    assert steps.count(2) <= 6 and set(steps) <= {0, 1, 2}, "".join(map(str, steps))
    assert grabber.moves >= 2 and grabber.widest_lead <= PERIOD / 2 + FOLLOW_SLACK_BACK + 0.002


@pytest.mark.media
async def test_pictures_stay_half_a_tick_from_drifting_60_hz_draws(display: str):
    # An animation (or a call's videos) drawn on every tick, the ticks 6 ms a second fast against the grid:
    # every slot takes the picture of every other tick, none twice, none of three ticks.
    with Drawer(display, 0.004, jitter=0.002, period=PERIOD / 2 - 0.0001):
        grabber = ScreenGrabber(display, WIDTH, HEIGHT, FPS)
        grabber.open()
        levels = await grab_for(grabber, 6.0)
    steps = [step(a, b) for a, b in itertools.pairwise(levels)]
    # Each tick back towards the slots (the first after 11.3 ms of drift, then every 16.7 ms: at 1.9 and
    # 4.7 s here, every 7 minutes on Chromium) skips a tick: a step of three, then two again. A loaded
    # machine may draw a tick late now and then: a step of one, then three.
    off = [step for step in steps if step != 2]
    assert off.count(3) - off.count(1) == 2 and len(off) <= 10 and set(off) <= {1, 3}, "".join(map(str, steps))
    assert grabber.moves >= 5 and grabber.widest_lead <= PERIOD / 4 + FOLLOW_SLACK_BACK + 0.002


def test_pictures_go_a_whole_frame_back_once_however_the_draws_jitter_about_half_a_frame_from_their_slots():
    # The grab's following alone, on made-up draws (no display): a video drifting against the grid by
    # 0.04 ms a frame, each draw up to 3 ms early or late. Past half a frame from the slots the pictures
    # go a whole frame back, once: going back and forth would take a frame twice and skip one each time (a
    # 10-minute recording did so for 90 s around its seventh minute).
    grabber = ScreenGrabber(":99", WIDTH, HEIGHT, FPS)
    jitter = random.Random(3)
    grabber._t0_mono = 1000.0 + PERIOD / 2 - 0.012  # so the pictures begin 12 ms after their slots
    grabber._lead = 0.012
    lead_seen = []
    for frame in range(1, 2400):
        draw = 1000.0 + frame * PERIOD - frame * 0.00002 + jitter.uniform(-0.003, 0.003)
        grabber._draws.append(draw)
        if frame % 2 == 0:
            grabber._follow_draws(draw + 0.001)
            lead_seen.append(grabber._lead)
    back = sum(abs(b - a) > PERIOD / 2 for a, b in itertools.pairwise(lead_seen))
    assert back == 1, back
    assert max(map(abs, lead_seen)) <= PERIOD / 2 + FOLLOW_SLACK_BACK + 0.001


def test_a_page_that_played_video_steps_a_whole_frame_even_while_drawing_on_both_ticks():
    # A loaded machine can blur a video's draws onto both ticks for a while: the pictures then follow the
    # ticks, but a step of one tick would put a video draw between a slot and its picture (a frame early
    # for good). They step a whole frame, as for the video.
    grabber = ScreenGrabber(":99", WIDTH, HEIGHT, FPS)
    grabber._video_seen_at = 0.0  # a video, earlier in the recording
    grabber._t0_mono = 1000.0
    lead_seen = []
    for tick in range(1, 6000):
        draw = 1000.0 + 0.004 + tick * (PERIOD / 2 - 0.00001)  # 0.6 ms a second fast
        grabber._draws.append(draw)
        if tick % 4 == 0:
            grabber._follow_draws(draw + 0.001)
            lead_seen.append(grabber._lead)
    steps = [b - a for a, b in itertools.pairwise(lead_seen) if abs(b - a) > PERIOD / 4]
    assert steps and all(abs(abs(step) - PERIOD) < 0.002 for step in steps), steps
