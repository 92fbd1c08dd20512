"""Heavy tests: which ones they are, and the guard that keeps them out of the quick subset.

A test is heavy when it starts Chromium, Xvfb, PulseAudio, FFmpeg or the S3 server, or otherwise takes
more than a couple of seconds on its own. tests/conftest.py marks it from the fixtures it uses (so a new
test that asks for `s3` or `test_page` is marked without a word) and from the short lists below, for
tests that start such processes through helpers of their own. `pytest --quick` (`scripts/test.sh
--quick`) leaves every heavy test out and turns on the guard: a test that starts one of those processes
anyway fails, naming the mark it lacks, instead of quietly making the quick run slow.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# Declared, with what each means, in pyproject.toml's [tool.pytest.ini_options].
HEAVY_MARKS = ("media", "browser", "ffmpeg", "s3", "slow", "image")

# media is the whole recorder pipeline, so it implies the marks of the programs it starts.
IMPLIED = {"media": ("browser", "ffmpeg")}

# Fixtures that start a heavy process. pytest's fixture closure carries the mark to every fixture built
# on them (s3, s3_gate, test_page, ...). A bare name is a tests/support fixture, seen by every module;
# `module::fixture` is a module's own.
FIXTURE_MARKS: dict[str, tuple[str, ...]] = {
    "test_media": ("ffmpeg",),  # makes the reference clips with FFmpeg
    "moto_server": ("s3",),
    "moto_auth_server": ("s3",),
    "postgres_server": ("slow",),  # a private PostgreSQL cluster (tests/support/postgres.py)
    "orchestrator_process": ("slow",),  # `orchestrator serve` as a subprocess, restarted and signalled
    "test_quality::media_dir": ("ffmpeg",),  # its tests make their clips into it with FFmpeg
}

# Tests that start heavy processes through helpers of their own, by module basename (tests may move
# between folders): `module` (all of it) or `module::test` (without parameters).
TEST_MARKS: dict[str, tuple[str, ...]] = {
    "test_quality::test_unreadable_input_is_a_clear_error": ("ffmpeg",),  # ffprobe reads the bad input
    "test_bench::test_result_files_carry_the_machine": ("media",),  # asks Chromium, FFmpeg, PulseAudio their version
    "test_api_fuzz": ("slow",),  # generated requests against every operation: about 20 s in all
    "test_local_backend": ("slow",),  # spawns stand-in workers and waits for them to exit or be killed
}

# Tests that take two seconds or more alone on a 2-core machine, by module basename: nearly all wait on
# real clocks (lease TTLs, grace periods, retry back-offs) that a faster machine cannot shorten.
SLOW_TESTS: dict[str, tuple[str, ...]] = {
    "test_scheduler": (  # wait out a 3 s lease TTL, some twice
        "test_heartbeats_renew_the_lease_and_carry_progress",
        "test_a_lapsed_lease_is_retried_on_another_worker_then_fails_with_worker_lost",
        "test_a_lapsed_recording_says_what_the_pool_saw_kill_its_worker",
        "test_a_report_after_the_lease_lapsed_is_refused",
        "test_a_lapse_after_a_cancel_ends_cancelled_not_retried",
        "test_the_worker_that_lost_a_recording_gets_it_back_when_no_one_else_is_there",
    ),
    "test_fencing": ("test_a_heartbeat_that_gets_through_keeps_the_recording_going",),
    "test_worker": (
        "test_an_orchestrator_restart_mid_recording_loses_nothing",
        "test_sigterm_lets_the_recording_finish_within_the_grace_then_stops_it",
    ),
    # Closing the orchestrator waits for a receiver that answers after 3 s, or for retries 6 s apart.
    "test_webhooks": ("test_a_slow_receiver_never_slows_the_state_machine",),
    "test_attacks_orchestrator": ("test_failing_receivers_of_one_caller_do_not_delay_another_callers_webhooks",),
    "test_kubernetes_backend": ("test_stand_in_watch_replays_history_and_expires",),  # two 1 s watches
    "test_bench": (
        "test_sampler_sees_the_cpu_and_memory_of_a_process_tree",  # spins a core for 3 s
        "test_quiet_check_says_why",  # watches the machine's media processes for 2 s
    ),
    "test_simulation": (  # simulate whole days of traffic: CPU, not waiting
        "test_predictive_beats_reactive_at_the_hourly_burst",
        "test_same_seed_same_day",
        "test_a_day_with_every_worker_listed_matches_the_folded_run",
    ),
}


def marks_for(
    module: str, name: str, fixtures: Iterable[str], own: Iterable[str], skip_reasons: Iterable[str] = ()
) -> set[str]:
    """The heavy marks of test `name` (without parameters) of module basename `module`.

    A test that skips where a heavy program is missing (`skipif(..., reason="needs ffmpeg")`) needs it.
    """
    marks = {m for m in own if m in HEAVY_MARKS}
    for reason in skip_reasons:
        marks.update(mark for program, (_, mark) in PROGRAMS.items() if re.search(rf"\b{program}\b", reason, re.I))
    for fixture in fixtures:
        marks.update(FIXTURE_MARKS.get(fixture, ()))
        marks.update(FIXTURE_MARKS.get(f"{module}::{fixture}", ()))
    marks.update(TEST_MARKS.get(module, ()))
    marks.update(TEST_MARKS.get(f"{module}::{name}", ()))
    if name in SLOW_TESTS.get(module, ()):
        marks.add("slow")
    for mark in list(marks):
        marks.update(IMPLIED.get(mark, ()))
    return marks


# -- the guard -------------------------------------------------------------------------------------

# Program basenames → (what it is, the mark a test starting it needs).
PROGRAMS = {
    "chromium": ("Chromium", "browser"),
    "chromium-browser": ("Chromium", "browser"),
    "chrome": ("Chromium", "browser"),
    "headless_shell": ("Chromium", "browser"),
    "Xvfb": ("Xvfb", "media"),
    "pulseaudio": ("PulseAudio", "media"),
    "ffmpeg": ("FFmpeg", "ffmpeg"),
    "ffprobe": ("ffprobe", "ffmpeg"),
}


class HeavyProcessRefused(RuntimeError):
    """Not an OSError, so code that handles a missing program does not swallow it."""


def heavy_program(
    args: str | bytes | os.PathLike[Any] | Sequence[Any], executable: Any = None
) -> tuple[str, str] | None:
    """(what, mark) if starting `args` would start a heavy process, else None."""
    if isinstance(args, (str, bytes, os.PathLike)):
        text = os.fsdecode(args)
        try:
            argv = shlex.split(text)
        except ValueError:
            argv = text.split()
    else:
        argv = [os.fsdecode(a) for a in args]
    if not argv:
        return None
    names = _program_names(os.fsdecode(executable) if executable is not None else argv[0])
    for name in names:
        if name in PROGRAMS:
            return PROGRAMS[name]
    if "run-driver" in argv[1:] and "playwright" in argv[0]:
        # Playwright starts its Node driver, and the driver starts Chromium where Python cannot see it.
        return ("Chromium (through Playwright's driver)", "browser")
    if names & {"moto_server", "moto.server"} or "moto.server" in argv[1:]:
        return ("the moto S3 server", "s3")
    return None


def _program_names(program: str) -> set[str]:
    """The program's name; for a script, the names it mentions outside comments instead.

    A script is judged by what it runs: the recorder's sandbox wrapper is called `chromium` whatever it
    wraps, and a stand-in that wraps /usr/bin/chromium is Chromium all the same.
    """
    path = program if "/" in program else shutil.which(program)
    try:
        with open(path or program, "rb") as f:
            head = f.read(65536)
    except OSError:
        head = b""
    if not head.startswith(b"#!"):
        return {os.path.basename(program)}
    text = "\n".join(
        line for line in head.decode(errors="replace").splitlines()[1:] if not line.lstrip().startswith("#")
    )
    return set(re.findall(r"[\w.+-]+", text))


class Guard:
    """Refuses heavy processes while installed, and keeps what was refused for the test report."""

    def __init__(self) -> None:
        self.refused: list[str] = []
        self._undo: list[Callable[[], None]] = []

    def _check(self, args: Any, executable: Any = None) -> None:
        found = heavy_program(args, executable)
        if found is None:
            return
        what, mark = found
        message = (
            f"this test starts {what}: mark it `{mark}` (a FIXTURE_MARKS or TEST_MARKS entry in "
            f"tests/support/heavy.py, or @pytest.mark.{mark}); the quick run leaves marked tests out"
        )
        self.refused.append(message)
        raise HeavyProcessRefused(message)

    def install(self) -> None:
        # Popen is the door nearly everything takes: subprocess.run, asyncio's create_subprocess_exec
        # and Playwright's driver launch all go through it. os.posix_spawn and os.system do not.
        self._wrap(subprocess.Popen, "_execute_child", lambda _popen, args, executable, *_: (args, executable))
        self._wrap(os, "posix_spawn", lambda path, argv, *_: (argv, path))
        self._wrap(os, "posix_spawnp", lambda path, argv, *_: (argv, path))
        self._wrap(os, "system", lambda command, *_: (command, None))

    def _wrap(self, owner: Any, name: str, program: Callable[..., tuple[Any, Any]]) -> None:
        original = getattr(owner, name)

        def guarded(*args: Any, **kwargs: Any) -> Any:
            self._check(*program(*args))
            return original(*args, **kwargs)

        setattr(owner, name, guarded)
        self._undo.append(lambda: setattr(owner, name, original))

    def uninstall(self) -> None:
        while self._undo:
            self._undo.pop()()

    def take(self) -> list[str]:
        refused, self.refused = self.refused, []
        return refused
