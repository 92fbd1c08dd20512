"""The recorder image, built once per test run with scripts/build-image.sh, and commands run inside it.

Where the container runtime may start containers, a command runs with `docker run` or `podman run` (host
network, 1 GiB /dev/shm), as a pod would. Where it is refused (crun cannot set the container's rlimits
without CAP_SYS_RESOURCE, as on our machines and in CI), the command runs chrooted into the root
filesystem of a container made from the image (`podman create` + `podman mount`), as the image's user,
with the image's environment and working directory, and with /proc, /dev and a 1 GiB /dev/shm mounted in
a mount namespace of its own: those mounts go when the command ends, whatever happens to the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build-image.sh"
IMAGE_TAG = "localhost/recorder-farm:test"
# The image's recordings folder (RECORDS_DIR in Dockerfile.recorder): the runners expose it to the test.
RECORDINGS = "/recordings"


@dataclass(frozen=True)
class BuiltImage:
    """An image scripts/build-image.sh made, with what the script said about it."""

    tag: str
    engine: str  # "docker" or "podman"
    size_bytes: int
    build_seconds: int
    log: Path


def build_image(tag: str, log: Path, timeout: float = 1800) -> BuiltImage:
    """Run scripts/build-image.sh; its whole output goes to `log`, its tail into the failure message."""
    with log.open("w") as out:
        # A session of its own, so a build that runs out of time goes with everything it started (podman,
        # debootstrap), not only the script.
        build = subprocess.Popen(
            [str(BUILD_SCRIPT), "--tag", tag], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = build.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(build.pid, signal.SIGKILL)
            build.wait()
            raise AssertionError(f"scripts/build-image.sh took longer than {timeout:g} s; see {log}") from None
    text = log.read_text(errors="replace")
    if returncode != 0:
        tail = "\n".join(text.splitlines()[-30:])
        raise AssertionError(f"scripts/build-image.sh exited {returncode}; the end of {log}:\n{tail}")
    size = re.search(r"^build-image: size \d+ MiB \((\d+) bytes\)$", text, re.M)
    took = re.search(r"^build-image: built in (\d+) s$", text, re.M)
    assert size and took, f"scripts/build-image.sh did not print the image size and build time; see {log}"
    engine = "docker" if "build-image: using the Docker engine" in text else "podman"
    return BuiltImage(tag, engine, int(size.group(1)), int(took.group(1)), log)


@dataclass(frozen=True)
class ImageConfig:
    """What the image says a container runs as, with and where."""

    user: str
    env: dict[str, str]
    workdir: str
    cmd: list[str]

    @classmethod
    def of(cls, engine: str, tag: str) -> ImageConfig:
        raw = json.loads(_run([engine, "image", "inspect", tag]).stdout)[0]
        config = raw.get("Config") or {}
        env = dict(entry.split("=", 1) for entry in config.get("Env") or [])
        return cls(config.get("User") or "root", env, config.get("WorkingDir") or "/", list(config.get("Cmd") or []))


class ImageRunner(Protocol):
    """Starts commands inside the image; `close` removes everything it made."""

    how: str

    def start(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]: ...

    def host_path(self, inside: str) -> Path:
        """Where a path under RECORDINGS inside the image is on this machine."""
        ...

    def close(self) -> None: ...


def _run(argv: Sequence[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done


def _start(argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        # A session of its own, so that stopping it reaches every process the command started.
        return subprocess.Popen(list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM to the command's whole session, SIGKILL if it lingers."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        except ProcessLookupError:
            pass
    # Whatever the command left in its session (a helper that ignored SIGTERM) goes too.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class ContainerRun:
    """`docker run` / `podman run` on the host network with a 1 GiB /dev/shm, RECORDINGS on a host folder."""

    def __init__(self, engine: str, tag: str, recordings: Path) -> None:
        self.engine, self.tag, self.recordings = engine, tag, recordings
        self.how = f"{engine} run"
        self.names: list[str] = []
        recordings.mkdir(parents=True, exist_ok=True)
        os.chown(recordings, 10001, 10001)  # the image's user must write there

    def start(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
        name = f"recorder-farm-test-{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        flags = [f"--env={key}={value}" for key, value in env.items()]
        return _start(
            [self.engine, "run", "--rm", f"--name={name}", "--network=host", "--shm-size=1g",
             f"--volume={self.recordings}:{RECORDINGS}", *flags, self.tag, *argv],
            log,
        )  # fmt: skip

    def host_path(self, inside: str) -> Path:
        return self.recordings / Path(inside).relative_to(RECORDINGS)

    def close(self) -> None:
        for name in self.names:
            subprocess.run([self.engine, "rm", "--force", name], capture_output=True, timeout=60, check=False)


# Run by `unshare --mount`: the mounts live in that namespace only and vanish with it.
_ENTER = r"""
set -e
root="$1"; user="$2"; shift 2
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o size=1g,mode=1777,nosuid,nodev shm "$root/dev/shm"
exec chroot --userspec="$user" --groups="${user#*:}" "$root" "$@"
"""


class ChrootRun:
    """Commands chrooted into a container's root filesystem, as the image's user, with its environment."""

    how = "chroot into the image's root filesystem"

    def __init__(self, tag: str, config: ImageConfig) -> None:
        self.config = config
        self.container = _run(["podman", "create", tag]).stdout.strip()
        try:
            self.root = Path(_run(["podman", "mount", self.container]).stdout.strip())
            self.uid, self.gid, self.home = self._user()
        except BaseException:
            self.close()
            raise
        self.processes: list[subprocess.Popen[bytes]] = []

    def _user(self) -> tuple[int, int, str]:
        """The image's user as numbers, looked up in the image's own /etc/passwd."""
        name = self.config.user.split(":", 1)[0]
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if name in (fields[0], fields[2]):
                return int(fields[2]), int(fields[3]), fields[5]
        raise AssertionError(f"the image's user {self.config.user!r} is not in its /etc/passwd")

    def start(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
        environment = {"HOME": self.home, **self.config.env, **env}
        inside = [
            "/usr/bin/env", "-i", *(f"{key}={value}" for key, value in environment.items()),
            "/bin/sh", "-c", 'cd "$0" && exec "$@"', self.config.workdir, *argv,
        ]  # fmt: skip
        unshare = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", _ENTER, "enter"]
        process = _start([*unshare, str(self.root), f"{self.uid}:{self.gid}", *inside], log)
        self.processes.append(process)
        return process

    def host_path(self, inside: str) -> Path:
        return self.root / Path(inside).relative_to("/")

    def mounts(self) -> list[str]:
        """Mount points on this machine at or under the container's root (its own overlay included)."""
        root = str(self.root)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        return [p for p in points if p == root or p.startswith(root + "/")]

    def close(self) -> None:
        for process in getattr(self, "processes", []):
            stop(process)
        subprocess.run(["podman", "umount", self.container], capture_output=True, timeout=60, check=False)
        subprocess.run(["podman", "rm", "--force", self.container], capture_output=True, timeout=60, check=False)


