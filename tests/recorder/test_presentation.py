"""What a page reports of its video's presentation is parsed, bounded and refused like any hostile input."""

from __future__ import annotations

import asyncio
import math
import time

import pytest

from recorder.source.presentation import MAX_COUNT, MAX_LATENESS_MS, MIN_FRAMES, Presented, parse


@pytest.mark.parametrize(
    "got",
    [
        None, "40", {"count": 40}, [40], [40, 400, 0], ["40", 400], [40, "400"], [True, 4.0], [40, math.inf],
        [40, math.nan], [-40, 400], [0, 0], [2.5, 10], [1e400, 1.0],
    ],
)  # fmt: skip
def test_anything_but_a_count_and_a_sum_counts_nothing(got):
    assert parse(got) == Presented()


def test_a_page_says_its_mean_lateness_once_it_has_shown_enough_frames():
    assert parse([60, 600.0]) == Presented(60, 600.0)
    assert Presented(60, 600.0).mean_ms == 10.0
    assert Presented(MIN_FRAMES - 1, 10.0 * (MIN_FRAMES - 1)).mean_ms is None, "too few frames say nothing"
    # Two frames (documents) of one page add up.
    assert (Presented(20, 100.0) + Presented(20, 300.0)).mean_ms == 10.0


@pytest.mark.parametrize("mean", [MAX_LATENESS_MS + 0.5, -MAX_LATENESS_MS - 0.5, 1e9])
def test_a_lateness_beyond_the_bound_is_refused_not_clamped(mean: float):
    assert Presented(100, mean * 100).mean_ms is None


@pytest.mark.parametrize(
    "got", [[1e308, 0.0], [MAX_COUNT + 1, 0.0], [40, 40 * 100.0 + 1], [40, -40 * 100.0 - 1]]
)
def test_sums_no_probe_could_have_made_count_nothing(got):
    # A page that rewrote the probe: a count past any recording's, or a mean past what it leaves out.
    assert parse(got) == Presented()
    assert (parse(got) + parse(got)).mean_ms is None


class _Frame:
    def __init__(self, answer: object, hangs: bool = False) -> None:
        self.answer, self.hangs = answer, hangs

    async def evaluate(self, script: str, restart: bool) -> object:
        if self.hangs:
            await asyncio.sleep(3600)
        return self.answer


class _Page:
    def __init__(self, *frames: _Frame) -> None:
        self.frames = list(frames)


async def test_a_hung_document_gives_nothing_and_the_others_still_count(monkeypatch):
    from recorder.source import presentation

    monkeypatch.setattr(presentation, "READ_TIMEOUT", 0.2)
    page = _Page(_Frame([40, 400.0]), _Frame(None, hangs=True), _Frame([20, 200.0]), _Frame("junk"))
    started = time.monotonic()
    presented = await presentation.read(page)  # type: ignore[arg-type]
    assert time.monotonic() - started < 2.0, "a hung document is not waited for"
    assert presented == Presented(60, 600.0) and presented.mean_ms == 10.0
