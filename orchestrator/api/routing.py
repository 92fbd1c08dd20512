"""What a route promises, declared next to its handler; the OpenAPI document reads it off the route table.

    @routes.get("/v1/recordings/{id}")
    @documented("One recording", Reply(200, "the recording", Recording), errors=("not_found",))
    async def get_recording(request): ...

Routes a browser opens with a signed link (the replay and list pages, `@browser_page`) are not part of
the API and stay out of its document.

A route states only what its handler adds: the token it needs (and so the 401) follows from its path
(`bearer.realm_of`), the errors of reading a JSON body from `body`, and each error code's status from
`responses.ERROR_STATUS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel

JSON = "application/json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class Reply:
    """A success (or redirect) answer; `model` is its JSON body, `media_type` None means no body (a tuple:
    one of several types, such as a recording's video or audio)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str | tuple[str, ...] | None = JSON
    headers: Mapping[str, str] = field(default_factory=dict)  # name: description


@dataclass(frozen=True)
class Param:
    """A query or header parameter: the handler reads it by `name` and falls back to `default` (None:
    absent); the document shows the JSON schema of `annotation`."""

    name: str
    annotation: Any
    description: str
    location: Literal["query", "header"] = "query"
    default: Any = None
    # A list sent as one comma-separated value (`?status=queued,starting`).
    comma_separated: bool = False


@dataclass(frozen=True)
class RouteDoc:
    summary: str
    replies: tuple[Reply, ...]
    body: type[BaseModel] | None = None
    params: tuple[Param, ...] = ()
    # Error codes the handler itself can answer (see `responses.ERROR_STATUS`).
    errors: tuple[str, ...] = ()


_ATTRIBUTE = "__route_doc__"


def documented(
    summary: str,
    *replies: Reply,
    body: type[BaseModel] | None = None,
    params: tuple[Param, ...] = (),
    errors: tuple[str, ...] = (),
) -> Callable[[H], H]:
    """Attach what the route promises to its handler (put it below the route decorator)."""
    doc = RouteDoc(summary, replies, body, params, errors)

    def attach(handler: H) -> H:
        setattr(handler, _ATTRIBUTE, doc)
        return handler

    return attach


def route_doc(handler: Any) -> RouteDoc | None:
    return getattr(handler, _ATTRIBUTE, None)


_PAGE = "__browser_page__"


def browser_page(handler: H) -> H:
    """Mark a route a browser opens with a signed link (`orchestrator/replay`): HTML and what that page
    fetches, no bearer token, not part of the API and so out of its document."""
    setattr(handler, _PAGE, True)
    return handler


def is_browser_page(handler: Any) -> bool:
    return bool(getattr(handler, _PAGE, False))
