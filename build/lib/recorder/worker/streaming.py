"""The uploads that run while a live recording is captured: HLS segments, and rec.mp4 as it grows.

Both exist only when the destination is a bucket and the spec asks for `live_upload`. Fencing pauses them
(not one more segment or part while the lease is in doubt); a dropped attempt deletes the segments it put.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from recorder.storage import Destination, GrowingUpload, LiveUploader


class StreamingUploads:
    def __init__(self, destination: Destination, log: structlog.typing.FilteringBoundLogger) -> None:
        self.destination = destination
        self._log = log
        self._live: LiveUploader | None = None
        self._spent: LiveUploader | None = None  # finished or closed; its objects go if the attempt is dropped
        self._growing: GrowingUpload | None = None

    async def start(self) -> None:
        try:
            # In a thread: a first S3 client loads botocore's models (a second, cold), and the loop must keep
            # sending the heartbeats that hold the lease meanwhile.
            self._live, self._growing = await asyncio.to_thread(self._make)
        except Exception as exc:
            self._log.warning("worker.live_upload_unavailable", error=str(exc))
            self._live = self._growing = None
            return
        if self._live is None:
            self._log.info("worker.live_upload_skipped", reason="no bucket: the recording is stored locally")
            return
        self._live.start()
        if self._growing is not None:
            self._growing.start()

    def _make(self) -> tuple[LiveUploader | None, GrowingUpload | None]:
        return self.destination.live_uploader(), self.destination.growing_upload()

    def take_growing(self) -> GrowingUpload | None:
        """The upload that followed rec.mp4, handed to the final store (which completes it)."""
        growing, self._growing = self._growing, None
        return growing

    async def abandon_growing(self) -> None:
        """No parts left behind: the whole file goes up later, or nothing does."""
        growing, self._growing = self._growing, None
        if growing is not None:
            await asyncio.to_thread(growing.cancel)

    async def pause(self) -> None:
        """Fenced: stop sending; the segments stay on disk for `finish` if the lease turns out to be ours."""
        await self.abandon_growing()
        if self._live is not None:
            await asyncio.to_thread(self._live.close)

    async def finish(self, confirm: Callable[[], bool]) -> None:
        """After the capture: the remaining segments and the final playlist, once the lease is confirmed."""
        live, self._live = self._live, None
        if live is None:
            return
        self._spent = live
        summary = await asyncio.to_thread(live.finish, confirm)
        self._log.info(
            "worker.live_upload_done",
            segments=len(summary.uploaded),
            bytes=summary.bytes,
            missing=len(summary.missing),
            error=summary.error,
        )

    async def stop(self) -> None:
        """The attempt is being dropped: stop at once, nothing more is sent."""
        await self.abandon_growing()
        live, self._live = self._live, None
        if live is not None:
            self._spent = live
            await asyncio.to_thread(live.close)

    async def discard(self) -> None:
        """Delete what was put in the bucket while recording (this attempt's own keys only)."""
        live, self._spent = self._spent, None
        if live is not None:
            try:
                await asyncio.to_thread(live.discard)
            except Exception as exc:
                self._log.warning("worker.live_discard_failed", error=str(exc))
