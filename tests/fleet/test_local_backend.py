"""The local backend with a stand-in worker command (a small Python script), so no browser is needed."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from orchestrator.pool.backend import WorkerInfo
from orchestrator.pool.local import LocalBackend, default_capacity

# Stands in for `recorder worker`: starts a child in its own process group (as a worker starts Xvfb and
# FFmpeg), records its environment, drains on SIGTERM, and crashes on request.
STANDIN = textwrap.dedent(
    """
    import json, os, signal, subprocess, sys, time
    from pathlib import Path

    out = Path(sys.argv[1])
    name = os.environ["WORKER_ID"]
    child = subprocess.Popen(["sleep", "600"])
    env = {k: os.environ.get(k) for k in ("ORCHESTRATOR_URL", "WORKER_TOKEN", "WORKER_ID", "RECORDS_DIR")}
    (out / f"{name}.info").write_text(json.dumps({"env": env, "pid": os.getpid(), "child": child.pid}))

    def drain(signum, frame):
        if os.environ.get("STANDIN_IGNORE_TERM"):
            return
        child.terminate()
        child.wait()
        sys.exit(0)

    signal.signal(signal.SIGTERM, drain)
    while True:
        if (out / f"{name}.crash").exists():
            print("starting up", file=sys.stderr)
            print("display failed: Xvfb could not open :99", file=sys.stderr)
            sys.exit(3)
        time.sleep(0.05)
    """
)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


async def wait_until(predicate: Callable[[], bool], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@pytest.fixture
def standin(tmp_path: Path) -> tuple[list[str], Path]:
    script = tmp_path / "standin.py"
    script.write_text(STANDIN)
    out = tmp_path / "out"
    out.mkdir()
    return [sys.executable, str(script), str(out)], out


def make_backend(tmp_path: Path, command: list[str], **kwargs: object) -> LocalBackend:
    return LocalBackend(
        orchestrator_url="http://127.0.0.1:9",
        worker_token="worker-secret",
        records_dir=tmp_path / "records",
        command=command,
        release="r1",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def backend(tmp_path: Path, standin: tuple[list[str], Path]) -> AsyncIterator[LocalBackend]:
    b = make_backend(tmp_path, standin[0], stop_timeout=5.0)
    await b.start()
    yield b
    await b.close()


async def info_of(out: Path, name: str) -> dict:
    path = out / f"{name}.info"
    await wait_until(path.exists)
    return json.loads(path.read_text())


async def by_name(backend: LocalBackend) -> dict[str, WorkerInfo]:
    return {w.name: w for w in await backend.list()}


async def test_create_list_and_environment(
    backend: LocalBackend, standin: tuple[list[str], Path], tmp_path: Path
) -> None:
    names = await backend.create(2)
    assert len(set(names)) == 2
    listed = await by_name(backend)
    assert set(listed) == set(names)
    assert all(w.phase == "running" and w.release == "r1" for w in listed.values())

    info = await info_of(standin[1], names[0])
    assert info["env"] == {
        "ORCHESTRATOR_URL": "http://127.0.0.1:9",
        "WORKER_TOKEN": "worker-secret",
        "WORKER_ID": names[0],
        "RECORDS_DIR": str(tmp_path / "records"),
    }
    # Its own process group, so one signal reaches everything it started.
    assert os.getpgid(info["pid"]) == info["pid"]
    assert os.getpgid(info["child"]) == info["pid"]


async def test_retire_stops_the_worker_and_its_children(backend: LocalBackend, standin: tuple[list[str], Path]) -> None:
    [name] = await backend.create(1)
    info = await info_of(standin[1], name)
    assert await backend.retire(name) is True
    await wait_until(lambda: not alive(info["pid"]) and not alive(info["child"]))
    await wait_until(lambda: name not in backend._workers)
    assert await backend.retire(name) is False  # gone already
    assert await backend.list() == []


async def test_crash_is_reported_failed_with_reason_and_leaves_nothing(
    backend: LocalBackend, standin: tuple[list[str], Path]
) -> None:
    [name, other] = await backend.create(2)
    info = await info_of(standin[1], name)
    (standin[1] / f"{name}.crash").touch()

    async def failed() -> WorkerInfo:
        while True:
            w = (await by_name(backend)).get(name)
            if w is not None and w.phase == "failed":
                return w
            await asyncio.sleep(0.05)

    worker = await asyncio.wait_for(failed(), 15)
    assert worker.reason is not None
    assert "exited with code 3" in worker.reason
    assert "display failed: Xvfb could not open :99" in worker.reason
    # What it had started in its group is taken down with it.
    await wait_until(lambda: not alive(info["child"]))
    assert (await by_name(backend))[other].phase == "running"

    # Removing the failed worker (the autoscaler's replace) drops it from the list.
    assert await backend.retire(name) is True
    assert set(await by_name(backend)) == {other}


async def test_kill_9_is_reported_as_a_signal(backend: LocalBackend, standin: tuple[list[str], Path]) -> None:
    [name] = await backend.create(1)
    info = await info_of(standin[1], name)
    os.kill(info["pid"], 9)
    await wait_until(lambda: backend._workers[name].phase == "failed")
    assert "killed by SIGKILL" in (backend._workers[name].reason or "")
    await wait_until(lambda: not alive(info["child"]))


async def test_close_leaves_no_process_even_when_a_worker_ignores_sigterm(
    tmp_path: Path, standin: tuple[list[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    b = make_backend(tmp_path, standin[0], stop_timeout=1.0, env={"STANDIN_IGNORE_TERM": "1"})
    await b.start()
    names = await b.create(2)
    infos = [await info_of(standin[1], n) for n in names]
    started = time.monotonic()
    await b.close()
    assert time.monotonic() - started < 20
    pids = [i["pid"] for i in infos] + [i["child"] for i in infos]
    await wait_until(lambda: not any(alive(p) for p in pids), within=5)
    assert await b.list() == []
    assert list(b.state_dir.glob("*.json")) == []
    with pytest.raises(RuntimeError):
        await b.create(1)


async def test_workers_of_a_killed_orchestrator_are_adopted(tmp_path: Path, standin: tuple[list[str], Path]) -> None:
    # An earlier orchestrator, in its own process, starts a worker and dies without cleaning up.
    earlier = textwrap.dedent(
        f"""
        import asyncio, os
        from pathlib import Path
        from orchestrator.pool.local import LocalBackend

        async def main():
            b = LocalBackend(orchestrator_url="http://127.0.0.1:9", worker_token="t",
                             records_dir=Path({str(tmp_path / "records")!r}), command={standin[0]!r},
                             release="r0")
            await b.start()
            [name] = await b.create(1)
            print(name, flush=True)
            os._exit(9)

        asyncio.run(main())
        """
    )
    earlier_run = await asyncio.create_subprocess_exec(
        sys.executable, "-c", earlier, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(earlier_run.communicate(), 60)
    name = out.decode().strip().splitlines()[-1] if out.strip() else ""
    assert name, err.decode()
    info = await info_of(standin[1], name)
    assert alive(info["pid"])

    b = make_backend(tmp_path, standin[0], stop_timeout=5.0)
    try:
        await b.start()
        listed = await by_name(b)
        assert listed[name].phase == "running"
        assert listed[name].release == "r0"
        assert await b.retire(name)
        await wait_until(lambda: not alive(info["pid"]) and not alive(info["child"]))
        await wait_until(lambda: name not in b._workers)
    finally:
        await b.close()
    assert not alive(info["pid"])


async def test_adoption_ignores_a_stale_record(tmp_path: Path, standin: tuple[list[str], Path]) -> None:
    b = make_backend(tmp_path, standin[0])
    b.state_dir.mkdir(parents=True)
    # The pid of this test process, but a start time that is not its own: a reused pid, not our worker.
    stale = {"name": "local-stale", "pid": os.getpid(), "created_at": 0, "release": "", "started": "1"}
    (b.state_dir / "local-stale.json").write_text(json.dumps(stale))
    (b.state_dir / "garbage.json").write_text("{not json")
    await b.start()
    try:
        assert await b.list() == []
        assert list(b.state_dir.glob("*.json")) == []
    finally:
        await b.close()


def test_default_capacity_keeps_half_the_cores_free_for_fidelity() -> None:
    assert default_capacity(cores=2) == 2  # the reference machine: what the density benchmark held
    assert default_capacity(cores=8) == 8
    assert default_capacity(cores=2, cost_per_recording=0.25) == 4
    assert default_capacity(cores=2, cost_per_recording=0.7) == 1
    assert default_capacity(cores=1, cost_per_recording=2.0) == 1  # always at least one
    assert default_capacity() >= 1
