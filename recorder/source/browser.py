"""The browser: the system Chromium, driven by Playwright, headful on the recorder's display.

One Chromium stays warm for the life of a recorder; every recording gets a new browser context, which is
a fresh, in-memory profile (no cookie, storage or cache crosses from one recording to the next). The
window is kiosk-fullscreen on a display exactly the capture size, so what FFmpeg grabs is the page and
only the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from playwright.async_api import Browser as PwBrowser
from playwright.async_api import BrowserContext, ConsoleMessage, Page, Playwright, Request, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from contract.actions import Step
from contract.errors import ErrorCode, RecorderError
from contract.security import UrlRejected, canonical_url, describe_denial
from contract.spec import RecordingSpec, StopReason, WaitFor
from recorder.source.actions import origin_of, run_join_script
from recorder.source.page_watch import PageWatch
from recorder.source.sandbox import (
    INSTANCE_ENV,
    BrowserLaunch,
    SandboxState,
    browser_environment,
    launch_sandboxed,
)

log = structlog.get_logger(__name__)

START_SIGNAL = "START_RECORDING"
END_SIGNAL = "END_RECORDING"

# host -> the address class the egress guard denied it for in this recording, or None.
DenialLookup = Callable[[str], "str | None"]


class PageObserver(Protocol):
    """Follows a recording's pages from their creation (the timeline: `recorder.timeline.page_events`)."""

    def attach(self, page: Page) -> None:
        """A page of the recording was created (the first, or the reload after a crash); not navigated yet."""

    def step_done(self, index: int, step: Step, seconds: float, error: str | None) -> None:
        """A join-script step ended, or failed with `error`."""


# Chromium features an unattended recorder has no use for. The omnibox's dropdowns are web pages Chromium
# keeps loaded in a renderer of their own (77 MB PSS, 45 of it private) for an address bar a kiosk window
# never shows.
DISABLED_FEATURES: tuple[str, ...] = (
    "Translate",
    "MediaRouter",
    "OptimizationHints",
    "CalculateNativeWinOcclusion",
    "AutofillServerCommunication",
    "InterestFeedContentSuggestions",
    "GlobalMediaControls",
    "WebUIOmniboxPopup",
    "WebUIOmniboxAimPopup",
)
# Flags chosen for a faithful capture (no throttling of a page nobody "looks at", autoplay, no prompts)
# and for density (no GPU emulation, no background services competing for the two cores).
CHROMIUM_ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--kiosk",
    "--start-fullscreen",
    "--window-position=0,0",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--disable-background-timer-throttling",
    "--disable-backgrounding-occluded-windows",
    "--disable-renderer-backgrounding",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-breakpad",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-infobars",
    "--disable-notifications",
    "--disable-session-crashed-bubble",
    "--hide-scrollbars",
    "--password-store=basic",
    f"--disable-features={','.join(DISABLED_FEATURES)}",
]


