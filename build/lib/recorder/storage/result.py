"""What storing a recording produced: the same object for S3, local disk and a pending upload."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from contract.protocol import ErrorInfo


class StoredObject(BaseModel):
    """One stored file (`rec.mp4`, `rec.json`, …) and where it is now."""

    model_config = ConfigDict(extra="forbid")

    name: str
    location: str = Field(description="s3://bucket/key once confirmed, else file:///abs/path")
    bytes: int
    sha256: str | None = Field(default=None, description="hex SHA-256 of the file's bytes")
    parts: int = Field(default=1, description="multipart parts the object was uploaded in")


class StoredResult(BaseModel):
    """The outcome the worker reports: `location` is where rec.mp4 can be fetched now.

    `pending` means S3 could not be reached or kept failing: the files are safe on local disk (so
    `location` is a file:// URL) and `resume_pending` will finish the upload into `destination`.
    """

    model_config = ConfigDict(extra="forbid")

    recording_id: str
    location: str
    metadata_location: str | None = None
    destination: str | None = Field(default=None, description="s3:// URL rec.mp4 goes to, when a bucket is set")
    bytes: int = Field(description="size of rec.mp4")
    total_bytes: int = Field(description="size of every file stored")
    seconds: float = Field(description="time spent storing, from call to confirmed")
    sha256: str | None = Field(default=None, description="hex SHA-256 of rec.mp4")
    pending: bool = False
    reason: str | None = Field(default=None, description="why the upload is pending or failed")
    error: ErrorInfo | None = Field(default=None, description="set when a resumed upload failed for good")
    objects: list[StoredObject] = Field(default_factory=list)
