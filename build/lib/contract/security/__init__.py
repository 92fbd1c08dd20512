"""What a hostile page, caller or worker may not do: URL canonicalisation and the address policy.

Both halves (the orchestrator's API and the recorder's egress guard) use these, so what the API
accepted and what the browser is allowed to reach are decided by one piece of code.
"""

from contract.security.addresses import BLOCK_REASONS, AddressPolicy, address_class, describe_denial
from contract.security.urls import MAX_URL_LENGTH, CanonicalUrl, UrlRejected, canonical_url

__all__ = [
    "BLOCK_REASONS",
    "MAX_URL_LENGTH",
    "AddressPolicy",
    "CanonicalUrl",
    "UrlRejected",
    "address_class",
    "canonical_url",
    "describe_denial",
]
