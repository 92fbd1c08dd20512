"""Signed links for a browser: the replay page of one recording, or a caller's list page.

A browser cannot send a bearer token with a `<video>` request, and a token must never sit in a page. So
the API hands a caller a short-lived link instead (`/view/<id>?exp=<unix>&sig=<hex>`): an HMAC-SHA256 over
what it opens (the recording id, or the list), its owner and its expiry. Everything the page then fetches
carries the same `exp` and `sig`, and the `/view` routes accept nothing else. A signature for another
recording or owner, a changed expiry or a missing one is refused.

The key is ORCHESTRATOR_VIEW_SECRET; unset, a random key per process (links die with the process, and
replicas would refuse each other's links, so `orchestrator serve` requires it with a shared store).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

# Purposes a signature is made for: the same owner's list link never opens a recording, nor the reverse.
_RECORDING = "recording"
_LIST = "list"


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: datetime
    exp: int
    sig: str


class ViewSigner:
    def __init__(self, secret: str | None, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._key = secret.encode() if secret else secrets.token_bytes(32)
        self.ttl = ttl
        self.clock = clock

    def recording_link(self, recording_id: str, owner: str | None) -> SignedLink:
        """The replay page of `recording_id`, for a caller that may see it (the service checked that)."""
        return self._link(f"/view/{recording_id}", _RECORDING, recording_id, owner or "")

    def list_link(self, caller: str, admin: bool) -> SignedLink:
        """The list page of `caller`'s recordings (every caller's when `admin`)."""
        query = {"caller": caller, **({"admin": "1"} if admin else {})}
        return self._link("/view", _LIST, _list_subject(caller, admin), "", query)

    def recording_query(self, recording_id: str, owner: str | None) -> dict[str, str]:
        """`exp` and `sig` for a recording: the list page's rows carry them."""
        link = self.recording_link(recording_id, owner)
        return {"exp": str(link.exp), "sig": link.sig}

    def recording_valid(self, recording_id: str, owner: str | None, exp: str | None, sig: str | None) -> str | None:
        """Why a request for `recording_id` is refused, or None when its signature is valid and current."""
        return self._problem(_RECORDING, recording_id, owner or "", exp, sig)

    def list_valid(self, caller: str, admin: bool, exp: str | None, sig: str | None) -> str | None:
        return self._problem(_LIST, _list_subject(caller, admin), "", exp, sig)

    def _link(
        self, path: str, purpose: str, subject: str, owner: str, query: dict[str, str] | None = None
    ) -> SignedLink:
        exp = int(self.clock() + self.ttl)
        sig = self._sign(purpose, subject, owner, exp)
        url = f"{path}?{urlencode({**(query or {}), 'exp': exp, 'sig': sig})}"
        return SignedLink(url, datetime.fromtimestamp(exp, UTC), exp, sig)

    def _sign(self, purpose: str, subject: str, owner: str, exp: int) -> str:
        message = "\n".join((purpose, subject, owner, str(exp))).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _problem(self, purpose: str, subject: str, owner: str, exp: str | None, sig: str | None) -> str | None:
        if not exp or not sig:
            return "this link is not signed: ask the API for one (GET /v1/recordings/{id}/view or GET /v1/view)"
        if not (exp.isascii() and exp.isdigit() and len(exp) <= 12):
            return "this link's expiry is not a time: ask the API for a new link"
        expected = self._sign(purpose, subject, owner, int(exp))
        if not hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")):
            return "this link's signature is not valid for this page: ask the API for a new link"
        if int(exp) < self.clock():
            return "this link has expired: ask the API for a new one"
        return None


def _list_subject(caller: str, admin: bool) -> str:
    return f"{caller}\n{'admin' if admin else 'caller'}"
