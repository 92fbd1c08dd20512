"""Schemathesis against a real orchestrator on a local port, as a caller (tenant token) and as the
admin: every answer must have a documented status, content type, headers and body, no request may end
in a server error, and the API must refuse what its document says is invalid.

The document the cases are generated from is built from the API's route table when this module loads
(schemathesis parametrizes tests when they are collected, before any server runs); the first test
checks that the server answers `/openapi.json` with exactly that document. The orchestrator runs in its
own thread and event loop, since the fuzzer's HTTP client is synchronous. Its URL policy resolves names
offline: `*.example.com` (the document's own example URL) to a public address, every other name not at
all, so generated URLs never wait on DNS. Webhook events stay in the outbox unsent (the delivery loop never
starts): nothing leaves the machine.
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pytest
import schemathesis
from aiohttp import web
from pydantic import TypeAdapter
from schemathesis.config import SchemathesisConfig

from contract.protocol import LeaseRequest
from orchestrator.api.app import ROUTES
from orchestrator.api.openapi import openapi_document
from orchestrator.app import Orchestrator
from tests.support.net import free_port
from tests.support.orchestrator import API_TOKEN, WORKER_TOKEN, orchestrator_settings

ADMIN_TOKEN = "test-admin-token"
PUBLIC_ADDRESS = "93.184.215.14"
# Enough to reach every documented status of every route in a few seconds; the coverage phase adds
# its boundary and missing-parameter cases on top.
MAX_EXAMPLES = 40
# A lease request waits for work up to `wait` seconds; the fuzzer needs answers, not long polls.
SHORT_POLL = 0.05
_LEASE_WAIT = TypeAdapter(Annotated[float, *LeaseRequest.model_fields["wait"].metadata])

# Refusals of schema-valid requests that no schema can foresee, by operation.
RUNTIME_REFUSALS = {
    # The URL policy resolves hosts, the server has its own duration limit and bucket allowlist, and
    # width and height must be even: valid JSON for the schema, 422 for the server.
    "POST /v1/recordings": ["422"],
    # A cursor is valid only as the API issued it.
    "GET /v1/recordings": ["422"],
    # Lease ids are the server's: any other is gone (410); a report must name the leased location (422).
    "POST /v1/worker/heartbeat": ["410"],
    "POST /v1/worker/report": ["410", "422"],
}
# What schemathesis accepts for a valid request anyway: success, and refusals no schema can foresee
# (no such token, no such id, a state that forbids it).
_ACCEPTED = ["2xx", "3xx", "401", "404", "409"]


async def _offline_resolve(host: str) -> list[str]:
    if host == "example.com" or host.endswith(".example.com"):
        return [PUBLIC_ADDRESS]
    raise OSError(f"{host} is not resolved in this test")


@dataclass
class Served:
    base_url: str
    # The statuses each operation answered, by who asked.
    answers: dict[str, dict[str, set[int]]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(set)))


async def _not_delivering() -> None:
    """The delivery loop's start, for a fuzzed orchestrator: events stay in the outbox, unsent."""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="fuzzed-orchestrator", daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        orchestrator = Orchestrator(orchestrator_settings(tmp, api_admin_token=ADMIN_TOKEN), resolve=_offline_resolve)
        orchestrator.webhooks.start = _not_delivering  # type: ignore[method-assign]
        runner = web.AppRunner(orchestrator.web_app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=30)
    try:
        yield served
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def _config(api_token: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "auth": {"openapi": {"bearerApi": {"bearer": api_token}, "bearerWorker": {"bearer": WORKER_TOKEN}}},
            "generation": {"max-examples": MAX_EXAMPLES},
            "operations": [
                {
                    "include-name": name,
                    "checks": {"positive_data_acceptance": {"expected-statuses": [*_ACCEPTED, *extra]}},
                }
                for name, extra in RUNTIME_REFUSALS.items()
            ],
        }
    )


def _document() -> dict[str, Any]:
    app = web.Application()
    for table in ROUTES:
        app.add_routes(table)
    return json.loads(json.dumps(openapi_document(app.router)))


DOCUMENT = _document()
as_caller = schemathesis.openapi.from_dict(DOCUMENT, config=_config(API_TOKEN))
as_admin = schemathesis.openapi.from_dict(DOCUMENT, config=_config(ADMIN_TOKEN))


def _short_polls(case: schemathesis.Case) -> None:
    """Shorten a lease request's `wait`, given or left to its default; an invalid one stays, to be refused."""
    body = case.body
    if case.operation.path != "/v1/worker/lease" or not isinstance(body, dict):
        return
    try:
        wait = _LEASE_WAIT.validate_python(body.get("wait", SHORT_POLL), strict=True)
    except ValueError:
        return
    body["wait"] = min(wait, SHORT_POLL)


def test_the_server_serves_the_document_the_cases_come_from(served: Served) -> None:
    with urllib.request.urlopen(f"{served.base_url}/openapi.json", timeout=10) as response:
        assert json.load(response) == DOCUMENT


def test_an_undocumented_status_fails_the_checks(served: Served) -> None:
    """The checks can fail: a request answered with a status its document leaves out is a failure."""
    document = copy.deepcopy(DOCUMENT)
    del document["paths"]["/v1/recordings/{id}"]["delete"]["responses"]["422"]
    schema = schemathesis.openapi.from_dict(document, config=_config(API_TOKEN))
    case = schema["/v1/recordings/{id}"]["DELETE"].Case(
        path_parameters={"id": "rec_x"}, query={"keep": "maybe"}, headers={"Authorization": f"Bearer {API_TOKEN}"}
    )
    with pytest.raises(schemathesis.errors.FailureGroup, match="Undocumented status code"):
        case.call_and_validate(base_url=served.base_url)


def _fuzz(case: schemathesis.Case, served: Served, who: str) -> None:
    _short_polls(case)
    response = case.call_and_validate(base_url=served.base_url)
    served.answers[who][case.operation.label].add(response.status_code)


@as_caller.parametrize()
def test_as_a_caller(case: schemathesis.Case, served: Served) -> None:
    _fuzz(case, served, "caller")


@as_admin.parametrize()
def test_as_the_admin(case: schemathesis.Case, served: Served) -> None:
    _fuzz(case, served, "admin")


def test_the_fuzzer_got_past_the_token_check_everywhere(served: Served) -> None:
    """Each operation answered something other than 401 to each token: the cases reached the handlers."""
    if not served.answers:
        pytest.skip("runs after the fuzzing tests of this module")
    operations = {f"{method.upper()} {path}" for path, item in DOCUMENT["paths"].items() for method in item}
    for who in ("caller", "admin"):
        reached = {label for label, statuses in served.answers[who].items() if statuses - {401}}
        assert reached == operations, (who, sorted(operations - reached))
