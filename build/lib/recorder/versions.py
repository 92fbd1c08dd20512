"""The versions rec.json names, so a recording can be traced to the tools that made it."""

from __future__ import annotations

import subprocess
from functools import cache

from recorder import __version__


@cache
def _ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ")[0]


def tool_versions(chromium: str | None) -> dict[str, str]:
    return {"recorder": __version__, "chromium": chromium or "unknown", "ffmpeg": _ffmpeg_version()}
