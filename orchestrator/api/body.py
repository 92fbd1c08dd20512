"""Request bodies and query values into models, with errors that name the field and say what to fix."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from orchestrator.errors import Detail, OrchestratorError

M = TypeVar("M", bound=BaseModel)
_CUSTOM_CODES = ("invalid_url",)


async def parse_body(request: web.Request, model: type[M], context: dict[str, Any] | None = None) -> M:
    raw = await request.read()
    if not raw.strip():
        raise OrchestratorError("invalid_json", f"the request body is empty; send a JSON {model.__name__} object")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise OrchestratorError("invalid_json", "the request body is not UTF-8 text; send JSON") from None
    except json.JSONDecodeError as exc:
        raise OrchestratorError(
            "invalid_json",
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    if not isinstance(data, dict):
        raise OrchestratorError(
            "validation_error",
            f"the request body must be a JSON object ({model.__name__}), not {type(data).__name__}",
            [Detail("body", "must be an object")],
        )
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
