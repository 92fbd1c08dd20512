"""Recording a meeting, on real Xvfb, PulseAudio, Chromium and FFmpeg: join by script, the waiting room,
stop conditions, pause and resume in one file, audio-only, and the picture of a failed page.

The page is the reference meeting (recorder/reference/meeting.py): a magenta pre-join screen, a lobby,
a 2x2 grid of playing tiles with the flash+beep sync clip, and an end banner over a silent, still screen.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from contract.errors import ErrorCode
from contract.protocol import Progress, WorkerState, media_name
from contract.spec import RecordingSpec
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.control import CaptureControl
from recorder.finalize import Finished
from recorder.pipeline import Recorder
from recorder.quality import analyze_file, tone_level
from recorder.quality.probe import probe
from recorder.reference.meeting import PREJOIN_COLOR
from tests.support.frames import frames, share_of_colour

pytestmark = [pytest.mark.media, pytest.mark.usefixtures("no_leaks")]

JOIN = [{"do": "fill", "selector": "#name", "value": "Recorder"}, {"do": "click", "selector": "#join"}]
IN_MEETING = {"kind": "selector", "selector": "#meeting video", "timeout": 20}
MAGENTA = tuple(int(PREJOIN_COLOR[i : i + 2], 16) for i in (1, 3, 5))


@pytest.fixture
def settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(records_dir=tmp_path / "records")


class States:
    """The states a recording reported, in order, without repeats."""

    def __init__(self) -> None:
        self.seen: list[WorkerState] = []

    def __call__(self, state: WorkerState, progress: Progress) -> None:
        if not self.seen or self.seen[-1] != state:
            self.seen.append(state)


async def record(
    settings: RecorderSettings,
    spec: RecordingSpec,
    *,
    control: CaptureControl | None = None,
    states: States | None = None,
) -> Finished:
    folder = AttemptFolder.under(settings.records_dir, "rec", media_name=media_name(spec.video))
    async with Recorder(settings, width=spec.width, height=spec.height) as recorder:
        return await recorder.record(spec, folder=folder, control=control, on_progress=states)


def meeting(test_page, **fields) -> RecordingSpec:
    query = fields.pop("query", "lobby=1")
    return RecordingSpec.model_validate(
        {"url": test_page.url(f"/meeting?{query}"), "actions": JOIN, "wait_for": IN_MEETING, **fields}
    )


def is_png(path: Path | None) -> bool:
    return (
        path is not None
        and path.is_file()
        and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        and path.stat().st_size > 1000
    )


async def test_join_by_script_then_the_waiting_room_then_the_meeting(settings, test_page):
    states = States()
    result = await record(settings, meeting(test_page, query="lobby=2", duration=4), states=states)

    assert result.error is None, result.error
    assert states.seen[:3] == ["starting", "waiting", "recording"], states.seen
    timings = result.timings
    assert timings.waiting is not None and timings.ready is not None and timings.ready - timings.waiting >= 1.5
    # The file starts after the join: no pre-join screen (all magenta) in its first second. The tiles have a
    # little magenta of their own (test-pattern bars), nowhere near a whole screen of it.
    _, first = frames(result.mp4, seconds=1.0)
    assert len(first) >= 15
    assert max(share_of_colour(f, MAGENTA) for f in first) < 0.3
    report = analyze_file(result.mp4, expected_fps=30)
    assert report.duration is not None and abs(report.duration - 4) <= 0.5
    assert tone_level(result.mp4, 1000) > 10 * tone_level(result.mp4, 440)


async def test_a_lobby_that_never_admits_is_a_waiting_room_timeout_with_a_picture(settings, test_page):
    spec = meeting(test_page, query="lobby=-1", wait_for={**IN_MEETING, "timeout": 3}, duration=10)
    started = time.monotonic()
    result = await record(settings, spec)

    assert result.error is not None and result.error.code == ErrorCode.WAITING_ROOM_TIMEOUT, result.error
    assert "#meeting video" in result.error.message and "3 s" in result.error.message
    assert time.monotonic() - started < 30
    assert result.mp4 is None, "nothing is captured while waiting"
    assert is_png(result.screenshot)
    assert result.metadata.screenshot == "failure.png"


async def test_a_step_on_a_missing_selector_fails_naming_it_with_a_picture(settings, test_page):
    script = [JOIN[0], {"do": "click", "selector": "#no-such-button", "timeout": 2}]
    result = await record(settings, meeting(test_page, actions=script, duration=10))

    assert result.error is not None and result.error.code == ErrorCode.ACTION_FAILED, result.error
    message = result.error.message
    assert "step 1" in message and "click" in message and "#no-such-button" in message, message
    assert result.mp4 is None
    assert is_png(result.screenshot)


@pytest.mark.parametrize(
    ("stop_when", "reason", "window"),
    [({"selector": "#ended"}, "selector", 0.0), ({"silence": 2}, "silence", 2.0), ({"frozen": 2}, "frozen", 2.0)],
    ids=["banner", "silence", "frozen"],
)
async def test_the_meeting_ending_stops_the_recording_with_its_reason(settings, test_page, stop_when, reason, window):
    end = 4.0
    spec = meeting(test_page, query=f"lobby=0&end={end:g}", duration=40, stop_when=stop_when)
    result = await record(settings, spec)

    assert result.error is None, result.error
    assert result.stop_reason == reason
    duration = probe(result.mp4).duration
    # The banner comes `end` s after admission, which is just before the meeting was seen (`ready`); the
    # capture's first frame comes later still, once the grab is placed on the page's rhythm. So the banner
    # is at `shown` in the file, which ends within 2 s of it plus the trigger's window and keeps all before it.
    timings = result.timings
    assert timings.ready is not None and timings.first_frame is not None
    assert 0 <= timings.first_frame - timings.ready < 3, "the capture starts soon after the meeting is seen"
    shown = timings.ready + end - timings.first_frame
    assert duration is not None and shown - 0.5 <= duration <= shown + window + 2.5, (duration, shown)
    assert json.loads(result.sidecar.read_text())["stop_reason"] == reason


async def test_a_five_second_pause_is_absent_and_sync_holds_across_the_cut(settings, test_page):
    control = CaptureControl()
    spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=14)

    async def pause_then_resume() -> None:
        await asyncio.sleep(4)
        control.want_paused(True)
        await asyncio.sleep(5)
        control.want_paused(False)

    steering = asyncio.ensure_future(pause_then_resume())
    result = await record(settings, spec, control=control)
    await steering

    assert result.error is None, result.error
    pauses = json.loads(result.sidecar.read_text())["pauses"]
    assert len(pauses) == 1, pauses
    report = analyze_file(result.mp4, expected_fps=30)
    assert report.duration is not None
    # 14 s on the page, 5 of them paused: about 9 s of file (a segment restart may cost a few frames).
    assert 8.0 <= report.duration <= 9.6, report.duration
    assert report.sync is not None and report.sync.markers >= 6, report.sync
    assert abs(report.sync.mean_ms) <= 100 and report.sync.p95_abs_ms <= 150, report.sync


async def test_audio_only_is_one_aac_stream_with_the_tone(settings, test_page):
    spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=5, video=False)
    result = await record(settings, spec)

    assert result.error is None, result.error
    assert result.mp4 is not None and result.mp4.name == "rec.m4a"
    facts = probe(result.mp4)
    assert facts.video is None and facts.audio is not None and facts.audio.codec == "aac"
    assert facts.duration is not None and abs(facts.duration - 5) <= 0.5
    assert tone_level(result.mp4, 1000) > 10 * tone_level(result.mp4, 440)


async def test_a_stop_in_the_waiting_room_ends_it_at_once_with_nothing_recorded(settings, test_page):
    control = CaptureControl()
    spec = meeting(test_page, query="lobby=-1", wait_for={**IN_MEETING, "timeout": 120}, duration=10)
    asyncio.get_running_loop().call_later(4, control.stop, "api")
    started = time.monotonic()
    result = await record(settings, spec, control=control)

    assert result.error is not None and result.error.code == ErrorCode.CANCELLED, result.error
    assert "before the recording started" in result.error.message
    assert result.stop_reason == "api"
    assert time.monotonic() - started < 30, "the lobby's two minutes were not waited out"
    assert result.mp4 is None


async def test_a_page_busy_in_a_script_of_its_own_cannot_hold_the_recorder(settings, test_page):
    # The page spins for ever a second after loading; the browser's calls into it never return.
    spec = meeting(
        test_page, query="lobby=-1&spin=1", actions=[], actions_timeout=2, wait_for={**IN_MEETING, "timeout": 3}
    )
    started = time.monotonic()
    result = await record(settings, spec)

    assert result.error is not None, "a page that never gets ready cannot be recorded"
    assert result.error.code in (ErrorCode.READINESS_TIMEOUT, ErrorCode.WAITING_ROOM_TIMEOUT), result.error
    # Bounded: loading (at most the waiting room's 3 s), the script's 2 s, the room's 3 s, a 10 s grace.
    assert time.monotonic() - started < 45
    assert result.mp4 is None


async def test_a_join_step_never_types_into_a_frame_that_became_another_origin(settings, test_page):
    other = test_page.base.replace("127.0.0.1", "localhost")
    script = [{"do": "fill", "selector": "#name", "value": "secret", "frame": ["iframe#prejoin-frame"], "timeout": 8}]
    spec = meeting(test_page, query=f"frame=1&swap=1&frame_origin={other}", actions=script, duration=5)
    result = await record(settings, spec)

    assert result.error is not None and result.error.code == ErrorCode.ACTION_FAILED, result.error
    assert "step 0" in result.error.message
    # Entered while it was same-origin; checked again on the element, which is in another origin by then.
    assert "not the page's origin" in result.error.message, result.error.message
