"""Storage stage of the recorder: one `Destination` per attempt, a bucket (verified, resumable) or local disk.

`destination.py` decides which; `bucket.py` and `local.py` are the two kinds; `transfer.py` runs an upload
to the end and `resume.py` finishes those S3 could not take; `growing.py` and `live.py` upload while recording.
"""

from recorder.config import TransferOptions
from recorder.storage.destination import Destination, destination_for
from recorder.storage.growing import GrowingUpload
from recorder.storage.live import LiveSummary, LiveUploader
from recorder.storage.result import StoredObject, StoredResult
from recorder.storage.resume import resume_pending

__all__ = [
    "Destination",
    "GrowingUpload",
    "LiveSummary",
    "LiveUploader",
    "StoredObject",
    "StoredResult",
    "TransferOptions",
    "destination_for",
    "resume_pending",
]
