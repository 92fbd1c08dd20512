"""One URL, parsed the way Chromium parses it (the WHATWG URL standard, through ada).

Python's `urlsplit` and the browser disagree on inputs like `http://127.0.0.1:80\\@8.8.8.8/` (the
browser's host is 127.0.0.1, urlsplit's is 8.8.8.8) or `http://0x7f.1/` (the browser's host is
127.0.0.1). Every URL is therefore canonicalised here, checked in its canonical form, and stored and
leased in that same form: the host a policy judges is the host the browser contacts.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import ada_url

MAX_URL_LENGTH = 8 * 1024
_SCHEMES = ("http:", "https:")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class UrlRejected(ValueError):
    """The URL cannot be recorded as given; the message says what to change."""


@dataclass(frozen=True)
class CanonicalUrl:
    href: str  # what is stored, leased and loaded
    scheme: str  # "http" or "https"
    host: str  # as the browser will contact it: lower-case, punycode, IP literals normalised, no brackets
    port: int

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None


def canonical_url(text: str, field: str = "url") -> CanonicalUrl:
    """Canonicalise an http(s) URL or raise UrlRejected naming `field` and the problem.

    Control characters and whitespace anywhere are refused rather than silently dropped: the WHATWG
    parser removes tabs and newlines, so `http://127.0.0.1\\t.example/` would otherwise mean something
    other than what a reader of the request sees.
    """
    if not isinstance(text, str) or not text:
        raise UrlRejected(f"{field} is empty; send an absolute http(s) URL")
    if len(text) > MAX_URL_LENGTH:
        raise UrlRejected(f"{field} is {len(text)} characters long; the limit is {MAX_URL_LENGTH}")
    bad = next((c for c in text if c.isspace() or ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0), None)
    if bad is not None:
        raise UrlRejected(
            f"{field} contains the control or whitespace character U+{ord(bad):04X}; percent-encode it or remove it"
        )
    try:
        parsed = ada_url.URL(text)
    except ValueError:
        raise UrlRejected(f"{field} {_show(text)} is not a valid URL by the WHATWG URL standard browsers use") from None
    if parsed.protocol not in _SCHEMES:
        raise UrlRejected(f"{field} {_show(text)}: only http and https URLs are accepted")
    host = parsed.hostname.removeprefix("[").removesuffix("]")
    if not host:
        raise UrlRejected(f"{field} {_show(text)} has no host")
    scheme = parsed.protocol.rstrip(":")
    port = int(parsed.port) if parsed.port else _DEFAULT_PORTS[scheme]
    href = parsed.href
    if len(href) > MAX_URL_LENGTH:
        raise UrlRejected(f"{field} is {len(href)} characters long once canonical; the limit is {MAX_URL_LENGTH}")
    return CanonicalUrl(href=href, scheme=scheme, host=host, port=port)


def _show(text: str) -> str:
    return repr(text if len(text) <= 120 else text[:117] + "...")
