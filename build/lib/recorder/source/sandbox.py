"""Chromium's sandbox, kept on where the recorder runs as root, and the short environment Chromium gets.

A recorded page is hostile, so the renderer that runs it must be sandboxed. Chromium refuses its sandbox
as root, and Debian ships no setuid sandbox helper: the sandbox relies on unprivileged user namespaces.
So a root recorder (the local pool, CI) keeps Playwright as root and starts Chromium through a small
wrapper that hands the profile to an unprivileged user and runs Chromium as that user, with no new
privileges, no supplementary groups and no capabilities. A recorder that is not root (the image) runs
Chromium directly, sandboxed. Only where the sandbox truly cannot work (no user namespaces, no such user)
does Chromium run with `--no-sandbox`: one warning line says why, the worker reports it to the
orchestrator, and with RECORDER_REQUIRE_SANDBOX the recorder refuses to start instead.

Chromium inherits nothing but an explicit allowlist of variables, so no token, S3 credential or webhook
secret of the process that runs it is ever in its environment.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog
from playwright.async_api import Error as PlaywrightError

from contract.errors import ErrorCode, RecorderError

log = structlog.get_logger(__name__)

T = TypeVar("T")

INSTANCE_ENV = "RECORDER_BROWSER_INSTANCE"

# The only variables Chromium gets: what it needs to find programs, fonts, locale and time zone; the
# display and audio server the recorder hands it; its home; and names that only mark whose processes these
# are (the browser instance, the worker's name, and RECORDER_PROCESS_TAG).
BROWSER_ENV_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "DISPLAY",
        "XAUTHORITY",
        "PULSE_SERVER",
        "PULSE_SINK",
        "PULSE_RUNTIME_PATH",
        INSTANCE_ENV,
        "WORKER_ID",
        "RECORDER_PROCESS_TAG",
    }
)
BROWSER_ENV_PREFIXES = ("LC_", "FONTCONFIG_")

# What Chromium prints when it finds no sandbox it can use (no user namespaces, no setuid helper).
_NO_SANDBOX_MARKERS = (
    "No usable sandbox",
    "Failed to move to new namespace",
    "namespace sandbox",
    "setuid sandbox",
    "--no-sandbox",
)


def allowed_in_browser_env(name: str) -> bool:
    return name in BROWSER_ENV_NAMES or name.startswith(BROWSER_ENV_PREFIXES)


def browser_environment(inherited: Mapping[str, str], provided: Mapping[str, str]) -> dict[str, str]:
    """Chromium's environment: the allowlisted part of `inherited`, then what the recorder `provided`.

    A provided name outside the allowlist is a programming error, not something to pass on quietly."""
    extra = sorted(name for name in provided if not allowed_in_browser_env(name))
    if extra:
        raise ValueError(f"not allowed in Chromium's environment: {', '.join(extra)}")
    env = {name: value for name, value in inherited.items() if allowed_in_browser_env(name)}
    env.update(provided)
    return env


@dataclass(frozen=True)
class SandboxState:
    """Whether this browser's Chromium runs sandboxed, as whom, and why not when it does not."""

    enabled: bool
    user: str
    reason: str | None = None


@dataclass(frozen=True)
class BrowserUser:
    name: str
    uid: int
    gid: int


class BrowserLaunch:
    """How one Chromium starts: the executable Playwright runs, its home and who it runs as.

    `prepare()` makes, for a root recorder, a private directory (root's, mode 0711) holding the wrapper
    (root's, 0700) and the browser user's home (the user's, 0700); `cleanup()` removes it."""

    def __init__(self, chromium_path: str, user_name: str) -> None:
        self.chromium_path = chromium_path
        self.user_name = user_name
        self.executable = chromium_path
        self.user: BrowserUser | None = None
        self.home: str | None = None
        # Why the sandbox cannot even be tried; None when it can.
        self.unavailable: str | None = None
        self._dir: Path | None = None

    @property
    def runs_as(self) -> str:
        if self.user is not None:
            return self.user.name
        try:
            return pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            return str(os.geteuid())

    def prepare(self) -> None:
        if os.geteuid() != 0:
            return  # Chromium runs as this (unprivileged) user, sandboxed, with this user's home
        try:
            entry = pwd.getpwnam(self.user_name)
        except KeyError:
            self.unavailable = (
                f"the recorder runs as root and the user {self.user_name} (RECORDER_BROWSER_USER) does not exist; "
                "scripts/install-system-deps.sh creates it"
            )
            return
        if entry.pw_uid == 0:
            self.unavailable = f"RECORDER_BROWSER_USER={self.user_name} is root"
            return
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            self.unavailable = "the recorder runs as root and setpriv (util-linux) is not installed"
            return
        self.user = BrowserUser(self.user_name, entry.pw_uid, entry.pw_gid)
        _remove_stale_dirs()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-"))
        os.chmod(self._dir, 0o711)  # the user may pass through to its home, not list or change anything
        home = self._dir / "home"
        home.mkdir(mode=0o700)
        os.chown(home, self.user.uid, self.user.gid)
        self.home = str(home)
        wrapper = self._dir / "chromium"
        wrapper.write_text(_wrapper_script(setpriv, self.chromium_path, self.user))
        wrapper.chmod(0o700)
        self.executable = str(wrapper)

    def grant_socket(self, server: str | None) -> None:
        """Let the browser user reach a unix socket in a private directory of ours (the audio server's):
        the directory's group becomes the user's, with search permission only."""
        if self.user is None or not server or not server.startswith("unix:"):
            return
        directory = Path(server.removeprefix("unix:")).parent
        info = directory.stat()
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077 not in (0, 0o010):
            return  # not a private directory of ours: leave it as it is
        os.chown(directory, -1, self.user.gid)
        os.chmod(directory, 0o710)

    def cleanup(self) -> None:
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)


