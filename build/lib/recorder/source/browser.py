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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import structlog
from playwright.async_api import Browser as PwBrowser
from playwright.async_api import BrowserContext, ConsoleMessage, Page, Playwright, Request, async_playwright
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import TimeoutError as PlaywrightTimeout

from contract.errors import ErrorCode, RecorderError
from contract.security import UrlRejected, canonical_url, describe_denial
from contract.spec import WaitFor
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
    "--disable-features=Translate,MediaRouter,OptimizationHints,CalculateNativeWinOcclusion,"
    "AutofillServerCommunication,InterestFeedContentSuggestions,GlobalMediaControls",
]


@dataclass
class PageEvents:
    """What the page told us while it was being recorded."""

    started: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    crashes: int = 0
    error: RecorderError | None = None


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
    ) -> None:
        self.chromium_path = chromium_path
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

    async def open(self, url: str, wait_for: WaitFor, *, stop_on_signal: bool = True) -> PageSession:
        """Open `url` in a fresh context and return once the page is ready to be recorded."""
        if self._browser is None:
            raise RuntimeError("browser not started")
        context = await self._browser.new_context(
            no_viewport=True,
            ignore_https_errors=False,
            permissions=["camera", "microphone"],
            service_workers="allow",
        )
        session = PageSession(context, url, stop_on_signal=stop_on_signal, denial_of=self.denial_of)
        try:
            await session.load(wait_for)
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


class PageSession:
    """One page being recorded: readiness, stop signals and crash recovery."""

    MAX_CRASHES = 1  # the first crash is survived with a reload; the second fails the recording

    def __init__(
        self, context: BrowserContext, url: str, *, stop_on_signal: bool, denial_of: DenialLookup | None = None
    ) -> None:
        self.context = context
        self.denial_of = denial_of
        self.url = url
        self.stop_on_signal = stop_on_signal
        self.events = PageEvents()
        self.page: Page | None = None
        self._recovering: asyncio.Task[None] | None = None

    async def _new_page(self) -> Page:
        page = await self.context.new_page()
        self._attach(page)
        await _fullscreen(self.context, page)
        return page

    def _attach(self, page: Page) -> None:
        self.page = page
        page.on("console", self._on_console)
        page.on("crash", self._on_crash)
        page.on("close", self._on_close)
        page.on("requestfailed", self._on_request_failed)

    def _on_console(self, message: ConsoleMessage) -> None:
        text = message.text
        if START_SIGNAL in text:
            self.events.started.set()
        if END_SIGNAL in text and self.stop_on_signal:
            log.info("page signalled end of recording")
            self.events.ended.set()

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

    def _on_close(self, page: Page) -> None:
        if page is self.page and self._recovering is None and not self.events.failed.is_set():
            log.info("page closed itself; stopping the recording")
            self.events.ended.set()

    def _on_crash(self, page: Page) -> None:
        self.events.crashes += 1
        log.warning("renderer crashed", crashes=self.events.crashes)
        if self.events.crashes > self.MAX_CRASHES:
            self._fail(RecorderError(ErrorCode.BROWSER_CRASHED, "Chromium's renderer crashed twice; recording stopped"))
            return
        self._recovering = asyncio.ensure_future(self._recover(page))

    async def _recover(self, crashed: Page) -> None:
        try:
            page = await self._new_page()
            await page.goto(self.url, wait_until="load", timeout=30_000)
            log.info("page reloaded after renderer crash")
        except PlaywrightError as exc:
            self._fail(RecorderError(ErrorCode.BROWSER_CRASHED, f"reload after renderer crash failed: {exc.message}"))
        finally:
            self._recovering = None
            with contextlib.suppress(Exception):
                await crashed.close()

    def _fail(self, error: RecorderError) -> None:
        if self.events.error is None:
            self.events.error = error
        self.events.failed.set()

    async def load(self, wait_for: WaitFor) -> None:
        try:
            await self._load(wait_for)
        except RecorderError as exc:
            # A navigation the guard denied (a redirect, a meta refresh) is why loading failed: say so.
            await asyncio.sleep(0.1)  # let a requestfailed event that raced the navigation error arrive
            denied = self.events.error
            if denied is not None and denied.code == ErrorCode.URL_NOT_ALLOWED:
                raise denied from exc
            raise

    async def _load(self, wait_for: WaitFor) -> None:
        page = await self._new_page()
        timeout_ms = wait_for.timeout * 1000
        try:
            response = await page.goto(self.url, wait_until="load", timeout=timeout_ms)
        except PlaywrightTimeout as exc:
            raise RecorderError(
                ErrorCode.READINESS_TIMEOUT,
                f"{self.url} did not finish loading within {wait_for.timeout:g} s",
            ) from exc
        except PlaywrightError as exc:
            reason = exc.message.split("\n")[0]
            raise RecorderError(ErrorCode.UNREACHABLE, f"could not open {self.url}: {reason}") from exc
        if response is not None and response.status >= 400:
            raise RecorderError(
                ErrorCode.HTTP_ERROR,
                f"{self.url} answered HTTP {response.status} {response.status_text}".rstrip(),
            )
        await self._wait_ready(page, wait_for)

    async def _wait_ready(self, page: Page, wait_for: WaitFor) -> None:
        if wait_for.kind == "load":
            return
        if wait_for.kind == "selector":
            try:
                await page.wait_for_selector(wait_for.selector or "", state="visible", timeout=wait_for.timeout * 1000)
            except PlaywrightTimeout as exc:
                raise RecorderError(
                    ErrorCode.READINESS_TIMEOUT,
                    f"selector {wait_for.selector!r} did not become visible within {wait_for.timeout:g} s",
                ) from exc
            return
        try:
            await asyncio.wait_for(self.events.started.wait(), wait_for.timeout)
        except TimeoutError as exc:
            raise RecorderError(
                ErrorCode.READINESS_TIMEOUT,
                f"the page did not log {START_SIGNAL} within {wait_for.timeout:g} s",
            ) from exc

    async def close(self) -> None:
        self.page = None  # our own close is not the page ending the recording
        if self._recovering is not None:
            self._recovering.cancel()
            with contextlib.suppress(BaseException):
                await self._recovering
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.context.close(), 10)


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


def _process_type(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().replace(b"\0", b" ").split()  # Chromium rewrites its title with spaces
    except OSError:
        return "gone"
    return next((a.split(b"=", 1)[1].decode() for a in args if a.startswith(b"--type=")), "browser")
