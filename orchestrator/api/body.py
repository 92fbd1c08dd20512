"""Request bodies and query values into models, with errors that name the field and say what to fix."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from orchestrator.errors import Detail, OrchestratorError

M = TypeVar("M", bound=BaseModel)
_CUSTOM_CODES = ("invalid_url",)
# No request needs more; deeper JSON is refused before it can exhaust the parser's or validator's stack.
MAX_DEPTH = 32


def _json_content_type(request: web.Request) -> None:
    """Bodies are JSON: a request that says otherwise (a form, text) is refused rather than guessed at.
    A request without a Content-Type is read as JSON."""
    if "Content-Type" not in request.headers:
        return
    kind = request.content_type.lower()
    if kind != "application/json" and not (kind.startswith("application/") and kind.endswith("+json")):
        raise OrchestratorError(
            "unsupported_media_type",
            f"Content-Type {request.headers['Content-Type']!r} is not JSON; send the body as application/json",
        )


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _too_deep() -> OrchestratorError:
    message = f"the request body nests objects or arrays more than {MAX_DEPTH} levels deep; flatten it"
    return OrchestratorError("validation_error", message, [Detail("body", message)])


async def parse_body(request: web.Request, model: type[M], context: dict[str, Any] | None = None) -> M:
    _json_content_type(request)
    raw = await request.read()
    if not raw.strip():
        raise OrchestratorError("invalid_json", f"the request body is empty; send a JSON {model.__name__} object")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep() from None
    except UnicodeDecodeError:
        raise OrchestratorError("invalid_json", "the request body is not UTF-8 text; send JSON") from None
    except json.JSONDecodeError as exc:
        raise OrchestratorError(
            "invalid_json",
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except ValueError:
        # Python refuses to convert integers of more than 4300 digits (a denial-of-service guard).
        raise OrchestratorError(
            "invalid_json", "the request body has a number too long to read; no field needs one that long"
        ) from None
    if not isinstance(data, dict):
        raise OrchestratorError(
            "validation_error",
            f"the request body must be a JSON object ({model.__name__}), not {type(data).__name__}",
            [Detail("body", "must be an object")],
        )
    if _depth(data) > MAX_DEPTH:
        raise _too_deep()
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise validation_failure(exc, model) from None


def validation_failure(exc: ValidationError, model: type[BaseModel]) -> OrchestratorError:
    details = []
    code = "validation_error"
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = (
                f"unknown field; {model.__name__} accepts {', '.join(model.model_fields)}"
                if len(error["loc"]) == 1
                else "unknown field"
            )
        elif error["type"] in _CUSTOM_CODES:
            code = error["type"]
        elif error["type"] not in ("missing",) and _is_scalar(error.get("input")):
            message = f"{message} (got {error['input']!r})"
        details.append(Detail(field, message))
    summary = "; ".join(f"{d.field}: {d.message}" for d in details[:3])
    if len(details) > 3:
        summary += f"; and {len(details) - 3} more (see details)"
    return OrchestratorError(code, summary, details)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 80


def query_int(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise OrchestratorError(
            "validation_error", f"{name} must be an integer, got {text!r}", [Detail(name, "not an integer")]
        ) from None


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    text = request.query.get(name)
    if text is None or text == "":
        return default
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise OrchestratorError(
            "validation_error", f"{name} must be true or false, got {text!r}", [Detail(name, "not a boolean")]
        )
    return value
