"""finalize stage: a capture becomes rec.mp4 (remuxed, or adopted in live mode), then rec.json, written once."""

from recorder.finalize.finished import Finished
from recorder.finalize.stage import finalize

__all__ = ["Finished", "finalize"]
