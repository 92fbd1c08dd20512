"""JSON responses from models."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel


def json_model(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=model.model_dump_json(), content_type="application/json", headers=headers)
