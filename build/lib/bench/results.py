"""Where benchmark results go: bench/results/<name>-<YYYYMMDD-HHMM>.json, with the machine they ran on."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def result_path(name: str, when: datetime | None = None, directory: Path | None = None) -> Path:
    when = when or datetime.now(UTC)
    return (directory or RESULTS_DIR) / f"{name}-{when:%Y%m%d-%H%M}.json"


def write_result(
    name: str,
    results: Any,
    *,
    options: dict[str, Any] | None = None,
    machine_info: dict[str, Any] | None = None,
    notes: str | None = None,
    directory: Path | None = None,
) -> Path:
    """Write one run's figures with the machine, the options it ran with and the load at the end."""
    info = machine_info or machine.describe()
    document = {
        "benchmark": name,
        "machine": info,
        "options": options or {},
        "load_at_end": [round(x, 2) for x in machine.load_average()],
        "other_media_processes_busy_at_end": machine.busy_processes(),
        "notes": notes,
        "results": results,
    }
    path = result_path(name, directory=directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    """numpy scalars, paths and the like, as JSON."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
