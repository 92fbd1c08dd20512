"""The page side of recording a meeting, on a real Chromium: join scripts, the waiting room, stop conditions
and the failure screenshot, against the meeting test page (recorder/reference/meeting.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import ConsoleMessage

from contract.errors import ErrorCode, RecorderError
from contract.spec import RecordingSpec, StopWhen, WaitFor
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.reference.page import ReferencePage
from recorder.source.browser import PageSession, navigation_target

pytestmark = [pytest.mark.media, pytest.mark.browser]

JOIN = [{"do": "fill", "selector": "#name", "value": "Recorder"}, {"do": "click", "selector": "#join"}]
ADMITTED = WaitFor(kind="selector", selector="#meeting video", timeout=20)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def recorder(no_leaks: None, tmp_path: Path) -> AsyncIterator[Recorder]:
    """A recorder's display, audio server and browser at 1280x720, stopped after the test."""
    rec = Recorder(RecorderSettings(records_dir=tmp_path / "records"))
    try:
        await rec.prepare(1280, 720)
        yield rec
    finally:
        await rec.close()


@asynccontextmanager
async def opened(recorder: Recorder, spec: RecordingSpec) -> AsyncIterator[PageSession]:
    assert recorder.browser is not None
    session = await recorder.browser.open(spec)
    try:
        yield session
    finally:
        await session.close()


def meeting(test_page: ReferencePage, query: str, **fields: Any) -> RecordingSpec:
    return RecordingSpec.model_validate({"url": test_page.url(f"/meeting?{query}"), **fields})


async def join_and_wait(session: PageSession) -> list[float]:
    """navigate, join script, waiting room; returns when on_waiting was called (monotonic seconds)."""
    waiting: list[float] = []
    await session.navigate(navigation_target(session.spec))
    await session.run_actions()
    await session.wait_ready(on_waiting=lambda: waiting.append(time.monotonic()))
    return waiting


async def stopped(session: PageSession, within: float) -> str | None:
    await asyncio.wait_for(session.events.ended.wait(), within)
    return session.events.stop_reason


def console_times(session: PageSession) -> dict[str, float]:
    """The first time each console line was seen, from now on."""
    seen: dict[str, float] = {}

    def on_console(message: ConsoleMessage) -> None:
        seen.setdefault(message.text, time.monotonic())

    assert session.page is not None
    session.page.on("console", on_console)
    return seen


async def test_a_two_step_join_goes_through_the_lobby_into_the_meeting(recorder, test_page):
    spec = meeting(test_page, "lobby=1", actions=JOIN, wait_for=ADMITTED)
    async with opened(recorder, spec) as session:
        started = time.monotonic()
        waiting = await join_and_wait(session)
        assert len(waiting) == 1, "on_waiting is called once, when the lobby is shown"
        assert time.monotonic() - waiting[0] >= 0.5, "wait_ready returned only once the lobby let the recorder in"
        page = session.page
        assert page is not None
        assert not await page.is_visible("#prejoin") and not await page.is_visible("#lobby")
        assert await page.locator("#meeting video").count() == 4
        assert time.monotonic() - started < 15


async def test_a_join_script_works_inside_a_same_origin_iframe(recorder, test_page):
    inside = [{**step, "frame": ["iframe#prejoin-frame"]} for step in JOIN]
    spec = meeting(test_page, "lobby=0.5&frame=1", actions=inside, wait_for=ADMITTED)
    async with opened(recorder, spec) as session:
        waiting = await join_and_wait(session)
        assert len(waiting) == 1
        assert session.page is not None and not await session.page.is_visible("#prejoin")


async def test_a_join_script_refuses_an_iframe_of_another_origin(recorder, test_page):
    other = f"http://localhost:{test_page.port}"
    inside = [{**step, "frame": ["iframe#prejoin-frame"]} for step in JOIN]
    spec = meeting(test_page, f"frame=1&frame_origin={other}", actions=inside, wait_for=ADMITTED)
    async with opened(recorder, spec) as session:
        await session.navigate("domcontentloaded")
        with pytest.raises(RecorderError) as caught:
            await session.run_actions()
    error = caught.value
    assert error.code == ErrorCode.ACTION_FAILED
    assert "step 0" in error.message and "iframe#prejoin-frame" in error.message
    assert other in error.message and "same-origin" in error.message, error.message