@dataclass
class PageEvents:
    """What the page told us while it was being recorded."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    crashes: int = 0
    error: RecorderError | None = None
    # Why the page ended the recording; set just before `ended`, the first reason wins.
    stop_reason: StopReason | None = None


class Browser:
    def __init__(
        self,
        chromium_path: str,
        *,
        display: str,
        width: int,
        height: int,
        env: dict[str, str],
        network_args: Sequence[str] = (),
        denial_of: DenialLookup | None = None,
        browser_user: str = "recorder-browser",
        require_sandbox: bool = False,
        allow_evaluate: bool = False,
    ) -> None:
        self.chromium_path = chromium_path
        # Whether join scripts may run JavaScript (ACTIONS_ALLOW_EVALUATE, the operator's choice).
        self.allow_evaluate = allow_evaluate
        # Who Chromium runs as when the recorder is root, and whether to refuse to run it unsandboxed.
        self.browser_user = browser_user
        self.require_sandbox = require_sandbox
        self.sandbox: SandboxState | None = None  # known once started
        self._launch: BrowserLaunch | None = None
        self.display = display
        self.width = width
        self.height = height
        self.env = env
        # The egress guard's switches (proxy, resolver, WebRTC), and how to ask it why a host was denied.
        self.network_args = list(network_args)
        self.denial_of = denial_of
        self._pw: Playwright | None = None
        self._browser: PwBrowser | None = None
        self.instance = uuid.uuid4().hex

    def processes(self) -> dict[int, str]:
        """pid → Chromium process type ("browser", "renderer", "zygote", …) of this browser.

        The browser process carries a marker in its environment; its helpers (forked from a zygote with a
        scrubbed environment) are found as its descendants. Used for resource accounting and crash tests."""
        marker = f"{INSTANCE_ENV}={self.instance}".encode()
        parents: dict[int, int] = {}
        roots: set[int] = set()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat[stat.rfind(")") + 2 :].split()[1])
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        roots.add(int(entry))
            except (OSError, ValueError, IndexError):
                continue
        family = set(roots)
        grew = True
        while grew:
            children = {pid for pid, parent in parents.items() if parent in family} - family
            family |= children
            grew = bool(children)
        return {pid: _process_type(pid) for pid in family}

    async def start(self) -> None:
        if not os.access(self.chromium_path, os.X_OK):
            raise RecorderError(
                ErrorCode.BROWSER_FAILED,
                f"Chromium not found at {self.chromium_path}: install it (scripts/install-system-deps.sh) "
                "or set CHROMIUM_PATH",
            )
        args = [*CHROMIUM_ARGS, *self.network_args, f"--window-size={self.width},{self.height}"]
        # The sandbox stays on; a root recorder runs Chromium as an unprivileged user (recorder/source/sandbox.py).
        self._launch = launch = BrowserLaunch(self.chromium_path, self.browser_user)
        provided = {**self.env, "DISPLAY": self.display, INSTANCE_ENV: self.instance}
        try:
            launch.prepare()
            if launch.home is not None:
                provided["HOME"] = launch.home
            env = browser_environment(os.environ, provided)
            launch.grant_socket(env.get("PULSE_SERVER"))
        except OSError as exc:
            await self.close()
            raise RecorderError(ErrorCode.BROWSER_FAILED, f"could not prepare Chromium's launch: {exc}") from exc
        self._pw = await async_playwright().start()
        pw = self._pw

        async def start(sandbox: bool) -> PwBrowser:
            return await pw.chromium.launch(
                executable_path=launch.executable,
                headless=False,
                chromium_sandbox=sandbox,  # Playwright's default adds --no-sandbox
                args=args,
                env=env,
                ignore_default_args=["--enable-automation", "--mute-audio", "--hide-scrollbars"],
                timeout=30_000,
            )

        try:
            self._browser, self.sandbox = await launch_sandboxed(launch, start, require=self.require_sandbox)
        except PlaywrightError as exc:
            await self.close()
            raise RecorderError(ErrorCode.BROWSER_FAILED, f"Chromium did not start: {exc.message}") from exc
        except RecorderError:
            await self.close()
            raise
        log.info(
            "browser started",
            display=self.display,
            version=self._browser.version,
            sandbox=self.sandbox.enabled,
            user=self.sandbox.user,
        )

    @property
    def version(self) -> str | None:
        return self._browser.version if self._browser is not None else None

    @property
    def connected(self) -> bool:
        return self._browser is not None and self._browser.is_connected()

    async def open(self, spec: RecordingSpec, *, observer: PageObserver | None = None) -> PageSession:
        """A fresh context (an empty profile) and its page for `spec`, not navigated yet; `observer` sees
        every page of it from its creation."""
        if self._browser is None:
            raise RuntimeError("browser not started")
        context = await self._browser.new_context(
            no_viewport=True,
            ignore_https_errors=False,
            permissions=["camera", "microphone"],
            service_workers="allow",
        )
        try:
            return await PageSession.create(
                context, spec, denial_of=self.denial_of, allow_evaluate=self.allow_evaluate, observer=observer
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.close(), 10)
            raise

    async def open_ready(self, spec: RecordingSpec) -> PageSession:
        """`open` and `PageSession.prepare` in one call, closing the page when it cannot be made ready."""
        session = await self.open(spec)
        try:
            await session.prepare()
        except BaseException:
            await session.close()
            raise
        return session

    async def close(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(browser.close(), 10)
        pw, self._pw = self._pw, None
        if pw is not None:
            with contextlib.suppress(Exception):
                await pw.stop()
        launch, self._launch = self._launch, None
        if launch is not None:
            launch.cleanup()


Until = Literal["commit", "domcontentloaded", "load"]

# A waiting room's timeout is the lobby's length (up to hours); loading the page itself is bounded by this.
MAX_NAVIGATION_SECONDS = 60.0
SCREENSHOT_SECONDS = 5.0


def loaded_state(wait_for: WaitFor) -> Until:
    """The load state readiness needs: `load` when asked for, else DOMContentLoaded."""
    return "load" if wait_for.kind == "load" else "domcontentloaded"


def loading_timeout(wait_for: WaitFor) -> float:
    """How long loading the page may take: its readiness timeout, except in front of a waiting room, whose
    timeout is the lobby's length."""
    return min(wait_for.timeout, MAX_NAVIGATION_SECONDS) if wait_for.is_waiting_room else wait_for.timeout


