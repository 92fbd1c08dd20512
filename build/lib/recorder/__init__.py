"""Page recorder: Chromium on a URL under Xvfb, captured with FFmpeg to a faithful MP4.

The package knows nothing of the orchestrator; it meets it only through `contract.protocol`.
"""

from contract import __version__

__all__ = ["__version__"]
