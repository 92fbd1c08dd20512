"""Page recorder: Chromium on a URL under Xvfb, captured with FFmpeg to a faithful MP4.

The package knows nothing of the orchestrator; it meets it only through `recorder.protocol`.
"""

__version__ = "0.1.0"
