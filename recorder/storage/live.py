"""Upload while recording: completed HLS segments go to the bucket as FFmpeg writes them.

With `live_upload`, capture also writes self-contained MPEG-TS segments `live/seg_NNNNN.ts` and an HLS
playlist `live/index.m3u8` that FFmpeg rewrites (atomically, through a temp file) each time a segment
is finished. A segment is complete once the playlist lists it or a newer segment file exists; only
complete segments are uploaded, each as its own object under `<recording key dir>/live/`, followed by
the playlist once every segment it lists is in the bucket. So if the recorder dies, the bucket holds a
playable HLS recording of everything but the segment being written.

This is a companion to the final upload, not a replacement: on a normal stop `finish()` uploads what
is left (the last segment and the final playlist with #EXT-X-ENDLIST), and the destination still
produces the faststart rec.mp4.
The destination (`BucketDestination.live_uploader`) makes one per attempt, under the attempt's `live/` keys.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Self

import structlog

from recorder.storage.checksum import b64
from recorder.storage.keys import content_type
from recorder.storage.poller import Poller
from recorder.storage.s3 import Verdict, classify, denied_error, describe

log = structlog.get_logger(__name__)

PLAYLIST = "index.m3u8"
_SEQUENCE = re.compile(r"(\d+)(?=\.[^.]+$)")


@dataclass
class LiveSummary:
    """What the live upload achieved: segments in the bucket, and any left on disk with the reason."""

    uploaded: list[str] = field(default_factory=list)
    bytes: int = 0
    playlist_key: str | None = None
    missing: list[str] = field(default_factory=list)
    error: str | None = None


class LiveUploader:
    """Background uploader of completed segments; `start()`, then `finish()` on stop or `close()` to drop it."""

    def __init__(
        self,
        live_dir: Path,
        bucket: str,
        key_prefix: str,
        *,
        client: Any,
        poll_interval: float = 0.5,
        playlist: str = PLAYLIST,
        segment_glob: str = "seg_*.ts",
    ) -> None:
        self.live_dir = live_dir
        self.bucket = bucket
        self.key_prefix = key_prefix if key_prefix.endswith("/") else key_prefix + "/"
        self.client = client
        self.playlist = playlist
        self.segment_glob = segment_glob
        self.summary = LiveSummary()
        self._uploaded: set[str] = set()
        self._playlist_sent: str | None = None
        self._denied = False
        self._poller = Poller(lambda: self._sweep(final=False), poll_interval, "live-upload")

    @property
    def poll_interval(self) -> float:
        """Seconds between looks at the live folder."""
        return self._poller.interval

    @poll_interval.setter
    def poll_interval(self, seconds: float) -> None:
        self._poller.interval = seconds

    def key(self, name: str) -> str:
        return self.key_prefix + name

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        self._poller.start()
        return self

    def close(self) -> None:
        """Stop the background thread without a final sweep (what is not uploaded stays on disk)."""
        self._poller.halt()

    def finish(self, confirm: Callable[[], bool] | None = None) -> LiveSummary:
        """After FFmpeg has exited: upload every remaining segment and the final playlist, then stop.

        `confirm` (the worker's lease check) is asked first: a worker whose lease is gone publishes no final
        playlist, and what it has not uploaded stays on disk."""
        self.close()
        if confirm is None or confirm():
            self._sweep(final=True)
        else:
            self.summary.error = "the lease could not be confirmed; the rest of the live upload stays on disk"
        self.summary.missing = sorted({p.name for p in self._segments()} - self._uploaded)
        return self.summary

    def discard(self) -> None:
        """Stop, then delete the objects this uploader put (by exact key: only this attempt's own)."""
        self.close()
        keys = [self.key(name) for name in sorted(self._uploaded)]
        if self._playlist_sent is not None:
            keys.append(self.key(self.playlist))
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            try:
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                log.warning("could not delete live segments", bucket=self.bucket, error=describe(exc))
                return
            # DeleteObjects answers 200 and lists the keys it could not delete (AccessDenied without
            # s3:DeleteObject, for one): those objects are still there.
            refused = answer.get("Errors") or []
            if refused:
                first = refused[0]
                log.warning(
                    "could not delete live segments; grant s3:DeleteObject on the bucket to these credentials",
                    bucket=self.bucket,
                    objects=len(refused),
                    error=f"{first.get('Code')} ({first.get('Message') or 'no message'}) for {first.get('Key')}",
                )
                return
        if keys:
            log.info("live segments deleted", bucket=self.bucket, prefix=self.key_prefix, objects=len(keys))

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- work ------------------------------------------------------------------------------------

    def _segments(self) -> list[Path]:
        def order(path: Path) -> tuple[int, str]:
            match = _SEQUENCE.search(path.name)
            return (int(match.group(1)) if match else -1, path.name)

        return sorted(self.live_dir.glob(self.segment_glob), key=order)

    def _sweep(self, *, final: bool) -> None:
        if self._denied:
            return
        try:
            text: str | None = (self.live_dir / self.playlist).read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            text = None
        if text and not final:
            # Only the last part's stop ends the stream: a pause also stops an FFmpeg, whose playlist then ends
            # with #EXT-X-ENDLIST until the next part resumes it, and players would stop reloading for good.
            text = _without_endlist(text)
        listed = _listed(text) if text else []
        segments = self._segments()
        complete = set(listed) | {p.name for p in (segments if final else segments[:-1])}
        for path in segments:
            if path.name in complete and path.name not in self._uploaded and not self._put_segment(path):
                return
        ready = text and text != self._playlist_sent and all(n in self._uploaded for n in listed)
        if ready and self._put(self.playlist, text.encode(), cache_control="no-cache"):
            self._playlist_sent = text
            self.summary.playlist_key = self.key(self.playlist)

    def _put_segment(self, path: Path) -> bool:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return True  # removed by FFmpeg (delete_segments): nothing to keep
        if not self._put(path.name, data):
            return False
        self._uploaded.add(path.name)
        self.summary.uploaded.append(path.name)
        self.summary.bytes += len(data)
        return True

    def _put(self, name: str, data: bytes, cache_control: str | None = None) -> bool:
        extra = {"CacheControl": cache_control} if cache_control else {}
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.key(name),
                Body=data,
                ContentType=content_type(name),
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=b64(hashlib.sha256(data).digest()),
                **extra,
            )
        except Exception as exc:
            if classify(exc) is Verdict.DENIED:
                self._denied = True
                self.summary.error = denied_error(exc, self.bucket, None).message
                log.error("live upload denied; segments stay on disk", error=self.summary.error)
            else:
                self.summary.error = f"{name}: {describe(exc)}"
                log.warning("live upload of a segment failed; will retry", name=name, error=describe(exc))
            return False
        log.debug("live segment uploaded", key=self.key(name), bytes=len(data))
        return True


def _without_endlist(playlist: str) -> str:
    return "".join(line for line in playlist.splitlines(keepends=True) if line.strip() != "#EXT-X-ENDLIST")


def _listed(playlist: str) -> list[str]:
    """Segment file names an HLS media playlist lists (URI lines), in order."""
    lines = (line.strip() for line in playlist.splitlines())
    return [PurePosixPath(line).name for line in lines if line and not line.startswith("#")]
