"""Running a join script (contract.actions) on a page: the clicks and keys that get a recorder into a meeting.

Each step gets its own timeout, capped by what is left of the script's `actions_timeout`. A step that cannot
be done raises ACTION_FAILED naming the step as the request did (`actions[i]`), its verb, its selector and
why, so the caller can fix the script. Steps reach into iframes of the page's own origin only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import structlog
from playwright.async_api import ElementHandle, Frame, Locator, Page
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from contract.actions import ALLOW_EVALUATE_ENV, Click, Evaluate, Fill, Press, Step, Wait, WaitForElement, describe
from contract.errors import ErrorCode, RecorderError

log = structlog.get_logger(__name__)

# Documents that take the origin of the frame that made them.
_INHERITED_ORIGIN = ("", "about:blank", "about:srcdoc")


# Told of each step as it ends: (index, step, seconds it took, the error's message when it failed).
StepDone = Callable[[int, Step, float, "str | None"], None]


async def run_join_script(
    page: Page, steps: Sequence[Step], *, timeout: float, allow_evaluate: bool, on_step: StepDone | None = None
) -> None:
    """Run `steps` in order on `page` within `timeout` seconds in all; the first failing step raises."""
    deadline = time.monotonic() + timeout
    for index, step in enumerate(steps):
        started = time.monotonic()
        remaining = deadline - started
        try:
            if remaining <= 0:
                why = f"was not reached: the join script used all of its {timeout:g} s actions_timeout"
                raise _failed(index, step, why)
            await _Step(page, index, step, remaining, timeout, allow_evaluate).run()
        except RecorderError as exc:
            if on_step is not None:
                on_step(index, step, time.monotonic() - started, exc.message)
            raise
        log.info("join step done", step=index, do=step.do, seconds=round(time.monotonic() - started, 3))
        if on_step is not None:
            on_step(index, step, time.monotonic() - started, None)


def _failed(index: int, step: Step, why: str) -> RecorderError:
    return RecorderError(ErrorCode.ACTION_FAILED, f"join script {describe(index, step)} {why}")


def origin_of(url: str) -> str:
    """scheme://host:port, as the same-origin rule compares them."""
    parts = urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme)
    try:
        port = parts.port or default
    except ValueError:
        port = None
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"


