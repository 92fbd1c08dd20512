"""The OpenAPI document and the route table describe the same API: every route the application
registers is documented under its own path and method, and nothing is documented that is not a route."""

from __future__ import annotations

from orchestrator.api.openapi import AUTOMATIC_METHODS, documented_routes
from orchestrator.api.responses import ERROR_STATUS
from tests.support.orchestrator import RunningOrchestrator

# Routes deliberately left out of the document, with why.
UNDOCUMENTED = {
    # The demo page is HTML for the recording browser to open (`orchestrator/demo`), not part of the API:
    # it takes no input and answers the same page (or the redirect to it) to everyone.
    ("GET", "/demo"): "the demo page's redirect",
    ("GET", "/demo/"): "the demo page",
}


async def _document(o: RunningOrchestrator) -> dict:
    r = await o.client(None).request("GET", "/openapi.json")
    assert r.status == 200
    return r.body


def _registered(o: RunningOrchestrator) -> set[tuple[str, str]]:
    return {(method, path) for method, path, _ in documented_routes(o.server.app.router)}


async def test_every_route_is_documented_and_every_documented_operation_is_a_route(start_orchestrator):
    o = await start_orchestrator()
    doc = await _document(o)
    documented = {(method.upper(), path) for path, item in doc["paths"].items() for method in item}

    registered = _registered(o)
    assert registered - documented == set(UNDOCUMENTED), "document the route next to its handler (@documented)"
    assert documented <= registered, f"documented but not routed: {sorted(documented - registered)}"


async def test_automatic_routes_are_the_only_ones_left_out_silently(start_orchestrator):
    o = await start_orchestrator()
    automatic = {route.method for route in o.server.app.router.routes()} - {m for m, _ in _registered(o)}
    assert automatic <= AUTOMATIC_METHODS  # HEAD for each GET: it answers as its GET does, without a body


async def test_error_responses_come_from_the_error_table(start_orchestrator):
    o = await start_orchestrator()
    doc = await _document(o)
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if "allOf" not in schema:
                    continue
                codes = schema["allOf"][1]["properties"]["error"]["properties"]["code"]["enum"]
                assert {ERROR_STATUS[code] for code in codes} == {int(status)}, (method, path, status)
            secured = "security" in operation
            assert secured == path.startswith("/v1/"), (method, path)
            assert ("401" in operation["responses"]) == secured, (method, path)


async def test_limits_in_the_document_are_the_enforced_ones(start_orchestrator):
    from contract.spec import MAX_HEIGHT, MAX_WIDTH
    from orchestrator.service import MAX_IDEMPOTENCY_KEY, MAX_PAGE

    o = await start_orchestrator()
    doc = await _document(o)
    create = doc["components"]["schemas"]["CreateRecording"]["properties"]
    assert (create["width"]["maximum"], create["height"]["maximum"]) == (MAX_WIDTH, MAX_HEIGHT)
    listing = {p["name"]: p for p in doc["paths"]["/v1/recordings"]["get"]["parameters"]}
    assert listing["limit"]["schema"]["maximum"] == MAX_PAGE
    assert listing["status"]["schema"]["items"] == {"$ref": "#/components/schemas/State"}
    header = doc["paths"]["/v1/recordings"]["post"]["parameters"][0]
    assert (header["name"], header["schema"]["maxLength"]) == ("Idempotency-Key", MAX_IDEMPOTENCY_KEY)
