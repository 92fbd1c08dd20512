"""scripts/install-system-deps.sh on the systems it supports and the one it says it does not (Ubuntu's
Chromium is a snap that does not run in containers or CI). Only this machine's packages are asked about:
every package is present here, so nothing is installed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh"
UBUNTU = 'NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n'


def run(tmp_path: Path, os_release: str, **env: str) -> subprocess.CompletedProcess[str]:
    release = tmp_path / "os-release"
    release.write_text(os_release)
    environment = {k: v for k, v in os.environ.items() if k != "CHROMIUM_PATH"}
    return subprocess.run(
        ["bash", str(SCRIPT)],
        env={**environment, "OS_RELEASE_FILE": str(release), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(autouse=True)
def _a_debian_machine_with_everything() -> None:
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("runs where scripts/install-system-deps.sh has already installed everything")


def test_on_ubuntu_without_a_chromium_it_stops_and_says_why(tmp_path: Path) -> None:
    done = run(tmp_path, UBUNTU)
    assert done.returncode == 2, done
    assert "snap" in done.stderr and "CHROMIUM_PATH" in done.stderr and "Debian 12" in done.stderr


def test_on_ubuntu_a_snap_wrapper_is_no_chromium(tmp_path: Path) -> None:
    wrapper = tmp_path / "chromium-browser"
    wrapper.write_text('#!/bin/sh\nexec /snap/bin/chromium "$@"\n')
    wrapper.chmod(0o755)
    done = run(tmp_path, UBUNTU, CHROMIUM_PATH=str(wrapper))
    assert done.returncode == 2, done
    assert "snap" in done.stderr


def test_on_ubuntu_with_a_real_chromium_it_goes_on(tmp_path: Path) -> None:
    done = run(tmp_path, UBUNTU, CHROMIUM_PATH="/usr/bin/chromium")
    assert done.returncode == 0, done
    assert "using the Chromium at /usr/bin/chromium" in done.stdout


def test_on_debian_it_checks_and_installs_nothing_more(tmp_path: Path) -> None:
    done = run(tmp_path, 'NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n')
    assert done.returncode == 0, done
    assert "all system packages present" in done.stdout
