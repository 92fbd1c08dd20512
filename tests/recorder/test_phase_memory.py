"""What a recorder keeps of the video phase its recordings saw: per page and capture rate, and not past the
time Chromium's drifting ticks leave it true (recorder/pipeline.py, `Recorder.known_phase`; the grab
itself judges freshness at its start, tests/recorder/test_grabber.py)."""

from __future__ import annotations

import time

from contract.spec import RecordingSpec
from recorder.capture.grabber import PHASE_HOLDS
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder, phase_key


def spec(url: str, fps: int = 30) -> RecordingSpec:
    return RecordingSpec(url=url, duration=5, fps=fps)


def test_a_phase_is_kept_per_page_and_rate_whatever_the_query_or_credentials():
    room = phase_key(spec("https://meet.example.com/room/a?token=1"))
    assert room == phase_key(spec("https://meet.example.com/room/a?token=2#x"))
    assert room == phase_key(spec("https://user:secret@MEET.example.com/room/a"))
    assert "secret" not in room[1]
    assert room != phase_key(spec("https://meet.example.com/room/b"))
    assert room != phase_key(spec("https://other.example.com/room/a"))
    assert room != phase_key(spec("https://meet.example.com:8443/room/a"))
    assert room != phase_key(spec("https://meet.example.com/room/a", fps=25))
    # A URL the spec lets through with a port that is none has a key too; the recording is refused later.
    assert phase_key(spec("https://meet.example.com:abc/room/a"))[1] == "https://meet.example.com:?/room/a"


def test_a_learnt_phase_serves_its_page_until_unlearnt_and_old_ones_are_let_go(tmp_path):
    recorder = Recorder(RecorderSettings(records_dir=tmp_path))  # nothing started: memory only
    page, other = phase_key(spec("https://a.example/p")), phase_key(spec("https://b.example/p"))
    now = time.monotonic()

    recorder.learn_phase(page, 0.012, now)
    assert recorder.known_phase(page) == (0.012, now)
    assert recorder.known_phase(other) is None, "another page's video may take the other tick"

    recorder.learn_phase(other, 0.020, now - PHASE_HOLDS - 1)
    assert recorder.known_phase(other) is None, "too old to serve: let go"
    assert recorder.known_phase(page) == (0.012, now)

    recorder.learn_phase(page, None, now)
    assert recorder.known_phase(page) is None, "a recording in no one phase unlearns it"
