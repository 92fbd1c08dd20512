"""The aiohttp application: middlewares and routes, nothing else."""

from __future__ import annotations

from aiohttp import web

from orchestrator.api import ops, recordings, worker
from orchestrator.api.auth import auth_middleware
from orchestrator.api.context import CONTEXT, ApiContext
from orchestrator.api.errors import error_middleware
from orchestrator.demo import routes as demo_routes

MAX_BODY = 1024 * 1024


def create_api(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY)
    app[CONTEXT] = ctx
    for table in (recordings.routes, worker.routes, ops.routes, demo_routes):
        app.add_routes(table)
    return app
