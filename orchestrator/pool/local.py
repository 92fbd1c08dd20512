"""The local backend: workers are `recorder worker` subprocesses of the orchestrator, on this machine.

Each worker runs in its own process group, is stopped with SIGTERM (it drains: finishes, uploads and
reports) and SIGKILL after `stop_timeout`, and whatever it leaves in its group is cleared after it exits,
so no Xvfb or FFmpeg outlives it. A worker that exits without being asked is listed as failed, with its
exit status and the last line it logged, for `failed_retention` seconds; the autoscaler no longer counts
it, so it is replaced at once.

A worker's stdout and stderr go to `<state_dir>/<name>.log`: a file, not a pipe, because a pipe would be
inherited by the processes the worker starts and hide its exit. The log of a failed worker is kept.

Workers outlive an orchestrator that is killed: they keep recording and report to the restarted one.
To keep supervising them, each worker's pid is written under `state_dir`, and `start()` adopts the
workers still alive from an earlier run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from orchestrator.pool.backend import WorkerInfo, WorkerPhase

log = structlog.get_logger(__name__)

# Cores one 720p30 recording of the 2x2 reference page costs (Xvfb, PulseAudio, Chromium, FFmpeg with the
# shipped encoder), measured alone on the reference machine: 0.44-0.51 (bench/results/levers-20261130-1902,
# density-20261130-1920; docs/benchmarks.md, "Capture engine").
RECORDING_COST_CORES = 0.47
# The share of a machine's cores recordings may take and still each keep every picture and A/V in sync:
# two at once (0.88 of 2 cores) kept 29.45 and 29.65 distinct fps; three (1.37 cores) dropped one to 27.2 fps
# and put another's audio 73 ms early. Recordings fail by the clocks of their compositor and grab slipping,
# long before the cores run out, so the capacity keeps half the machine free: floor(2 x 0.5 / 0.47) = 2.
FAITHFUL_SHARE = 0.5
# How long what a worker left in its process group gets between SIGTERM and SIGKILL.
GROUP_CLEANUP_TIMEOUT = 3.0

# What a worker inherits from the orchestrator's environment, and nothing else: what it needs to run
# Python and find programs, locale and time zone, its own settings (WORKER_*, RECORDER_*, and the names it
# shares with the orchestrator), and the S3 settings and credentials it uploads with. Never API_TOKENS,
# the webhook secret or any other ORCHESTRATOR_* value: a worker runs strangers' pages.
WORKER_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "VIRTUAL_ENV",
        "RECORDS_DIR",
        "CHROMIUM_PATH",
        "URL_ALLOWLIST",
        "KEEP_LOCAL",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    }
)
WORKER_ENV_PREFIXES = ("LC_", "PYTHON", "WORKER_", "RECORDER_", "S3_", "AWS_", "PLAYWRIGHT_")


def worker_environment(inherited: Mapping[str, str]) -> dict[str, str]:
    """The allowlisted part of the orchestrator's environment, for a worker subprocess."""
    return {
        name: value
        for name, value in inherited.items()
        if name in WORKER_ENV_NAMES or name.startswith(WORKER_ENV_PREFIXES)
    }


DEFAULT_WORKER_COMMAND: tuple[str, ...] = (
    sys.executable,
    "-c",
    "import sys; from recorder.cli import main; sys.exit(main())",
    "worker",
)


