"""Hostile pages against the egress guard, on real Chromium, Xvfb, PulseAudio and FFmpeg.

The "public" site is served on 127.0.0.2 (allowlisted, as a public host would be); an internal canary
listens on 127.0.0.1 on the same port and logs every connection it receives. Every case tries to make
the recorded browser reach the canary (or the cloud metadata address); every test ends by asserting the
canary received nothing. Recordings whose subresources were blocked still complete, with the denials
listed in rec.json; a denied top-level navigation fails the recording with url_not_allowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contract.errors import ErrorCode
from contract.spec import RecordingSpec, WaitFor
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.finalize import Finished
from recorder.pipeline import Recorder
from tests.support.dns_stub import DnsStub
from tests.support.hostile import PUBLIC_HOST, Canary, PublicSite, UdpListener, shared_port
from tests.support.orchestrator import API_TOKEN, Api, OrchestratorProcess

pytestmark = [pytest.mark.media, pytest.mark.usefixtures("no_leaks")]

# Subresource attacks batched into one page (tests/support/hostile.py ATTACKS_PAGE); "allowed" is the
# control, a fetch of the public site itself.
SUBRESOURCE_ATTACKS = (
    "img", "iframe", "fetch", "xhr", "beacon", "websocket", "worker", "service_worker", "eventsource", "prefetch",
    "preconnect", "metadata", "hex_host", "int_host", "short_host", "mapped_v6", "v6_loopback", "localhost",
)  # fmt: skip
SUCCESS = {"loaded", "fetched", "open", "load"}


@dataclass
class Sites:
    public: PublicSite
    canary: Canary

    def assert_canary_untouched(self) -> None:
        assert self.canary.hits == [], f"the internal canary was reached: {self.canary.hits}"


@pytest.fixture
async def sites() -> AsyncIterator[Sites]:
    port = shared_port()
    s = Sites(PublicSite(port), Canary(port))
    await s.canary.start()
    await s.public.start()
    yield s
    await s.public.stop()
    await s.canary.stop()
    s.assert_canary_untouched()


@pytest.fixture
def stub() -> Iterator[DnsStub]:
    s = DnsStub({"rebind.test": [PUBLIC_HOST, "127.0.0.1"]})
    s.start()
    yield s
    s.stop()


@pytest.fixture
def settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(records_dir=tmp_path / "records", url_allowlist=[PUBLIC_HOST])


def spec(url: str, duration: float = 2.0, *, signal: bool = False) -> RecordingSpec:
    wait_for = WaitFor(kind="signal", timeout=20) if signal else WaitFor(kind="load", timeout=20)
    return RecordingSpec(url=url, duration=duration, width=640, height=360, wait_for=wait_for)


async def record(recorder: Recorder, settings: RecorderSettings, s: RecordingSpec, name: str) -> Finished:
    folder = AttemptFolder.under(settings.records_dir, name)
    return await recorder.record(s, folder=folder, analyze=False)


def sidecar(result: Finished) -> dict[str, Any]:
    assert result.sidecar is not None, "rec.json was not written"
    return json.loads(result.sidecar.read_text())


# Chromium's own background requests (update checks, accounts) go through the guard too; with no DNS
# on a test machine they are denied as unresolvable and listed like any other denial.
BROWSER_BACKGROUND = (".google.com", ".googleapis.com", ".gvt1.com")


def blocked_hosts(result: Finished) -> dict[str, str]:
    """host -> class of the page's denials in rec.json (Chromium's own background requests left out)."""
    hosts = sidecar(result)["blocked"]["hosts"]
    return {h["host"]: h["class"] for h in hosts if not str(h["host"]).endswith(BROWSER_BACKGROUND)}


async def test_subresources_aimed_inside_fail_in_the_page_and_the_recording_completes(
    settings: RecorderSettings, sites: Sites
) -> None:
    async with Recorder(settings, width=640, height=360) as recorder:
        result = await record(recorder, settings, spec(sites.public.url("/attacks"), signal=True), "attacks")

    assert result.ok, result.error
    assert result.mp4 is not None and result.mp4.stat().st_size > 0
    [outcomes] = sites.public.reports
    assert set(outcomes) == {*SUBRESOURCE_ATTACKS, "allowed"}, outcomes
    assert outcomes["allowed"] == "fetched", "the public site itself stays reachable"
    # An iframe's load event fires for Chromium's error page too, so only the canary can tell about it.
    reached = {n: outcome for n, outcome in outcomes.items() if n not in ("allowed", "iframe") and outcome in SUCCESS}
    assert not reached, f"attacks that succeeded inside the page: {reached}"

    blocked = sidecar(result)["blocked"]
    hosts = blocked_hosts(result)
    assert hosts["127.0.0.1"] == "loopback"
    assert hosts["169.254.169.254"] == "cloud-metadata"
    assert hosts["localhost"] == "loopback"
    assert hosts["::ffff:7f00:1"] == "loopback", "an IPv4-mapped literal arrives canonical and is unwrapped"
    assert hosts["::1"] == "loopback"
    assert blocked["by_reason"]["loopback"] >= 10, blocked
    assert blocked["total"] == sum(blocked["by_reason"].values())
    assert result.blocked is not None and result.blocked.by_reason == blocked["by_reason"]
    # Everything the page asked of the canary port went to the guard, and only to the guard.
    print("blocked:", json.dumps(blocked))
    sites.assert_canary_untouched()


NAVIGATIONS = {
    "http redirect": "/redirect",
    "redirect to a hex host": "/redirect?to=http://0x7f.1:{port}/hex",
    "meta refresh": "/meta",
    "meta refresh to the metadata address": "/meta?to=http://169.254.169.254/latest/",
}


async def test_navigations_to_inside_fail_the_recording_with_the_host_and_its_class(
    settings: RecorderSettings, sites: Sites
) -> None:
    async with Recorder(settings, width=640, height=360) as recorder:
        for name, path in NAVIGATIONS.items():
            url = sites.public.url(path.format(port=sites.public.port))
            result = await record(recorder, settings, spec(url), name.replace(" ", "-"))
            assert result.error is not None, f"{name}: the recording did not fail"
            assert result.error.code == ErrorCode.URL_NOT_ALLOWED, (name, result.error)
            assert ("169.254.169.254" in result.error.message) == ("metadata" in name), result.error.message
            expected = "cloud-metadata" if "metadata" in name else "loopback"
            assert f"a {expected} address" in result.error.message, result.error.message
            assert sidecar(result)["error"]["code"] == "url_not_allowed"
            sites.assert_canary_untouched()
        # The browser survived all that: a plain page still records.
        result = await record(recorder, settings, spec(sites.public.url("/")), "plain")
        assert result.ok, result.error
        assert blocked_hosts(result) == {}, "denials are counted per recording"
    sites.assert_canary_untouched()


async def test_navigation_by_script_while_recording_fails_it_and_keeps_the_file(
    settings: RecorderSettings, sites: Sites
) -> None:
    async with Recorder(settings, width=640, height=360) as recorder:
        result = await record(recorder, settings, spec(sites.public.url("/navigate?after=1500"), 8), "scripted")
    assert result.error is not None and result.error.code == ErrorCode.URL_NOT_ALLOWED, result.error
    assert "127.0.0.1" in result.error.message and "loopback" in result.error.message
    assert result.stop_reason == "error"
    assert result.mp4 is not None and result.mp4.stat().st_size > 0, "what was captured is kept"
    assert result.timings is not None and result.timings.stopped is not None and result.timings.first_frame
    assert result.timings.stopped - result.timings.first_frame < 6, "stopped at the navigation, not at the end"
    assert blocked_hosts(result) == {"127.0.0.1": "loopback"}
    sites.assert_canary_untouched()


PARSER_TRICKS = {
    "backslash before userinfo": ("http://127.0.0.1:{port}\\@127.0.0.2/", "loopback"),
    "userinfo naming the public host": ("http://127.0.0.2@127.0.0.1:{port}/", "loopback"),
    "hex and short IPv4": ("http://0x7f.1:{port}/", "loopback"),
    "integer IPv4": ("http://2130706433:{port}/", "loopback"),
    "octal IPv4": ("http://0177.0.0.1:{port}/", "loopback"),
    "IPv4-mapped IPv6": ("http://[::ffff:127.0.0.1]:{port}/", "loopback"),
    "IPv6 loopback": ("http://[::1]:{port}/", "loopback"),
    "localhost": ("http://localhost:{port}/", "loopback"),
    "trailing dot": ("http://127.0.0.1.:{port}/", "loopback"),
    "metadata address": ("http://169.254.169.254/latest/meta-data/", "cloud-metadata"),
    "tab inside the authority": ("http://127.0.0.2\t.x:{port}/", "invalid"),
    "newline inside the authority": ("http://127.0.0.1\n:{port}/", "invalid"),
    "slash-backslash scheme": ("http:/\\127.0.0.1:{port}/", "loopback"),
}


async def test_parser_tricks_as_the_recording_url_are_not_allowed(settings: RecorderSettings, sites: Sites) -> None:
    async with Recorder(settings, width=640, height=360) as recorder:
        for name, (template, reason) in PARSER_TRICKS.items():
            url = template.format(port=sites.public.port)
            try:
                recording = spec(url)
            except ValidationError:
                continue  # refused before any recording: as good as a denial
            result = await record(recorder, settings, recording, f"trick-{len(name)}")
            assert result.error is not None and result.error.code == ErrorCode.URL_NOT_ALLOWED, (name, result.error)
            if reason != "invalid":
                assert f"a {reason} address" in result.error.message, (name, result.error.message)
            assert result.blocked is not None and result.blocked.by_reason.get(reason) == 1, (name, result.blocked)
            sites.assert_canary_untouched()


async def test_dns_rebinding_cannot_move_a_fetched_name_inside(sites: Sites, stub: DnsStub, tmp_path: Path) -> None:
    settings = RecorderSettings(records_dir=tmp_path / "records", url_allowlist=[PUBLIC_HOST], dns_server=stub.address)
    target = f"http://rebind.test:{sites.public.port}/hello"
    async with Recorder(settings, width=640, height=360) as recorder:
        page = spec(sites.public.url(f"/fetch-named?target={target}"), signal=True)
        result = await record(recorder, settings, page, "rebind")
        # A name with no address is a dead link, not a policy matter: unreachable, as without the guard.
        missing = await record(recorder, settings, spec(f"http://missing.test:{sites.public.port}/"), "missing")
    assert missing.error is not None and missing.error.code == ErrorCode.UNREACHABLE, missing.error
    assert "missing.test does not resolve" in missing.error.message
    assert result.ok, result.error
    [report] = sites.public.reports
    # First answer 127.0.0.2: fetched from the public site. Every later answer is 127.0.0.1: denied.
    assert report["rebind"] == ["fetched", "error", "error"], report
    assert ("rebind.test:" + str(sites.public.port), "/hello?n=0") in sites.public.requests
    assert blocked_hosts(result) == {"rebind.test": "loopback"}
    sites.assert_canary_untouched()


def run_cli(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recorder.cli", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_the_cli_records_the_url_as_the_browser_reads_it(sites: Sites, tmp_path: Path) -> None:
    env = {**os.environ, "URL_ALLOWLIST": PUBLIC_HOST, "RECORDS_DIR": str(tmp_path)}
    env.pop("RECORDER_DNS_SERVER", None)
    port = sites.public.port
    # Python's urlsplit reads 127.0.0.2 as this URL's host; the browser (and the recorder) read 127.0.0.1.
    done = run_cli("record", f"http://127.0.0.1:{port}\\@127.0.0.2/", "--duration", "2", "--id", "trick", env=env)
    assert done.returncode == 1, done.stderr
    assert "127.0.0.1 is a loopback address" in done.stderr and "URL_ALLOWLIST" in done.stderr, done.stderr
    written = json.loads(AttemptFolder.under(tmp_path, "trick").metadata.read_text())
    assert written["url"] == f"http://127.0.0.1:{port}/@127.0.0.2/", "stored in the canonical form"
    assert written["error"]["code"] == "url_not_allowed"
    assert {"host": "127.0.0.1", "class": "loopback", "count": 1} in written["blocked"]["hosts"], written["blocked"]
    # A control character is refused before anything starts, naming it.
    done = run_cli("record", f"http://127.0.0.2\t:{port}/", "--duration", "2", env=env, timeout=30)
    assert done.returncode == 2 and "U+0009" in done.stderr, done.stderr
    sites.assert_canary_untouched()


def pool_pids(records: Path) -> list[int]:
    pids = []
    for path in (records / ".pool").glob("*.json"):
        with contextlib.suppress(OSError, ValueError, KeyError):
            pids.append(int(json.loads(path.read_text())["pid"]))
    return pids


async def test_the_farm_completes_a_hostile_page_and_lists_what_was_blocked(
    orchestrator_process: Callable[..., OrchestratorProcess], sites: Sites, tmp_path: Path
) -> None:
    proc = orchestrator_process(
        POOL_BACKEND="local",
        POOL_MIN="0",
        POOL_MAX="1",
        POOL_SPARE="1",
        URL_ALLOWLIST=PUBLIC_HOST,
        ORCHESTRATOR_HEARTBEAT_INTERVAL="1",
        ORCHESTRATOR_LEASE_CHECK_INTERVAL="0.5",
        ORCHESTRATOR_SHUTDOWN_GRACE="2",
        ORCHESTRATOR_SHUTDOWN_STOP_WAIT="10",
        RECORDER_SHUTDOWN_GRACE="2",
        WORKER_GIVE_UP_AFTER="30",
    )
    proc.start()
    api = Api(proc.base_url, API_TOKEN)
    try:
        created = await api.create(
            url=sites.public.url("/attacks"), max_duration=2, wait_for={"kind": "signal", "timeout": 20}
        )
        assert created.status == 202, created.body
        rec = await api.wait_status(created.body["id"], "completed", "failed", "cancelled", timeout=150)
        assert rec["status"] == "completed", (rec, proc.log()[-3000:])
        sidecar_path = Path(rec["metadata_location"].removeprefix("file://"))
        blocked = json.loads(await asyncio.to_thread(sidecar_path.read_text))["blocked"]
        hosts = {h["host"]: h["class"] for h in blocked["hosts"]}
        assert hosts.get("127.0.0.1") == "loopback" and hosts.get("169.254.169.254") == "cloud-metadata", blocked
        assert blocked["by_reason"]["loopback"] >= 10, blocked
        [outcomes] = sites.public.reports
        assert outcomes["allowed"] == "fetched", outcomes
        # The worker's report carried the counts by reason; the orchestrator exports them.
        metrics = (await api.request("GET", "/metrics", token=None)).body.decode()
        loopback = next(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith('recorder_blocked_requests_total{reason="loopback"}')
        )
        assert loopback == blocked["by_reason"]["loopback"], metrics
    finally:
        await api.close()
        if proc.process is not None and proc.process.poll() is None:
            proc.signal(signal.SIGTERM)
            with contextlib.suppress(Exception):
                proc.wait(timeout=60)
        proc.kill()
        for pid in pool_pids(tmp_path / "records"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    sites.assert_canary_untouched()


async def test_webrtc_sends_no_udp_to_addresses_the_page_names(settings: RecorderSettings, sites: Sites) -> None:
    udp = await UdpListener.start()
    try:
        async with Recorder(settings, width=640, height=360) as recorder:
            page = spec(sites.public.url(f"/webrtc?port={udp.port}"), signal=True)
            result = await record(recorder, settings, page, "webrtc")
    finally:
        udp.stop()
    assert result.ok, result.error
    [report] = sites.public.reports
    assert "error" not in report["webrtc"], report
    assert udp.datagrams == [], f"{len(udp.datagrams)} UDP datagrams reached 127.0.0.1:{udp.port}"
    sites.assert_canary_untouched()


async def test_without_the_guard_the_same_attacks_reach_the_canary(tmp_path: Path) -> None:
    """The control: the suite's attacks are real. With RECORDER_EGRESS_GUARD=false the very same pages
    reach the canary over TCP and WebRTC reaches the UDP listener, so the tests above can fail."""
    port = shared_port()
    public, canary = PublicSite(port), Canary(port)
    await canary.start()
    await public.start()
    udp = await UdpListener.start()
    settings = RecorderSettings(records_dir=tmp_path / "records", url_allowlist=[PUBLIC_HOST], egress_guard=False)
    try:
        async with Recorder(settings, width=640, height=360) as recorder:
            attacks = await record(recorder, settings, spec(public.url("/attacks"), signal=True), "attacks")
            webrtc = await record(recorder, settings, spec(public.url(f"/webrtc?port={udp.port}"), signal=True), "rtc")
    finally:
        udp.stop()
        await public.stop()
        await canary.stop()
    assert attacks.ok and webrtc.ok, (attacks.error, webrtc.error)
    assert attacks.blocked is None, "no guard, no ledger"
    reached = {line.split(" ")[1] for line in canary.hits if line.startswith("GET ")}
    assert {"/img", "/fetch", "/ws", "/from-worker"} <= reached, canary.hits
    assert udp.datagrams, "WebRTC sent no UDP even without the policy: the WebRTC test could not fail"
