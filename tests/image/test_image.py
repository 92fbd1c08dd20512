"""Dockerfile.recorder, built for real and run for real: what a pod runs is what these tests run.

The image is built once per run by scripts/build-image.sh (tests/support/image.py), then entered with
`podman run`, or chrooted into where the container runtime is refused (as on our machines and in CI).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from recorder.quality import analyze_file, tone_level
from tests.support.image import RECORDINGS, BuiltImage, ChrootRun, ImageConfig, ImageRunner, open_runner, stop
from tests.support.leaks import TAG
from tests.support.net import free_port

# A cold build (base, apt, pip) takes minutes; the first test pays for it.
pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]

IMAGE_UID = 10001
SECONDS = 6


def run_inside(runner: ImageRunner, argv: list[str], log: Path, timeout: float, **env: str) -> str:
    """Run a command in the image to its end; its output, or a failure that shows it."""
    process = runner.start(argv, env, log)
    try:
        code = process.wait(timeout=timeout)
    finally:
        stop(process)
    output = log.read_text(errors="replace")
    assert code == 0, f"{' '.join(argv)} exited {code} in the image ({runner.how}):\n{output[-4000:]}"
    return output


def test_the_build_says_its_size_and_time(recorder_image: BuiltImage) -> None:
    # The image carries Chromium, FFmpeg, fonts and the Python packages: hundreds of MiB, not a stub.
    assert 300 * 2**20 < recorder_image.size_bytes < 6 * 2**30, recorder_image
    mib = recorder_image.size_bytes / 2**20
    print(f"image {recorder_image.tag}: {mib:.0f} MiB, built in {recorder_image.build_seconds} s")


def test_the_image_runs_as_its_unprivileged_user(
    image_config: ImageConfig, image_runner: ImageRunner, tmp_path: Path
) -> None:
    assert image_config.user == str(IMAGE_UID), image_config
    assert image_config.cmd == ["recorder", "worker"], image_config
    output = run_inside(image_runner, ["id"], tmp_path / "id.log", timeout=60)
    assert output.startswith(f"uid={IMAGE_UID}(recorder) gid={IMAGE_UID}(recorder)"), output


@pytest.mark.media
@pytest.mark.usefixtures("no_leaks")
def test_recorder_record_in_the_image_makes_a_faithful_mp4(
    image_runner: ImageRunner, test_page, tmp_path: Path
) -> None:
    """The reference page's 1 kHz grid, recorded by the image's own `recorder record`, as its own user."""
    out = f"{RECORDINGS}/image-test/rec.mp4"
    run_inside(
        image_runner,
        ["recorder", "record", test_page.url("/grid?tone=1000"), "--duration", str(SECONDS), "--out", out],
        tmp_path / "record.log",
        timeout=180,
        # The page is on 127.0.0.1, which the recorder's egress guard denies unless allowed.
        URL_ALLOWLIST=f"127.0.0.1:{test_page.port}",
        RECORDER_PROCESS_TAG=TAG.split("=", 1)[1],  # so the leak check sees the image's processes too
        RECORDER_SELF_CALIBRATE="false",  # its own test: tests/recorder/test_capture_engine.py
    )
    mp4 = image_runner.host_path(out)
    assert mp4.stat().st_uid == IMAGE_UID, "the recording is written by the image's user"

    streams = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name", "-of", "json", str(mp4)],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout
    )["streams"]  # fmt: skip
    assert sorted((s["codec_type"], s["codec_name"]) for s in streams) == [("audio", "aac"), ("video", "h264")]
    report = analyze_file(mp4)
    assert report.duration is not None and abs(report.duration - SECONDS) <= 0.5, report.duration
    high, low = tone_level(mp4, 1000), tone_level(mp4, 440)
    assert high > 10 * low, (high, low)
    print(f"in-image recording: {report.duration:.2f} s, h264 + aac, tone 1 kHz {high:.3f} vs 440 Hz {low:.4f}")


def test_orchestrator_serve_in_the_image_answers_readyz(image_runner: ImageRunner, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "orchestrator.log"
    process = image_runner.start(
        ["orchestrator", "serve"],
        {
            "ORCHESTRATOR_HOST": "127.0.0.1",
            "ORCHESTRATOR_PORT": str(port),
            "ORCHESTRATOR_STATE_DIR": f"{RECORDINGS}/orchestrator-state",
            "RECORDS_DIR": f"{RECORDINGS}/orchestrator-records",
            "API_TOKENS": "tests:image-api-token",
            "WORKER_TOKEN": "image-worker-token",
            "POOL_BACKEND": "none",
        },
        log,
    )
    try:
        deadline = time.monotonic() + 90
        answer: str | None = None
        while answer is None and time.monotonic() < deadline:
            assert process.poll() is None, f"orchestrator serve exited {process.returncode}:\n{log.read_text()[-4000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
                    answer = f"{response.status} {response.read().decode()}"
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert answer is not None and answer.startswith("200"), f"no /readyz answer in 90 s:\n{log.read_text()[-4000:]}"
    finally:
        stop(process)
    assert process.returncode is not None


def test_entering_the_image_leaves_no_mount_and_no_container_behind(
    recorder_image: BuiltImage, image_config: ImageConfig, tmp_path: Path
) -> None:
    runner = open_runner(recorder_image, image_config, tmp_path)
    try:
        run_inside(runner, ["sh", "-c", "test -d /proc/self && df -k /dev/shm"], tmp_path / "enter.log", timeout=60)
    finally:
        runner.close()
    if isinstance(runner, ChrootRun):
        assert runner.mounts() == [], "the chroot's mounts go with it"
        containers = subprocess.run(
            ["podman", "ps", "--all", "--quiet", "--filter", f"id={runner.container}"],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert containers.strip() == "", "the container made for the chroot is removed"
