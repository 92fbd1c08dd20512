"""The screen grab paced by the page (RECORDER_GRABBER=damage): pictures taken when the X server reports
that the screen changed (DAMAGE), handed to FFmpeg at the capture rate on a grid placed between the page's
draws.

Why not x11grab: it takes the screen on a 30 Hz clock of its own, started whenever FFmpeg happened to
open the display. Where that clock sits against Chromium's drawing is chance, and it decides two things
per recording. Near a draw, one picture is taken twice and the next never (the cadence drop); anywhere,
a picture is stamped up to a frame after it appeared, a different amount in every recording, which is
half of the spread of A/V offsets between recordings (docs/benchmarks.md, "Where a recording's A/V
offset comes from").

Here the grid is set from the page: the times of the screen's changes in the last moments before FFmpeg
starts give Chromium's drawing phase, and slot n is at t0 + n/fps with t0 half a frame after it (half a
screen tick where the page draws at 60 Hz, or the phase the part before saw; `place_grid`). The
changes are watched in the background from `open()` (while the page loads), so a page already drawing
in a steady rhythm costs no wait; one that has just loaded is waited for until it settles. A slot holds
the newest picture the screen showed before it; the picture is taken into shared memory as soon as the
server reports the change, so a draw that lands anywhere between two slots goes to the next one. Slots
go to FFmpeg as raw frames in a Matroska stream, each stamped with its slot's time, so however late a
frame is read, nothing moves in time.

Chromium draws on ticks of its own, 1/60 s in whole microseconds apart from the monotonic clock's zero,
so its drawing drifts 0.04 ms a second against any true 30 Hz grid (bench/phase.py). A grid that stood
still would have a video's draws on its slots after about seven minutes, and take pictures twice and
skip others for minutes around that, as x11grab does wherever its clock happens to meet the draws. So
while recording, the time each picture is taken follows the draws (`_follow_draws`); the stamps stay on
the grid.

While FFmpeg keeps up, every slot is sent. When it falls behind, a slot that would only repeat the last
picture is not sent (FFmpeg's constant frame rate repeats it, as it does for x11grab), so an overloaded
encoder is not also made to read and convert repeats, and the backlog cannot grow without end.

Pictures go to FFmpeg as I420 (YUV 4:2:0, what the encoder takes), converted from the screen's BGR0 by
libyuv as each is taken: 0.4-0.6 ms a 720p picture, where FFmpeg's swscale spent about 5 ms, and libyuv's
average of each 2x2 block's colour is closer to the page's pictures than swscale's default filter
(docs/benchmarks.md, "The colour conversion"). The pipe carries 1.5 bytes a pixel instead of 4.

Two threads keep the slots on time when FFmpeg reads late. One takes pictures and seals slots on the
grid; a sealed slot is a reference to a picture in a small ring of images. The other hands sealed slots
to the pipe with vmsplice, which lends the image's pages to the pipe instead of copying them (a copy of
every 720p frame cost 0.02 cores), so an image stays untouched until the pipe has passed it on. When
FFmpeg falls so far behind that no image is free, the next picture waits for one: a slot never holds a
picture taken after its own time to take one.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import math
import os
import select
import threading
import time
from collections import deque

import structlog
import xcffib
import xcffib.damage
import xcffib.shm
import xcffib.xproto

log = structlog.get_logger(__name__)

PHASE_WINDOW = 0.3  # seconds of the screen's changes to place the grid by
PHASE_DRAWS = 4  # fewer changes than this (a still page): the grid is placed anywhere
PHASE_AGREEMENT = 0.85  # how tightly the changes must gather at one phase (1: exactly) to be the page's rhythm
# The longest a start waits for the page's drawing to settle into a rhythm (a loaded page's videos took
# 0.4-0.57 s from the capture's start, in five cold starts).
PHASE_SETTLE = 0.6
LEARN_WINDOW = 1.0  # seconds at the end of a part its video phase is learnt from
# How long a learnt video phase places a grid: Chromium's ticks drift 1.2 ms against the grid in that time.
PHASE_HOLDS = 30.0
WATCH_JOIN = 5.0  # seconds for the watch to stop; longer, its X server has stopped answering
WATCH_KEEP = 256  # the newest changes kept while watching: far more than PHASE_WINDOW holds at 60 Hz
# The first slot is this far after the grid is placed, which is just before FFmpeg's spawn, so FFmpeg is
# reading when it comes. Alone, it read 0.04-0.09 s after its spawn, but four at once on two cores with
# 0.1 s lost pictures all through (18 of 20 files in five runs) where a 0.25 s run between them did not:
# a grab that starts behind seems to stay behind, its few images all waiting (docs/benchmarks.md).
START_MARGIN = 0.25
PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged pipe (fs.pipe-max-size)
STOPPED_READING = "FFmpeg stopped reading"  # the pipe closed: how every capture ends, not a failure
BEHIND_SLOTS = 2  # slots waiting for the pipe past which repeats are no longer sent
# Following the draws while recording (`_follow_draws`): every FOLLOW_SLOTS slots, by the last
# FOLLOW_WINDOW seconds of changes; a move under FOLLOW_DEADBAND is not made. Chromium's ticks drift
# 0.04 ms a second against the grid, so a move is due about every 25 s, or at once when a video moves to
# its other tick.
FOLLOW_SLOTS = 2
FOLLOW_WINDOW = 0.5
FOLLOW_DEADBAND = 0.001
# How tightly a window's draws must gather on the ticks to be followed there: looser than for placing the
# grid, as a mean over many draws is close even where some are late. (A video's draws must gather as for
# placing: a call drawing mostly on one tick would otherwise have the pictures on its other draws.)
FOLLOW_AGREEMENT = 0.7
FOLLOW_FLIP = 0.004  # draws this close to the pictures' times, half a frame from where they were: a jump
FOLLOW_SLACK = 0.3  # a video's rhythm lost this long past a window's length: the page no longer plays it
FOLLOW_SLACK_BACK = 0.003  # how far past half a frame (tick) the pictures follow before going a whole one back
FOLLOW_JUMP_DRAWS = 3  # a video's newest draws that, all on the pictures' times, tell it moved to its other tick

# How pictures go to FFmpeg: "I420", converted as they are taken (above); "BGR0", the screen's own pixels,
# converted by FFmpeg (what the recorder did before; `python -m bench levers --levers grab-bgr0`).
PIXEL_FORMAT = "I420"
FOURCC = {"I420": b"I420", "BGR0": b"BGR\x00"}  # Matroska's ColourSpace for an uncompressed track

_IPC_PRIVATE, _IPC_CREAT, _IPC_RMID = 0, 0o1000, 0
_PROT_READ_WRITE, _MAP_PRIVATE_ANONYMOUS = 0x1 | 0x2, 0x02 | 0x20
_F_SETPIPE_SZ, _F_GETPIPE_SZ = 1031, 1032
_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.shmget.argtypes = (ctypes.c_int, ctypes.c_size_t, ctypes.c_int)
_libc.shmat.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_int)
_libc.shmat.restype = ctypes.c_void_p
_libc.shmdt.argtypes = (ctypes.c_void_p,)
_libc.shmctl.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.mmap.restype = ctypes.c_void_p
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


class _IoVec(ctypes.Structure):
    _fields_ = (("base", ctypes.c_void_p), ("length", ctypes.c_size_t))


_libc.vmsplice.argtypes = (ctypes.c_int, ctypes.POINTER(_IoVec), ctypes.c_size_t, ctypes.c_uint)
_libc.vmsplice.restype = ctypes.c_ssize_t


class GrabberError(RuntimeError):
    pass


# -- the stream FFmpeg reads: Matroska, raw frames, microsecond timestamps -----------------------------

_UNKNOWN_SIZE = b"\x01\xff\xff\xff\xff\xff\xff\xff"  # a Segment or Cluster that ends with the stream


def _size(length: int) -> bytes:
    """An EBML element size: the shortest variable-length integer that holds it."""
    for width in range(1, 9):
        if length < (1 << (7 * width)) - 1:
            return (length | (1 << (7 * width))).to_bytes(width, "big")
    raise ValueError(f"{length} bytes is too long for one element")


def _element(ident: bytes, payload: bytes) -> bytes:
    return ident + _size(len(payload)) + payload


def _uint(ident: bytes, value: int) -> bytes:
    return _element(ident, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def frame_size(width: int, height: int, pixel_format: str) -> int:
    """Bytes of one picture: I420 is a full-size Y plane and two planes of half the width and height."""
    if pixel_format == "BGR0":
        return width * height * 4
    return width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)


def stream_header(width: int, height: int, pixel_format: str = PIXEL_FORMAT) -> bytes:
    """EBML header, an open Segment, Info (microsecond ticks) and one uncompressed video track of I420, or
    of BGR0 (a 24-bit X screen in 32-bit pixels, little-endian)."""
    ebml = _element(
        b"\x1a\x45\xdf\xa3",
        _uint(b"\x42\x86", 1)
        + _uint(b"\x42\xf7", 1)
        + _uint(b"\x42\xf2", 4)
        + _uint(b"\x42\xf3", 8)
        + _element(b"\x42\x82", b"matroska")
        + _uint(b"\x42\x87", 4)
        + _uint(b"\x42\x85", 2),
    )
    info = _element(b"\x15\x49\xa9\x66", _uint(b"\x2a\xd7\xb1", 1000) + _element(b"\x4d\x80", b"recorder"))
    picture = _uint(b"\xb0", width) + _uint(b"\xba", height) + _element(b"\x2e\xb5\x24", FOURCC[pixel_format])
    track = _uint(b"\xd7", 1) + _uint(b"\x73\xc5", 1) + _uint(b"\x83", 1) + _element(b"\x86", b"V_UNCOMPRESSED")
    tracks = _element(b"\x16\x54\xae\x6b", _element(b"\xae", track + _element(b"\xe0", picture)))
    return ebml + b"\x18\x53\x80\x67" + _UNKNOWN_SIZE + info + tracks


def frame_header(microseconds: int, frame_bytes: int) -> bytes:
    """A Cluster at the frame's time and the head of its one SimpleBlock (track 1, keyframe); the frame's
    bytes follow."""
    block = b"\x81\x00\x00\x80"  # track 1, time relative to the cluster 0, keyframe
    timecode = _uint(b"\xe7", microseconds)
    return b"\x1f\x43\xb6\x75" + _UNKNOWN_SIZE + timecode + b"\xa3" + _size(len(block) + frame_bytes) + block


class _SharedImage:
    """One picture's worth of System V shared memory, which the X server writes the screen into.

    Marked for removal as soon as both sides have it attached, so nothing is left behind by a crash."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.xid = 0  # the X server's name for it, once attached
        self.queued = 0  # sealed slots that show it, not yet handed to the pipe
        self.shmid = _libc.shmget(_IPC_PRIVATE, size, _IPC_CREAT | 0o600)
        if self.shmid < 0:
            raise GrabberError(f"shmget failed: {os.strerror(ctypes.get_errno())}")
        address = _libc.shmat(self.shmid, None, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            _libc.shmctl(self.shmid, _IPC_RMID, None)
            raise GrabberError(f"shmat failed: {os.strerror(ctypes.get_errno())}")
        self.address: int | None = address

    def release_id(self) -> None:
        _libc.shmctl(self.shmid, _IPC_RMID, None)

    def close(self) -> None:
        self.release_id()
        if self.address is not None:
            _libc.shmdt(self.address)
            self.address = None


class _PrivateImage:
    """One converted picture's worth of page-aligned memory of this process alone, lent to the pipe as a
    shared image is."""

    xid = 0  # never attached to the X server

    def __init__(self, size: int) -> None:
        self.size = size
        self.queued = 0
        address = _libc.mmap(None, size, _PROT_READ_WRITE, _MAP_PRIVATE_ANONYMOUS, -1, 0)
        if address in (None, ctypes.c_void_p(-1).value):
            raise GrabberError(f"mmap failed: {os.strerror(ctypes.get_errno())}")
        self.address: int | None = address

    def close(self) -> None:
        if self.address is not None:
            _libc.munmap(self.address, self.size)
            self.address = None


_Picture = _SharedImage | _PrivateImage


class ToI420:
    """The screen's BGR0 (libyuv's ARGB: B, G, R, X in memory) to I420 (BT.601, limited range, as FFmpeg's
    swscale converted it before) with libyuv, whose call lets go of the GIL."""

    def __init__(self, width: int, height: int) -> None:
        try:
            library = ctypes.CDLL("libyuv.so.0")
        except OSError as exc:
            raise GrabberError(
                f"libyuv (libyuv.so.0) is missing ({exc}): install libyuv0, as scripts/install-system-deps.sh "
                "does; RECORDER_GRABBER=x11grab records without it"
            ) from exc
        self._convert = library.ARGBToI420
        self._convert.argtypes = (ctypes.c_void_p, ctypes.c_int) * 4 + (ctypes.c_int, ctypes.c_int)
        self._convert.restype = ctypes.c_int
        self.width, self.height = width, height
        half = (width + 1) // 2
        self._strides = (width * 4, width, half, half)
        self._u_at = width * height
        self._v_at = self._u_at + half * ((height + 1) // 2)

    def __call__(self, source: int, target: int) -> None:
        bgr, y, u, v = self._strides
        code = self._convert(
            source, bgr, target, y, target + self._u_at, u, target + self._v_at, v, self.width, self.height
        )
        if code != 0:
            raise GrabberError(f"libyuv could not convert a {self.width}x{self.height} picture ({code})")


def _phase(times: list[float], period: float) -> tuple[float, float]:
    """The mean phase of `times` on a circle of `period`, and how tightly they gather there (the mean
    resultant length: 1 all at one point, near 0 spread around)."""
    angles = [2 * math.pi * (t % period) / period for t in times]
    x, y = sum(map(math.cos, angles)) / len(angles), sum(map(math.sin, angles)) / len(angles)
    return math.atan2(y, x) / (2 * math.pi) * period, math.hypot(x, y)


def _nearest_turn(offset: float, period: float) -> float:
    """`offset` moved by whole periods into [-period/2, period/2)."""
    return (offset + period / 2) % period - period / 2


def video_phase(draws: list[float], period: float) -> tuple[float, float] | None:
    """The phase (seconds modulo `period`) the last LEARN_WINDOW of `draws` gathered at, and how tightly;
    None for too few draws to say."""
    if not draws:
        return None
    # The last second: a recording that began as the page loaded has settled by its end.
    recent = [at for at in draws if at >= draws[-1] - LEARN_WINDOW]
    if len(recent) < 2 * PHASE_DRAWS:
        return None
    phase, agreement = _phase(recent, period)
    return phase % period, agreement


def grid_anchor(draws: list[float], period: float) -> tuple[float | None, str | None]:
    """A time the grid may pass through, half a frame from the page's draws, and the rhythm it was found
    in; (a guess or None, None) when the draws keep none.

    Drawing at the capture rate (a video): slots half a frame after the draws. Drawing at twice it (the
    60 Hz screen, an animation): slots half a screen tick after them, so neither tick's draws race a slot.
    """
    if len(draws) < PHASE_DRAWS:
        return None, None
    phase, agreement = _phase(draws, period)
    if agreement >= PHASE_AGREEMENT:
        return phase + period / 2, "capture rate"
    # At twice the rate only when it draws that often: a video whose draws move between the two ticks as it
    # starts also gathers at one tick phase, and settles onto one of them soon after.
    ticks = tick_anchor(draws, period)
    if ticks is not None and len(draws) >= 1.5 * PHASE_WINDOW / period:
        return ticks, "twice the capture rate"
    return phase + period / 2, None


def tick_anchor(draws: list[float], period: float) -> float | None:
    """Half a tick from the screen's 60 Hz ticks, which the draws keep when they gather at one tick phase
    (Chromium draws on them): an animation's grid, and that of a page without a rhythm, by the draws seen
    while it loaded. None (anywhere) when they keep none."""
    if len(draws) < PHASE_DRAWS:
        return None
    tick_phase, agreement = _phase(draws, period / 2)
    return tick_phase + period / 4 if agreement >= PHASE_AGREEMENT else None


class ScreenGrabber:
    """Grabs `display` at `fps` into a pipe: `open()`, `place_grid()`, `start(fd)`, then `end_at()` or
    `halt()`, and `join()`; `close()` for one that never started."""

    def __init__(
        self,
        display: str,
        width: int,
        height: int,
        fps: int,
        *,
        settle: float = PHASE_SETTLE,
        presentation_phase: float | None = None,
        phase_seen_at: float | None = None,
        pixel_format: str | None = None,
    ) -> None:
        """`settle`: the longest `place_grid` waits for the page's drawing to settle into a rhythm.
        `pixel_format`: how pictures go to FFmpeg, PIXEL_FORMAT unless said.
        `presentation_phase`: where this display's browser was seen presenting this page's video at this
        rate by the part before (monotonic seconds modulo the frame interval), at `phase_seen_at`
        (monotonic): placed by at once while the page has no rhythm, if seen within PHASE_HOLDS."""
        self.display = display
        self.width, self.height, self.fps = width, height, fps
        self.settle = settle
        self.presentation_phase = presentation_phase  # updated by a page seen drawing at the capture rate
        self.phase_seen_at = phase_seen_at  # when it was seen (or that there was none), monotonic
        # At placement, how late the slots come after the video's draws, where the grid was placed by a known
        # video phase (half a frame by the page's rhythm, a quarter by the part before's phase): the audio is
        # moved for it. None: not known.
        self.stamp_delay: float | None = None
        self.period = 1.0 / fps
        self.pixel_format = pixel_format or PIXEL_FORMAT
        if self.pixel_format not in FOURCC:
            raise ValueError(f"pixel format {self.pixel_format!r}: one of {sorted(FOURCC)}")
        self.frame_bytes = frame_size(width, height, self.pixel_format)
        self.t0: float | None = None  # the first slot, unix time
        self.slots_written = 0
        self.pictures = 0  # pictures taken (one per reported change at most)
        self.waits = 0  # changes not taken at once because every image was still in use
        self.skipped = 0  # repeats not sent while FFmpeg was behind
        self.error: str | None = None
        self._conn: xcffib.Connection | None = None
        # The ring of pictures; with I420 the screen is taken into `_screen` and converted into one of them.
        self._images: list[_Picture] = []
        self._screen: _SharedImage | None = None
        self._to_i420: ToI420 | None = None
        self._current: _Picture | None = None  # the newest picture
        self._sealed: deque[tuple[int, _Picture]] = deque()  # (slot, picture) sealed, in order
        self._lent: deque[_Picture] = deque()  # the last images handed to the pipe, maybe still in it
        self._lend_depth = 1
        self._state = threading.Condition()
        self._sealing_done = False
        self._damage = 0
        self._root = 0
        self._clock_offset = 0.0  # unix time minus monotonic time
        self._t0_mono = 0.0
        # How far after its slot's time each picture is taken (seconds): moved with the page's draws while
        # recording, so the pictures stay half way between them; the stamps stay on the grid.
        self._lead = 0.0
        self.moves = 0  # moves of the pictures' times made while recording
        self.widest_lead = 0.0  # the farthest a picture was taken from its slot's time, seconds
        self._video_seen_at = -math.inf  # when a video's rhythm was last found while recording
        self._jumped_at = 0.0  # when the pictures last followed a video to its other tick
        self._last_slot: int | None = None  # with end_at: the last slot to seal
        self._halt = threading.Event()
        self._draws: deque[float] = deque(maxlen=WATCH_KEEP)  # monotonic times of changes seen
        self._watching_since = 0.0
        self._watch_done = threading.Event()
        self._watch: threading.Thread | None = None
        self._grab: threading.Thread | None = None
        self._feed: threading.Thread | None = None
        self._fd: int | None = None
        self._splice = True

    # -- set-up, on the caller's thread ---------------------------------------------------------------

    def open(self) -> None:
        """Connect, and watch the screen's changes in the background until the grid is placed."""
        try:
            self._connect()
        except BaseException:
            self._disconnect()
            raise
        self._watching_since = time.monotonic()
        self._watch = threading.Thread(target=self._run_watch, name="screen-watch", daemon=True)
        self._watch.start()

    def _fresh_phase(self, now: float) -> bool:
        """A presentation phase to place by: seen, and recently enough that the ticks have not drifted off."""
        seen_at = self.phase_seen_at
        return self.presentation_phase is not None and seen_at is not None and now - seen_at <= PHASE_HOLDS

    def seen(self) -> list[float]:
        """The monotonic times of the changes watched so far (the newest WATCH_KEEP), while watching: the
        grab thread keeps them without the lock once it runs."""
        with self._state:
            return list(self._draws)

    def place_grid(self) -> float:
        """Place the grid by the page's drawing and take the first picture; returns t0 (unix time).

        The page's last PHASE_WINDOW of drawing decides, once it has settled into a rhythm: a page playing
        video draws at the capture rate, one phase; an animation draws at the screen's 60 Hz. A page that
        has just loaded is in neither (layout, then the videos starting), and a grid placed by it races
        the video's draws (3 of 8 cold recordings lost pictures). A part after the first has the phase the
        part before it saw on the same page (`presentation_phase`), and is placed by it at once while it
        holds: half a tick after it, so that a video taking the other tick is not raced either, and with
        the audio moved by the known difference (`stamp_delay`). A new page is never placed by another
        page load's phase: on the reference page, warm recordings placed by the last load's lost pictures
        or spread within the file far more often (docs/benchmarks.md). Without a phase, a page that draws
        is waited for, up to `settle`, and a still page (or one still without a rhythm after `settle`) is
        placed half a tick from the screen's ticks, so whichever tick its drawing takes, no slot races it."""
        try:
            asked = time.monotonic()
            while True:
                now = time.monotonic()
                with self._state:
                    kept = list(self._draws)
                draws = [at for at in kept if at >= now - PHASE_WINDOW]
                # A rhythm, or stillness, needs a whole window watched.
                whole = now >= self._watching_since + PHASE_WINDOW
                anchor, rhythm = grid_anchor(draws, self.period) if whole else (None, None)
                if rhythm is None and self._fresh_phase(now):
                    # Half a tick after it, not half a frame: should this page's video take the other tick,
                    # its draws are still half a tick from the slots, not on them.
                    anchor, rhythm = self.presentation_phase + self.period / 4, "the part before's"
                if rhythm is None and whole and len(draws) < PHASE_DRAWS:
                    anchor, rhythm = tick_anchor(kept, self.period), "still"
                if rhythm is not None or now >= asked + self.settle:
                    break
                time.sleep(0.02)
            if rhythm is None:  # none within `settle`: half a tick from the ticks races neither tick's draws
                ticks = tick_anchor(kept, self.period)
                anchor, rhythm = (anchor, "none") if ticks is None else (ticks, "the screen's ticks")
            if rhythm == "capture rate":
                assert anchor is not None
                self.presentation_phase = (anchor - self.period / 2) % self.period
                self.phase_seen_at = now
                self._video_seen_at = now  # a jump to the other tick is watched for from the first slot
                self.stamp_delay = self.period / 2
            elif rhythm == "the part before's":
                self.stamp_delay = self.period / 4
            self._stop_watching()
            self._draws.clear()  # from here on, the draws of what is recorded
            if self.error is not None:
                raise GrabberError(f"watching display {self.display} failed: {self.error}")
            try:
                self._take_picture()
            except Exception as exc:  # the X server went away meanwhile
                raise GrabberError(f"the first picture of {self.display} failed: {exc!r}") from exc
        except BaseException:
            try:
                self._stop_watching()
            except GrabberError:
                pass  # a watch still running keeps its connection
            else:
                self._disconnect()
            raise
        now = time.monotonic()
        self._clock_offset = time.time() - now
        earliest = now + START_MARGIN
        if anchor is None:
            anchor = earliest
        self._t0_mono = anchor + math.ceil((earliest - anchor) / self.period) * self.period
        self.t0 = self._t0_mono + self._clock_offset
        waited = round(now - asked, 3)
        log.debug("grab grid placed", draws=len(draws), rhythm=rhythm or "none", waited_s=waited, t0=self.t0)
        return self.t0

    def _connect(self) -> None:
        try:
            conn = xcffib.connect(display=self.display)
        except Exception as exc:  # xcffib raises its own ConnectionException
            raise GrabberError(f"cannot open display {self.display}: {exc}") from exc
        self._conn = conn
        screen = conn.get_setup().roots[0]
        self._root = screen.root
        if screen.width_in_pixels < self.width or screen.height_in_pixels < self.height:
            raise GrabberError(
                f"display {self.display} is {screen.width_in_pixels}x{screen.height_in_pixels}, "
                f"smaller than {self.width}x{self.height}"
            )
        without = "RECORDER_GRABBER=x11grab records without them"
        try:
            shm = conn(xcffib.shm.key)
            damage = conn(xcffib.damage.key)
            shm.QueryVersion().reply()
            damage.QueryVersion(1, 1).reply()
        except Exception as exc:
            raise GrabberError(f"display {self.display} lacks MIT-SHM or DAMAGE ({exc!r}); {without}") from exc
        # The pipe may still hold the tail of the last images handed to it (up to PIPE_BYTES): those, the
        # newest picture and one to take the next into must all be there at once.
        self._lend_depth = math.ceil(PIPE_BYTES / self.frame_bytes) + 1
        if self.pixel_format == "I420":
            self._to_i420 = ToI420(self.width, self.height)
            self._screen = _SharedImage(self.width * self.height * 4)
            for _ in range(self._lend_depth + 2):
                self._images.append(_PrivateImage(self.frame_bytes))
            taken_into: list[_SharedImage] = [self._screen]
        else:
            taken_into = []
            for _ in range(self._lend_depth + 2):
                taken_into.append(_SharedImage(self.frame_bytes))
                self._images.append(taken_into[-1])
        for image in taken_into:
            image.xid = conn.generate_id()
            try:
                shm.Attach(image.xid, image.shmid, False, is_checked=True).check()
            except Exception as exc:  # an X server on another machine, or of another user
                raise GrabberError(f"the X server could not attach shared memory ({exc!r}); {without}") from exc
            image.release_id()  # attached on both sides: gone when both let go
        self._damage = conn.generate_id()
        damage.Create(self._damage, self._root, xcffib.damage.ReportLevel.NonEmpty, is_checked=True).check()
        conn.flush()

    def _free_image(self) -> _Picture | None:
        with self._state:
            for image in self._images:
                if image is not self._current and not image.queued and image not in self._lent:
                    return image
        return None

    def _take_picture(self) -> None:
        """The screen into a free image now, which becomes the newest picture; with none free (FFmpeg far
        behind) the change waits, and is taken once an image comes back."""
        assert self._conn is not None
        image = self._free_image()
        if image is None:
            self.waits += 1
            return
        taken_into = self._screen or image
        self._conn(xcffib.damage.key).Subtract(self._damage, 0, 0)
        self._conn(xcffib.shm.key).GetImage(
            self._root,
            0,
            0,
            self.width,
            self.height,
            0xFFFFFFFF,
            xcffib.xproto.ImageFormat.ZPixmap,
            taken_into.xid,
            0,
        ).reply()
        if self._to_i420 is not None:
            assert taken_into.address is not None and image.address is not None
            self._to_i420(taken_into.address, image.address)
        with self._state:
            self._current = image
        self.pictures += 1

    def _changes(self) -> bool:
        """Whether the server reported a change since the last picture (events read, none waiting)."""
        assert self._conn is not None
        changed = False
        while (event := self._conn.poll_for_event()) is not None:
            if isinstance(event, xcffib.damage.NotifyEvent):
                changed = True
        return changed

    def _readable(self) -> select.poll:
        """Waits for the X connection to have something to read (poll: select fails on a descriptor past 1023,
        which a busy worker process can reach)."""
        assert self._conn is not None
        readable = select.poll()
        readable.register(self._conn.get_file_descriptor(), select.POLLIN)
        return readable

    def _run_watch(self) -> None:
        """The times of the screen's changes, without taking pictures: each is only marked as seen, so the
        server reports the next."""
        assert self._conn is not None
        readable = self._readable()
        damage = self._conn(xcffib.damage.key)
        try:
            while not self._watch_done.is_set():
                if not self._changes():
                    readable.poll(50)
                    continue
                with self._state:
                    self._draws.append(time.monotonic())
                damage.Subtract(self._damage, 0, 0)
                self._conn.flush()
        except Exception as exc:  # the X server went away: place_grid says so
            self.error = repr(exc)

    def _stop_watching(self) -> None:
        self._watch_done.set()
        if self._watch is not None and self._watch is not threading.current_thread():
            self._watch.join(WATCH_JOIN)
            if self._watch.is_alive():  # blocked on an X server that stopped reading: left to it
                raise GrabberError(f"the watch of display {self.display} did not stop")
            self._watch = None

    # -- the grab and the feed, on threads of their own ------------------------------------------------

    def start(self, fd: int) -> None:
        """Seal slots from t0 on and feed them to `fd` (the pipe FFmpeg reads), until `end_at` or `halt`."""
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        with contextlib.suppress(OSError):
            if fcntl.fcntl(fd, _F_GETPIPE_SZ) > PIPE_BYTES:
                self._splice = False  # an image could still be in the pipe when it is taken into again
        self._fd = fd
        self._feed = threading.Thread(target=self._run_feed, name="screen-feed", daemon=True)
        self._grab = threading.Thread(target=self._run_grab, name="screen-grab", daemon=True)
        self._feed.start()
        self._grab.start()

    def end_at(self, until: float) -> None:
        """Seal the slots up to `until` (unix time), then close the pipe: FFmpeg ends its video there. Called
        after `until` (a stop's drain comes later), slots already sealed past it are not sent, and a last
        slot left out meanwhile is sent with the newest picture, which may be a little newer than it."""
        assert self.t0 is not None
        # A slot within a thousandth of a slot of `until` counts as at it (times rounded to the microsecond).
        self._last_slot = max(0, math.ceil((until - self.t0) * self.fps - 1e-3) - 1)

    def halt(self) -> None:
        self._halt.set()
        with self._state:
            self._state.notify_all()

    def join(self, timeout: float) -> None:
        for thread in (self._grab, self._feed):
            if thread is not None:
                thread.join(timeout)

    @property
    def running(self) -> bool:
        return any(thread is not None and thread.is_alive() for thread in (self._grab, self._feed))

    def _run_grab(self) -> None:
        readable = self._readable()
        slot = 0
        sealed_slot = -1  # the newest slot sealed
        sealed_picture = -1  # the number (self.pictures) of the last picture sealed
        try:
            while not self._halt.is_set():
                if self._last_slot is not None and slot > self._last_slot:
                    if sealed_slot < self._last_slot:
                        # `end_at` came after its slot, whose repeat was left out while FFmpeg was behind: sent
                        # now all the same, so the video reaches the end asked for.
                        self._seal(self._last_slot)
                    break
                wait = self._t0_mono + slot * self.period + self._lead - time.monotonic()
                if wait > 0:
                    # Events may already sit in xcb's queue (read while waiting for a reply), unseen by poll;
                    # a change that waited for a free image is taken as soon as one is back.
                    if self._changes():
                        self._draws.append(time.monotonic())  # the watch is over: this thread alone
                        self._take_picture()
                    elif self.waits and self._current_is_stale():
                        self._take_picture()
                    else:
                        readable.poll(min(wait, 0.1) * 1000)
                    continue
                # Due (or overdue, on a loaded machine): sealed with the picture it had, before any change seen
                # now is taken, which may have come after the slot's time.
                last = self._last_slot is not None and slot == self._last_slot
                with self._state:
                    waiting = len(self._sealed)
                if self.pictures != sealed_picture or last or waiting < BEHIND_SLOTS:
                    self._seal(slot)
                    sealed_slot, sealed_picture = slot, self.pictures
                else:
                    self.skipped += 1
                slot += 1
                now = time.monotonic()
                if not self._follow_jump(now) and slot % FOLLOW_SLOTS == 0:
                    self._follow_draws(now)
        except Exception as exc:  # the X server went away: FFmpeg sees its input end
            self.error = self.error or repr(exc)
            log.warning("screen grab failed", error=self.error)
        finally:
            with self._state:
                self._sealing_done = True
                self._state.notify_all()
            if self._feed is not None:
                self._feed.join()  # it lets go of the images; FFmpeg ending ends it
            self._disconnect()
            self._learn_presentation()
            log.debug(
                "screen grab ended",
                pictures=self.pictures,
                frames_sent=self.slots_written,
                repeats_left_out=self.skipped,
                moves=self.moves,
                lead_ms=round(self._lead * 1000, 2),
                widest_lead_ms=round(self.widest_lead * 1000, 2),
            )

    def _follow_draws(self, now: float) -> None:
        """Keep the pictures half way between the page's draws while Chromium's ticks drift against the grid.

        Chromium draws on ticks of its own, 16.666 ms apart (1/60 s in whole microseconds), which move 0.04
        ms a second against a true 30 Hz grid: a grid placed half a frame from a video's draws would have
        them on its slots within minutes, and from then on take pictures twice and skip others, as x11grab
        does by chance. So the time each picture is taken (`_lead` after its slot) follows the draws, while
        the stamps stay on the grid: every slot keeps the video frame it held, and nothing moves in time.

        A video whose frames are due at another rate moves to its next tick now and then (a 29.97 fps video
        every 17 s): its draws jump half a frame, onto the pictures' times (`_follow_jump`). Drawing at the
        screen's 60 Hz (an animation, a call's videos), the pictures stay half a tick from the ticks. Once
        they have followed the drift FOLLOW_SLACK_BACK past half a frame (tick) from their slots, they go a
        whole one back."""
        taken = self._t0_mono + self._lead  # where pictures are taken, on the monotonic clock
        draws = [at for at in self._draws if at >= max(now - FOLLOW_WINDOW, self._jumped_at)]
        if len(draws) < 2 * PHASE_DRAWS:
            return
        phase, agreement = _phase(draws, self.period)
        if agreement >= PHASE_AGREEMENT:  # a video: half a frame after its draws
            self._video_seen_at = now
            unit = self.period
            move = _nearest_turn(phase + self.period / 2 - taken, self.period)
            if abs(move) > self.period / 2 - FOLLOW_FLIP:
                return  # on the pictures' times: which way they jumped is `_follow_jump`'s to say
        elif now - self._video_seen_at < FOLLOW_WINDOW + FOLLOW_SLACK:
            return  # a video moving to its other tick draws on both for a moment: not an animation
        else:
            unit = self.period / 2  # a tick
            phase, agreement = _phase(draws, unit)
            if agreement < FOLLOW_AGREEMENT:
                return  # no rhythm to follow (a call's videos drawn when they arrive, a page loading)
            move = _nearest_turn(phase + unit / 2 - taken, unit)
        # A page that played video steps a whole frame even while its draws keep only the ticks (a loaded
        # machine's), so as not to put a video's draw between a slot and its picture.
        step = self.period if self._video_seen_at > -math.inf else unit
        if abs(self._lead + move) > step / 2 + FOLLOW_SLACK_BACK:
            # Followed past half a frame (a tick) from the slots: the pictures go a whole one back towards
            # them, to as far on the other side, so the window's noise does not take them back and forth
            # (each way a frame skipped or taken twice). A video drawn faster than the grid skips a frame
            # here, as it must; one drawn slower repeats one when `_follow_jump` takes the pictures back.
            move -= math.copysign(step, self._lead + move)
        if abs(move) >= FOLLOW_DEADBAND:
            self._move(move)

    def _follow_jump(self, now: float) -> bool:
        """A video's newest draws all on the pictures' times: it moved to its next tick, and the pictures
        move half a frame at once, whichever way brings them back towards their slots (the later way
        unless the other is clearly nearer: Chromium's ticks run fast, so its videos jump later). Each
        slot then keeps its frame; a video slower than the grid goes back at every other jump, which
        repeats the frame it is short of. Checked at every slot, as the pictures race the draws till then."""
        if now - self._video_seen_at >= FOLLOW_WINDOW + FOLLOW_SLACK:
            return False  # no video lately
        fresh = now - FOLLOW_JUMP_DRAWS * self.period * 1.5
        draws = self._draws  # the ends of a deque, without copying it at every slot
        newest = [draws[i] for i in range(-min(FOLLOW_JUMP_DRAWS, len(draws)), 0)]
        newest = [at for at in newest if at > max(fresh, self._jumped_at)]
        # As many frames: one draw reported in pieces is not a jump.
        if len(newest) < FOLLOW_JUMP_DRAWS or newest[-1] - newest[0] < (FOLLOW_JUMP_DRAWS - 1) * self.period / 2:
            return False
        phase, agreement = _phase(newest, self.period)
        move = _nearest_turn(phase + self.period / 2 - self._t0_mono - self._lead, self.period)
        if agreement < PHASE_AGREEMENT or abs(move) <= self.period / 2 - FOLLOW_FLIP:
            return False
        other_way = move - math.copysign(self.period, move)
        later_bias = FOLLOW_SLACK_BACK
        self._move(min(move, other_way, key=lambda m: abs(self._lead + m) - (later_bias if m > 0 else 0.0)))
        self._jumped_at = now  # the draws before the jump no longer say where the video draws
        return True

    def _move(self, by: float) -> None:
        self._lead += by
        self.moves += 1
        self.widest_lead = max(self.widest_lead, abs(self._lead))

    def _learn_presentation(self) -> None:
        """The phase the page presented video at over its last changes, for the grids that come after. A
        page that drew often in no one phase (a call's videos arrive when they arrive) unlearns it: the
        next grid would be placed, and its audio moved, for a phase the pages no longer keep."""
        if (seen := video_phase(list(self._draws), self.period)) is not None:
            phase, agreement = seen
            self.presentation_phase = phase if agreement >= PHASE_AGREEMENT else None
            self.phase_seen_at = self._draws[-1]

    def _seal(self, slot: int) -> None:
        """The newest picture into `slot`, for the feed to send."""
        with self._state:
            assert self._current is not None
            self._current.queued += 1
            self._sealed.append((slot, self._current))
            self._state.notify_all()

    def _current_is_stale(self) -> bool:
        """A change waited for an image: take the picture again once one is free."""
        if self._free_image() is None:
            return False
        self.waits = 0
        return True

    def _run_feed(self) -> None:
        assert self._fd is not None
        try:
            self._write_bytes(stream_header(self.width, self.height, self.pixel_format))
            while True:
                with self._state:
                    while not self._sealed and not self._sealing_done and not self._halt.is_set():
                        self._state.wait()
                    if self._halt.is_set() or not self._sealed:
                        break
                    slot, image = self._sealed.popleft()
                    if self._last_slot is not None and slot > self._last_slot:
                        image.queued -= 1
                        break  # sealed before the end came, past it: the video ends at the end asked for
                self._write_bytes(frame_header(round(slot * 1_000_000 / self.fps), image.size))
                self._hand_over(image)
                with self._state:
                    image.queued -= 1
                    self._lent.append(image)
                    while len(self._lent) > self._lend_depth:
                        self._lent.popleft()
                self.slots_written += 1
        except BrokenPipeError:
            self.error = self.error or STOPPED_READING
        except Exception as exc:
            self.error = self.error or repr(exc)
            log.warning("screen feed failed", error=self.error)
        finally:
            self._halt.set()  # the grab has no one to seal for
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _write_bytes(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except InterruptedError:
                continue

    def _hand_over(self, image: _Picture) -> None:
        """The image into the pipe: its pages lent (vmsplice), or copied where lending is not possible."""
        assert self._fd is not None and image.address is not None
        done = 0
        while done < image.size:
            if self._splice:
                vector = _IoVec(image.address + done, image.size - done)
                count = _libc.vmsplice(self._fd, ctypes.byref(vector), 1, 0)
                if count >= 0:
                    done += count
                    continue
                code = ctypes.get_errno()
                if code == errno.EINTR:
                    continue
                if code == errno.EPIPE:
                    raise BrokenPipeError(code, os.strerror(code))
                if code in (errno.EINVAL, errno.ENOSYS, errno.EBADF) and done == 0:
                    self._splice = False  # not a pipe, or no vmsplice: copy
                    continue
                raise OSError(code, os.strerror(code))
            view = (ctypes.c_char * (image.size - done)).from_address(image.address + done)
            try:
                done += os.write(self._fd, memoryview(view).cast("B"))
            except InterruptedError:
                continue

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                # Detached before leaving, and a round trip, so the segments are gone when this returns.
                for image in self._attached():
                    self._conn(xcffib.shm.key).Detach(image.xid)
                self._conn.core.GetInputFocus().reply()
            with contextlib.suppress(Exception):
                self._conn.disconnect()
            self._conn = None
        for image in [*self._images, *([self._screen] if self._screen else [])]:
            image.close()
        self._images, self._screen = [], None

    def _attached(self) -> list[_SharedImage]:
        """The shared images the X server writes pictures into."""
        images = [self._screen] if self._screen is not None else self._images
        return [image for image in images if isinstance(image, _SharedImage) and image.xid]

    def close(self) -> None:
        """For a grabber opened but never started."""
        if self._grab is None:
            try:
                self._stop_watching()
            except GrabberError as exc:  # the connection stays with the thread that still uses it
                log.warning("screen watch left running", error=str(exc))
                return
            self._disconnect()
