"""Test fixtures: a real S3-compatible HTTP server (moto in server mode) in a subprocess.

- `moto_server` (session): `python -m moto.server` on a free 127.0.0.1 port, killed (process group) at the end.
- `aws_env`: fake AWS credentials and region in the environment, no config files, no instance metadata,
  so the code under test finds credentials through the standard chain and never a real account.
- `s3`: a fresh, uniquely named bucket on that server with a client and the endpoint.
- `s3_gate`: a TCP gate in front of the server. Moto keeps its state in memory, so stopping the process
  would lose the multipart upload being tested; instead the test closes the gate, which gives the client
  what a stopped server gives (new connections refused, open ones reset), and reopens it later with S3's
  state intact. That is how an S3 outage mid-upload is simulated. The gate also records the HTTP request
  lines it forwards, so a test can tell which S3 calls reached the server.
- `moto_auth_server` (session): a second server that checks credentials, for "wrong credentials" tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.net import free_port

REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


@dataclass
class MotoServer:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, endpoint: str | None = None, **kwargs: Any) -> Any:
        """A test-side client (few retries, so a test never waits on an outage it caused)."""
        return boto3.client(
            "s3",
            endpoint_url=endpoint or self.endpoint,
            region_name=REGION,
            aws_access_key_id=kwargs.pop("aws_access_key_id", ACCESS_KEY),
            aws_secret_access_key=kwargs.pop("aws_secret_access_key", SECRET_KEY),
            config=Config(retries={"mode": "standard", "max_attempts": 2}),
            **kwargs,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_moto(extra_env: dict[str, str] | None = None, timeout: float = 60.0) -> MotoServer:
    """Start moto's server and wait until it answers HTTP; the caller must `stop()` it."""
    port = free_port()
    env = {**os.environ, **(extra_env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    server = MotoServer(process, port)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode} before answering")
        try:
            urllib.request.urlopen(f"{server.endpoint}/moto-api/", timeout=2).close()
            return server
        except urllib.error.HTTPError:
            return server  # it answered
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"moto server did not answer on port {port} within {timeout} s") from None
            time.sleep(0.1)


_REQUEST_LINE = re.compile(rb"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/1\.[01]\r\n")


@dataclass
class TcpGate:
    """A TCP forwarder to `upstream_port` that can be closed (refuse + reset) and reopened on the same port."""

    upstream_port: int
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    bytes_up: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._close_when: Callable[[str, str], bool] | None = None
        self._close_on_answer: bytes | None = None
        self._threads: list[threading.Thread] = []
        self.open()
        accept = threading.Thread(target=self._accept_loop, daemon=True, name="gate-accept")
        accept.start()
        self._threads.append(accept)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def is_open(self) -> bool:
        return self._listener is not None

    def open(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(64)
            listener.settimeout(0.05)
            self.port = listener.getsockname()[1]
            self._listener = listener

    def close(self) -> None:
        """Stop listening (connections refused) and reset every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            conns, self._conns = self._conns, set()
        if listener is not None:
            listener.close()
        for conn in conns:
            _reset(conn)

    def close_when(self, predicate: Callable[[str, str], bool]) -> None:
        """Close the gate when a request line (method, path) matching `predicate` arrives, before forwarding it."""
        self._close_when = predicate

    def close_on_answer(self, marker: bytes) -> None:
        """Close the gate when a response containing `marker` comes back, before the client gets it: the
        server did the work, the client never hears of it (a lost answer)."""
        self._close_on_answer = marker

    def calls(self, method: str, contains: str = "") -> list[str]:
        return [path for m, path in list(self.requests) if m == method and contains in path]

    def stop(self) -> None:
        self._stopped.set()
        self.close()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- forwarding ------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            listener = self._listener
            if listener is None:
                time.sleep(0.02)
                continue
            try:
                client, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            client.settimeout(None)
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                _reset(client)
                continue
            with self._lock:
                if self._listener is None:  # closed meanwhile
                    _reset(client)
                    _reset(upstream)
                    continue
                self._conns.update((client, upstream))
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                t = threading.Thread(target=self._pump, args=(src, dst, up), daemon=True, name="gate-pump")
                t.start()
                self._threads.append(t)

    def _pump(self, src: socket.socket, dst: socket.socket, upstream: bool) -> None:
        tail = b""
        try:
            while True:
                chunk = src.recv(256 * 1024)
                if not chunk:
                    dst.shutdown(socket.SHUT_WR)
                    return
                if upstream:
                    scan = tail + chunk
                    for match in _REQUEST_LINE.finditer(scan):
                        if match.end() <= len(tail):
                            continue
                        method, path = match.group(1).decode(), match.group(2).decode()
                        self.requests.append((method, path))
                        if self._close_when is not None and self._close_when(method, path):
                            self._close_when = None
                            self.close()
                            return
                    tail = scan[-4096:]
                    self.bytes_up += len(chunk)
                elif self._close_on_answer is not None and self._close_on_answer in tail + chunk:
                    self._close_on_answer = None
                    self.close()
                    return
                else:
                    tail = chunk[-4096:]
                dst.sendall(chunk)
        except OSError:
            return


def _reset(sock: socket.socket) -> None:
    """Abort a connection (SO_LINGER 0: RST), as a crashed server's kernel would.

    shutdown() first: closing alone would not wake a pump thread blocked in recv() on the socket."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class S3Env:
    server: MotoServer
    bucket: str
    client: Any

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=name)
        return name


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Fake credentials through the standard AWS environment variables; nothing from the machine."""
    nowhere = tmp_path_factory.mktemp("aws") / "none"
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(nowhere))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nowhere))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3(aws_env: None, moto_server: MotoServer) -> S3Env:
    client = moto_server.client()
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return S3Env(server=moto_server, bucket=name, client=client)


@pytest.fixture
def s3_gate(moto_server: MotoServer) -> Iterator[TcpGate]:
    gate = TcpGate(moto_server.port)
    try:
        yield gate
    finally:
        gate.stop()


AUTH_BUCKET = "auth-checked"


@pytest.fixture(scope="session")
def moto_auth_server() -> Iterator[MotoServer]:
    """A moto server that checks credentials after its first request (which creates AUTH_BUCKET):
    any access key it has not issued is then refused with InvalidAccessKeyId."""
    server = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "1"})
    try:
        server.client().create_bucket(Bucket=AUTH_BUCKET)
        yield server
    finally:
        server.stop()
