"""How an error names a field: the way the caller wrote it, `actions[2].selector`, not pydantic's
`('actions', 2, 'click', 'selector')`, whose `click` is the union member it tried, not a key of the input."""

from __future__ import annotations

from collections.abc import Sequence

from contract.actions import STEP_VERBS


def field_path(loc: Sequence[str | int]) -> str:
    path = ""
    previous: str | int | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(previous, int) and part in STEP_VERBS:
            pass  # the tagged-union member pydantic tried for a step: not part of what the caller wrote
        else:
            path += f".{part}" if path else str(part)
        previous = part
    return path or "body"
