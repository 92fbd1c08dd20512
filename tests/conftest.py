"""Shared fixtures live in tests/support, one module per concern; heavy tests are marked here.

`pytest --quick` (what `scripts/test.sh --quick` runs) leaves out every test with a heavy mark and
guards the rest against starting heavy processes (tests/support/heavy.py says which and why).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Generator
from pathlib import Path

import pytest

from tests.support.heavy import HEAVY_MARKS, Guard, marks_for

pytest_plugins = [
    "tests.support.leaks",
    "tests.support.media",
    "tests.support.s3",
    "tests.support.orchestrator",
    "tests.support.farm",  # after orchestrator, whose module it imports
    "tests.support.kube_apiserver",
    "tests.support.postgres",
]

QUICK_GUARD = pytest.StashKey[Guard]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        help=f"leave out heavy tests ({', '.join(HEAVY_MARKS)}) and fail any other test that starts a heavy process",
    )


def pytest_configure(config: pytest.Config) -> None:
    # Every test's RECORDS_DIR is new, so every recorder would calibrate itself at warm-up (some 60 s each);
    # the self-calibration has tests of its own, which turn it on (tests/recorder/test_capture_engine.py).
    os.environ.setdefault("RECORDER_SELF_CALIBRATE", "false")
    if config.getoption("quick"):
        # Installed before collection, so a module that starts FFmpeg at import is caught too.
        guard = Guard()
        guard.install()
        config.stash[QUICK_GUARD] = guard


def pytest_unconfigure(config: pytest.Config) -> None:
    guard = config.stash.get(QUICK_GUARD, None)
    if guard is not None:
        guard.uninstall()


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the marks added here
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks heavy tests by the fixtures they use, their skip reasons and by name; --quick leaves them out."""
    quick: list[pytest.Item] = []
    heavy: list[pytest.Item] = []
    for item in items:
        name = getattr(item, "originalname", item.name)
        module = Path(str(item.path)).stem
        own = {mark.name for mark in item.iter_markers()}
        reasons = [str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif")]
        marks = marks_for(module, name, getattr(item, "fixturenames", ()), own, reasons)
        for mark in sorted(marks - own):
            item.add_marker(mark)
        (heavy if marks else quick).append(item)
    if config.getoption("quick") and heavy:
        config.hook.pytest_deselected(items=heavy)
        items[:] = quick


REFUSED = pytest.StashKey[bool]()


def _fail_if_refused(config: pytest.Config, report: pytest.TestReport | pytest.CollectReport) -> bool:
    """Under --quick, whatever tried to start a heavy process fails, whatever the code did with the refusal."""
    guard = config.stash.get(QUICK_GUARD, None)
    refused = guard.take() if guard is not None else []
    if refused:
        report.outcome = "failed"
        report.longrepr = "\n".join(dict.fromkeys(refused))
    return bool(refused)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    if call.when == "teardown" and item.stash.get(REFUSED, False):
        # A refused start can leave a future with an exception nobody retrieved (Playwright's does); its
        # finalizer running later, inside the AST parse of a traceback, trips CPython 3.11's
        # "AST constructor recursion depth mismatch". Collected here, it runs now, harmlessly.
        gc.collect()
    report = yield
    if _fail_if_refused(item.config, report):
        item.stash[REFUSED] = True
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A module that starts a heavy process as it is imported fails to collect."""
    report = yield
    _fail_if_refused(collector.config, report)
    return report
