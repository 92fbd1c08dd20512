"""How late the page's browser presents its playing video, as the page itself sees it.

Each page load draws its own A/V offset: Chromium shows a `<video>`'s frames some time after the element's
clock reaches them, and that time (the presentation's lateness, L) takes a new value with each load, from
about -15 to +27 ms on one machine, and can step by a frame within it. The recorded A/V offset moves with
it, ms for ms (docs/benchmarks.md, "A correction by the page's presentation"). `presentation.js` sums L
over the frames of every audible `<video>` with a media clock (`requestVideoFrameCallback`); the recorder
restarts the sums as its capture starts (`restart`) and reads them as it stops (`read`), so finalize can
correct the file by its own load's presentation.

What the page reports is hostile: a page can rewrite the probe. The sums are parsed into plain numbers,
a mean beyond MAX_LATENESS_MS (more than a frame and a half either way) is refused, and the worst a page
can do is move its own recording's correction within that bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import BrowserContext, Frame, Page

NAME = "__presented_" + secrets.token_hex(8)
# What the page answers is cut to two numbers in the page: a forged reader's answer of any size costs nothing.
_CALL = (
    f"(restart) => {{ try {{ const r = window['{NAME}'](restart); return [+r[0], +r[1]]; }}"
    " catch (e) { return []; } }"
)

MIN_FRAMES = 30  # a second of a 30 fps video
MAX_COUNT = 10**7  # video frames in one document: days of 60 fps; more is forged
FAR_MS = 100.0  # presentation.js leaves out a frame later or earlier than this
MAX_LATENESS_MS = 50.0
MAX_DOCUMENTS = 16  # a page's frames (documents) asked, at most
READ_TIMEOUT = 1.5  # a document that does not answer within this gives nothing; the others count

_SCRIPT = Path(__file__).with_name("presentation.js").read_text()
_SCRIPT = _SCRIPT.replace("__NAME__", NAME).replace("__FAR_MS__", f"{FAR_MS:g}")


@dataclass(frozen=True)
class Presented:
    """The page's frames of audible video since the restart: how many, and their summed lateness (ms)."""

    count: int = 0
    total_ms: float = 0.0

    def __add__(self, other: Presented) -> Presented:
        return Presented(self.count + other.count, self.total_ms + other.total_ms)

    @property
    def mean_ms(self) -> float | None:
        """The mean lateness; None under MIN_FRAMES frames or beyond MAX_LATENESS_MS either way."""
        if self.count < MIN_FRAMES:
            return None
        mean = self.total_ms / self.count
        return round(mean, 2) if abs(mean) <= MAX_LATENESS_MS else None


async def install_probe(context: BrowserContext) -> None:
    """Before the first navigation: the probe in every frame of every page of `context`."""
    await context.add_init_script(script=_SCRIPT)


async def restart(page: Page) -> None:
    """Count from now: the capture's first frame."""
    await read(page, restart=True)


async def read(page: Page, *, restart: bool = False) -> Presented:
    """What the page's documents counted since the last restart; one that does not answer within
    READ_TIMEOUT (a hung frame) gives nothing, and is not waited for longer."""
    asks = [asyncio.ensure_future(_ask(frame, restart)) for frame in page.frames[:MAX_DOCUMENTS]]
    if not asks:
        return Presented()
    done, late = await asyncio.wait(asks, timeout=READ_TIMEOUT)
    for ask in late:
        ask.cancel()
    return sum((ask.result() for ask in done), Presented())


async def _ask(frame: Frame, restart: bool) -> Presented:
    with contextlib.suppress(Exception):  # a frame gone, detached or crashed gives nothing
        return parse(await frame.evaluate(_CALL, restart))
    return Presented()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse(got: Any) -> Presented:
    """A document's [count, total] as plain numbers; anything else, or what no probe could have summed
    (more than MAX_COUNT frames, a total beyond FAR_MS a frame), counts nothing."""
    if not (isinstance(got, list) and len(got) == 2 and all(_number(v) for v in got)):
        return Presented()
    count, total = got
    if not (1 <= count <= MAX_COUNT and count == int(count) and abs(total) <= FAR_MS * count):
        return Presented()
    return Presented(int(count), float(total))
