"""What a recorder keeps of the video phase its recordings saw: per page and capture rate, and only while
Chromium's drifting ticks leave it true (recorder/pipeline.py, `Recorder.known_phase`)."""

from __future__ import annotations

import time

from contract.spec import RecordingSpec
from recorder.config import RecorderSettings
from recorder.pipeline import PHASE_HOLDS, Recorder, phase_key


def spec(url: str, fps: int = 30) -> RecordingSpec:
    return RecordingSpec(url=url, duration=5, fps=fps)


def test_a_phase_is_kept_per_page_and_rate_whatever_the_query():
    grid = phase_key(spec("https://meet.example.com/room/a?token=1"))
    assert grid == phase_key(spec("https://meet.example.com/room/a?token=2#x"))
    assert grid != phase_key(spec("https://meet.example.com/room/b"))
    assert grid != phase_key(spec("https://other.example.com/room/a"))
    assert grid != phase_key(spec("https://meet.example.com/room/a", fps=25))


def test_a_learnt_phase_serves_its_page_until_it_is_too_old_or_unlearnt(tmp_path):
    recorder = Recorder(RecorderSettings(records_dir=tmp_path))  # nothing started: memory only
    page, other = phase_key(spec("https://a.example/p")), phase_key(spec("https://b.example/p"))
    now = time.monotonic()

    recorder.learn_phase(page, 0.012, now)
    assert recorder.known_phase(page) == 0.012
    assert recorder.known_phase(other) is None, "another page's video may take the other tick"

    recorder.learn_phase(page, 0.012, now - PHASE_HOLDS - 1)
    assert recorder.known_phase(page) is None, "Chromium's ticks have drifted since"

    recorder.learn_phase(page, 0.020, now)
    recorder.learn_phase(page, None, now)
    assert recorder.known_phase(page) is None, "a recording in no one phase unlearns it"
