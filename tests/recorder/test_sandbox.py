"""Chromium's sandbox and the environments of Chromium and of local-pool workers.

The media tests launch the recorder's real Chromium: where the tests run as root (CI, the local pool),
Chromium must run as the unprivileged browser user, with its renderers in namespaces of their own and no
secret of the recorder's in its environment, and the page's sound must still reach the recording.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Error as PlaywrightError
from structlog.testing import capture_logs

from contract.errors import ErrorCode, RecorderError
from contract.spec import RecordingSpec, WaitFor
from orchestrator.pool.local import LocalBackend
from recorder.attempt import AttemptFolder
from recorder.config import RecorderSettings
from recorder.pipeline import Recorder
from recorder.quality import tone_level
from recorder.source import sandbox
from recorder.source.sandbox import BrowserLaunch, browser_environment, launch_sandboxed
from recorder.worker.client import OrchestratorClient
from recorder.worker.loop import EXIT_OK, Worker, WorkerOptions
from tests.support.orchestrator import WORKER_TOKEN

SUPPORT = Path(__file__).resolve().parents[1] / "support"
BROWSER_USER = "recorder-browser"
IS_ROOT = os.geteuid() == 0
root_only = pytest.mark.skipif(not IS_ROOT, reason="the user switch happens only where the recorder runs as root")

# Secrets the recorder's (or the orchestrator's) environment may hold; none may reach Chromium or a worker
# that does not need it.
SECRETS = {
    "API_TOKENS": "alice:api-secret-7f3a",
    "WORKER_TOKEN": "worker-secret-91c2",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-55d0",
    "AWS_ACCESS_KEY_ID": "aws-key-id-2b7e",
    "ORCHESTRATOR_WEBHOOK_SECRET": "webhook-secret-c4e8",
    "ORCHESTRATOR_WEBHOOK_SECRETS": "alice:webhook-secret-17b3",
    "API_ADMIN_TOKEN": "admin-secret-0a9d",
}


@pytest.fixture(autouse=True)
def fresh_verdicts() -> Iterator[None]:
    """Each test decides the sandbox afresh (a verdict is otherwise kept for the life of the process)."""
    sandbox.forget_verdicts()
    yield
    sandbox.forget_verdicts()


@pytest.fixture
def settings(tmp_path: Path) -> RecorderSettings:
    return RecorderSettings(records_dir=tmp_path / "records", url_allowlist=["127.0.0.1"])


def status_of(pid: int) -> dict[str, str]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def environ_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def cmdline_of(pid: int) -> bytes:
    return Path(f"/proc/{pid}/cmdline").read_bytes()


def browser_process(processes: dict[int, str]) -> int:
    """Chromium's browser process (the crash handler has no --type= either)."""
    return next(pid for pid, kind in processes.items() if kind == "browser" and b"crashpad" not in cmdline_of(pid))


# -- the environment allowlist ---------------------------------------------------------------------


def test_browser_environment_keeps_only_the_allowlist() -> None:
    inherited = {
        **SECRETS,
        "S3_BUCKET": "b",
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TZ": "UTC",
        "FONTCONFIG_PATH": "/etc/fonts",
        "DISPLAY": ":0",
        "HOME": "/root",
    }
    env = browser_environment(inherited, {"DISPLAY": ":7", "PULSE_SERVER": "unix:/x/native", "HOME": "/h"})
    assert env == {
        "PATH": "/usr/bin",
        "LANG": "C.UTF-8",
        "LC_TIME": "C",
        "TZ": "UTC",
        "FONTCONFIG_PATH": "/etc/fonts",
        "DISPLAY": ":7",
        "PULSE_SERVER": "unix:/x/native",
        "HOME": "/h",
    }
    with pytest.raises(ValueError, match="AWS_SECRET_ACCESS_KEY"):
        browser_environment({}, {"AWS_SECRET_ACCESS_KEY": "x"})


# -- the decision: sandbox, fallback, refusal ------------------------------------------------------


class FakeStart:
    """Stands in for a Chromium launch that fails while the sandbox is asked for."""

    def __init__(self, error: str | None) -> None:
        self.error = error
        self.calls: list[bool] = []

    async def __call__(self, sandboxed: bool) -> str:
        self.calls.append(sandboxed)
        if sandboxed and self.error is not None:
            raise PlaywrightError(self.error)
        return "browser"


