"""The versions rec.json names, so a recording can be traced to the tools that made it."""

from __future__ import annotations

import subprocess
from functools import cache

from recorder import __version__


@cache
def ffmpeg_version() -> str:
    try:
        out = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.split("\n", 1)[0].removeprefix("ffmpeg version ").split(" ")[0]


@cache
def chromium_version(path: str) -> str:
    """The browser's version without starting a browser (for keys computed before one runs)."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = [w for w in out.split() if w[:1].isdigit()]
    return words[0] if words else "unknown"


def tool_versions(chromium: str | None) -> dict[str, str]:
    return {"recorder": __version__, "chromium": chromium or "unknown", "ffmpeg": ffmpeg_version()}
