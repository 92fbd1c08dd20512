"""The stop conditions a page itself shows: an end banner, leaving the meeting's origin, closing.

Armed once the recording has started (a banner already on the pre-join page must not end a recording that
has not begun) and armed again on the page that replaces a crashed one. No polling: the banner is a
locator wait that Playwright keeps across the page's own navigations (any element the selector matches
becoming visible counts, not only the first), leaving is the main frame's `framenavigated` event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import structlog
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Frame, Page

from contract.spec import StopReason, StopWhen
from recorder.source.actions import origin_of

log = structlog.get_logger(__name__)

Stop = Callable[[StopReason], None]


class PageWatch:
    """Calls `stop(reason)` when a condition of `stop_when` holds on the watched page."""

    def __init__(self, stop_when: StopWhen, *, origins: set[str], stop: Stop, denied: Callable[[str], bool]) -> None:
        self.stop_when = stop_when
        # The recorded URL's origin, and the origin it redirected to before the recording started.
        self.origins = origins
        self.stop = stop
        # url -> whether the egress guard denied it: a failure (PageSession reports it), not leaving the meeting.
        self.denied = denied
        self._banner: asyncio.Task[None] | None = None

    def arm(self, page: Page) -> None:
        """Watch `page` (the first one, or the reload after a crash)."""
        if self.stop_when.selector is not None:
            if self._banner is not None:
                self._banner.cancel()
            self._banner = asyncio.ensure_future(self._wait_for_banner(page, self.stop_when.selector))
        if self.stop_when.navigated_away:
            page.on("framenavigated", self._on_navigated)

    def page_closed(self) -> None:
        """The watched page closed itself (not a crash, not our own close)."""
        if self.stop_when.page_closed:
            log.info("page closed itself; stopping the recording")
            self.stop("page_closed")
        else:
            log.warning("page closed itself; stop_when.page_closed is false, so the recording goes on")

    async def _wait_for_banner(self, page: Page, selector: str) -> None:
        try:
            await page.locator(selector).filter(visible=True).first.wait_for(state="visible", timeout=0)
        except PlaywrightError:
            return  # the page crashed or closed: the reload arms a new wait, a close is its own reason
        log.info("stop selector became visible; stopping the recording", selector=selector)
        self.stop("selector")

    def _on_navigated(self, frame: Frame) -> None:
        if frame.parent_frame is not None:
            return
        url = frame.url
        if url.startswith("chrome-error:") or origin_of(url) in self.origins:
            return
        if self.denied(url):
            return
        log.info("page navigated away from the recorded origin; stopping the recording", url=url)
        self.stop("navigated_away")

    async def close(self) -> None:
        banner, self._banner = self._banner, None
        if banner is not None:
            banner.cancel()
            with contextlib.suppress(BaseException):
                await banner
