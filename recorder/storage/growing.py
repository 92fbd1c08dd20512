"""Upload rec.mp4 while it is being written, so little is left to send when the recording stops.

In live mode FFmpeg writes rec.mp4 as a fragmented MP4 (`moov` first, then fragments, appended and never
rewritten), which is both crash-safe and the final file. This follows the file as it grows and sends each
full part of a multipart upload as soon as the bytes exist, through the same engine as every other upload
(`ObjectUploader`). When the recording stops, the destination adopts the upload: the ordinary, resumable
upload of the finished file sends only the tail, asks for the lease, completes and verifies. So S3 going
away at the end leaves a pending upload that continues these parts later, not one that starts over.

If following the file fails, the upload is aborted and the finished file goes up whole: a fast path,
never a way to lose a file. The same happens when rec.mp4 is replaced rather than appended to (a paused
live recording: finalize joins its parts into a new rec.mp4), which the file's inode tells. A recorder
that dies mid-way leaves an unfinished multipart upload (removed by the bucket's
AbortIncompleteMultipartUpload rule); the HLS segments of live mode are what survives that.
"""

from __future__ import annotations

import contextlib
import threading

import structlog

from recorder.storage.pending import ObjectUpload
from recorder.storage.poller import Poller
from recorder.storage.upload import Cancelled, ObjectUploader

log = structlog.get_logger(__name__)

POLL = 0.5


class GrowingUpload:
    """`start()` while recording; `stop()` hands the upload over; `cancel()` leaves no parts behind."""

    def __init__(self, uploader: ObjectUploader, obj: ObjectUpload, halt: threading.Event, poll: float = POLL) -> None:
        self.uploader = uploader  # its cancel event is `halt`
        self.obj = obj
        self._halt = halt
        self._poller = Poller(self._send_ready, poll, "growing-upload")
        self._inode: int | None = None  # the file followed; another one under its name is a rebuilt file
        self._replaced = False

    @property
    def poll(self) -> float:
        """Seconds between looks at the file's size."""
        return self._poller.interval

    @poll.setter
    def poll(self, seconds: float) -> None:
        self._poller.interval = seconds

    @property
    def key(self) -> str:
        return self.obj.key

    @property
    def error(self) -> str | None:
        """Why following the file stopped early (the whole file goes up at the end instead)."""
        exc = self._poller.error
        return None if exc is None else f"{type(exc).__name__}: {exc}"

    def start(self) -> GrowingUpload:
        self._poller.start()
        return self

    @property
    def replaced(self) -> bool:
        """rec.mp4 is no longer the file whose parts were sent (finalize rebuilt it)."""
        if not self._replaced and self._inode is not None:
            try:
                self._replaced = self.obj.path.stat().st_ino != self._inode
            except FileNotFoundError:
                self._replaced = True
        return self._replaced

    def _send_ready(self) -> None:
        if self._halt.is_set() or self.replaced:
            return
        try:
            stat = self.obj.path.stat()
        except FileNotFoundError:
            return
        if self._inode is None:
            self._inode = stat.st_ino
        size = stat.st_size
        with contextlib.suppress(Cancelled):  # halted mid-way: what was sent is recorded, the rest goes later
            self.uploader.send_ready_parts(self.obj, size)

    def _stop_following(self) -> None:
        """Not one more part: parts in flight end, none is started, and the polling thread is joined."""
        self._halt.set()
        self._poller.halt()

    def stop(self) -> ObjectUpload | None:
        """Stop following; the upload so far for the destination to complete, or None (aborted) when it
        failed or never began."""
        self._stop_following()
        if self.error is not None:
            log.warning("growing upload stopped; the file is uploaded whole", key=self.key, error=self.error)
        if self.replaced:
            log.info("the file was rebuilt after the growing upload followed it; it is uploaded whole", key=self.key)
        if self.error is not None or self.replaced or self.obj.upload_id is None:
            self.cancel()
            return None
        return self.obj

    def cancel(self) -> None:
        """Stop following and abort the multipart upload: no parts are left behind."""
        self._stop_following()
        try:
            self.uploader.abort(self.obj)
        except Exception as exc:
            log.warning("could not abort the growing upload", key=self.key, error=str(exc))