class _Step:
    """One step, with its deadline: min(its own timeout, what is left of the script)."""

    def __init__(
        self, page: Page, index: int, step: Step, remaining: float, script_timeout: float, allow_evaluate: bool
    ) -> None:
        self.page = page
        self.index = index
        self.step = step
        own = getattr(step, "timeout", None)
        self.limit = min(own, remaining) if own is not None else remaining
        # Said in a timeout message, so the caller knows which limit to raise.
        self.limit_name = "its timeout" if own is not None and own <= remaining else "the rest of actions_timeout"
        self.deadline = time.monotonic() + self.limit
        self.script_timeout = script_timeout
        self.allow_evaluate = allow_evaluate

    def fail(self, why: str) -> RecorderError:
        return _failed(self.index, self.step, why)

    def left_ms(self) -> float:
        return max(1.0, (self.deadline - time.monotonic()) * 1000)

    def limit_text(self) -> str:
        return f"{self.limit:g} s ({self.limit_name})"

    async def run(self) -> None:
        step = self.step
        if isinstance(step, Wait):
            if step.seconds > self.limit:
                raise self.fail(
                    f"waits {step.seconds:g} s but only {self.limit:g} s of the {self.script_timeout:g} s"
                    " actions_timeout is left: shorten the waits or raise actions_timeout"
                )
            await asyncio.sleep(step.seconds)
        elif isinstance(step, Evaluate):
            await self._evaluate(step)
        else:
            await self._on_element(step)

    async def _evaluate(self, step: Evaluate) -> None:
        if not self.allow_evaluate:
            raise self.fail(
                f"runs JavaScript, which this recorder refuses: the operator has not enabled {ALLOW_EVALUATE_ENV};"
                " use click, fill, press and wait_for steps instead"
            )
        try:
            await asyncio.wait_for(self.page.evaluate(step.script), self.limit)
        except TimeoutError:
            raise self.fail(f"did not finish within {self.limit_text()}") from None
        except PlaywrightError as exc:
            raise self.fail(f"threw in the page: {_first_line(exc)}") from exc

    async def _on_element(self, step: Click | Fill | Press | WaitForElement) -> None:
        scope = await self._enter_frames(step.frame)
        matches = scope.locator(step.selector) if step.selector else None
        # A hidden twin (a second, off-screen Join button) must not be the one acted on, or waited for.
        target = matches.filter(visible=True).first if matches is not None else None
        try:
            if isinstance(step, Click | Fill | Press) and target is not None:
                # Checked on the element about to be acted on: a frame entered as same-origin may have been
                # navigated elsewhere since.
                element = await target.element_handle(timeout=self.left_ms())
                await self._same_origin(element, step.frame)
                if isinstance(step, Click):
                    await element.click(timeout=self.left_ms())
                elif isinstance(step, Fill):
                    await element.fill(step.value, timeout=self.left_ms())
                else:
                    await element.press(step.key, timeout=self.left_ms())
            elif isinstance(step, Press):
                await self._focus_is_ours()
                await asyncio.wait_for(self.page.keyboard.press(step.key), self.limit)
            else:
                assert target is not None
                # hidden: no element the selector matches is visible any more
                state = "visible" if step.state == "visible" else "detached"
                await target.wait_for(state=state, timeout=self.left_ms())
        except (PlaywrightTimeout, TimeoutError):
            raise self.fail(await self._why_timed_out(step, matches)) from None
        except PlaywrightError as exc:
            raise self.fail(f"failed: {_first_line(exc)}") from exc

    async def _same_origin(self, element: ElementHandle, path: Sequence[str]) -> None:
        frame = await asyncio.wait_for(element.owner_frame(), self.limit)
        page_origin = origin_of(self.page.url)
        if frame is not None and frame.url not in _INHERITED_ORIGIN and origin_of(frame.url) != page_origin:
            where = " > ".join(path) or "the page"
            raise self.fail(
                f"the element is in {origin_of(frame.url)} now ({where}), not the page's origin {page_origin};"
                " only same-origin frames can be scripted"
            )

    async def _focus_is_ours(self) -> None:
        """A key pressed with no selector goes wherever the focus is, which must not be inside a frame (it
        could be another origin's): give the press a selector there."""
        framed = await asyncio.wait_for(
            self.page.evaluate("() => ['IFRAME', 'FRAME'].includes(document.activeElement?.tagName)"), self.limit
        )
        if framed:
            raise self.fail("the focus is inside a frame; give the press a selector for the element to take the key")

    async def _why_timed_out(self, step: Click | Fill | Press | WaitForElement, matches: Locator | None) -> str:
        waited = f"timed out after {self.limit_text()}"
        if matches is None:
            return f"{waited} pressing {step.key!r}" if isinstance(step, Press) else waited
        if isinstance(step, WaitForElement):
            return f"{waited} waiting for the selector to be {step.state}"
        try:
            count = await matches.count()
            shown = matches.filter(visible=True)
            visible = count > 0 and await shown.count() > 0
            enabled = visible and await shown.first.is_enabled()
        except PlaywrightError:
            return f"{waited}: the page went away"
        if count == 0:
            return f"{waited} waiting for the selector to be visible: no element matches it"
        if not visible:
            return f"{waited}: an element matches but never became visible"
        if not enabled:
            return f"{waited}: the element stayed disabled"
        return f"{waited}: the element never took the {step.do} (covered by another element, or moving)"

    async def _enter_frames(self, path: Sequence[str]) -> Page | Frame:
        """The frame `path` names, outermost first, each checked to be of the page's own origin."""
        scope: Page | Frame = self.page
        page_origin = origin_of(self.page.url)
        for depth, selector in enumerate(path):
            where = " > ".join(path[: depth + 1])
            try:
                element = await scope.wait_for_selector(selector, state="attached", timeout=self.left_ms())
                frame = await element.content_frame() if element is not None else None
                if frame is None:
                    raise self.fail(f"cannot enter {where!r}: it is not an iframe")
                await self._settle(element, frame)
            except PlaywrightTimeout:
                raise self.fail(f"timed out after {self.limit_text()} waiting for the iframe {where!r}") from None
            except PlaywrightError as exc:
                raise self.fail(f"cannot enter the iframe {where!r}: {_first_line(exc)}") from exc
            if frame.url not in _INHERITED_ORIGIN and origin_of(frame.url) != page_origin:
                raise self.fail(
                    f"cannot enter the iframe {where!r}: it shows {origin_of(frame.url)}, not the page's origin"
                    f" {page_origin}; only same-origin frames can be scripted"
                )
            scope = frame
        return scope

    async def _settle(self, element: ElementHandle, frame: Frame) -> None:
        """Wait until the iframe shows its own document, not the empty one it starts with."""
        if frame.url in _INHERITED_ORIGIN:
            source = (await element.get_attribute("src") or "").strip()
            if source and not source.startswith("about:"):
                await frame.wait_for_url(lambda url: url not in _INHERITED_ORIGIN, timeout=self.left_ms())
        await frame.wait_for_load_state("domcontentloaded", timeout=self.left_ms())


def _first_line(exc: PlaywrightError) -> str:
    return (exc.message or str(exc)).split("\n")[0]
