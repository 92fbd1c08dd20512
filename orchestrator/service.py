"""What a caller can do to recordings: create, read, list, stop, cancel, pause, resume and purge, under
the state machine.

The worker's side of a recording (leases, heartbeats, reports, lapses) is the scheduler's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable

from contract.protocol import UploadTarget
from orchestrator.auth import Caller
from orchestrator.config import OrchestratorSettings
from orchestrator.errors import Conflict, Detail, NotFound, OrchestratorError
from orchestrator.events import EventBus
from orchestrator.join_limits import check_join
from orchestrator.lifecycle import Lifecycle
from orchestrator.purge import Purger
from orchestrator.request import CreateRecording
from orchestrator.states import ACTIVE, ENDED, TERMINAL, State
from orchestrator.store.base import IdempotencyConflict, NewRecording, RecordingStore
from orchestrator.store.row import Changes, RecordingRow
from orchestrator.url_policy import UrlDenied, UrlPolicy

MAX_PAGE = 200
MAX_IDEMPOTENCY_KEY = 255
# Store sequence numbers are SQLite integers: a cursor outside this range was not made by this API.
MAX_SEQ = 2**63 - 1


def new_recording_id() -> str:
    return f"rec_{uuid.uuid4().hex}"


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, _, seq = text.partition(":")
        if version != "v1" or not (seq.isascii() and seq.isdigit()) or len(seq) > 19:
            raise ValueError(version)
        value = int(seq)
        if not 1 <= value <= MAX_SEQ:
            raise ValueError(seq)
        return value
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise OrchestratorError(
            "validation_error",
            "cursor is not one this API returned: pass next_cursor from the previous page unchanged",
            [Detail("cursor", "not a cursor from this API")],
        ) from exc


def parse_statuses(text: str | None) -> list[State] | None:
    if not text:
        return None
    statuses = []
    for part in (p.strip() for p in text.split(",")):
        try:
            statuses.append(State(part))
        except ValueError:
            raise OrchestratorError(
                "validation_error",
                f"status {part!r} is not a state; use one or more of {', '.join(s.value for s in State)}",
                [Detail("status", f"unknown state {part!r}")],
            ) from None
    return statuses


class RecordingService:
    def __init__(
        self,
        store: RecordingStore,
        bus: EventBus,
        policy: UrlPolicy,
        settings: OrchestratorSettings,
        clock: Callable[[], float] = time.time,
        *,
        purger: Purger,
    ) -> None:
        self.store = store
        self.lifecycle = Lifecycle(store, bus)
        self.policy = policy
        self.settings = settings
        self.clock = clock
        self.purger = purger

    async def create(
        self, request: CreateRecording, idempotency_key: str | None, caller: Caller
    ) -> tuple[RecordingRow, bool]:
        """Queue a recording owned by `caller`; the same idempotency key with the same request returns the
        first one (keys are the caller's own: another caller's key never matches)."""
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise OrchestratorError(
                "validation_error",
                f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters",
                [Detail("Idempotency-Key", "bad length")],
            )
        check_join(
            request,
            max_waiting=self.settings.max_waiting,
            allow_evaluate=self.settings.actions_allow_evaluate,
        )
        for field, url in (("url", request.url), ("webhook_url", request.webhook_url)):
            if url is not None:
                try:
                    await self.policy.check(url, field)
                except UrlDenied as denied:
                    raise OrchestratorError(denied.code, denied.message, [Detail(field, denied.message)]) from None
        spec = request.to_spec(self.settings.effective_default_duration)
        upload = self._upload_target(request.upload)
        self._check_bucket(upload)
        normalized = request.model_dump(mode="json")
        now = self.clock()
        new = NewRecording(
            id=new_recording_id(),
            request=normalized,
            spec=spec.model_dump(mode="json"),
            upload=upload.model_dump(mode="json"),
            created_at=now,
            idempotency_key=f"{caller.name}:{idempotency_key}" if idempotency_key is not None else None,
            fingerprint=hashlib.sha256(json.dumps(normalized, sort_keys=True).encode()).hexdigest(),
            owner=caller.name,
        )
        try:
            row, created = await self.lifecycle.create(new)
        except IdempotencyConflict as conflict:
            if not caller.may_see(conflict.existing.owner):
                raise self._foreign_key(idempotency_key) from None
            raise Conflict(
                "idempotency_conflict",
                f"Idempotency-Key {idempotency_key!r} was used for recording {conflict.existing.id} with a"
                " different request; send the same request to get that recording, or use a new key",
            ) from None
        if not caller.may_see(row.owner):
            # A row from before callers had names whose key reads like `<caller>:<key>`: not this caller's.
            raise self._foreign_key(idempotency_key)
        return row, created

    @staticmethod
    def _foreign_key(idempotency_key: str | None) -> Conflict:
        return Conflict(
            "idempotency_conflict",
            f"Idempotency-Key {idempotency_key!r} is taken by a recording that is not yours; use a new key",
        )

    def _upload_target(self, asked: UploadTarget | None) -> UploadTarget:
        """Where the recording goes, decided here once and carried whole by the lease (a worker stores where
        its lease says). A request that names only a prefix still goes to the server's bucket, never to its
        local disk; a bucket named without a prefix gets the server's S3_PREFIX; a prefix given is kept."""
        server = UploadTarget(bucket=self.settings.s3_bucket, prefix=self.settings.s3_prefix)
        if asked is None:
            return server
        if asked.bucket is None:
            return UploadTarget(bucket=server.bucket, prefix=asked.prefix or server.prefix) if server.bucket else asked
        if "prefix" not in asked.model_fields_set:
            return UploadTarget(bucket=asked.bucket, prefix=server.prefix)
        return asked

    def _check_bucket(self, upload: UploadTarget) -> None:
        """Uploads go only to buckets the operator allowed: the orchestrator presigns media with its own
        credentials, so a caller may not point recordings at (or read back from) any other bucket."""
        if upload.bucket is None:
            return
        allowed = self.settings.allowed_buckets
        if upload.bucket not in allowed:
            message = (
                f"bucket {upload.bucket!r} is not one this server uploads to; allowed: {', '.join(allowed)}"
                if allowed
                else f"bucket {upload.bucket!r}: this server has no S3 bucket configured; omit upload.bucket"
            )
            message += " (S3_BUCKET_ALLOWLIST)"
            raise OrchestratorError("validation_error", f"upload.bucket: {message}", [Detail("upload.bucket", message)])

    async def get(self, recording_id: str, caller: Caller) -> RecordingRow:
        """The recording, if `caller` may see it; another caller's recording is answered exactly like a
        missing one, so ids cannot be probed."""
        row = await self.store.get(recording_id)
        if row is None or not caller.may_see(row.owner):
            raise NotFound(f"no recording {recording_id!r}; list them with GET /v1/recordings")
        return row

    async def list(
        self, statuses: list[State] | None, limit: int, cursor: str | None, caller: Caller
    ) -> tuple[list[RecordingRow], str | None]:
        if not 1 <= limit <= MAX_PAGE:
            raise OrchestratorError(
                "validation_error", f"limit must be 1 to {MAX_PAGE}", [Detail("limit", f"got {limit}")]
            )
        before = decode_cursor(cursor) if cursor else None
        owner = None if caller.admin else caller.name
        rows = await self.store.list(statuses, limit + 1, before, owner=owner)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, encode_cursor(rows[-1].seq) if more else None

    async def stop(self, recording_id: str, caller: Caller) -> RecordingRow:
        """Ask the worker to stop gracefully: the recording is finalized and uploaded as usual."""
        row = await self.get(recording_id, caller)
        if row.status is State.QUEUED:
            raise Conflict(
                "illegal_transition",
                f"recording {row.id} is queued, so nothing is being recorded yet; DELETE it to cancel it",
            )
        if row.status in TERMINAL:
            raise Conflict("illegal_transition", f"recording {row.id} is already {row.status}; it cannot be stopped")
        if row.requested_action is not None:
            return row
        updated = await self.store.update(row.id, Changes(requested_action="stop"), statuses=ACTIVE)
        return updated if updated is not None else await self.stop(recording_id, caller)

    async def cancel(self, recording_id: str, keep: bool, caller: Caller) -> RecordingRow:
        """A queued recording never starts; an active one is told to stop and its file is discarded unless
        `keep`. The recording ends `cancelled` either way."""
        row = await self.get(recording_id, caller)
        if row.status in TERMINAL:
            raise Conflict("illegal_transition", f"recording {row.id} is already {row.status}; it cannot be cancelled")
        changes = Changes(requested_action="cancel", keep_file=keep)
        if row.status is State.QUEUED:
            cancelled = await self.lifecycle.move(row, State.CANCELLED, at=self.clock(), changes=changes)
            if cancelled is not None:
                return cancelled
            return await self.cancel(recording_id, keep, caller)  # a worker took it meanwhile
        if row.requested_action == "cancel":
            return row
        updated = await self.store.update(row.id, changes, statuses=ACTIVE)
        return updated if updated is not None else await self.cancel(recording_id, keep, caller)

    async def purge(self, recording_id: str, caller: Caller) -> RecordingRow:
        """Delete an ended recording's files (local and S3) and keep its row as `purged`. A recording still
        queued or running is refused: the caller stops or cancels it first, so nothing writes while its
        files go. Purging a purged recording returns it unchanged."""
        row = await self.get(recording_id, caller)
        if row.status is State.PURGED:
            return row
        if row.status not in ENDED:
            raise Conflict(
                "illegal_transition",
                f"recording {row.id} is {row.status}, so it cannot be purged yet: stop it (POST"
                f" /v1/recordings/{row.id}/stop) or cancel it (DELETE /v1/recordings/{row.id}), then purge it"
                " once it is completed or cancelled",
            )
        purged = await self.purger.purge(row, "api")
        return purged if purged is not None else await self.purge(recording_id, caller)

    async def pause(self, recording_id: str, caller: Caller) -> RecordingRow:
        """Ask the worker to pause the capture (a private part of a meeting): nothing is recorded until
        resumed. Only a `recording` can pause; the worker does it at its next heartbeat."""
        return await self._set_pause(recording_id, caller, True)

    async def resume(self, recording_id: str, caller: Caller) -> RecordingRow:
        """Ask the worker to capture again after a pause."""
        return await self._set_pause(recording_id, caller, False)

    async def _set_pause(self, recording_id: str, caller: Caller, pause: bool) -> RecordingRow:
        row = await self.get(recording_id, caller)
        verb = "paused" if pause else "resumed"
        if row.status is not State.RECORDING:
            when = {
                State.QUEUED: "nothing is being recorded yet",
                State.STARTING: "the page is still opening",
                State.WAITING: "the page has not admitted the recorder yet, so nothing is being recorded",
            }.get(row.status, "capture is over" if row.status in TERMINAL else "capture has ended")
            raise Conflict(
                "illegal_transition",
                f"recording {row.id} is {row.status}: {when}; only a recording that is recording can be {verb}",
            )
        if row.requested_action is not None:
            raise Conflict(
                "illegal_transition",
                f"recording {row.id} is being asked to {row.requested_action}; it can no longer be {verb}",
            )
        if row.pause_requested == pause:
            other = "resume" if pause else "pause"
            state = "paused" if pause else "running (not paused)"
            raise Conflict(
                "illegal_transition",
                f"recording {row.id} is already {state}; POST /v1/recordings/{row.id}/{other} to {other} it",
            )
        updated = await self.store.update(row.id, Changes(pause_requested=pause), statuses=(State.RECORDING,))
        return updated if updated is not None else await self._set_pause(recording_id, caller, pause)