NO_SANDBOX = (
    "BrowserType.launch: Target page, context or browser has been closed\nBrowser logs:\n"
    "[123:123:FATAL:zygote_host_impl_linux.cc(128)] No usable sandbox! If you are running on Ubuntu 23.10+ ..."
)


async def test_no_usable_sandbox_falls_back_once_with_one_warning() -> None:
    launch = BrowserLaunch("/usr/bin/chromium", BROWSER_USER)
    first = FakeStart(NO_SANDBOX)
    with capture_logs() as logs:
        browser, state = await launch_sandboxed(launch, first, require=False)
        again = FakeStart(NO_SANDBOX)
        _, state_again = await launch_sandboxed(launch, again, require=False)
    assert browser == "browser" and first.calls == [True, False]
    assert state.enabled is False and "No usable sandbox" in (state.reason or "")
    assert again.calls == [False], "a sandbox that failed is not tried at every restart"
    assert state_again.enabled is False
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "sandbox off" in warnings[0]["event"], logs


async def test_required_sandbox_refuses_to_start_without_it() -> None:
    start = FakeStart(NO_SANDBOX)
    with pytest.raises(RecorderError) as caught:
        await launch_sandboxed(BrowserLaunch("/usr/bin/chromium", BROWSER_USER), start, require=True)
    assert caught.value.code == ErrorCode.BROWSER_FAILED
    assert "RECORDER_REQUIRE_SANDBOX" in caught.value.message and "No usable sandbox" in caught.value.message
    assert start.calls == [True], "never launched without the sandbox"


async def test_other_launch_failures_are_not_mistaken_for_the_sandbox() -> None:
    start = FakeStart("BrowserType.launch: Executable doesn't exist at /nope")
    with pytest.raises(PlaywrightError):
        await launch_sandboxed(BrowserLaunch("/usr/bin/chromium", BROWSER_USER), start, require=False)
    assert start.calls == [True]


# -- the wrapper, with a stand-in for Chromium -----------------------------------------------------


@pytest.fixture
def wrapped_shell() -> Iterator[BrowserLaunch]:
    """The real wrapper, running /bin/sh where it would run Chromium: what Chromium would be allowed."""
    launch = BrowserLaunch("/bin/sh", BROWSER_USER)
    launch.prepare()
    assert launch.user is not None, launch.unavailable
    yield launch
    launch.cleanup()


@root_only
def test_wrapper_runs_as_the_browser_user_with_nothing_more(wrapped_shell: BrowserLaunch, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    (profile / "Default").mkdir(parents=True)
    # Playwright drives Chromium over a pipe on fds 3 and 4: it must survive the user switch.
    read_fd, write_fd = os.pipe()
    trampoline = "import os, sys; os.dup2(int(sys.argv[1]), 4); os.execv(sys.argv[2], sys.argv[2:])"
    shell = "echo piped >&4; cat /proc/self/status"
    try:
        done = subprocess.run(
            [sys.executable, "-c", trampoline, str(write_fd), wrapped_shell.executable, "-c", shell,
             f"--user-data-dir={profile}"],
            capture_output=True,
            text=True,
            pass_fds=(write_fd,),
            timeout=10,
        )  # fmt: skip
    finally:
        os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        assert pipe.read() == "piped\n"
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines())
    user = pwd.getpwnam(BROWSER_USER)
    assert fields["Uid"].split() == [str(user.pw_uid)] * 4
    assert fields["Gid"].split() == [str(user.pw_gid)] * 4
    assert fields["Groups"].strip() == ""
    assert fields["NoNewPrivs"].strip() == "1"
    for caps in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[caps], 16) == 0, (caps, fields[caps])
    assert (profile.stat().st_uid, (profile / "Default").stat().st_uid) == (user.pw_uid, user.pw_uid)
    home = Path(wrapped_shell.home or "")
    assert home.stat().st_uid == user.pw_uid and (home.stat().st_mode & 0o077) == 0


