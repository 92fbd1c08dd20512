"""Test fixtures: the reference media (made at test time with FFmpeg lavfi) and the page that plays it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from recorder.reference.media import ReferenceMedia, make_reference_media
from recorder.reference.page import ReferencePage

# The reference page is served on 127.0.0.1, which a recorder's egress guard denies unless URL_ALLOWLIST
# names it: every recorder this test run starts (in process, or as a subprocess inheriting the
# environment) may load it. Tests about the guard set their own allowlist.
os.environ.setdefault("URL_ALLOWLIST", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def test_media(tmp_path_factory: pytest.TempPathFactory) -> ReferenceMedia:
    """Sync clips (1 kHz and 440 Hz) and moving tiles, 10 s each, 640x360 at 30 fps, WebM VP8 + Opus."""
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    return make_reference_media(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="session")
def test_page(test_media: ReferenceMedia) -> Iterator[ReferencePage]:
    """The local test page: /grid, /state/set, /state/report, /status/<code>, /slow, /media/<clip>."""
    page = ReferencePage(test_media)
    page.start()
    try:
        yield page
    finally:
        page.stop()
