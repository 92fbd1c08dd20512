"""Every stderr line is one JSON object, so `kubectl logs` can be parsed whichever library wrote the line."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import structlog

from contract.logs import CHATTY_LOGGERS, configure_logging

ROOT = Path(__file__).resolve().parents[2]

# Configured twice on purpose: a second call must not print every line twice.
PROGRAM = """
import logging, sys
import structlog
from contract.logs import configure_logging

configure_logging(sys.argv[1])
configure_logging(sys.argv[1])
structlog.contextvars.bind_contextvars(recording_id="rec-42")
structlog.get_logger("orchestrator.app").info("orchestrator started", port=8080)
logging.getLogger("orchestrator.pool.kubernetes").info("deleted recorder pod %s (%s)", "recorder-7", "idle")
try:
    raise ZeroDivisionError("division by zero")
except ZeroDivisionError:
    logging.getLogger("aiohttp.server").error("Error handling request", exc_info=True)
try:
    raise KeyError("missing")
except KeyError:
    structlog.get_logger("orchestrator.api").exception("request failed")
logging.getLogger("botocore.credentials").info("Found credentials in environment variables.")
logging.getLogger("aiohttp.access").info("GET /healthz 200")
"""


def _run(level: str) -> list[dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM, level], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines, "nothing was logged"
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}\n{done.stderr}")
        assert isinstance(record, dict), line
        records.append(record)
    return records


def _by_event(records: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    events = [str(r.get("event")) for r in records]
    assert len(events) == len(set(events)), f"a line was logged twice: {events}"
    return {str(r["event"]): r for r in records}


@pytest.mark.parametrize("level", ["info", "debug"])
def test_every_line_is_json_with_the_same_keys(level: str) -> None:
    records = _run(level)
    by_event = _by_event(records)
    for record in records:
        assert {"event", "level", "timestamp", "logger"} <= record.keys(), record
        assert str(record["timestamp"]).endswith("Z"), record  # ISO, UTC
        assert record["recording_id"] == "rec-42", record  # bound context reaches stdlib records too

    started = by_event["orchestrator started"]
    assert (started["level"], started["logger"], started["port"]) == ("info", "orchestrator.app", 8080)

    deleted = by_event["deleted recorder pod recorder-7 (idle)"]
    assert (deleted["level"], deleted["logger"]) == ("info", "orchestrator.pool.kubernetes")

    failed = by_event["Error handling request"]
    assert (failed["level"], failed["logger"]) == ("error", "aiohttp.server")
    assert "Traceback" in str(failed["exception"]) and "ZeroDivisionError: division by zero" in str(failed["exception"])

    raised = by_event["request failed"]
    assert (raised["level"], raised["logger"]) == ("error", "orchestrator.api")
    assert "KeyError: 'missing'" in str(raised["exception"])

    chatty = {"Found credentials in environment variables.", "GET /healthz 200"}
    if level == "debug":
        assert chatty <= by_event.keys(), sorted(by_event)
        assert by_event["Found credentials in environment variables."]["logger"] == "botocore.credentials"
    else:
        assert not chatty & by_event.keys(), sorted(by_event)


def test_warning_level_silences_the_project_info_lines() -> None:
    by_event = _by_event(_run("warning"))
    assert set(by_event) == {"Error handling request", "request failed"}


@pytest.fixture
def restored_logging():
    """configure_logging changes process-wide state; the rest of the suite must not inherit it."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    chatty = {name: logging.getLogger(name).level for name in CHATTY_LOGGERS}
    excepthook, structlog_config = sys.excepthook, structlog.get_config()
    yield
    root.handlers[:] = handlers
    root.setLevel(root_level)
    for name, level in chatty.items():
        logging.getLogger(name).setLevel(level)
    sys.excepthook = excepthook
    logging.captureWarnings(False)
    structlog.configure(**structlog_config)


def test_capsys_and_caplog_still_see_the_lines(restored_logging, capsys, caplog) -> None:
    configure_logging("info")
    configure_logging("info")
    logging.getLogger("orchestrator.pool.kubernetes").info("deleted recorder pod %s", "recorder-8")

    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["deleted recorder pod recorder-8"]
    assert [r.getMessage() for r in caplog.records] == ["deleted recorder pod recorder-8"]