def navigation_target(spec: RecordingSpec) -> Until:
    """How far `PageSession.navigate` goes: commit for `from: commit`, else the load state readiness needs."""
    if spec.start_from == "commit":
        return "commit"
    return loaded_state(spec.wait_for)


class PageSession:
    """One page being recorded: navigation, join script, readiness, stop conditions and crash recovery.

    Console messages are watched from the page's creation, so a START_RECORDING logged while the join
    script runs is not missed."""

    MAX_CRASHES = 1  # the first crash is survived with a reload; the second fails the recording

    def __init__(
        self,
        context: BrowserContext,
        spec: RecordingSpec,
        *,
        denial_of: DenialLookup | None = None,
        allow_evaluate: bool = False,
        observer: PageObserver | None = None,
    ) -> None:
        self.context = context
        self.observer = observer
        self.spec = spec
        self.url = spec.url
        self.denial_of = denial_of
        self.allow_evaluate = allow_evaluate
        self.events = PageEvents()
        self.page: Page | None = None
        self._until: Until = navigation_target(spec)
        self._navigation_started = time.monotonic()
        self._joined = False  # the join script ran: a reload after a crash runs it again
        self._watch: PageWatch | None = None
        # The page closed itself before the stop conditions were armed: loading or the lobby cannot go on.
        self._gone = asyncio.Event()
        self._recovering: asyncio.Task[None] | None = None

    @classmethod
    async def create(
        cls,
        context: BrowserContext,
        spec: RecordingSpec,
        *,
        denial_of: DenialLookup | None = None,
        allow_evaluate: bool = False,
        observer: PageObserver | None = None,
    ) -> PageSession:
        session = cls(context, spec, denial_of=denial_of, allow_evaluate=allow_evaluate, observer=observer)
        await session._new_page()
        return session

    # -- the steps the pipeline takes, in order --------------------------------------------------------

    async def navigate(self, until: Until) -> None:
        """Go to the spec's URL and return at `until` (commit, domcontentloaded or load)."""
        page = self._page()
        self._until = until
        self._navigation_started = time.monotonic()
        timeout = loading_timeout(self.spec.wait_for)
        try:
            await self._goto(page, until, timeout)
        except RecorderError as exc:
            # A navigation the guard denied (a redirect, a meta refresh) is why loading failed: say so.
            await asyncio.sleep(0.1)  # let a requestfailed event that raced the navigation error arrive
            denied = self.events.error
            if denied is not None and denied.code == ErrorCode.URL_NOT_ALLOWED:
                raise denied from exc
            raise

    async def prepare(self, on_waiting: Callable[[], None] | None = None) -> None:
        """The page made ready to be captured from readiness: navigated, joined, admitted from its waiting
        room, its stop conditions armed."""
        await self.navigate(navigation_target(self.spec))
        await self.run_actions()
        await self.wait_ready(on_waiting)
        self.watch()

    async def finish_loading(self) -> None:
        """After navigate("commit"): wait for the load state readiness needs, within what is left of its timeout."""
        state = loaded_state(self.spec.wait_for)
        if self._until == state or (self._until == "load" and state == "domcontentloaded"):
            return
        timeout = self.spec.wait_for.timeout
        remaining = timeout - (time.monotonic() - self._navigation_started)
        try:
            await self._page().wait_for_load_state(state, timeout=max(1.0, remaining * 1000))
        except PlaywrightTimeout as exc:
            raise RecorderError(
                ErrorCode.READINESS_TIMEOUT, f"{self.url} did not finish loading within {timeout:g} s"
            ) from exc
        except PlaywrightError as exc:
            raise self.events.error or RecorderError(
                ErrorCode.UNREACHABLE, f"{self.url} went away while loading: {exc.message.splitlines()[0]}"
            ) from exc

    async def run_actions(self) -> None:
        """Run the spec's join script; a step that cannot be done raises ACTION_FAILED."""
        if not self.spec.actions:
            return
        await self._unless_page_fails(self._run_join_script(self._page()))
        self._joined = True

    async def wait_ready(self, on_waiting: Callable[[], None] | None = None) -> None:
        """For a waiting room (selector, signal): return once admitted, calling `on_waiting` first if the
        page is not there yet; running out of wait_for.timeout raises WAITING_ROOM_TIMEOUT."""
        wait_for = self.spec.wait_for
        if not wait_for.is_waiting_room:
            return
        admitted: Coroutine[Any, Any, Any]
        if wait_for.kind == "selector":
            what = f"selector {wait_for.selector!r} did not become visible"
            if await self._visible_now(wait_for.selector or ""):
                return
            admitted = self._selector_visible(wait_for.selector or "")
        else:
            what = f"the page did not log {START_SIGNAL}"
            if self.events.started.is_set():
                return
            admitted = self.events.started.wait()
        log.info("waiting to be admitted", wait_for=wait_for.kind, timeout=wait_for.timeout)
        if on_waiting is not None:
            on_waiting()
        try:
            await asyncio.wait_for(self._unless_page_fails(admitted), wait_for.timeout)
        except TimeoutError:
            raise RecorderError(
                ErrorCode.WAITING_ROOM_TIMEOUT,
                f"not admitted within {wait_for.timeout:g} s: {what}; if the meeting's host admits late, raise"
                " wait_for.timeout, and check that the join script got the recorder into the lobby",
            ) from None

    def watch(self) -> None:
        """Arm the page's stop conditions (stop_when.selector, navigated_away, page_closed) from now on."""
        if self._watch is not None:
            return
        origins = {origin_of(self.url)}
        if self.page is not None and not self.page.is_closed():
            origins.add(origin_of(self.page.url))  # where the URL redirected before the recording started
        self._watch = PageWatch(self.spec.stop_when, origins=origins, stop=self._stop, denied=self._is_denied)
        if self._gone.is_set():
            self._watch.page_closed()
        elif self.page is not None:
            self._watch.arm(self.page)

    async def screenshot(self, path: Path) -> Path | None:
        """The page's viewport as it is now, as a PNG at `path`; None when there is no page to show."""
        page = self.page
        if page is None or page.is_closed() or self._recovering is not None:
            log.info("no failure screenshot: the page is gone", url=self.url)
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.wait_for(
                page.screenshot(path=str(path), type="png", timeout=SCREENSHOT_SECONDS * 1000),
                SCREENSHOT_SECONDS + 1,
            )
        except (PlaywrightError, TimeoutError, OSError) as exc:
            log.info("no failure screenshot: the page did not give one", url=self.url, reason=str(exc).split("\n")[0])
            return None
        return path

    async def close(self) -> None:
        self.page = None  # our own close is not the page ending the recording
        if self._recovering is not None:
            self._recovering.cancel()
            with contextlib.suppress(BaseException):
                await self._recovering
        if self._watch is not None:
            await self._watch.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.context.close(), 10)

    # -- the page and what it tells us ---------------------------------------------------------------

    def _page(self) -> Page:
        if self.page is None:
            raise RecorderError(ErrorCode.BROWSER_FAILED, "the page session is closed")
        return self.page

    async def _new_page(self) -> Page:
        page = await self.context.new_page()
        self._attach(page)
        await _fullscreen(self.context, page)
        return page

    def _attach(self, page: Page) -> None:
        self.page = page
        if self.observer is not None:
            self.observer.attach(page)
        page.on("console", self._on_console)
        page.on("crash", self._on_crash)
        page.on("close", self._on_close)
        page.on("requestfailed", self._on_request_failed)

    async def _goto(self, page: Page, until: Until, timeout: float) -> None:
        try:
            response = await page.goto(self.url, wait_until=until, timeout=timeout * 1000)
        except PlaywrightTimeout as exc:
            raise RecorderError(
                ErrorCode.READINESS_TIMEOUT,
                f"{self.url} did not finish loading within {timeout:g} s",
            ) from exc
        except PlaywrightError as exc:
            reason = exc.message.split("\n")[0]
            raise RecorderError(ErrorCode.UNREACHABLE, f"could not open {self.url}: {reason}") from exc
        await _as_a_new_tab(self.context, page)
        if response is not None and response.status >= 400:
            raise RecorderError(
                ErrorCode.HTTP_ERROR,
                f"{self.url} answered HTTP {response.status} {response.status_text}".rstrip(),
            )

    async def _run_join_script(self, page: Page) -> None:
        await run_join_script(
            page,
            self.spec.actions,
            timeout=self.spec.actions_timeout,
            allow_evaluate=self.allow_evaluate,
            on_step=self.observer.step_done if self.observer is not None else None,
        )

    async def _visible_now(self, selector: str) -> bool:
        try:
            return await self._page().locator(selector).filter(visible=True).count() > 0
        except PlaywrightError:
            return False  # a bad selector: waiting for it says why

    async def _selector_visible(self, selector: str) -> None:
        """Until an element `selector` matches is visible, on whichever page is current (a crash replaces it)."""
        while True:
            page = self._page()
            try:
                await page.locator(selector).filter(visible=True).first.wait_for(state="visible", timeout=0)
                return
            except PlaywrightError as exc:
                if self._recovering is not None:
                    with contextlib.suppress(BaseException):
                        await asyncio.shield(self._recovering)
                if self.page is not page:
                    continue  # the reload after a crash
                if self.events.failed.is_set() or page.is_closed():
                    await asyncio.Event().wait()  # the page is gone for good: _unless_page_fails ends this
                raise RecorderError(
                    ErrorCode.INVALID_ARGUMENT,
                    f"wait_for.selector {selector!r} cannot be waited for: {exc.message.splitlines()[0]}",
                ) from exc

    async def _unless_page_fails(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work`, but raise the page's failure (denied navigation, second crash) or its closing instead."""
        task = asyncio.ensure_future(work)
        failed = asyncio.ensure_future(self.events.failed.wait())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait([task, failed, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (failed, gone):
                waiter.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        if task.done() and not task.cancelled():
            task.result()
            return
        if self.events.error is not None:
            raise self.events.error
        raise RecorderError(
            ErrorCode.UNREACHABLE,
            f"{self.url} closed itself before the recording started; check the URL and the join script",
        )

    def _stop(self, reason: StopReason) -> None:
        if self.events.ended.is_set():
            return
        self.events.stop_reason = reason
        self.events.ended.set()

    def _on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if START_SIGNAL in text:
            self.events.started.set()
        if END_SIGNAL in text and self.spec.stop_on_signal:
            log.info("page signalled end of recording")
            self._stop("signal")

    def _on_request_failed(self, request: Request) -> None:
        """A main-frame navigation the egress guard denied (redirect, meta refresh, script) ends the recording;
        a denied subresource or iframe only fails inside the page."""
        error = self._denied_navigation(request)
        if error is not None:
            log.warning("navigation denied by the egress guard", url=request.url)
            self._fail(error)

    def _denied_navigation(self, request: Request) -> RecorderError | None:
        if self.denial_of is None or not request.is_navigation_request():
            return None
        try:
            if request.frame.parent_frame is not None:
                return None
            host = canonical_url(request.url).host
        except (PlaywrightError, UrlRejected):
            return None
        reason = self.denial_of(host)
        if reason is None or reason == "unresolvable":  # a dead link shows Chromium's error page, as before
            return None
        return RecorderError(
            ErrorCode.URL_NOT_ALLOWED,
            f"the page navigated to {request.url}, which is not allowed: {describe_denial(host, reason)}",
        )

    def _is_denied(self, url: str) -> bool:
        """Whether the egress guard denied `url`'s host in this recording."""
        if self.denial_of is None:
            return False
        try:
            return self.denial_of(canonical_url(url).host) is not None
        except UrlRejected:
            return False

    def _on_close(self, page: Page) -> None:
        if page is not self.page or self._recovering is not None or self.events.failed.is_set():
            return
        if self._watch is not None:
            self._watch.page_closed()
        else:
            log.info("page closed itself before the recording started")
            self._gone.set()

    def _on_crash(self, page: Page) -> None:
        self.events.crashes += 1
        log.warning("renderer crashed", crashes=self.events.crashes)
        if self.events.crashes > self.MAX_CRASHES:
            self._fail(RecorderError(ErrorCode.BROWSER_CRASHED, "Chromium's renderer crashed twice; recording stopped"))
            return
        self._recovering = asyncio.ensure_future(self._recover(page))

    async def _recover(self, crashed: Page) -> None:
        """Reload once, as far as the first navigation went, rejoin, and watch the new page."""
        try:
            page = await self._new_page()
            await page.goto(self.url, wait_until=self._until, timeout=30_000)
            await _as_a_new_tab(self.context, page)
            if self._joined:
                await self._run_join_script(page)
            if self._watch is not None:
                self._watch.arm(page)
            log.info("page reloaded after renderer crash", rejoined=self._joined)
        except PlaywrightError as exc:
            self._fail(RecorderError(ErrorCode.BROWSER_CRASHED, f"reload after renderer crash failed: {exc.message}"))
        except RecorderError as exc:
            self._fail(RecorderError(exc.code, f"after a renderer crash and reload: {exc.message}"))
        finally:
            self._recovering = None
            with contextlib.suppress(Exception):
                await crashed.close()

    def _fail(self, error: RecorderError) -> None:
        if self.events.error is None:
            self.events.error = error
        self.events.failed.set()


async def _fullscreen(context: BrowserContext, page: Page) -> None:
    """Windows opened for a new context ignore --kiosk, so each is made fullscreen (no tab strip, no toolbar)."""
    cdp = await context.new_cdp_session(page)
    try:
        window = await cdp.send("Browser.getWindowForTarget")
        await cdp.send(
            "Browser.setWindowBounds",
            {"windowId": window["windowId"], "bounds": {"windowState": "fullscreen"}},
        )
    finally:
        await cdp.detach()


async def _as_a_new_tab(context: BrowserContext, page: Page) -> None:
    """Forget the about:blank the page was created on, so its history is the recorded URL alone, as in a tab a
    person opened with that link: only then may the page's own window.close() end it (stop_when.page_closed)."""
    with contextlib.suppress(PlaywrightError):
        cdp = await context.new_cdp_session(page)
        try:
            await cdp.send("Page.resetNavigationHistory")
        finally:
            await cdp.detach()


def _process_type(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().replace(b"\0", b" ").split()  # Chromium rewrites its title with spaces
    except OSError:
        return "gone"
    return next((a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--type=")), "browser")
