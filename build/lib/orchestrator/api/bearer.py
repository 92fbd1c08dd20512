"""Bearer tokens: named ones for the public API (plus an optional admin token), a separate one for workers.

Workers use WORKER_TOKEN on /v1/worker/*, callers API_TOKENS on the rest of /v1/*. Health, readiness,
metrics and the OpenAPI document need no token (bind them to a private network). Tokens are compared
in constant time. A valid token names its `Caller` (see `orchestrator.auth` for
what a caller may see). With no token configured the API is open and its one caller is the admin;
settings refuse that unless the server binds to loopback.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Literal

from orchestrator.auth import Caller
from orchestrator.config import ADMIN, ANONYMOUS

Realm = Literal["api", "worker"]
WORKER_PREFIX = "/v1/worker/"


def realm_of(path: str) -> Realm | None:
    """Which token a path needs: the middleware enforces it and the OpenAPI document states it."""
    if not path.startswith("/v1/"):
        return None
    return "worker" if path.startswith(WORKER_PREFIX) else "api"


class BearerAuth:
    def __init__(self, tokens: Mapping[str, str], realm: str, source: str, admin_token: str | None = None) -> None:
        self._tokens = [(name, token.encode()) for name, token in tokens.items() if token]
        if admin_token:
            self._tokens.append((ADMIN, admin_token.encode()))
        self._admin = bool(admin_token)
        self.realm = realm
        # Where valid tokens come from, for messages: "API_TOKENS".
        self.source = source

    @property
    def open(self) -> bool:
        return not self._tokens

    def identify(self, authorization: str | None) -> Caller | None:
        """The caller for a valid `Authorization` header, or None when it is missing or wrong."""
        if self.open:
            return Caller(ANONYMOUS, admin=True)
        scheme, _, token = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        candidate = token.strip().encode()
        # Check every token so the time taken does not say which one nearly matched.
        matched = [name for name, t in self._tokens if hmac.compare_digest(t, candidate)]
        if not matched:
            return None
        return Caller(matched[0], admin=self._admin and matched[0] == ADMIN)

    def problem(self, authorization: str | None) -> str:
        """Why a request was refused, for the 401 message."""
        if not authorization:
            return f"missing Authorization header: send 'Authorization: Bearer <token>' with a token from {self.source}"
        if not authorization.strip().lower().startswith("bearer "):
            return "Authorization header must use the Bearer scheme: 'Authorization: Bearer <token>'"
        return f"the bearer token is not a valid {self.realm} token (those are set in {self.source})"
