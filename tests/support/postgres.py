"""Test fixtures: a private PostgreSQL cluster, started by the tests and stopped after them.

- `PostgresServer`: `initdb` into a temporary folder (trust auth, fsync off), `postgres` listening on
  127.0.0.1 on a free port and on a unix socket of its own; nothing of the machine's own clusters is used.
  Tests run as root and PostgreSQL refuses root, so under root the cluster runs as the `postgres` system
  user (Debian's package creates it) through `setpriv`.
- `postgres_server` (session): one cluster per test run, started the first time a test asks for it and
  stopped at the end of the session, even when tests failed.
- `postgres_dsn`: a DSN to a fresh, empty database of that cluster, one per test.

Without PostgreSQL's server binaries the fixtures fail, naming scripts/install-system-deps.sh: a store
test that quietly skips would look like a store that works.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.net import free_port

INSTALL_HINT = "install PostgreSQL's server with scripts/install-system-deps.sh (Debian's `postgresql` package)"
SERVER_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says what to install or fix."""


def find_bindir() -> Path:
    """The folder holding `initdb` and `postgres`: Debian's versioned folder, pg_config's, or the PATH's."""
    candidates: list[Path] = [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True)
            candidates.append(Path(out.stdout.strip()))
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise PostgresUnavailable(f"no PostgreSQL server binaries (initdb, postgres) found: {INSTALL_HINT}")


class PostgresServer:
    """One private cluster: `start()`, `dsn(database)`, `create_database()`, `stop()`."""

    def __init__(self, bindir: Path | None = None, *, durable: bool = False) -> None:
        self.bindir = bindir
        # Tests need no durability; a benchmark set beside SQLite FULL needs the server's default (fsync on).
        self.durable = durable
        self.port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "start() the server first"
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None, "start() the server first"
        return self.root / "socket"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "start() the server first"
        return self.root / "server.log"

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/{database}"

    def _speed_over_safety(self) -> list[str]:
        if self.durable:
            return []
        return ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]

    def start(self, timeout: float = 60.0) -> None:
        """initdb, then the server, then wait until it accepts connections; on any failure, clean up."""
        bindir = self.bindir or find_bindir()
        self.bindir = bindir
        as_user = self._run_as()
        self.root = Path(tempfile.mkdtemp(prefix="orchestrator-pg-"))
        try:
            self.data_dir.mkdir(mode=0o700)
            self.socket_dir.mkdir(mode=0o700)
            self.log_path.touch()
            if as_user:
                user = pwd.getpwnam(SERVER_USER)
                for path in (self.root, self.data_dir, self.socket_dir, self.log_path):
                    os.chown(path, user.pw_uid, user.pw_gid)
            init = subprocess.run(
                [
                    *as_user,
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SERVER_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if init.returncode != 0:
                raise PostgresUnavailable(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
            self.port = free_port()
            log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed right after
            try:
                self.process = subprocess.Popen(
                    [
                        *as_user,
                        str(bindir / "postgres"),
                        "-D",
                        str(self.data_dir),
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.socket_dir),
                        "-c",
                        "listen_addresses=127.0.0.1",
                        *self._speed_over_safety(),
                        "-c",
                        "max_connections=200",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            finally:
                log.close()
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _run_as(self) -> list[str]:
        """The prefix that drops root to the `postgres` user; empty when not root."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise PostgresUnavailable(
                f"running as root and there is no `{SERVER_USER}` user to run PostgreSQL as: {INSTALL_HINT}"
            ) from None
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise PostgresUnavailable("running as root and `setpriv` (util-linux) is missing to drop to `postgres`")
        return [setpriv, f"--reuid={SERVER_USER}", f"--regid={SERVER_USER}", "--clear-groups"]

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PostgresUnavailable(f"postgres exited with {self.process.returncode}:\n{self._log()}")
            if self._accepts():
                return
            time.sleep(0.1)
        raise PostgresUnavailable(f"postgres did not accept connections within {timeout} s:\n{self._log()}")

    def _accepts(self) -> bool:
        """True once the server answers a query (a listening port alone may still be 'starting up')."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
            pass
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", SERVER_USER, "-q"],
            capture_output=True,
            timeout=10,
        )
        return result.returncode == 0

    def _log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command through psql (the fixtures are synchronous; the stores under test are not)."""
        assert self.bindir is not None
        result = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                self.dsn(database),
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def create_database(self, name: str | None = None) -> str:
        """A fresh, empty database; returns its DSN."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: use letters, digits and underscores")
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then SIGKILL to the process group if it lingers; removes the folder."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process is not None:
            # Backends left behind by a killed postmaster share its process group.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.start()
    except PostgresUnavailable as e:
        pytest.fail(f"cannot start a PostgreSQL server for the tests: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> Iterator[str]:
    dsn = postgres_server.create_database()
    yield dsn
    with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
        postgres_server.drop_database(dsn.rsplit("/", 1)[1])
