"""URLs as the timeline and the replay page may show them: without credentials, query or fragment, which
may carry secrets (a meeting's `?pwd=` token, a signed link), and clipped, since a page chooses its own
URLs' lengths.

The path is kept: it says which page or request it was. A token carried in the path itself (`/j/<token>`)
is therefore kept too; only the query, fragment and user info are taken out.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from contract.timeline import MAX_TEXT

# A URL inside free text (an error message, a console line): up to the next space or quote.
_URL_IN_TEXT = re.compile(r"\b(?:https?|wss?)://[^\s\"'<>`]+", re.IGNORECASE)
REDACT_SCAN = 4 * MAX_TEXT  # characters of a text searched for URLs; the rest is clipped off anyway


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_url(url: str) -> str:
    """`url` as the timeline shows it: scheme, host, port and path (clipped to MAX_TEXT); no user,
    password, query or fragment."""
    url = url[: 4 * MAX_TEXT]  # a multi-megabyte URL is never parsed whole
    if not url.lower().startswith(("http:", "https:", "ws:", "wss:")):
        scheme = url.split(":", 1)[0][:20]
        return f"{scheme}:…" if scheme else "…"
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(an invalid URL)"
    if ":" in host:
        host = f"[{host}]"
    query = "?…" if parts.query else ""
    return clip(f"{parts.scheme}://{host}{port}{parts.path or '/'}{query}")


def redact_urls(text: str) -> str:
    """`text` with every URL in it in its shown form (an error message that quotes the meeting's URL)."""
    return _URL_IN_TEXT.sub(_shown_in_text, text[:REDACT_SCAN])


def _shown_in_text(found: re.Match[str]) -> str:
    url = found.group(0)
    core = url.rstrip(".,;:!)]}")  # the sentence's punctuation after the URL stays
    return shown_url(core) + url[len(core) :]
