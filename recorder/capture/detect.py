"""FFmpeg's level-tagged log lines: the capture's own silence and frozen-screen detection, and the
warnings and errors kept for a failure message.

The capture runs with `-loglevel level+info` when detection is on (`level+warning` otherwise), so every
line says its level: `[silencedetect @ 0x…] [info] silence_start: 12.3`. `silencedetect` and
`freezedetect` (`lavfi.freezedetect.freeze_start: …`) log their start only once the silence or the
freeze has lasted the whole window, so the line itself is the trigger. Info lines never reach the error
tail.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

Detection = Literal["silence", "frozen"]

_LINE = re.compile(
    r"^(?:\[(?P<context>[^\]]+)\] )?\[(?P<level>quiet|panic|fatal|error|warning|info|verbose|debug|trace)\] ?"
    r"(?P<message>.*)$"
)
_KEPT_LEVELS = frozenset({"panic", "fatal", "error", "warning"})
_TRIGGERS: dict[str, tuple[str, Detection]] = {
    "silencedetect": ("silence_start", "silence"),
    "freezedetect": ("freeze_start", "frozen"),
}


@dataclass
class LogReader:
    """Reads one FFmpeg process's stderr line by line: detections out, warnings and errors kept."""

    keep: int = 40
    tail: list[str] = field(default_factory=list)
    _level: str = "error"  # a line without a tag continues the message before it

    def line(self, text: str) -> Detection | None:
        """Take one line; returns what it detected, if anything."""
        text = text.rstrip()
        if not text:
            return None
        match = _LINE.match(text)
        if match is None:
            context, message = None, text
        else:
            self._level = match.group("level")
            context, message = match.group("context"), match.group("message")
        if context is not None:
            trigger = _TRIGGERS.get(context.split(" @ ", 1)[0])
            if trigger is not None and self._level == "info" and f"{trigger[0]}:" in message:
                return trigger[1]
        if self._level in _KEPT_LEVELS:
            self.tail.append(f"[{context}] {message}" if context else message)
            del self.tail[: -self.keep]
        return None