async def test_a_missing_button_fails_its_step_quickly_and_the_page_is_screenshotted(recorder, test_page, tmp_path):
    steps = [JOIN[0], {"do": "click", "selector": "#no-such-button", "timeout": 1.5}]
    spec = meeting(test_page, "lobby=1", actions=steps, wait_for=ADMITTED)
    async with opened(recorder, spec) as session:
        await session.navigate("domcontentloaded")
        started = time.monotonic()
        with pytest.raises(RecorderError) as caught:
            await session.run_actions()
        took = time.monotonic() - started
        shot = await session.screenshot(tmp_path / "failure.png")
    error = caught.value
    assert error.code == ErrorCode.ACTION_FAILED
    assert "step 1" in error.message and "click" in error.message and "#no-such-button" in error.message
    assert "no element matches" in error.message and "1.5 s" in error.message, error.message
    assert 1.0 <= took < 6, f"the step's own 1.5 s timeout bounds it, not the script's: {took:.1f} s"
    assert shot == tmp_path / "failure.png" and shot.exists()
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    width, height = struct.unpack(">II", data[16:24])  # IHDR: the viewport, not an empty image
    assert abs(width - 1280) <= 2 and abs(height - 720) <= 2, (width, height)


async def test_no_screenshot_once_the_page_is_gone(recorder, test_page, tmp_path):
    async with opened(recorder, meeting(test_page, "lobby=1")) as session:
        await session.navigate("domcontentloaded")
        assert session.page is not None
        await session.page.close()
        assert await session.screenshot(tmp_path / "failure.png") is None
    assert not (tmp_path / "failure.png").exists()


async def test_evaluate_runs_only_where_the_operator_allows_it(recorder, test_page):
    steps = [{"do": "evaluate", "script": "window.join('script')"}]
    spec = meeting(test_page, "lobby=0", actions=steps, wait_for=ADMITTED)
    async with opened(recorder, spec) as session:
        await session.navigate("domcontentloaded")
        with pytest.raises(RecorderError) as caught:
            await session.run_actions()
    assert caught.value.code == ErrorCode.ACTION_FAILED
    assert "step 0" in caught.value.message and "ACTIONS_ALLOW_EVALUATE" in caught.value.message

    assert recorder.browser is not None
    recorder.browser.allow_evaluate = True
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        assert session.page is not None and await session.page.locator("#meeting video").count() == 4


async def test_a_lobby_that_never_admits_is_a_waiting_room_timeout(recorder, test_page):
    wait_for = WaitFor(kind="selector", selector="#meeting video", timeout=3)
    spec = meeting(test_page, "lobby=-1", actions=JOIN, wait_for=wait_for)
    async with opened(recorder, spec) as session:
        started = time.monotonic()
        with pytest.raises(RecorderError) as caught:
            await join_and_wait(session)
        took = time.monotonic() - started
    error = caught.value
    assert error.code == ErrorCode.WAITING_ROOM_TIMEOUT
    assert "not admitted within 3 s" in error.message and "#meeting video" in error.message, error.message
    assert 2.5 <= took < 12, took


async def test_a_start_signal_logged_during_the_join_script_is_not_missed(recorder, test_page):
    early = RecordingSpec(
        url=test_page.url("/grid?signal=start&delay=0"),
        actions=[{"do": "wait", "seconds": 1}],
        wait_for=WaitFor(kind="signal", timeout=10),
    )
    async with opened(recorder, early) as session:
        waiting = await join_and_wait(session)
    assert waiting == [], "START_RECORDING came during the script: no waiting room"

    late = RecordingSpec(url=test_page.url("/grid?signal=start&delay=1.5"), wait_for=WaitFor(kind="signal", timeout=10))
    async with opened(recorder, late) as session:
        waiting = await join_and_wait(session)
    assert len(waiting) == 1


async def test_an_end_banner_stops_the_recording_once_it_shows_and_not_before(recorder, test_page):
    # #lobby is visible before admission: armed only after readiness, it cannot stop the recording.
    spec = meeting(
        test_page, "lobby=0.5&end=3", actions=JOIN, wait_for=ADMITTED, stop_when=StopWhen(selector="#ended, #lobby")
    )
    async with opened(recorder, spec) as session:
        seen = console_times(session)
        await join_and_wait(session)
        session.watch()
        reason = await stopped(session, 15)
        stopped_at = time.monotonic()
    assert reason == "selector"
    assert "MEETING_ENDED" in seen, "the stop came from the end banner"
    assert -0.5 <= stopped_at - seen["MEETING_ENDED"] < 2, stopped_at - seen["MEETING_ENDED"]