_DIR_PREFIX = "recorder-browser-"


def _remove_stale_dirs() -> None:
    """Remove the launch directories of recorders that were killed before they could (their pid is in the
    name; a directory whose process still runs is never touched)."""
    for path in Path(tempfile.gettempdir()).glob(f"{_DIR_PREFIX}*-*"):
        pid = path.name.removeprefix(_DIR_PREFIX).split("-", 1)[0]
        try:
            info = path.lstat()
        except OSError:
            continue
        if not pid.isdigit() or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            continue


def _wrapper_script(setpriv: str, chromium: str, user: BrowserUser) -> str:
    """Runs Chromium as `user`. Exec keeps the pid and the pipe Playwright drives Chromium over (fds 3
    and 4); the profile Playwright made (as root) is handed to the user first."""
    owner = f"{user.uid}:{user.gid}"
    return f"""#!/bin/sh
# Starts Chromium as {user.name}: no new privileges, no supplementary groups, no capabilities.
for arg do
  case "$arg" in
    --user-data-dir=*) chown -R -- {owner} "${{arg#--user-data-dir=}}" || exit 1 ;;
  esac
done
exec {shlex.quote(setpriv)} --reuid={user.uid} --regid={user.gid} --clear-groups --no-new-privs \\
  --inh-caps=-all --bounding-set=-all -- {shlex.quote(chromium)} "$@"
"""


def sandbox_failure(message: str) -> bool:
    """Whether a failed launch failed because Chromium found no sandbox it could use."""
    return any(marker in message for marker in _NO_SANDBOX_MARKERS)


# Launch failures already seen in this process, by (chromium, user): a sandbox that failed once is not
# tried again at every browser restart. And the reasons already logged: the warning is one line, once.
_failed: dict[tuple[str, str], str] = {}
_warned: set[str] = set()


async def launch_sandboxed(
    launch: BrowserLaunch,
    start: Callable[[bool], Awaitable[T]],
    *,
    require: bool,
) -> tuple[T, SandboxState]:
    """Start Chromium with its sandbox when it can work; else without it and say so once, or refuse.

    `start(sandbox)` launches Chromium with or without the sandbox."""
    key = (launch.chromium_path, launch.runs_as)
    reason = launch.unavailable or _failed.get(key)
    if reason is None:
        try:
            return await start(True), SandboxState(enabled=True, user=launch.runs_as)
        except PlaywrightError as exc:
            if not sandbox_failure(exc.message):
                raise
            reason = f"Chromium found no usable sandbox (user namespaces blocked?): {_sandbox_line(exc.message)}"
            _failed[key] = reason
    if require:
        raise RecorderError(
            ErrorCode.BROWSER_FAILED,
            f"Chromium's sandbox is required (RECORDER_REQUIRE_SANDBOX) but cannot work: {reason}",
        )
    if reason not in _warned:
        _warned.add(reason)
        log.warning("browser sandbox off: Chromium runs with --no-sandbox", reason=reason, user=launch.runs_as)
    return await start(False), SandboxState(enabled=False, user=launch.runs_as, reason=reason)


def _sandbox_line(message: str) -> str:
    """What Chromium said about its sandbox, without the log prefixes; else the first line."""
    for line in message.splitlines():
        for marker in _NO_SANDBOX_MARKERS:
            if marker in line:
                return line[line.index(marker) :][:200]
    return next((line.strip() for line in message.splitlines() if line.strip()), "")[:200]


def forget_verdicts() -> None:
    """Try the sandbox again at the next start, and warn again (tests)."""
    _failed.clear()
    _warned.clear()