@root_only
def test_a_compromised_browser_cannot_read_the_recorders_secrets(wrapped_shell: BrowserLaunch, tmp_path: Path) -> None:
    """Code running with Chromium's credentials (a renderer escape to the browser process) tries to read
    the recorder's environment, a root-only file, and the wrapper itself; every attempt is refused."""
    exposed = Path(tempfile.mkdtemp())
    exposed.chmod(0o755)  # only each file's own mode stands in the way
    try:
        secret_file = exposed / "worker-token"
        secret_file.write_text(SECRETS["WORKER_TOKEN"])
        secret_file.chmod(0o600)
        public_file = exposed / "public"
        public_file.write_text("public")
        public_file.chmod(0o644)
        for target in (f"/proc/{os.getpid()}/environ", str(secret_file), wrapped_shell.executable):
            done = subprocess.run([wrapped_shell.executable, "-c", f"cat {target}"], capture_output=True, timeout=10)
            assert done.returncode != 0 and b"Permission denied" in done.stderr, (target, done)
            assert SECRETS["WORKER_TOKEN"].encode() not in done.stdout
        # A file anyone may read, beside the secret, is read: the refusal above is the user switch at work.
        done = subprocess.run([wrapped_shell.executable, "-c", f"cat {public_file}"], capture_output=True, timeout=10)
        assert done.returncode == 0 and done.stdout == b"public", done
    finally:
        shutil.rmtree(exposed)


