"""Bad requests, each answered with its status, a stable code and a message that says what to fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from contract.security import canonical_url
from tests.support.orchestrator import API_TOKEN, PUBLIC_URL, WORKER_TOKEN, RunningOrchestrator

DEFAULT = "default"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    status: int
    code: str
    json: Any = None
    data: str | None = None
    token: str | None = DEFAULT
    # Words the message must contain, so it names the problem.
    mentions: tuple[str, ...] = ()
    settings: dict[str, Any] = field(default_factory=dict)
    # Set up a recording first and put its id in place of {id}: "queued" or "completed".
    recording: str | None = None


def create(**fields: Any) -> dict[str, Any]:
    return {"url": PUBLIC_URL, **fields}


CASES = [
    Case("malformed json", "POST", "/v1/recordings", 400, "invalid_json", data='{"url": ', mentions=("JSON",)),
    Case("empty body", "POST", "/v1/recordings", 400, "invalid_json", data="", mentions=("empty",)),
    Case("array body", "POST", "/v1/recordings", 422, "validation_error", json=[PUBLIC_URL], mentions=("object",)),
    Case("missing url", "POST", "/v1/recordings", 422, "validation_error", json={"fps": 30}, mentions=("url",)),
    Case(
        "unknown field",
        "POST",
        "/v1/recordings",
        422,
        "validation_error",
        json=create(colour="red"),
        mentions=("colour", "unknown field"),
    ),
    Case(
        "unknown nested field",
        "POST",
        "/v1/recordings",
        422,
        "validation_error",
        json=create(wait_for={"kind": "load", "delay": 3}),
        mentions=("wait_for.delay",),
    ),
    Case("fps 0", "POST", "/v1/recordings", 422, "validation_error", json=create(fps=0), mentions=("fps", "0")),
    Case(
        "width 99999",
        "POST",
        "/v1/recordings",
        422,
        "validation_error",
        json=create(width=99999),
        mentions=("width", "3840", "99999"),
    ),
    Case("odd height", "POST", "/v1/recordings", 422, "validation_error", json=create(height=721), mentions=("even",)),
    Case(
        "fps as text",
        "POST",
        "/v1/recordings",
        422,
        "validation_error",
        json=create(fps="fast"),
        mentions=("fps",),
    ),
    Case(
        "max_duration above the server limit",
        "POST",
        "/v1/recordings",
        422,
        "validation_error",
        json=create(max_duration=7201),
        mentions=("max_duration", "7200"),
        settings={"max_duration": 7200},
    ),
    Case(
        "selector without css",
        "POST",
        "/v1/recordings",
        422,
        "validation_error",
        json=create(wait_for={"kind": "selector"}),
        mentions=("selector",),
    ),
    Case(
        "ftp url",
        "POST",
        "/v1/recordings",
        422,
        "invalid_url",
        json=create(url="ftp://example.com/file"),
        mentions=("http and https",),
    ),
    Case(
        "url without host",
        "POST",
        "/v1/recordings",
        422,
        "invalid_url",
        json=create(url="http://"),
        mentions=("not a valid URL",),
    ),
    Case(
        "loopback address",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://127.0.0.1/"),
        mentions=("127.0.0.1", "loopback", "URL_ALLOWLIST"),
    ),
    Case(
        "private address",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://10.0.0.1/"),
        mentions=("10.0.0.1", "private"),
    ),
    Case(
        "cloud metadata address",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://169.254.169.254/latest/meta-data/"),
        mentions=("169.254.169.254", "metadata"),
    ),
    Case(
        "ipv6 metadata address",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://[fd00:ec2::254]/"),
        mentions=("fd00:ec2::254", "metadata"),
    ),
    Case(
        "loopback hidden in ipv6",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://[::ffff:127.0.0.1]/"),
        mentions=("loopback",),
    ),
    Case(
        "hostname resolving to loopback",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://localhost:8080/room"),
        mentions=("localhost", "resolves to", "loopback"),
    ),
    Case(
        "webhook to a private address",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(webhook_url="http://192.168.1.10/hook"),
        mentions=("webhook_url", "192.168.1.10"),
    ),
    Case(
        "allow-list by network does not open other networks",
        "POST",
        "/v1/recordings",
        422,
        "url_not_allowed",
        json=create(url="http://10.0.0.1/"),
        settings={"url_allowlist": ["192.168.0.0/16"]},
    ),
    Case(
        "unresolvable host",
        "POST",
        "/v1/recordings",
        422,
        "url_unresolvable",
        json=create(url="http://no-such-host.invalid/"),
        mentions=("no-such-host.invalid",),
    ),
    Case("no token", "POST", "/v1/recordings", 401, "unauthorized", json=create(), token=None, mentions=("Bearer",)),
    Case("wrong token", "GET", "/v1/recordings", 401, "unauthorized", token="guess", mentions=("not a valid",)),
    Case("worker token on the public api", "GET", "/v1/recordings", 401, "unauthorized", token=WORKER_TOKEN),
    Case(
        "api token on the worker protocol",
        "POST",
        "/v1/worker/lease",
        401,
        "unauthorized",
        json={"worker_id": "w", "wait": 0},
        token=API_TOKEN,
    ),
    Case("unknown id", "GET", "/v1/recordings/rec_nope", 404, "not_found", mentions=("rec_nope",)),
    Case("stop unknown id", "POST", "/v1/recordings/rec_nope/stop", 404, "not_found"),
    Case(
        "stop of a completed recording",
        "POST",
        "/v1/recordings/{id}/stop",
        409,
        "illegal_transition",
        recording="completed",
        mentions=("completed",),
    ),
    Case(
        "cancel of a completed recording",
        "DELETE",
        "/v1/recordings/{id}",
        409,
        "illegal_transition",
        recording="completed",
    ),
    Case(
        "stop of a queued recording",
        "POST",
        "/v1/recordings/{id}/stop",
        409,
        "illegal_transition",
        recording="queued",
        mentions=("DELETE",),
    ),
    Case(
        "keep is not a boolean",
        "DELETE",
        "/v1/recordings/{id}?keep=maybe",
        422,
        "validation_error",
        recording="queued",
        mentions=("keep",),
    ),
    Case("limit 0", "GET", "/v1/recordings?limit=0", 422, "validation_error", mentions=("limit",)),
    Case("limit not a number", "GET", "/v1/recordings?limit=ten", 422, "validation_error", mentions=("limit",)),
    Case("forged cursor", "GET", "/v1/recordings?cursor=bm9wZQ", 422, "validation_error", mentions=("cursor",)),
    Case("unknown status", "GET", "/v1/recordings?status=done", 422, "validation_error", mentions=("done",)),
    Case("unknown route", "GET", "/v1/nothing-here", 404, "not_found", mentions=("/openapi.json",)),
    Case("wrong method", "PUT", "/v1/recordings", 405, "method_not_allowed"),
    Case(
        "heartbeat on a lease never granted",
        "POST",
        "/v1/worker/heartbeat",
        410,
        "lease_gone",
        json={"lease_id": "lease_x", "worker_id": "w", "state": "recording"},
        token=WORKER_TOKEN,
    ),
    Case(
        "heartbeat with a bad state",
        "POST",
        "/v1/worker/heartbeat",
        422,
        "validation_error",
        json={"lease_id": "lease_x", "worker_id": "w", "state": "dancing"},
        token=WORKER_TOKEN,
        mentions=("state",),
    ),
]


async def _recording(o: RunningOrchestrator, kind: str) -> str:
    rid = (await o.api.create()).body["id"]
    if kind == "completed":
        worker = o.worker("setup")
        lease = (await worker.lease(wait=5)).body
        assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    return rid


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_request_gets_its_status_and_code(start_orchestrator, case: Case):
    o = await start_orchestrator(**case.settings)
    path = case.path
    if case.recording:
        path = path.replace("{id}", await _recording(o, case.recording))
    kwargs: dict[str, Any] = {"token": case.token} if case.token != DEFAULT else {}
    if case.data is not None:
        kwargs["data"] = case.data
        kwargs["headers"] = {"Content-Type": "application/json"}
    r = await o.api.request(case.method, path, json=case.json, **kwargs)

    assert r.status == case.status, r.body
    assert r.headers["Content-Type"].startswith("application/json")
    error = r.body["error"]
    assert error["code"] == case.code, error
    assert len(error["message"]) > 10
    for word in case.mentions:
        assert word in error["message"], (word, error["message"])
    if case.status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    if case.code == "validation_error" and case.json is not None:
        assert error["details"], "each offending field is listed"


async def test_every_validation_problem_is_listed(start_orchestrator):
    o = await start_orchestrator()
    r = await o.api.request("POST", "/v1/recordings", json=create(fps=0, width=99999, colour="red"))
    assert r.status == 422
    fields = {d["field"] for d in r.body["error"]["details"]}
    assert fields == {"fps", "width", "colour"}


@pytest.mark.parametrize(
    ("allowlist", "url"),
    [
        (["localhost"], "http://localhost:8080/room"),
        (["127.0.0.0/8", "::1"], "http://localhost:8080/room"),
        (["127.0.0.1"], "http://127.0.0.1:3000/"),
        (["10.0.0.0/8"], "http://10.1.2.3/"),
        (["*.internal.test", "localhost"], "http://LOCALHOST/"),
    ],
)
async def test_allow_list_opens_named_hosts_and_networks(start_orchestrator, allowlist, url):
    o = await start_orchestrator(url_allowlist=allowlist)
    r = await o.api.create(url)
    assert r.status == 202, r.body
    assert r.body["request"]["url"] == canonical_url(url).href  # stored in the form the browser loads


async def test_no_tokens_configured_means_an_open_api_on_loopback_only(start_orchestrator):
    from orchestrator.config import OrchestratorSettings

    o = await start_orchestrator(api_tokens=[])
    anonymous = o.client(None)
    assert (await anonymous.create()).status == 202
    with pytest.raises(ValueError, match="API_TOKENS"):
        OrchestratorSettings(host="0.0.0.0", api_tokens=[], worker_token="w")
