"""The webhook delivery log of a recording, and redelivering one of its events.

Both are scoped like the recordings the events belong to: another caller's event answers exactly like a
missing one (404). An event lives as long as its recording's row: a purged recording (files deleted, row
kept) still shows and redelivers its events, whose payloads describe the recording as it was then; a
deleted recording (retention with RECORDS_RETENTION_DELETE_ROWS) took its events with it.
"""

from __future__ import annotations

from aiohttp import web

from orchestrator.api.context import CLIENT, CONTEXT
from orchestrator.api.responses import json_model
from orchestrator.api.routing import Reply, documented
from orchestrator.api.views import WebhookDelivery, WebhookDeliveryList, to_webhook_delivery
from orchestrator.errors import NotFound

routes = web.RouteTableDef()


@routes.get("/v1/recordings/{id}/webhooks")
@documented(
    "The recording's webhook events: each with its attempts (status code, latency) and its next retry",
    Reply(200, "the events, in the order they happened", WebhookDeliveryList),
    errors=("not_found",),
)
async def recording_webhooks(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    row = await ctx.service.get(request.match_info["id"], request[CLIENT])
    log = await ctx.store.deliveries(row.id)
    return json_model(WebhookDeliveryList(items=[to_webhook_delivery(event, attempts) for event, attempts in log]))


@routes.post("/v1/webhooks/{event_id}/redeliver")
@documented(
    "Send a webhook event again, now, whatever its status; it is retried up to the horizon from now",
    Reply(202, "the event's log entry, pending again", WebhookDelivery),
    errors=("not_found",),
)
async def redeliver_webhook(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    event_id = request.match_info["event_id"]
    missing = NotFound(
        f"no webhook event {event_id!r}; list a recording's events with GET /v1/recordings/{{id}}/webhooks"
    )
    delivery = await ctx.store.get_delivery(event_id)
    if delivery is None or not request[CLIENT].may_see(delivery.owner):
        raise missing
    if await ctx.store.get(delivery.recording_id) is None:
        raise missing  # its recording is gone: so is the event, for its caller
    now = ctx.service.clock()
    again = await ctx.store.redeliver(event_id, at=now, expires_at=now + ctx.settings.webhook_horizon)
    if again is None:
        raise missing
    attempts = next((a for event, a in await ctx.store.deliveries(again.recording_id) if event.id == event_id), [])
    return json_model(to_webhook_delivery(again, attempts), status=202)
