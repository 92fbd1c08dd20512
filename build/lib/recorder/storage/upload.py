"""Verified upload of one file to one key: a single PUT, or a multipart upload that can be resumed.

Multipart uploads are driven here (create / upload_part on a thread pool / complete) rather than by
boto3's managed transfer, because resuming needs the upload id and the confirmed parts, which are
persisted after every part. Each part carries its SHA-256, so S3 rejects damaged bytes; after
completion the object's size and (composite) SHA-256 are compared with the local file before the
object counts as confirmed. Transient failures are retried by botocore; whatever still fails is raised
for the caller to classify.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import structlog
from botocore.exceptions import ClientError

from contract.errors import ErrorCode, RecorderError
from recorder.config import TransferOptions
from recorder.storage.checksum import b64, composite, file_sha256, read_range, same_checksum
from recorder.storage.pending import ObjectUpload, PartRecord
from recorder.storage.s3 import error_code

log = structlog.get_logger(__name__)


class Cancelled(Exception):
    """The caller asked to stop (the recording was cancelled)."""


class Unconfirmed(Exception):
    """The caller could not confirm its lease right before an object would have become visible."""


Confirm = Callable[[], bool]


class ObjectUploader:
    """Uploads the objects of one recording to one bucket; `save` persists progress after each step."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        options: TransferOptions,
        save: Callable[[], None],
        cancel: threading.Event | None = None,
        confirm: Confirm | None = None,
        sweep_orphans: bool = True,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.options = options
        self._save = save
        self._cancel = cancel or threading.Event()
        # Asked right before a PUT or CompleteMultipartUpload: a worker whose lease is gone must not
        # publish an object (its caller aborts its own multipart upload instead).
        self._confirm = confirm
        # Abort other unfinished uploads of a key once it is complete: only when the key is this attempt's
        # alone (state from before attempts had folders shares keys with other workers' uploads).
        self._sweep_orphans = sweep_orphans
        self._lock = threading.Lock()

    def save(self) -> None:
        with self._lock:
            self._save()

    # -- entry point -----------------------------------------------------------------------------

    def upload(self, obj: ObjectUpload) -> None:
        """Upload `obj` (continuing its multipart upload if it has one), verify it, and mark it done."""
        if obj.done:
            return
        self._check_local(obj)
        if obj.part_size is None:
            self._put(obj)
        else:
            self._multipart(obj)
        obj.done = True
        self.save()

    def abort(self, obj: ObjectUpload) -> bool:
        """Abort `obj`'s multipart upload, so no parts are left behind; True if there was one to abort."""
        if obj.upload_id is None or obj.done:
            return False
        upload_id, obj.upload_id, obj.parts = obj.upload_id, None, {}
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj.key, UploadId=upload_id)
        except ClientError as exc:
            if error_code(exc) != "NoSuchUpload":
                raise
            return False
        log.info("multipart upload aborted", bucket=self.bucket, key=obj.key, upload_id=upload_id)
        return True

    # -- single PUT ------------------------------------------------------------------------------

    def _put(self, obj: ObjectUpload) -> None:
        digest = file_sha256(obj.path)
        obj.sha256 = digest.hex()
        self._check_cancel()
        self._check_confirmed(obj)
        with obj.path.open("rb") as body:
            self.client.put_object(
                Bucket=self.bucket,
                Key=obj.key,
                Body=body,
                ContentType=obj.content_type,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=b64(digest),
            )
        self._verify(obj, expected_sha256=b64(digest), parts=None, expected_etag=None)

    # -- multipart -------------------------------------------------------------------------------

    def _multipart(self, obj: ObjectUpload) -> None:
        whole = _Background(file_sha256, obj.path) if obj.sha256 is None else None
        if obj.upload_id is not None and not self._reconcile(obj):
            if self._already_complete(obj):
                log.info("multipart upload had completed already", bucket=self.bucket, key=obj.key)
                if whole is not None:
                    obj.sha256 = whole.result().hex()
                return
            log.warning(
                "multipart upload is gone (aborted or expired); starting a new one",
                bucket=self.bucket, key=obj.key, upload_id=obj.upload_id,
            )
            obj.upload_id, obj.parts = None, {}
        if obj.upload_id is None:
            self._create(obj)

        todo = [n for n in range(1, obj.part_count + 1) if n not in obj.parts]
        self._upload_parts(obj, todo)
        self._check_cancel()
        self._check_confirmed(obj)

        records = [obj.parts[n] for n in range(1, obj.part_count + 1)]
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=obj.key,
            UploadId=obj.upload_id,
            MultipartUpload={
                "Parts": [
                    {"PartNumber": r.number, "ETag": r.etag, "ChecksumSHA256": r.checksum_sha256} for r in records
                ]
            },
        )
        self._verify(
            obj,
            expected_sha256=composite(base64.b64decode(r.checksum_sha256) for r in records),
            parts=obj.part_count,
            expected_etag=_multipart_etag([r.etag for r in records]),
        )
        if whole is not None:
            obj.sha256 = whole.result().hex()
        if self._sweep_orphans:
            self._sweep_older_uploads(obj)

    def send_ready_parts(self, obj: ObjectUpload, available: int) -> int:
        """A file still being appended to: send every full part below `available` bytes not sent yet.

        The parts are recorded in `obj` like any others, so the ordinary upload of the finished file
        continues this multipart upload (sending only the tail) and can be resumed like any other.
        Returns how many parts went."""
        assert obj.part_size is not None
        full = available // obj.part_size
        todo = [n for n in range(1, full + 1) if n not in obj.parts]
        if not todo:
            return 0
        self._check_cancel()
        if obj.upload_id is None:
            self._create(obj)
        obj.size = full * obj.part_size  # what exists so far: every part in range is a full one
        self._upload_parts(obj, todo)
        return len(todo)

    def _create(self, obj: ObjectUpload) -> None:
        self._check_cancel()
        created = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=obj.key, ContentType=obj.content_type, ChecksumAlgorithm="SHA256"
        )
        obj.upload_id, obj.parts = created["UploadId"], {}
        self.save()
        log.info("multipart upload created", bucket=self.bucket, key=obj.key, upload_id=obj.upload_id)

    def _upload_parts(self, obj: ObjectUpload, numbers: list[int]) -> None:
        if not numbers:
            return
        stop = threading.Event()
        assert obj.upload_id is not None
        upload_id = obj.upload_id

        def one(number: int) -> None:
            if stop.is_set() or self._cancel.is_set():
                return
            offset, length = obj.part_range(number)
            data = read_range(obj.path, offset, length)
            checksum = b64(hashlib.sha256(data).digest())
            answer = self.client.upload_part(
                Bucket=self.bucket,
                Key=obj.key,
                UploadId=upload_id,
                PartNumber=number,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            )
            echoed = answer.get("ChecksumSHA256")
            if echoed is not None and echoed != checksum:
                raise RecorderError(
                    ErrorCode.UPLOAD_FAILED,
                    f"s3://{self.bucket}/{obj.key} part {number}: S3 stored checksum {echoed}, sent {checksum}",
                )
            with self._lock:
                obj.parts[number] = PartRecord(
                    number=number, size=length, etag=answer["ETag"], checksum_sha256=checksum
                )
                self._save()

        workers = min(self.options.max_concurrency, len(numbers))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="s3-part") as pool:
            futures = [pool.submit(one, n) for n in numbers]
            wait(futures, return_when=FIRST_EXCEPTION)
            if any(f.done() and f.exception() is not None for f in futures):
                stop.set()
                for future in futures:
                    future.cancel()
        for future in futures:
            if not future.cancelled() and future.exception() is not None:
                raise future.exception()  # type: ignore[misc]

    def _reconcile(self, obj: ObjectUpload) -> bool:
        """Match the persisted parts with what S3 holds for the upload; False if the upload is gone.

        A part counts only if S3 has it at the right size with the same checksum (or, when the store
        does not report part checksums, the same ETag); a part S3 holds that was never recorded (the
        answer was lost) counts if it matches the local bytes. Everything else is sent again.
        """
        assert obj.upload_id is not None
        try:
            remote = self._list_parts(obj)
        except ClientError as exc:
            if error_code(exc) == "NoSuchUpload":
                return False
            raise
        confirmed: dict[int, PartRecord] = {}
        for number in range(1, obj.part_count + 1):
            have = remote.get(number)
            offset, length = obj.part_range(number)
            if have is None or int(have["Size"]) != length:
                continue
            their_sum, their_etag = have.get("ChecksumSHA256"), have["ETag"]
            mine = obj.parts.get(number)
            if mine is not None and _same_part(their_sum, their_etag, mine.checksum_sha256, mine.etag):
                confirmed[number] = mine
                continue
            data = read_range(obj.path, offset, length)
            local_sum = b64(hashlib.sha256(data).digest())
            local_md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
            if _same_part(their_sum, their_etag, local_sum, local_md5):
                confirmed[number] = PartRecord(number=number, size=length, etag=their_etag, checksum_sha256=local_sum)
        obj.parts = confirmed
        self.save()
        log.info("multipart upload resumed", bucket=self.bucket, key=obj.key, upload_id=obj.upload_id,
                 confirmed=len(confirmed), total=obj.part_count)
        return True

    def _list_parts(self, obj: ObjectUpload) -> dict[int, dict[str, Any]]:
        parts: dict[int, dict[str, Any]] = {}
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key, "UploadId": obj.upload_id}
        while True:
            page = self.client.list_parts(**kwargs)
            for part in page.get("Parts", []):
                parts[int(part["PartNumber"])] = part
            if not page.get("IsTruncated"):
                return parts
            kwargs["PartNumberMarker"] = page["NextPartNumberMarker"]

    def _already_complete(self, obj: ObjectUpload) -> bool:
        """After NoSuchUpload: did our complete call succeed with its answer lost? Compare the object."""
        assert obj.part_size is not None
        digests = [read_range_digest(obj, n) for n in range(1, obj.part_count + 1)]
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=obj.key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        if int(head["ContentLength"]) != obj.size:
            return False
        reported = head.get("ChecksumSHA256")
        if reported is None:
            return False  # cannot tell it is ours: upload again
        return same_checksum(reported, composite(digests), obj.part_count)

    def _sweep_older_uploads(self, obj: ObjectUpload) -> None:
        """Abort earlier unfinished uploads of this same key (a crash between create and the state save)."""
        try:
            page = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=obj.key)
        except ClientError:
            return
        for upload in page.get("Uploads", []):
            if upload["Key"] == obj.key and upload["UploadId"] != obj.upload_id:
                with_suppressed_client_error(
                    self.client.abort_multipart_upload,
                    Bucket=self.bucket, Key=obj.key, UploadId=upload["UploadId"],
                )
                log.info("orphan multipart upload aborted", key=obj.key, upload_id=upload["UploadId"])

    # -- checks ----------------------------------------------------------------------------------

    def _verify(
        self, obj: ObjectUpload, *, expected_sha256: str, parts: int | None, expected_etag: str | None
    ) -> None:
        head = self.client.head_object(Bucket=self.bucket, Key=obj.key, ChecksumMode="ENABLED")
        where = f"s3://{self.bucket}/{obj.key}"
        size = int(head["ContentLength"])
        if size != obj.size:
            raise RecorderError(ErrorCode.UPLOAD_FAILED, f"{where} holds {size} bytes, the file has {obj.size}")
        reported = head.get("ChecksumSHA256")
        etag = str(head.get("ETag", "")).strip('"')
        if reported is not None:
            if not same_checksum(reported, expected_sha256, parts):
                raise RecorderError(
                    ErrorCode.UPLOAD_FAILED, f"{where} SHA-256 {reported} differs from the file's {expected_sha256}"
                )
        elif expected_etag is not None and etag != expected_etag:
            # stores without checksum support: the multipart ETag (MD5 of the part MD5s) must match
            raise RecorderError(ErrorCode.UPLOAD_FAILED, f"{where} ETag {etag} differs from {expected_etag}")
        if parts is not None and "-" in etag and etag.rsplit("-", 1)[1] != str(parts):
            raise RecorderError(ErrorCode.UPLOAD_FAILED, f"{where} has ETag {etag}, expected {parts} parts")
        log.info("object confirmed", bucket=self.bucket, key=obj.key, bytes=size, parts=parts or 1)

    def _check_local(self, obj: ObjectUpload) -> None:
        try:
            size = obj.path.stat().st_size
        except FileNotFoundError:
            raise RecorderError(
                ErrorCode.UPLOAD_FAILED, f"{obj.path} is gone: nothing left to upload to s3://{self.bucket}/{obj.key}"
            ) from None
        if size != obj.size:
            raise RecorderError(
                ErrorCode.UPLOAD_FAILED,
                f"{obj.path} changed size ({obj.size} -> {size} bytes) while its upload was pending",
            )

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def _check_confirmed(self, obj: ObjectUpload) -> None:
        if self._confirm is not None and not self._confirm():
            log.warning("lease not confirmed; the object is not completed", bucket=self.bucket, key=obj.key)
            raise Unconfirmed(f"s3://{self.bucket}/{obj.key}")


