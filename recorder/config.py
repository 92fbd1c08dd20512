"""Recorder configuration, in one place.

Every field is read from the environment variable named in its alias (documented in README.md)
and can be overridden by the matching CLI flag. Names shared with the orchestrator (RECORDS_DIR,
S3_*, CHROMIUM_PATH, ORCHESTRATOR_URL, WORKER_TOKEN) mean the same thing on both sides.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.envcheck import URL_ALLOWLIST_HELP, UrlAllowlist, check_environment, settings_variables


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class RecorderSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    records_dir: Path = Field(default=Path("records"), validation_alias=_env("RECORDS_DIR"))
    chromium_path: str = Field(default="/usr/bin/chromium", validation_alias=_env("CHROMIUM_PATH"))

    # capture
    # ultrafast with CABAC and the deblocking filter (strength 1:1) back, at CRF 26: 0.18 cores against veryfast
    # CRF 23's 0.28 at equal SSIM (0.9978 against 0.9977), 14 % more bytes (docs/benchmarks.md, encoder).
    preset: str = Field(default="ultrafast", validation_alias=_env("RECORDER_PRESET"))
    crf: int = Field(default=26, ge=0, le=51, validation_alias=_env("RECORDER_CRF"))
    encoder_threads: int = Field(default=1, ge=0, validation_alias=_env("RECORDER_ENCODER_THREADS"))
    x264_params: str = Field(
        default="cabac=1:deblock=1",
        validation_alias=_env("RECORDER_X264_PARAMS"),
        description="extra libx264 options (key=value:key=value) on top of the preset; docs/benchmarks.md, encoder",
    )
    screen_mode: bool = Field(
        default=False,
        validation_alias=_env("RECORDER_SCREEN_MODE"),
        description="give the virtual display a mode at the capture rate, so Chromium draws only frames that are kept;"
        " cheaper on animated pages, but a 30 fps call then presents fewer pictures (docs/benchmarks.md)",
    )
    grabber: Literal["x11grab", "damage"] = Field(
        default="damage",
        validation_alias=_env("RECORDER_GRABBER"),
        description="x11grab: FFmpeg grabs the screen on its own clock; damage: the recorder grabs when the screen"
        " changes and feeds FFmpeg on a grid placed by the page's drawing (recorder/capture/grabber.py)",
    )
    self_calibrate: bool = Field(
        default=True,
        validation_alias=_env("RECORDER_SELF_CALIBRATE"),
        description="measure the A/V offset on the sync clip before the first recording when none is stored",
    )
    av_offset_ms: float | None = Field(
        default=None,
        validation_alias=_env("RECORDER_AV_OFFSET_MS"),
        description="audio shift in ms applied at capture; unset means the calibration file or 0",
    )
    stop_timeout: float = Field(default=10.0, gt=0, validation_alias=_env("RECORDER_STOP_TIMEOUT"))
    timeline: bool = Field(
        default=True,
        validation_alias=_env("RECORDER_TIMELINE"),
        description="timeline.json (page events, capture progress, WebRTC stats); false only to measure its cost",
    )

    # storage
    s3_bucket: str | None = Field(default=None, validation_alias=_env("S3_BUCKET"))
    s3_prefix: str = Field(default="recordings", validation_alias=_env("S3_PREFIX"))
    s3_endpoint_url: str | None = Field(default=None, validation_alias=_env("S3_ENDPOINT_URL"))
    s3_key_template: str = Field(
        default="{prefix}/{yyyy}/{mm}/{dd}/{recording_id}/attempt-{attempt}/{name}",
        validation_alias=_env("S3_KEY_TEMPLATE"),
    )
    keep_local: bool = Field(default=False, validation_alias=_env("KEEP_LOCAL"))

    # worker
    orchestrator_url: str = Field(default="http://127.0.0.1:8080", validation_alias=_env("ORCHESTRATOR_URL"))
    worker_token: str | None = Field(default=None, validation_alias=_env("WORKER_TOKEN"))
    worker_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}", validation_alias=_env("WORKER_ID")
    )
    host: str = Field(
        default_factory=socket.gethostname,
        validation_alias=_env("WORKER_HOST"),
        description="the machine (on Kubernetes, the node) whose cores this worker shares with other workers",
    )
    single_use: bool = Field(default=False, validation_alias=_env("WORKER_SINGLE_USE"))
    shutdown_grace: float = Field(default=30.0, ge=0, validation_alias=_env("RECORDER_SHUTDOWN_GRACE"))
    give_up_after: float = Field(default=600.0, ge=0, validation_alias=_env("WORKER_GIVE_UP_AFTER"))

    # Chromium's sandbox (recorder/source/sandbox.py)
    browser_user: str = Field(
        default="recorder-browser",
        validation_alias=_env("RECORDER_BROWSER_USER"),
        description="the unprivileged user Chromium runs as when the recorder runs as root",
    )
    require_sandbox: bool = Field(
        default=False,
        validation_alias=_env("RECORDER_REQUIRE_SANDBOX"),
        description="refuse to start when Chromium's sandbox cannot work, instead of running without it",
    )

    # join scripts (contract/actions.py, recorder/source/actions.py)
    allow_evaluate: bool = Field(
        default=False,
        validation_alias=_env("ACTIONS_ALLOW_EVALUATE"),
        description="let join scripts run JavaScript in the page (`evaluate` steps); off, they fail with action_failed",
    )

    # egress: what a recorded page may reach (recorder/egress)
    url_allowlist: UrlAllowlist = Field(
        default_factory=list, validation_alias=_env("URL_ALLOWLIST"), description=URL_ALLOWLIST_HELP
    )
    egress_guard: bool = Field(
        default=True,
        validation_alias=_env("RECORDER_EGRESS_GUARD"),
        description="route Chromium through the egress guard; false only to measure its cost",
    )
    dns_server: str | None = Field(
        default=None,
        validation_alias=_env("RECORDER_DNS_SERVER"),
        description="ip[:port] of the DNS server the egress guard asks; unset means the system resolver",
    )

    @field_validator("dns_server", mode="before")
    @classmethod
    def _dns_server(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str):
            from recorder.egress.resolve import parse_dns_server

            parse_dns_server(value)  # a typo stops the recorder here, with the reason
        return value

    @field_validator("s3_key_template")
    @classmethod
    def _key_template(cls, value: str) -> str:
        """Checked at start, not after a recording: keys must keep recordings and their attempts apart."""
        from contract.errors import RecorderError
        from recorder.storage.keys import check_template

        try:
            check_template(value)
        except RecorderError as exc:
            raise ValueError(exc.message) from None
        return value

    @property
    def calibration_file(self) -> Path:
        """Where versions before the keyed calibrations (recorder.capture.calibration) kept the one made by hand."""
        return self.records_dir / ".calibration.json"


MiB = 1024 * 1024
MIN_PART = 5 * MiB  # S3's floor for every part but the last
MAX_PARTS = 10_000


class TransferOptions(BaseSettings):
    """How uploads are cut and retried; read from S3_* environment variables, defaults suit large files."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    multipart_threshold: int = Field(default=16 * MiB, ge=MIN_PART, validation_alias=_env("S3_MULTIPART_THRESHOLD"))
    part_size: int = Field(default=16 * MiB, ge=MIN_PART, validation_alias=_env("S3_PART_SIZE"))
    max_concurrency: int = Field(default=8, ge=1, le=64, validation_alias=_env("S3_MAX_CONCURRENCY"))
    retry_mode: Literal["standard", "adaptive", "legacy"] = Field(
        default="standard", validation_alias=_env("S3_RETRY_MODE")
    )
    max_attempts: int = Field(default=5, ge=1, le=20, validation_alias=_env("S3_MAX_ATTEMPTS"))
    connect_timeout: float = Field(default=5.0, gt=0, validation_alias=_env("S3_CONNECT_TIMEOUT"))
    read_timeout: float = Field(default=60.0, gt=0, validation_alias=_env("S3_READ_TIMEOUT"))
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", validation_alias=_env("S3_ADDRESSING_STYLE")
    )

    def part_size_for(self, size: int) -> int:
        """Part size for a file: the configured size, grown in MiB steps so the file fits in 10,000 parts."""
        part = self.part_size
        if -(-size // part) > MAX_PARTS:
            part = -(-size // MAX_PARTS)
            part = -(-part // MiB) * MiB
        return part


# A typo in one of the recorder's own variables stops it (contract.envcheck): these prefixes are its own.
OWNED_PREFIXES = ("WORKER_", "RECORDER_")
# Owned names that are not settings: the CLI's log level; the marker the recorder puts in the environment of
# the Chromium it starts (to find that browser's processes); and a label an operator (or a test run) puts
# on a recorder so that every process it starts, Chromium included, can be found by it (and none outlives it).
PROCESS_TAG = "RECORDER_PROCESS_TAG"
OTHER_VARIABLES = frozenset({"RECORDER_LOG_LEVEL", "RECORDER_BROWSER_INSTANCE", PROCESS_TAG})


def known_variables() -> set[str]:
    """Every owned variable the recorder reads, taken from the settings classes as they are now."""
    return settings_variables(RecorderSettings, TransferOptions) | OTHER_VARIABLES


def check_recorder_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise contract.envcheck.UnknownVariable for a `WORKER_`/`RECORDER_` variable nothing reads."""
    check_environment(os.environ if environ is None else environ, OWNED_PREFIXES, known_variables())