@root_only
def test_launch_directories_of_killed_recorders_are_removed(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = Path(tempfile.mkdtemp(prefix=f"recorder-browser-{dead_pid}-"))
    live = Path(tempfile.mkdtemp(prefix=f"recorder-browser-{os.getpid()}-"))
    launch = BrowserLaunch("/usr/bin/chromium", BROWSER_USER)
    try:
        launch.prepare()
        assert not stale.exists(), "the directory of a recorder that is gone is removed"
        assert live.exists(), "the directory of a running recorder is left alone"
    finally:
        launch.cleanup()
        shutil.rmtree(stale, ignore_errors=True)
        shutil.rmtree(live, ignore_errors=True)


# -- the real browser ------------------------------------------------------------------------------


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
@root_only
async def test_chromium_runs_sandboxed_as_the_browser_user_and_the_page_is_heard(
    settings: RecorderSettings, test_page, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    user = pwd.getpwnam(BROWSER_USER)
    own_ns = {ns: os.readlink(f"/proc/self/ns/{ns}") for ns in ("user", "pid", "net")}

    async with Recorder(settings) as recorder:
        assert recorder.browser is not None and recorder.browser.sandbox is not None
        assert recorder.browser_sandboxed is True, recorder.browser.sandbox
        assert recorder.browser.sandbox.user == BROWSER_USER

        # Sound still reaches the recording's sink through the audio server's socket.
        spec = RecordingSpec(url=test_page.url("/grid?tone=1000"), duration=4)
        result = await recorder.record(spec, folder=AttemptFolder.under(settings.records_dir, "sbx"))
        assert result.ok, result.error
        assert result.mp4 is not None
        high, low = tone_level(result.mp4, 1000), tone_level(result.mp4, 440)
        assert high > 10 * low, (high, low)

        grid = RecordingSpec(url=test_page.url("/grid"), wait_for=WaitFor(kind="load"))
        session = await recorder.browser.open_ready(grid)
        try:
            processes = {pid: kind for pid, kind in recorder.browser.processes().items() if kind != "gone"}
            renderers = [pid for pid, kind in processes.items() if kind == "renderer"]
            assert renderers and "browser" in processes.values(), processes
            for pid in processes:
                status = status_of(pid)
                assert status["Uid"].split() == [str(user.pw_uid)] * 4, (pid, processes[pid], status["Uid"])
                assert status["NoNewPrivs"] == "1"
                if os.readlink(f"/proc/{pid}/ns/user") == own_ns["user"]:
                    # Inside the sandbox's own user namespace, capabilities reach that namespace only.
                    assert int(status["CapEff"], 16) == 0, (pid, processes[pid], status["CapEff"])
                env = environ_of(pid)
                for name, value in SECRETS.items():
                    assert value.encode() not in env and name.encode() + b"=" not in env, (pid, name)
            browser_pid = browser_process(processes)
            browser_env = environ_of(browser_pid).split(b"\0")
            assert f"RECORDER_BROWSER_INSTANCE={recorder.browser.instance}".encode() in browser_env
            assert f"RECORDER_PROCESS_TAG={os.environ['RECORDER_PROCESS_TAG']}".encode() in browser_env, (
                "the leak check still sees Chromium"
            )
            home = next(item for item in browser_env if item.startswith(b"HOME=")).removeprefix(b"HOME=")
            assert os.stat(home).st_uid == user.pw_uid, "a private home of the browser user's, not root's"
            for pid in renderers:
                for ns, link in own_ns.items():
                    assert os.readlink(f"/proc/{pid}/ns/{ns}") != link, (pid, ns)
                assert status_of(pid)["Seccomp"] == "2", "the renderer runs under a seccomp-bpf filter"
        finally:
            await session.close()

        report = await recorder.browser.open_ready(
            RecordingSpec.model_construct(url="chrome://sandbox", wait_for=WaitFor(kind="load"))  # not http: unchecked
        )
        try:
            assert report.page is not None
            text = await report.page.inner_text("body")
        finally:
            await report.close()
    assert "You are adequately sandboxed." in text, text
    assert "Namespace" in text


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
@root_only
async def test_without_the_browser_user_chromium_runs_unsandboxed_and_says_so(
    settings: RecorderSettings, test_page
) -> None:
    settings = settings.model_copy(update={"browser_user": "no-such-recorder-user"})
    with capture_logs() as logs:
        async with Recorder(settings) as recorder:
            assert recorder.browser is not None and recorder.browser.sandbox is not None
            state = recorder.browser.sandbox
            assert recorder.browser_sandboxed is False
            assert "no-such-recorder-user" in (state.reason or "")
            processes = recorder.browser.processes()
            browser_pid = browser_process(processes)
            assert b"--no-sandbox" in cmdline_of(browser_pid)
    warnings = [e for e in logs if e["log_level"] == "warning" and "sandbox" in e["event"]]
    assert len(warnings) == 1 and "no-such-recorder-user" in warnings[0]["reason"], logs

    strict = settings.model_copy(update={"require_sandbox": True})
    with pytest.raises(RecorderError) as caught:
        async with Recorder(strict):
            pass
    assert caught.value.code == ErrorCode.BROWSER_FAILED
    assert "RECORDER_REQUIRE_SANDBOX" in caught.value.message


@pytest.fixture
def userns_blocked_chromium() -> Iterator[str]:
    """/usr/bin/chromium under a seccomp filter that refuses new user namespaces, as the default profiles
    of container runtimes do (Kubernetes' RuntimeDefault): the sandbox cannot work there."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is needed to build the seccomp stand-in")
    where = Path(tempfile.mkdtemp())
    where.chmod(0o755)  # the browser user runs it
    try:
        subprocess.run(
            ["gcc", "-O2", "-o", str(where / "deny_userns"), str(SUPPORT / "deny_userns.c")],
            check=True,
            timeout=60,
        )
        shim = where / "chromium"
        shim.write_text(f'#!/bin/sh\nexec {where / "deny_userns"} /usr/bin/chromium "$@"\n')
        shim.chmod(0o755)
        yield str(shim)
    finally:
        shutil.rmtree(where)


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
async def test_where_user_namespaces_are_blocked_chromium_still_runs_and_it_is_known(
    settings: RecorderSettings, userns_blocked_chromium: str
) -> None:
    settings = settings.model_copy(update={"chromium_path": userns_blocked_chromium})
    with capture_logs() as logs:
        async with Recorder(settings) as recorder:
            assert recorder.browser is not None and recorder.browser.sandbox is not None
            assert recorder.browser_sandboxed is False
            assert "No usable sandbox" in (recorder.browser.sandbox.reason or ""), recorder.browser.sandbox
            processes = recorder.browser.processes()
            browser_pid = browser_process(processes)
            assert b"--no-sandbox" in cmdline_of(browser_pid)
            if IS_ROOT:  # still not root: only the sandbox is lost, not the user switch
                assert status_of(browser_pid)["Uid"].split()[0] == str(pwd.getpwnam(BROWSER_USER).pw_uid)
    warnings = [e for e in logs if e["log_level"] == "warning" and "sandbox" in e["event"]]
    assert len(warnings) == 1, logs

    sandbox.forget_verdicts()
    strict = settings.model_copy(update={"require_sandbox": True})
    with pytest.raises(RecorderError) as caught:
        async with Recorder(strict):
            pass
    assert caught.value.code == ErrorCode.BROWSER_FAILED
    assert "RECORDER_REQUIRE_SANDBOX" in caught.value.message and "No usable sandbox" in caught.value.message


# -- the local pool's workers ----------------------------------------------------------------------


async def test_local_pool_workers_get_no_orchestrator_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("S3_BUCKET", "recordings-bucket")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    backend = LocalBackend(
        orchestrator_url="http://127.0.0.1:9",
        worker_token="the-worker-token",
        records_dir=tmp_path / "records",
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
        stop_timeout=5.0,
    )
    await backend.start()
    try:
        [name] = await backend.create(1)
        pid = int((await backend.list())[0].labels["pid"])
        deadline = asyncio.get_running_loop().time() + 10
        while b"WORKER_ID=" not in environ_of(pid):  # the exec has happened
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
        env = dict(item.split(b"=", 1) for item in environ_of(pid).split(b"\0") if b"=" in item)
    finally:
        await backend.close()
    for secret in ("API_TOKENS", "API_ADMIN_TOKEN", "ORCHESTRATOR_WEBHOOK_SECRET", "ORCHESTRATOR_WEBHOOK_SECRETS"):
        assert secret.encode() not in env and SECRETS[secret].encode() not in b"".join(env.values()), secret
    # What a worker does need is there: its token (the backend's, not the inherited one), S3, locale, PATH.
    assert env[b"WORKER_TOKEN"] == b"the-worker-token"
    assert env[b"WORKER_ID"] == name.encode()
    assert env[b"AWS_SECRET_ACCESS_KEY"] == SECRETS["AWS_SECRET_ACCESS_KEY"].encode()
    assert env[b"S3_BUCKET"] == b"recordings-bucket" and env[b"LC_ALL"] == b"C.UTF-8"
    assert env[b"PATH"] == os.environ["PATH"].encode()


# -- the pool shows it -----------------------------------------------------------------------------


async def test_pool_shows_whether_each_workers_browser_is_sandboxed(start_orchestrator) -> None:
    o = await start_orchestrator()
    for worker_id, sandboxed in (("w-on", True), ("w-off", False), ("w-unknown", None)):
        body = {"worker_id": worker_id, "wait": 0, "capacity": 1, "browser_sandbox": sandboxed}
        reply = await o.worker(worker_id).request("POST", "/v1/worker/lease", json=body)
        assert reply.status == 204, reply
    # A later poll that does not say (an older worker) keeps what was reported.
    await o.worker("w-off").request("POST", "/v1/worker/lease", json={"worker_id": "w-off", "wait": 0})
    pool = await o.api.request("GET", "/v1/pool")
    assert pool.status == 200
    shown = {w["id"]: w["browser_sandbox"] for w in pool.body["workers"]}
    assert shown == {"w-on": True, "w-off": False, "w-unknown": None}


class StandInRecorder:
    """A started recorder whose browser could not be sandboxed; it is never leased anything here."""

    browser_sandboxed = False

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_a_worker_reports_its_browsers_sandbox_to_the_pool(start_orchestrator, tmp_path: Path) -> None:
    o = await start_orchestrator()
    settings = RecorderSettings(
        records_dir=tmp_path / "records", orchestrator_url=o.base_url, worker_token=WORKER_TOKEN
    )
    client = OrchestratorClient(o.base_url, WORKER_TOKEN)
    worker = Worker(settings, StandInRecorder(), client, WorkerOptions(worker_id="w-sbx", lease_wait=0.5))  # type: ignore[arg-type]
    task = asyncio.create_task(worker.run())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            pool = await o.api.request("GET", "/v1/pool")
            shown = {w["id"]: w["browser_sandbox"] for w in pool.body["workers"]}
            if "w-sbx" in shown:
                break
            assert asyncio.get_running_loop().time() < deadline, pool.body
            await asyncio.sleep(0.05)
        assert shown["w-sbx"] is False
    finally:
        worker.request_shutdown()
        assert await asyncio.wait_for(task, 10) == EXIT_OK