def _same_part(their_sum: str | None, their_etag: str, my_sum: str, my_etag: str) -> bool:
    """Same bytes: by SHA-256 when the store reports part checksums, else by ETag."""
    if their_sum is not None:
        return their_sum == my_sum
    return their_etag.strip('"') == my_etag.strip('"')


def read_range_digest(obj: ObjectUpload, number: int) -> bytes:
    offset, length = obj.part_range(number)
    return hashlib.sha256(read_range(obj.path, offset, length)).digest()


def _multipart_etag(part_etags: list[str]) -> str | None:
    """The ETag S3 gives a multipart object (MD5 of the part MD5s, `-N`), when part ETags are MD5s."""
    raw: list[bytes] = []
    for etag in part_etags:
        value = etag.strip('"')
        if len(value) != 32:
            return None
        try:
            raw.append(bytes.fromhex(value))
        except ValueError:
            return None
    return f"{hashlib.md5(b''.join(raw), usedforsecurity=False).hexdigest()}-{len(raw)}"


def with_suppressed_client_error(call: Callable[..., Any], **kwargs: Any) -> None:
    try:
        call(**kwargs)
    except ClientError as exc:
        log.warning("ignored S3 error", error=str(exc))


class _Background:
    """Run one function in a thread and collect its result later (hashing overlaps the upload)."""

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(func, *args), daemon=True, name="sha256")
        self._thread.start()

    def _run(self, func: Callable[..., Any], *args: Any) -> None:
        try:
            self._result = func(*args)
        except BaseException as exc:  # handed to the caller in result()
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result
