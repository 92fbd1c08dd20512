"""The aiohttp application: middlewares, routes and the OpenAPI document generated from them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from orchestrator.api import deliveries, ops, recordings, worker
from orchestrator.api.bearer import BearerAuth
from orchestrator.api.context import CONTEXT, ApiContext
from orchestrator.api.middleware import auth_middleware, error_middleware
from orchestrator.api.openapi import OPENAPI, openapi_document
from orchestrator.demo import routes as demo_routes
from orchestrator.replay import routes as replay_routes

if TYPE_CHECKING:
    from orchestrator.app import Orchestrator

MAX_BODY = 1024 * 1024
# Every route the API serves; the OpenAPI document is generated from what these register.
ROUTES = (recordings.routes, deliveries.routes, worker.routes, ops.routes, demo_routes, replay_routes.routes)


def create_api(ctx: ApiContext) -> web.Application:
    app = web.Application(middlewares=[error_middleware, auth_middleware], client_max_size=MAX_BODY)
    app[CONTEXT] = ctx
    for table in ROUTES:
        app.add_routes(table)
    app[OPENAPI] = openapi_document(app.router)
    return app


def api_context(orchestrator: Orchestrator) -> ApiContext:
    """What the handlers may use of `orchestrator`, with the tokens its settings name."""
    s = orchestrator.settings
    return ApiContext(
        settings=s,
        service=orchestrator.service,
        scheduler=orchestrator.scheduler,
        registry=orchestrator.registry,
        store=orchestrator.store,
        metrics=orchestrator.metrics,
        media=orchestrator.media,
        render=orchestrator.render,
        api_auth=BearerAuth(s.callers, realm="api", source="API_TOKENS", admin_token=s.api_admin_token),
        worker_auth=BearerAuth(
            {"worker": s.worker_token} if s.worker_token else {}, realm="worker", source="WORKER_TOKEN"
        ),
        signer=orchestrator.signer,
        backend=orchestrator.backend,
    )


def create_app(orchestrator: Orchestrator) -> web.Application:
    """The API with `orchestrator`'s lifecycle attached to the application's startup and cleanup."""
    app = create_api(api_context(orchestrator))

    async def on_startup(_: web.Application) -> None:
        await orchestrator.start()

    async def on_shutdown(_: web.Application) -> None:
        await orchestrator.shutdown()

    async def on_cleanup(_: web.Application) -> None:
        await orchestrator.close()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app