def runtime_refusal(engine: str, tag: str) -> str | None:
    """None when the engine can start a container from the image here; else what it said."""
    done = subprocess.run(
        [engine, "run", "--rm", "--network=host", tag, "true"], capture_output=True, text=True, timeout=120
    )
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]


def open_runner(image: BuiltImage, config: ImageConfig, scratch: Path) -> ImageRunner:
    """`run` where the runtime may start containers, else a chroot (podman only)."""
    refusal = runtime_refusal(image.engine, image.tag)
    if refusal is None:
        return ContainerRun(image.engine, image.tag, scratch / "recordings")
    if image.engine != "podman":
        raise AssertionError(f"{image.engine} cannot start a container from {image.tag}: {refusal}")
    runner = ChrootRun(image.tag, config)
    runner.how += f" (podman run refused: {refusal})"
    return runner


@pytest.fixture(scope="session")
def recorder_image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """The image, built by scripts/build-image.sh once per test run."""
    if os.geteuid() != 0:
        pytest.skip("building and entering the image needs root (podman without a daemon)")
    return build_image(IMAGE_TAG, tmp_path_factory.mktemp("image") / "build.log")


@pytest.fixture(scope="session")
def image_config(recorder_image: BuiltImage) -> ImageConfig:
    return ImageConfig.of(recorder_image.engine, recorder_image.tag)


@pytest.fixture(scope="session")
def image_runner(
    recorder_image: BuiltImage, image_config: ImageConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ImageRunner]:
    """One way into the image for the whole run; everything it made is removed at the end."""
    runner = open_runner(recorder_image, image_config, tmp_path_factory.mktemp("image-run"))
    try:
        yield runner
    finally:
        runner.close()
