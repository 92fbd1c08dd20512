"""Bearer tokens: named ones for the public API (plus an optional admin token), a separate one for workers.

Tokens are compared in constant time. A caller is known by the name its token has in API_TOKENS; the
name owns the recordings it creates and scopes its idempotency keys, so two callers can neither see
each other's recordings nor collide on a key. The admin token acts for everyone. With no token
configured the API is open and its one caller is the admin; settings refuse that unless the server
binds to loopback.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.config import ADMIN, ANONYMOUS


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """Callers see their own recordings; the admin sees all, including those from before owners existed."""
        return self.admin or (owner is not None and owner == self.name)


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
