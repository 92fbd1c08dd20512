"""Request bodies and query values into models, with errors that name the field and say what to fix."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from contract.fields import field_path
from orchestrator.errors import Detail, OrchestratorError

M = TypeVar("M", bound=BaseModel)
# Error types a model raises itself that keep their own code (see `bodies.http_url`).
_CUSTOM_CODES = ("invalid_url",)
# No request needs more; deeper JSON is refused before it can exhaust the parser's or validator's stack.
MAX_DEPTH = 32
# What reading any JSON body can answer (413 is aiohttp's, at the application's client_max_size).
BODY_ERRORS = ("invalid_json", "payload_too_large", "unsupported_media_type", "validation_error")


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
        return _validate(model, data, context)
    except ValidationError as exc:
        raise validation_failure(exc, model, data) from None


def _validate(model: type[M], data: dict[str, Any], context: dict[str, Any] | None) -> M:
    """Validate as the OpenAPI document (JSON Schema) reads the body: a field is the JSON type its schema
    names, so `"fps": "30"` or `"live_upload": 0` are refused rather than guessed at (pydantic's strict
    mode), and an integer may be written `1280.0`, a whole number being an integer in JSON Schema."""
    try:
        return model.model_validate(data, strict=True, context=context)
    except ValidationError as exc:
        if not _whole_numbers_to_integers(data, exc):
            raise
    return model.model_validate(data, strict=True, context=context)


def _whole_numbers_to_integers(data: dict[str, Any], exc: ValidationError) -> bool:
    """Rewrite in place each whole-valued float strict validation refused as an integer; True if any."""
    changed = False
    for error in exc.errors(include_url=False):
        value = error.get("input")
        if error["type"] != "int_type" or not isinstance(value, float) or not value.is_integer():
            continue
        holder, key = _locate(data, error["loc"])
        if holder is not None and isinstance(holder[key], float) and holder[key] == value:
            holder[key] = int(value)
            changed = True
    return changed


def _locate(data: Any, loc: tuple[int | str, ...]) -> tuple[Any, Any]:
    """The container and key of the value at `loc`; the names of union branches in `loc` are skipped."""
    holder: Any = None
    key: Any = None
    current = data
    for part in loc:
        if (isinstance(current, dict) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        ):
            holder, key, current = current, part, current[part]
    return holder, key


def validation_failure(exc: ValidationError, model: type[BaseModel], data: Any = None) -> OrchestratorError:
    details = []
    code = "validation_error"
    for error in exc.errors(include_url=False):
        field = field_path(data, error["loc"]) if data is not None else ".".join(map(str, error["loc"])) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = (
                f"unknown field; {model.__name__} accepts {', '.join(_field_names(model))}"
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


def _field_names(model: type[BaseModel]) -> list[str]:
    """The names a body spells its fields with (an alias where there is one)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 80


def query_value(request: web.Request, name: str) -> str | None:
    """A query parameter's text, None when it is absent. An empty value is not taken for an absent one
    (`?limit=` is no limit at all): it is refused, so what a request means is what the document says."""
    text = request.query.get(name)
    if text == "":
        raise OrchestratorError(
            "validation_error", f"{name} is empty; give it a value or leave it out", [Detail(name, "empty")]
        )
    return text


def query_int(request: web.Request, name: str, default: int) -> int:
    text = query_value(request, name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise OrchestratorError(
            "validation_error", f"{name} must be an integer, got {text!r}", [Detail(name, "not an integer")]
        ) from None


def query_bool(request: web.Request, name: str, default: bool) -> bool:
    text = query_value(request, name)
    if text is None:
        return default
    value = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(text.lower())
    if value is None:
        raise OrchestratorError(
            "validation_error", f"{name} must be true or false, got {text!r}", [Detail(name, "not a boolean")]
        )
    return value
