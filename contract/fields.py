"""How an error names a field: the way the caller wrote it, `actions[2].selector`, not pydantic's
`('actions', 2, 'click', 'selector')`, whose `click` is the union member it tried, not a key of the input.
The API's 422s and the CLI's usage errors both name fields with this."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def field_path(data: Any, loc: Sequence[int | str]) -> str:
    """`loc` as the caller wrote the field, found by walking `data` (what was validated) along it.

    A list index becomes `[i]`, a key of the object at hand a `.name`; any other name before the last
    part is a union branch pydantic went into (the `do` of a join-script step) and is left out. The last
    part may be a key the input lacks (a missing field), so it is always kept."""
    path = ""
    current = data
    for position, part in enumerate(loc):
        last = position == len(loc) - 1
        if isinstance(part, int) and isinstance(current, list):
            path += f"[{part}]"
            current = current[part] if 0 <= part < len(current) else None
        elif isinstance(current, dict) and part in current:
            path += f".{part}" if path else str(part)
            current = current[part]
        elif last or not isinstance(current, dict):
            path += f".{part}" if path else str(part)
            current = None
    return path or "body"
