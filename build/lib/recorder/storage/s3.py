"""The S3 client and how the recorder judges what S3 answers.

Only plain S3 over HTTP(S) through boto3 with an explicit `endpoint_url`, so AWS S3, MinIO, Ceph RGW and
other S3-compatible stores all work. Transient trouble (connection refused or reset, timeouts, 5xx,
throttling) is retried by botocore's own retry modes; what is still failing after that is *transient* and
the upload is kept pending. Wrong credentials, a missing bucket or a denial are *denied*: they will not get
better by retrying, so they fail at once with a message naming the bucket and the cause.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)

from contract.errors import ErrorCode, RecorderError
from recorder.config import RecorderSettings, TransferOptions


def make_client(settings: RecorderSettings, options: TransferOptions) -> Any:
    """A thread-safe S3 client with botocore retries; its own session, as sessions are not thread-safe."""
    session = boto3.session.Session()
    config = Config(
        retries={"mode": options.retry_mode, "max_attempts": options.max_attempts},
        connect_timeout=options.connect_timeout,
        read_timeout=options.read_timeout,
        max_pool_connections=max(10, options.max_concurrency + 2),
        s3={"addressing_style": options.addressing_style},
        # We send our own SHA-256 checksums; do not add a second (CRC32) one on top.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return session.client("s3", endpoint_url=settings.s3_endpoint_url or None, config=config)


class Verdict(StrEnum):
    DENIED = "denied"  # will not get better by retrying: fail now
    TRANSIENT = "transient"  # S3 unreachable or failing beyond the retries: keep pending, resume later
    FAILED = "failed"  # anything else S3 refused: fail, keep the local files


_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
        "NoSuchBucket",
        "InvalidBucketName",
        "AuthorizationHeaderMalformed",
        "PermanentRedirect",
        "InvalidObjectState",
        "KMS.AccessDeniedException",
    }
)
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "ServiceUnavailable",
        "InternalError",
        "BadDigest",  # bytes damaged on the way: sending the part again is the cure
        "XAmzContentSHA256Mismatch",
    }
)


_NOT_CONFIGURED = (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, NoRegionError)


def error_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return type(exc).__name__


def classify(exc: BaseException) -> Verdict:
    if isinstance(exc, _NOT_CONFIGURED):
        return Verdict.DENIED
    if isinstance(exc, ParamValidationError):
        return Verdict.FAILED
    if isinstance(exc, ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code in _DENIED_CODES or status in (401, 403):
            return Verdict.DENIED
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return Verdict.TRANSIENT
        return Verdict.FAILED
    if isinstance(exc, BotoCoreError | OSError):
        # connection refused/reset, timeouts, a damaged response: the network or the server, not us
        return Verdict.TRANSIENT
    return Verdict.FAILED


def describe(exc: BaseException) -> str:
    """One line a person can act on: the S3 error code and message, or the connection failure."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = err.get("Message") or "no message"
        return f"{err.get('Code') or status} ({message})"
    return f"{type(exc).__name__}: {exc}"


def _hint(code: str) -> str:
    if code in ("NoSuchBucket", "404"):
        return "create the bucket or fix S3_BUCKET"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"):
        return "fix the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profile or role)"
    if code in ("AuthorizationHeaderMalformed", "PermanentRedirect", "NoRegionError"):
        return "fix the region (AWS_DEFAULT_REGION) or S3_ENDPOINT_URL"
    return "grant s3:PutObject, s3:GetObject and the multipart actions on the bucket to these credentials"


def denied_error(exc: BaseException, bucket: str, endpoint: str | None) -> RecorderError:
    where = f" at {endpoint}" if endpoint else ""
    return RecorderError(
        ErrorCode.UPLOAD_DENIED,
        f"S3 bucket {bucket!r}{where} refused the upload: {describe(exc)}; {_hint(error_code(exc))}",
    )


def failed_error(exc: BaseException, bucket: str, key: str) -> RecorderError:
    return RecorderError(ErrorCode.UPLOAD_FAILED, f"upload of s3://{bucket}/{key} failed: {describe(exc)}")
