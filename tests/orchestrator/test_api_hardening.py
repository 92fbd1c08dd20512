"""The API's edges: URLs read the way the browser reads them, and malformed input answered with a 4xx.

Every URL case is an attack that worked against a `urlsplit` check: the browser (WHATWG) contacts
loopback while Python's parser saw a public host, or a character the browser drops hid the real host.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from contract.security import MAX_URL_LENGTH
from orchestrator.cli import check_variables
from tests.support.orchestrator import PUBLIC_URL, RunningOrchestrator

PUBLIC_IP = "8.8.8.8"


@pytest.mark.parametrize(
    "url",
    [
        f"http://127.0.0.1:9\\@{PUBLIC_IP}/",  # urlsplit: host 8.8.8.8; the browser: 127.0.0.1
        "http://0x7f.1/",  # hex and short IPv4 forms
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
        "http:/\\127.0.0.1/",  # a backslash where the second slash belongs
        "http://127.0.0.1%2e/",  # an encoded dot
        f"http://{PUBLIC_IP}@127.0.0.1/",  # userinfo in front of the real host
        "http://127.1/",  # the short dotted form
        "http://[0:0:0:0:0:0:0:1]/",  # IPv6 loopback written out
    ],
)
async def test_parser_tricks_that_reach_loopback_are_refused_naming_the_class(start_orchestrator, url):
    o = await start_orchestrator(url_allowlist=[])
    r = await o.api.create(url)
    assert r.status == 422, (url, r.body)
    if r.body["error"]["code"] == "url_unresolvable":
        pytest.fail(f"{url} was not read as an address: {r.body}")
    assert r.body["error"]["code"] == "url_not_allowed", r.body
    assert "loopback" in r.body["error"]["message"]
    assert r.body["error"]["details"][0]["field"] == "url"
    assert (await o.api.request("GET", "/v1/recordings")).body["items"] == []


@pytest.mark.parametrize(
    "url", [f"http://{PUBLIC_IP}/a\tb", f"http://{PUBLIC_IP}/\nx", f"http://127.0.0.1 .{PUBLIC_IP}/"]
)
async def test_whitespace_and_control_characters_are_invalid(start_orchestrator, url):
    o = await start_orchestrator()
    r = await o.api.create(url)
    assert (r.status, r.body["error"]["code"]) == (422, "invalid_url"), r.body
    assert "U+00" in r.body["error"]["message"]


async def test_a_url_over_8_kib_is_invalid(start_orchestrator):
    o = await start_orchestrator()
    url = f"http://{PUBLIC_IP}/" + "a" * MAX_URL_LENGTH
    r = await o.api.create(url)
    assert (r.status, r.body["error"]["code"]) == (422, "invalid_url")
    assert str(MAX_URL_LENGTH) in r.body["error"]["message"]


async def test_the_canonical_form_is_stored_leased_and_fingerprinted(start_orchestrator):
    o = await start_orchestrator()
    raw = "HTTP://93.184.215.14:80/a/../room?x=1#frag"
    canonical = "http://93.184.215.14/room?x=1#frag"
    first = await o.api.create(raw, headers={"Idempotency-Key": "k1"})
    assert first.status == 202, first.body
    assert first.body["request"]["url"] == canonical
    # The same page written another way is the same request.
    again = await o.api.create(canonical, headers={"Idempotency-Key": "k1"})
    assert again.status == 202 and again.body["id"] == first.body["id"], again.body
    lease = (await o.worker("w1").lease(wait=5)).body
    assert lease["spec"]["url"] == canonical


async def test_webhook_urls_are_canonicalised_and_checked_too(start_orchestrator):
    o = await start_orchestrator()
    r = await o.api.create(webhook_url="http://0x7f.1/hook")
    assert (r.status, r.body["error"]["code"]) == (422, "url_not_allowed")
    assert r.body["error"]["details"][0]["field"] == "webhook_url"


# malformed bodies and queries


def _nested(depth: int) -> str:
    return '{"url": "' + PUBLIC_URL + '", "metadata": ' + '{"a":' * depth + "1" + "}" * depth + "}"


@pytest.mark.parametrize("depth", [40, 5000, 100_000])
async def test_deeply_nested_json_is_422_not_500(start_orchestrator, depth):
    o = await start_orchestrator()
    r = await o.api.request("POST", "/v1/recordings", data=_nested(depth), headers={"Content-Type": "application/json"})
    assert (r.status, r.body["error"]["code"]) == (422, "validation_error"), r.body
    assert "levels deep" in r.body["error"]["message"]
    shallow = await o.api.request(
        "POST", "/v1/recordings", data=_nested(3), headers={"Content-Type": "application/json"}
    )
    assert shallow.status == 202, shallow.body


@pytest.mark.parametrize("seq", ["99999999999999999999999", "-5", "0", "9223372036854775808", "1e3", " 7"])
async def test_out_of_range_cursors_are_422(start_orchestrator, seq):
    o = await start_orchestrator()
    await o.api.create()
    cursor = base64.urlsafe_b64encode(f"v1:{seq}".encode()).decode().rstrip("=")
    r = await o.api.request("GET", f"/v1/recordings?cursor={cursor}")
    assert (r.status, r.body["error"]["code"]) == (422, "validation_error"), r.body
    assert r.body["error"]["details"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/v1/recordings", "text/plain"),
        ("/v1/recordings", "application/x-www-form-urlencoded"),
        ("/v1/recordings", "multipart/form-data; boundary=x"),
        ("/v1/worker/lease", "text/plain"),
        ("/v1/worker/report", "application/xml"),
    ],
)
async def test_a_body_that_is_not_json_is_415(start_orchestrator, path, content_type):
    o = await start_orchestrator()
    client = o.worker("w1") if "/worker/" in path else o.api
    r = await client.request("POST", path, data='{"url": "x"}', headers={"Content-Type": content_type})
    assert (r.status, r.body["error"]["code"]) == (415, "unsupported_media_type"), r.body
    assert content_type.split(";")[0] in r.body["error"]["message"] and "application/json" in r.body["error"]["message"]


async def test_json_content_types_with_parameters_are_accepted(start_orchestrator):
    o = await start_orchestrator()
    body = '{"url": "' + PUBLIC_URL + '"}'
    for content_type in ("application/json; charset=utf-8", "application/merge-patch+json"):
        r = await o.api.request("POST", "/v1/recordings", data=body, headers={"Content-Type": content_type})
        assert r.status == 202, (content_type, r.body)


# media


async def _completed_local(o: RunningOrchestrator, content: bytes) -> str:
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    path = o.orchestrator.settings.records_dir / rid / f"attempt-{lease['attempt']}" / "rec.mp4"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    return rid


async def test_an_empty_suffix_range_is_416_and_media_is_nosniff(start_orchestrator):
    o = await start_orchestrator()
    content = os.urandom(1000)
    rid = await _completed_local(o, content)
    for header in ("bytes=-0", "bytes=-000", "BYTES=-0"):
        r = await o.api.request("GET", f"/v1/recordings/{rid}/media", headers={"Range": header})
        assert r.status == 416, (header, r.status)
        assert r.headers["Content-Range"] == f"bytes */{len(content)}"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
    ok = await o.api.request("GET", f"/v1/recordings/{rid}/media", headers={"Range": "bytes=-1"})
    assert (ok.status, ok.body) == (206, content[-1:])
    assert ok.headers["X-Content-Type-Options"] == "nosniff"


async def test_a_media_redirect_is_nosniff(start_orchestrator, s3):
    o = await start_orchestrator(s3_bucket=s3.bucket, s3_endpoint_url=s3.endpoint)
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    assert (await worker.report(lease["lease_id"], "completed", location=o.location(lease))).status == 200
    r = await o.api.request("GET", f"/v1/recordings/{rid}/media")
    assert r.status == 302
    assert r.headers["X-Content-Type-Options"] == "nosniff"


# metrics labels take no unbounded worker-supplied values


async def test_worker_supplied_codes_and_reasons_are_bounded_in_metrics(start_orchestrator):
    o = await start_orchestrator()
    rid = (await o.api.create()).body["id"]
    worker = o.worker("w-evil")
    lease = (await worker.lease(wait=5)).body
    r = await worker.report(
        lease["lease_id"],
        "failed",
        error={"code": "attacker-chosen-label-xyz", "message": "boom"},
        blocked={"loopback": 3, "cloud-metadata": 1, "made-up-reason-abc": 2, "private": -5, "shared": 10**12},
    )
    assert r.status == 200, r.body
    assert (await o.api.get(rid))["error"]["code"] == "attacker-chosen-label-xyz"
    text = (await o.api.request("GET", "/metrics")).body.decode()
    assert "attacker-chosen-label-xyz" not in text and "made-up-reason-abc" not in text
    assert 'orchestrator_failures_total{code="other",side="system"} 1.0' in text
    assert 'recorder_blocked_requests_total{reason="loopback"} 3.0' in text
    assert 'recorder_blocked_requests_total{reason="cloud-metadata"} 1.0' in text
    assert 'recorder_blocked_requests_total{reason="other"} 2.0' in text
    assert 'reason="private"' not in text and 'reason="shared"' not in text
    assert "w-evil" not in text


async def test_blocked_requests_are_counted_once_per_recording(start_orchestrator):
    o = await start_orchestrator(s3_bucket="farm")
    await o.api.create()
    worker = o.worker("w1")
    lease = (await worker.lease(wait=5)).body
    blocked = {"private": 4}
    pending = await worker.report(lease["lease_id"], "completed", upload_pending=True, blocked=blocked)
    assert pending.status == 200
    final = await worker.report(lease["lease_id"], "completed", location=o.location(lease), blocked=blocked)
    assert final.status == 200
    again = await worker.report(lease["lease_id"], "completed", location=o.location(lease), blocked=blocked)
    assert again.status == 200  # a retried report
    text = (await o.api.request("GET", "/metrics")).body.decode()
    assert 'recorder_blocked_requests_total{reason="private"} 4.0' in text


# environment typos stop the start


def _serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ORCHESTRATOR_", "POOL_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "serve", "--pool-backend", "none"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_misspelt_orchestrator_variable_stops_the_start_naming_the_nearest():
    done = _serve({"ORCHESTRATOR_PORTT": "1"})
    assert done.returncode == 2, done.stderr
    assert "ORCHESTRATOR_PORTT" in done.stderr and "did you mean ORCHESTRATOR_PORT?" in done.stderr


def test_a_misspelt_pool_variable_stops_the_start():
    done = _serve({"POOL_MAXX": "3"})
    assert done.returncode == 2, done.stderr
    assert "POOL_MAXX" in done.stderr and "POOL_MAX" in done.stderr


def test_known_names_and_other_prefixes_pass_the_check():
    known = {
        "ORCHESTRATOR_PORT": "1",
        "ORCHESTRATOR_STATE_DIR": "s",
        "ORCHESTRATOR_WEBHOOK_SECRETS": "a:b",
        "POOL_POD_TEMPLATE": "/x",  # the Kubernetes backend's
        "POOL_WATCH_TIMEOUT": "5",
        "ORCHESTRATOR_URL": "http://x",  # the worker's, often in the same environment
        "POD_NAME": "orchestrator-0",  # the downward API: not an owned prefix
        "API_TOKENS": "a:b",
        "WORKER_WHATEVER": "1",  # the worker's prefix, checked by the worker
    }
    assert check_variables(known) is None
    problem = check_variables({**known, "ORCHESTRATOR_WEBHOOK_SECRT": "x"})
    assert problem is not None and "ORCHESTRATOR_WEBHOOK_SECRET" in problem


async def test_an_allowlisted_port_opens_that_port_only() -> None:
    """`127.0.0.1:8080` opens the demo's port to recordings and webhooks, not the rest of loopback."""
    from orchestrator.url_policy import GuardedResolver, UrlDenied, UrlPolicy

    policy = UrlPolicy(["127.0.0.1:8080", "[::1]:8080"])
    assert await policy.check("http://127.0.0.1:8080/demo/") == ["127.0.0.1"]
    assert await policy.check("http://[::1]:8080/") == ["::1"]
    for url in ("http://127.0.0.1:8081/", "http://127.0.0.1/", "http://0x7f.1:22/", "http://[::1]:6379/"):
        with pytest.raises(UrlDenied) as denied:
            await policy.check(url)
        assert denied.value.code == "url_not_allowed" and "loopback" in denied.value.message, url

    resolver = GuardedResolver(policy)
    try:
        assert [r["host"] for r in await resolver.resolve("127.0.0.1", 8080)] == ["127.0.0.1"]
        with pytest.raises(OSError):
            await resolver.resolve("127.0.0.1", 5432)
    finally:
        await resolver.close()


def test_a_malformed_allowlist_port_stops_the_orchestrator() -> None:
    env = {**os.environ, "URL_ALLOWLIST": "127.0.0.1:http", "ORCHESTRATOR_PORT": "0", "POOL_BACKEND": "none"}
    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    assert "URL_ALLOWLIST entry '127.0.0.1:http'" in done.stderr + done.stdout
