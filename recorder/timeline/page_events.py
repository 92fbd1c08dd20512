"""What the recorded page does, as timeline events: console errors and warnings, uncaught exceptions,
failed and blocked requests, navigations and reloads, dialogs, renderer crashes, the START_RECORDING and
END_RECORDING signals, and the join script's steps.

Handlers only note and return: they run in Playwright's event dispatch and must never wait. Nothing here
changes what the page sees (a dialog is noted when it closes, so Playwright still dismisses it as it would
without us). URLs are shown without their credentials, query or fragment, which may carry secrets, and
clipped (`contract.redact`); every string a page chooses is clipped before it is kept.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

from playwright.async_api import ConsoleMessage, Dialog, Frame, Page, Request, Response
from playwright.async_api import Error as PlaywrightError

from contract.actions import Step, describe
from contract.redact import clip, shown_url
from contract.security import UrlRejected, canonical_url
from contract.timeline import Level
from recorder.timeline.collector import TimelineCollector

SIGNALS = ("START_RECORDING", "END_RECORDING")
FAILED_LOAD = "Failed to load resource:"  # what Chromium logs for a failed request
CONSOLE_TEXT = 200  # characters of a console line kept: enough to recognise it, short enough for thousands
NAME_TEXT = 80  # characters of an exception's name

# host -> the address class the egress guard denied it for in this recording, or None.
DenialLookup = Callable[[str], "str | None"]


class PageEventFeed:
    """Attached to each page of a recording (the first, and the reload after a crash): feeds `collector`."""

    def __init__(self, collector: TimelineCollector, *, denial_of: DenialLookup | None = None) -> None:
        self.collector = collector
        self.denial_of = denial_of
        # Console messages by level, kept or over the cap: the summary counts them all.
        self.console_levels: Counter[str] = Counter()
        self._last_url: bytes | None = None  # a digest: a page's URL may be megabytes long
        self._crashed = False

    def attach(self, page: Page) -> None:
        page.on("console", self._on_console)
        page.on("pageerror", self._on_page_error)
        page.on("requestfailed", self._on_request_failed)
        page.on("response", self._on_response)
        page.on("framenavigated", self._on_navigated)
        page.on("dialogclosed", self._on_dialog_closed)
        page.on("crash", self._on_crash)

    # -- the join script ---------------------------------------------------------------------------

    def step_done(self, index: int, step: Step, seconds: float, error: str | None = None) -> None:
        """A join-script step finished (or failed, with `error`)."""
        what = describe(index, step)
        if error is None:
            self.collector.event(
                "page", "action", f"join script {what} done", index=index, verb=step.do, seconds=round(seconds, 3)
            )
        else:
            self.collector.event(
                "page", "action", error, level="error", index=index, verb=step.do, seconds=round(seconds, 3)
            )

    # -- page events -------------------------------------------------------------------------------

    def _on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        for name in SIGNALS:
            if name in text[:CONSOLE_TEXT]:
                self.collector.event("page", "signal", name, name=name)
        level = {"error": "error", "warning": "warning"}.get(message.type)
        if level is None or text.startswith(FAILED_LOAD):
            return  # Chromium's line for a failed request: the request's own event says it
        self.console_levels[level] += 1
        where = message.location or {}
        origin = shown_url(where["url"]) if where.get("url") else None
        data = {"url": origin, "line": where.get("lineNumber")} if origin else {}
        short = clip(text, CONSOLE_TEXT)
        self.collector.event("page", "console", short, level="error" if level == "error" else "warning", **data)

    def _on_page_error(self, error: PlaywrightError) -> None:
        name = clip(str(getattr(error, "name", None) or "Error"), NAME_TEXT)
        message = str(getattr(error, "message", None) or error)[: 4 * CONSOLE_TEXT]
        first = message.splitlines()[0] if message else ""
        self.collector.event("page", "exception", f"uncaught {name}: {first}"[:CONSOLE_TEXT], level="error", name=name)

    def _on_request_failed(self, request: Request) -> None:
        url = shown_url(request.url)
        kind = request.resource_type
        blocked = self._denial(request.url)
        if blocked is not None:
            self.collector.event(
                "page",
                "request_blocked",
                f"blocked by the egress guard ({blocked}): {url}",
                level="error",
                url=url,
                address_class=blocked,
                resource=kind,
            )
            return
        failure = request.failure or "failed"
        self.collector.event(
            "page", "request_failed", f"{failure}: {url}", level="error", url=url, failure=failure, resource=kind
        )

    def _on_response(self, response: Response) -> None:
        status = response.status
        if status < 400:
            return
        request = response.request
        document = request.resource_type == "document"
        if status < 500 and not document:
            return
        url = shown_url(response.url)
        text = f"HTTP {status} {response.status_text}".rstrip()
        self.collector.event(
            "page",
            "request_failed",
            f"{text}: {url}",
            level="error",
            url=url,
            status=status,
            resource=request.resource_type,
        )

    def _on_navigated(self, frame: Frame) -> None:
        if frame.parent_frame is not None:
            return
        url = frame.url
        if not url or url == "about:blank" or url.startswith("chrome-error:"):
            return
        shown = shown_url(url)
        digest = hashlib.blake2b(url.encode(errors="replace"), digest_size=16).digest()
        again = digest == self._last_url
        self._last_url = digest
        if again and self._crashed:
            self._crashed = False
            self.collector.event("page", "reload", f"reloaded after a crash: {shown}", level="warning", url=shown)
        elif again:
            self.collector.event("page", "reload", f"reloaded {shown}", url=shown)
        else:
            self.collector.event("page", "navigation", f"navigated to {shown}", url=shown)

    def _on_dialog_closed(self, dialog: Dialog) -> None:
        text = dialog.message
        short = clip(text, CONSOLE_TEXT)
        self.collector.event("page", "dialog", f"{dialog.type}: {short}", level="warning", type=dialog.type)

    def _on_crash(self, page: Page) -> None:
        self._crashed = True
        self.collector.event("page", "crash", "the page's renderer crashed", level="error")

    def _denial(self, url: str) -> str | None:
        if self.denial_of is None:
            return None
        try:
            return self.denial_of(canonical_url(url).host)
        except UrlRejected:
            return None


def control_event(
    collector: TimelineCollector | None,
    kind: str,
    message: str,
    *,
    level: Level = "info",
    at: float | None = None,
    **data: object,
) -> None:
    """A moment of the recorder's own control (waiting, recording, pause, resume, stop), when collecting."""
    if collector is not None:
        collector.event("control", kind, message, level=level, at=at, **data)
