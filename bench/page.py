"""The page every capture benchmark records: the reference page's 2x2 grid of playing videos, one of them
the sync clip (a white flash and a 1 kHz beep together every second), served from 127.0.0.1.

The clips (`recorder.reference.media`) are made once and kept in a cache directory keyed by their
parameters, so repeated runs do not spend a minute of CPU re-encoding them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recorder.config import RecorderSettings
from recorder.reference.media import CLIP_FPS, CLIP_SECONDS, TILE_SIZE, ReferenceMedia, make_reference_media
from recorder.reference.page import ReferencePage

CACHE = Path(os.environ.get("BENCH_MEDIA_DIR", Path(tempfile.gettempdir()) / "recorder-bench-media"))
_KEY = f"v1-{TILE_SIZE[0]}x{TILE_SIZE[1]}-{CLIP_FPS}fps-{CLIP_SECONDS:g}s"


def media(root: Path | None = None) -> ReferenceMedia:
    """The clips of the reference page, made on first use."""
    root = (root or CACHE) / _KEY
    done = root / ".complete"
    if done.exists():
        return ReferenceMedia(root)
    shutil.rmtree(root, ignore_errors=True)
    found = make_reference_media(root)
    done.touch()
    return found


@contextlib.contextmanager
def serve(root: Path | None = None) -> Iterator[ReferencePage]:
    """The reference page on 127.0.0.1 for the length of the block."""
    page = ReferencePage(media(root))
    page.start()
    try:
        yield page
    finally:
        page.stop()


def allowlist_entry(url: str) -> str:
    """The URL_ALLOWLIST entry that opens this page, and only it, to the recorder's egress guard."""
    from contract.security import canonical_url

    page = canonical_url(url)
    return f"{page.host}:{page.port}"


def recorder_settings(url: str, **fields: Any) -> RecorderSettings:
    """The recorder's settings (from the environment, with `fields` over them) that may open `url`."""
    allowlist = [*RecorderSettings().url_allowlist, allowlist_entry(url)]
    return RecorderSettings(**{"url_allowlist": allowlist, **fields})


def grid_url(page: ReferencePage, tone: int = 1000) -> str:
    return page.url(f"/grid?tone={tone}")


PAGES = {
    "grid": "/grid?tone=1000",  # four playing 30 fps videos, one the sync clip
    "animation": "/animation?tone=1000",  # the sync clip beside canvases drawn on every animation frame
}


def page_url(page: ReferencePage, name: str) -> str:
    return page.url(PAGES[name])
