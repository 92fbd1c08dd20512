"""Orchestrator: the recording API, the durable job store, worker leases and the warm pool.

It knows nothing of FFmpeg or browsers; it meets recorder workers only through `recorder.protocol`.
"""

__version__ = "0.1.0"
