"""When the sync clip's flashes reached the screen, and what that splits a recording's A/V offset into.

A recording's offset (beep in the file minus flash in the file) is the sum of two parts measured against
the moment the flash was on the X screen: the recorder's video delay (flash in the file minus flash on
the screen) and the page's own (beep in the file minus flash on the screen: Chromium's presentation of
the video against its audio, plus the audio path). A thread on its own X connection is told of every
change of the screen (DAMAGE) and reads one pixel in the sync tile at each, so it sees a flash within a
millisecond of Chromium drawing it.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import xcffib
import xcffib.damage
import xcffib.xproto

from recorder.quality.audio import decode_audio
from recorder.quality.beeps import detect_beeps
from recorder.quality.flashes import detect_flashes
from recorder.quality.probe import probe
from recorder.quality.video import decode_video

WHITE = 200  # each of B, G, R above this: the flash
PAIR_WITHIN = 0.2  # seconds between a flash in the file and the same flash on the screen, at most


class ScreenFlashes(threading.Thread):
    """Unix times at which the pixel at (x, y) turned white, while running."""

    def __init__(self, display: str, x: int, y: int) -> None:
        super().__init__(name="screen-flashes", daemon=True)
        self.x, self.y = x, y
        self.conn = xcffib.connect(display=display)
        self.root = self.conn.get_setup().roots[0].root
        damage = self.conn(xcffib.damage.key)
        damage.QueryVersion(1, 1).reply()
        self.damage = self.conn.generate_id()
        damage.Create(self.damage, self.root, xcffib.damage.ReportLevel.NonEmpty, is_checked=True).check()
        self.times: list[float] = []
        self.halt = threading.Event()

    def _white(self) -> bool:
        image = self.conn.core.GetImage(
            xcffib.xproto.ImageFormat.ZPixmap, self.root, self.x, self.y, 1, 1, 0xFFFFFFFF
        ).reply()
        return min(bytes(image.data)[:3]) > WHITE

    def run(self) -> None:
        fd = self.conn.get_file_descriptor()
        was_white = False
        try:
            while not self.halt.is_set():
                select.select([fd], [], [], 0.1)
                seen = time.time()
                changed = False
                while (event := self.conn.poll_for_event()) is not None:
                    changed = changed or isinstance(event, xcffib.damage.NotifyEvent)
                if not changed:
                    continue
                self.conn(xcffib.damage.key).Subtract(self.damage, 0, 0)
                white = self._white()
                if white and not was_white:
                    self.times.append(seen)
                was_white = white
        finally:
            with contextlib.suppress(Exception):
                self.conn.disconnect()

    def stop(self) -> list[float]:
        self.halt.set()
        self.join(2)
        return self.times


def split_offset(mp4: Path, first_frame: float, on_screen: list[float]) -> dict[str, Any]:
    """The recording's video delay and the page's part, in ms, from its file (whose time 0 is the first
    frame, at unix time `first_frame`) and the flashes' times on the screen."""
    facts = probe(mp4)
    if facts.video is None or facts.audio is None:
        return {}
    video = decode_video(mp4, facts.video)
    flashes = detect_flashes(video.cells, video.pts) + first_frame
    beeps = detect_beeps(decode_audio(mp4, facts.audio, 1000.0)) + first_frame
    screen = np.array(on_screen)
    delays, pages = [], []
    for flash in flashes:
        if screen.size == 0 or beeps.size == 0:
            break
        shown = screen[np.argmin(np.abs(screen - flash))]
        beep = beeps[np.argmin(np.abs(beeps - flash))]
        if abs(flash - shown) <= PAIR_WITHIN and abs(beep - flash) <= 0.4:
            delays.append(flash - shown)
            pages.append(beep - shown)
    if not delays:
        return {"flashes_paired": 0}
    return {
        "flashes_paired": len(delays),
        "video_delay_ms": round(float(np.mean(delays)) * 1000, 1),
        "video_delay_std_ms": round(float(np.std(delays)) * 1000, 1),
        "beep_after_screen_ms": round(float(np.mean(pages)) * 1000, 1),
        "beep_after_screen_std_ms": round(float(np.std(pages)) * 1000, 1),
    }
