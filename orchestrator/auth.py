"""Bearer tokens: one set for the public API, a separate one for workers.

Tokens are compared in constant time. A caller is identified by a short hash of its token (never the
token itself), which is what scopes idempotency keys: two callers cannot collide on the same key.
With no token configured the API is open; settings refuse that unless the server binds to loopback.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

ANONYMOUS = "anonymous"


class BearerAuth:
    def __init__(self, tokens: Iterable[str | None], realm: str, source: str) -> None:
        self._tokens = [t.encode() for t in tokens if t]
        self.realm = realm
        # Where valid tokens come from, for messages: "API_TOKENS".
        self.source = source

    @property
    def open(self) -> bool:
        return not self._tokens

    def identify(self, authorization: str | None) -> str | None:
        """The caller's identity for a valid `Authorization` header, or None when it is missing or wrong."""
        if self.open:
            return ANONYMOUS
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        candidate = token.strip().encode()
        # Check every token so the time taken does not say which one nearly matched.
        matched = [t for t in self._tokens if hmac.compare_digest(t, candidate)]
        return hashlib.sha256(matched[0]).hexdigest()[:16] if matched else None

    def problem(self, authorization: str | None) -> str:
        """Why a request was refused, for the 401 message."""
        if not authorization:
            return f"missing Authorization header: send 'Authorization: Bearer <token>' with a token from {self.source}"
        if not authorization.strip().lower().startswith("bearer "):
            return "Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'"
        return f"the bearer token is not a valid {self.realm} token (those are set in {self.source})"
