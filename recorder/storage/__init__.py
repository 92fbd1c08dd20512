"""Storage stage of the recorder pipeline: S3 (verified, resumable) or local disk, plus live upload.

See `store.py` for the entry points and the bucket layout, `live.py` for upload while recording.
"""

from recorder.config import TransferOptions
from recorder.storage.growing import GrowingUpload
from recorder.storage.live import LiveSummary, LiveUploader
from recorder.storage.result import StoredObject, StoredResult
from recorder.storage.store import abort_pending, resume_pending, store_metadata, store_recording

__all__ = [
    "GrowingUpload",
    "LiveSummary",
    "LiveUploader",
    "StoredObject",
    "StoredResult",
    "TransferOptions",
    "abort_pending",
    "resume_pending",
    "store_metadata",
    "store_recording",
]
