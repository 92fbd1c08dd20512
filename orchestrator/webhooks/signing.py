"""Standard Webhooks signatures (https://www.standardwebhooks.com).

Every delivery carries

    webhook-id:         evt_<hex>      the event's id, the same on every attempt: receivers dedupe by it
    webhook-timestamp:  <unix seconds> the time of the attempt, so a receiver can refuse stale replays
    webhook-signature:  v1,<base64>    HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{body}")

The key is the secret's bytes: a secret written `whsec_<base64>` is base64-decoded, as the standard
says; any other string is used as its UTF-8 bytes (a receiver using the `standardwebhooks` library then
passes those bytes: `Webhook(secret.encode())`, since a `str` is always base64-decoded there). One rule,
whatever the string looks like: a base64 secret is written with its `whsec_` prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from orchestrator.config import WEBHOOK_SECRET_PREFIX, whsec_key

WEBHOOK_ID = "webhook-id"
WEBHOOK_TIMESTAMP = "webhook-timestamp"
WEBHOOK_SIGNATURE = "webhook-signature"
# How far a signature's timestamp may be from now before `verify` refuses it (the standard's default).
TOLERANCE = 300.0


def secret_key(secret: str) -> bytes:
    """The HMAC key of a configured secret (see the module docstring)."""
    return whsec_key(secret) if secret.startswith(WEBHOOK_SECRET_PREFIX) else secret.encode()


def signature(secret: str, event_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`."""
    content = f"{event_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str | None, event_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt; without a secret, no signature."""
    headers = {WEBHOOK_ID: event_id, WEBHOOK_TIMESTAMP: str(timestamp)}
    if secret:
        headers[WEBHOOK_SIGNATURE] = signature(secret, event_id, timestamp, body)
    return headers


def verify(secret: str, headers: Mapping[str, str], body: bytes, now: float | None = None) -> bool:
    """What a receiver does (the project's own tests and docs; receivers use the `standardwebhooks`
    package): recompute the signature and refuse timestamps more than TOLERANCE seconds away."""
    lowered = {name.lower(): value for name, value in headers.items()}
    event_id, stamp = lowered.get(WEBHOOK_ID), lowered.get(WEBHOOK_TIMESTAMP, "")
    if not event_id or not stamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(stamp)) > TOLERANCE:
        return False
    expected = signature(secret, event_id, int(stamp), body)
    offered = lowered.get(WEBHOOK_SIGNATURE, "").split(" ")
    return any(hmac.compare_digest(expected, candidate) for candidate in offered)
