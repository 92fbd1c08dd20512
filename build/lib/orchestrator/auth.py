"""Who a caller is and which recordings it may act on: the tenancy rule the service applies.

A caller is known by the name its token has in API_TOKENS (how a request proves that name is HTTP's
business: `orchestrator.api.bearer`). The name owns the recordings it creates and scopes its
idempotency keys, so two callers can neither see each other's recordings nor collide on a key. The
admin acts for everyone; so does the one caller of an API with no tokens (allowed on loopback only).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    name: str
    admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        """Callers see their own recordings; the admin sees all, including those from before owners existed."""
        return self.admin or (owner is not None and owner == self.name)