def available_cores() -> int:
    """Cores this process may run on (honours taskset/cgroup affinity, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_capacity(cores: int | None = None, cost_per_recording: float = RECORDING_COST_CORES) -> int:
    """How many recordings this machine keeps faithful at once: floor(cores x share / cost), at least one."""
    cores = available_cores() if cores is None else cores
    return max(1, math.floor(cores * FAITHFUL_SHARE / cost_per_recording + 1e-9))


@dataclass
class _Worker:
    name: str
    pid: int
    created_at: float
    release: str
    process: asyncio.subprocess.Process | None = None  # None when adopted from an earlier run
    retiring: bool = False
    phase: WorkerPhase = "running"
    reason: str | None = None
    last_words: str | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def info(self) -> WorkerInfo:
        return WorkerInfo(
            name=self.name,
            phase=self.phase,
            release=self.release,
            created_at=self.created_at,
            reason=self.reason,
            labels={"pid": str(self.pid)},
        )


class LocalBackend:
    """Runs workers as supervised subprocesses; implements `PoolBackend`."""

    name = "local"

    def __init__(
        self,
        *,
        orchestrator_url: str,
        worker_token: str | None,
        records_dir: Path,
        command: Sequence[str] = DEFAULT_WORKER_COMMAND,
        env: dict[str, str] | None = None,
        release: str = "",
        capacity: int | None = None,
        stop_timeout: float = 60.0,
        state_dir: Path | None = None,
        name_prefix: str = "local",
        failed_retention: float = 60.0,
    ) -> None:
        self.orchestrator_url = orchestrator_url
        self.worker_token = worker_token
        self.records_dir = Path(records_dir)
        self.command = list(command)
        self.extra_env = dict(env or {})
        self.release = release
        self.capacity = capacity if capacity is not None else default_capacity()
        # How long a worker gets, after SIGTERM, to finish, upload and report before it is killed.
        self.stop_timeout = stop_timeout
        self.state_dir = Path(state_dir) if state_dir is not None else self.records_dir / ".pool"
        self.name_prefix = name_prefix
        # How long a failed worker stays listed, with its reason, before it is forgotten.
        self.failed_retention = failed_retention
        self._workers: dict[str, _Worker] = {}
        self._closed = False

    # -- PoolBackend -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._closed = False  # started again (the orchestrator leads again): it may create workers
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for path in sorted(self.state_dir.glob("*.json")):
            self._adopt(path)

    async def create(self, count: int) -> list[str]:
        if self._closed:
            raise RuntimeError("the local pool is closed")
        names = []
        for _ in range(count):
            names.append(await self._spawn())
        return names

    async def retire(self, name: str) -> bool:
        worker = self._workers.get(name)
        if worker is None:
            return False
        if worker.phase == "failed":
            # Already gone; let the clean-up of its group finish, then drop it from the list.
            await worker.exited.wait()
            self._forget(worker)
            return True
        worker.retiring = True
        self._signal(worker, signal.SIGTERM)
        worker.tasks.append(asyncio.create_task(self._reap_after(worker, self.stop_timeout)))
        return True

    async def list(self) -> list[WorkerInfo]:
        return [w.info() for w in self._workers.values()]

    async def close(self) -> None:
        """Stop every worker: SIGTERM (they finish, upload and report), then SIGKILL after the timeout."""
        self._closed = True
        workers = list(self._workers.values())
        for worker in workers:
            if not worker.exited.is_set():
                worker.retiring = True
                self._signal(worker, signal.SIGTERM)
        await asyncio.gather(*(self._stop(w, self.stop_timeout) for w in workers))
        for worker in workers:
            for task in worker.tasks:
                task.cancel()
            await asyncio.gather(*worker.tasks, return_exceptions=True)
            self._forget(worker)

    # -- spawning and supervision ------------------------------------------------------------------

    async def _spawn(self) -> str:
        name = f"{self.name_prefix}-{uuid.uuid4().hex[:8]}"
        env = {
            **worker_environment(os.environ),
            **self.extra_env,
            "ORCHESTRATOR_URL": self.orchestrator_url,
            "WORKER_TOKEN": self.worker_token or "",
            "WORKER_ID": name,
            "RECORDS_DIR": str(self.records_dir),
            "PYTHONUNBUFFERED": "1",
        }
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        logfile = os.open(self._log_path(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                start_new_session=True,  # its own process group: one signal reaches everything it started
            )
        finally:
            os.close(logfile)
        worker = _Worker(name=name, pid=process.pid, created_at=time.time(), release=self.release, process=process)
        self._workers[name] = worker
        self._write_state(worker)
        worker.tasks.append(asyncio.create_task(self._supervise(worker)))
        log.info("pool.worker_started", worker_id=name, pid=process.pid, log=str(self._log_path(name)))
        return name

    async def _supervise(self, worker: _Worker) -> None:
        """Wait for the worker's exit and record why it went."""
        assert worker.process is not None
        code = await worker.process.wait()
        await self._exited(worker, code)

    async def _exited(self, worker: _Worker, code: int | None) -> None:
        if worker.retiring or code == 0:
            # Asked to go, or a single-use worker done with its job.
            log.info("pool.worker_exited", worker_id=worker.name, code=code)
        else:
            worker.phase = "failed"
            worker.reason = _exit_reason(code, _last_line(self._log_path(worker.name)) or worker.last_words)
            log.warning("pool.worker_failed", worker_id=worker.name, code=code, reason=worker.reason)
        # A crashed worker may leave Xvfb or FFmpeg behind in its group: take them down too.
        await _clear_group(worker.pid, GROUP_CLEANUP_TIMEOUT)
        self._remove_state(worker)
        worker.exited.set()
        if worker.phase != "failed":
            self._forget(worker)
            self._log_path(worker.name).unlink(missing_ok=True)
        else:
            await asyncio.sleep(self.failed_retention)
            self._forget(worker)

    async def _reap_after(self, worker: _Worker, grace: float) -> None:
        await self._stop(worker, grace)
        self._forget(worker)

    async def _stop(self, worker: _Worker, grace: float) -> None:
        """Wait up to `grace` for the exit asked for by SIGTERM, then SIGKILL."""
        try:
            await asyncio.wait_for(worker.exited.wait(), grace)
            return
        except TimeoutError:
            pass
        # Kill the worker itself first: its browser driver then sees its pipe close and takes the
        # browser down with it (the browser runs in a session of its own); its group is cleared after.
        log.warning("pool.worker_killed", worker_id=worker.name, after=grace)
        self._signal(worker, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(worker.exited.wait(), GROUP_CLEANUP_TIMEOUT + 10.0)

    @staticmethod
    def _signal(worker: _Worker, sig: signal.Signals) -> None:
        """Signal the worker alone: it drains and stops what it started; the rest of its group is
        cleared once it has exited."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(worker.pid, sig)

    def _forget(self, worker: _Worker) -> None:
        self._workers.pop(worker.name, None)
        self._remove_state(worker)

    # -- adoption of workers that outlived an earlier orchestrator ---------------------------------

    def _write_state(self, worker: _Worker) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = {
            "name": worker.name,
            "pid": worker.pid,
            "created_at": worker.created_at,
            "release": worker.release,
            "started": _process_start_time(worker.pid),
        }
        tmp = self.state_dir / f".{worker.name}.tmp"
        tmp.write_text(json.dumps(record))
        tmp.replace(self._state_path(worker))

    def _remove_state(self, worker: _Worker) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._state_path(worker).unlink()

    def _state_path(self, worker: _Worker) -> Path:
        return self.state_dir / f"{worker.name}.json"

    def _log_path(self, name: str) -> Path:
        return self.state_dir / f"{name}.log"

    def _adopt(self, path: Path) -> None:
        try:
            record = json.loads(path.read_text())
            name, pid = str(record["name"]), int(record["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            return
        # The same pid with the same start time is the same process, not a stranger that reused the pid.
        if name in self._workers or _process_start_time(pid) != record.get("started"):
            path.unlink(missing_ok=True)
            return
        worker = _Worker(
            name=name,
            pid=pid,
            created_at=float(record.get("created_at", 0.0)),
            release=str(record.get("release", "")),
        )
        self._workers[name] = worker
        worker.tasks.append(asyncio.create_task(self._watch_adopted(worker, record.get("started"))))
        log.info("pool.worker_adopted", worker_id=name, pid=pid)

    async def _watch_adopted(self, worker: _Worker, started: str | None) -> None:
        """Not our child, so no exit code and no wait(): poll /proc until the process is gone."""
        while _process_start_time(worker.pid) == started:  # noqa: ASYNC110 - nothing to await but time
            await asyncio.sleep(0.5)
        worker.last_words = "exit status unknown (worker adopted from an earlier orchestrator run)"
        await self._exited(worker, None)


async def _clear_group(pgid: int, grace: float) -> None:
    """SIGTERM what is left of a process group, then SIGKILL it if it has not gone within `grace`."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/pid/stat); None when no such process runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()
    if fields[0] == "Z":  # a zombie has exited already
        return None
    return fields[19]


def _last_line(path: Path, window: int = 8192) -> str | None:
    """The last non-empty line of a log file, read from its end (logs can be long)."""
    try:
        with path.open("rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - window))
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    return next((line.strip() for line in reversed(lines) if line.strip()), None)


def _exit_reason(code: int | None, last: str | None) -> str:
    if code is None:
        status = "exited"
    elif code < 0:
        try:
            status = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            status = f"killed by signal {-code}"
    else:
        status = f"exited with code {code}"
    return f"worker {status}: {last}" if last else f"worker {status}"