async def test_leaving_the_meetings_origin_stops_the_recording(recorder, test_page):
    away = f"http://localhost:{test_page.port}/grid"
    spec = meeting(
        test_page,
        f"lobby=0&end=1&after=navigate&to={away}",
        actions=JOIN,
        wait_for=ADMITTED,
        stop_when=StopWhen(navigated_away=True),
    )
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        session.watch()
        assert await stopped(session, 15) == "navigated_away"
        assert session.page is not None and session.page.url.startswith("http://localhost:")
    assert session.events.error is None


async def test_leaving_for_a_denied_address_stays_a_failure_not_a_stop(recorder, test_page):
    denied = f"http://127.0.0.2:{test_page.port}/grid"  # loopback, and not on the tests' URL_ALLOWLIST
    spec = meeting(
        test_page,
        f"lobby=0&end=0.5&after=navigate&to={denied}",
        actions=JOIN,
        wait_for=ADMITTED,
        stop_when=StopWhen(navigated_away=True),
    )
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        session.watch()
        await asyncio.wait_for(session.events.failed.wait(), 15)
        await asyncio.sleep(0.5)  # a navigated_away stop would come with the error page's commit
    error = session.events.error
    assert error is not None and error.code == ErrorCode.URL_NOT_ALLOWED and "127.0.0.2" in error.message
    assert session.events.stop_reason is None


async def test_a_page_closing_itself_stops_the_recording(recorder, test_page):
    spec = meeting(test_page, "lobby=0&end=1&after=close", actions=JOIN, wait_for=ADMITTED)
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        session.watch()
        assert await stopped(session, 15) == "page_closed"


async def test_a_page_may_close_without_stopping_when_the_caller_says_so(recorder, test_page):
    spec = meeting(
        test_page, "lobby=0&end=0.5&after=close", actions=JOIN, wait_for=ADMITTED, stop_when={"page_closed": False}
    )
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        closed = asyncio.Event()
        assert session.page is not None
        session.page.on("close", lambda _: closed.set())
        session.watch()
        await asyncio.wait_for(closed.wait(), 15)
        await asyncio.sleep(0.5)
        assert not session.events.ended.is_set() and session.events.stop_reason is None


async def test_after_a_renderer_crash_the_page_rejoins_and_its_stop_conditions_still_hold(recorder, test_page):
    spec = meeting(test_page, "lobby=0&end=5", actions=JOIN, wait_for=ADMITTED, stop_when=StopWhen(selector="#ended"))
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        session.watch()
        crashed = session.page
        assert recorder.browser is not None
        for pid, kind in recorder.browser.processes().items():
            if kind == "renderer":
                os.kill(pid, signal.SIGKILL)
        assert await stopped(session, 30) == "selector", "the banner of the reloaded, rejoined meeting"
        assert session.events.crashes == 1 and session.events.error is None
        assert session.page is not crashed and session.page is not None
        assert await session.page.is_visible("#ended") and not await session.page.is_visible("#prejoin")


async def test_end_recording_in_the_console_stops_with_reason_signal(recorder, test_page):
    spec = RecordingSpec(url=test_page.url("/grid?end=2"))
    async with opened(recorder, spec) as session:
        await join_and_wait(session)
        session.watch()
        assert await stopped(session, 15) == "signal"


async def test_from_commit_returns_before_the_document_is_parsed(recorder, test_page):
    spec = meeting(test_page, "lobby=0&trickle=3", **{"from": "commit"}, wait_for=WaitFor(timeout=20))
    async with opened(recorder, spec) as session:
        started = time.monotonic()
        await session.navigate(navigation_target(spec))
        committed = time.monotonic() - started
        await session.finish_loading()
        loaded = time.monotonic() - started
        assert session.page is not None and await session.page.is_visible("#prejoin")
    assert committed < 2, f"commit waited for the document: {committed:.1f} s"
    assert loaded >= 2.5, f"DOMContentLoaded comes once the body arrives, 3 s in: {loaded:.1f} s"


async def test_navigation_failures_say_what_happened(recorder, test_page):
    async with opened(recorder, RecordingSpec(url=test_page.url("/status/404"))) as session:
        with pytest.raises(RecorderError) as caught:
            await session.navigate("domcontentloaded")
    assert caught.value.code == ErrorCode.HTTP_ERROR and "404" in caught.value.message

    slow = RecordingSpec(url=test_page.url("/slow"), wait_for=WaitFor(kind="load", timeout=2))
    async with opened(recorder, slow) as session:
        with pytest.raises(RecorderError) as caught:
            await session.navigate(navigation_target(slow))
    assert caught.value.code == ErrorCode.READINESS_TIMEOUT and "within 2 s" in caught.value.message
