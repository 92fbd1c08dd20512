"""Orchestrator: the recording API, the durable job store, worker leases and the warm pool.

It knows nothing of FFmpeg or browsers and imports nothing of the recorder package; it meets recorder
workers only through `contract.protocol`.
"""

from contract import __version__

__all__ = ["__version__"]
