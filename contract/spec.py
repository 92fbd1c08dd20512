"""What to record: the one description of a recording shared by the CLI, the worker and the API."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from contract.actions import MAX_SCRIPT_SECONDS, MAX_STEPS, Selector, Step

MAX_WIDTH = 3840
MAX_HEIGHT = 2160
# The spec's own bound on a waiting room; the orchestrator's ORCHESTRATOR_MAX_WAITING narrows it.
MAX_READINESS_WAIT = 6 * 3600.0
# A page that loads: DOMContentLoaded or `load` within this, or it is not coming.
MAX_LOADING_WAIT = 600.0

StopReason = Literal[
    "duration", "signal", "selector", "silence", "frozen", "navigated_away", "page_closed", "api", "shutdown", "error"
]


class WaitFor(BaseModel):
    """Readiness: DOMContentLoaded (the default), the `load` event, a CSS selector becoming visible, or the
    page logging START_RECORDING.

    `domcontentloaded` and `load` are the page loading; `selector` and `signal` wait for something the
    page shows later (a meeting admitting the recorder from its lobby): that wait is the waiting room, the
    recording's `waiting` state, and running out of it is `waiting_room_timeout`."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["domcontentloaded", "load", "selector", "signal"] = "domcontentloaded"
    selector: str | None = Field(default=None, description="CSS selector, required when kind is 'selector'")
    timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_READINESS_WAIT,
        description="seconds to wait for readiness (for selector and signal: the waiting room's length)",
    )

    @property
    def is_waiting_room(self) -> bool:
        return self.kind in ("selector", "signal")

    @field_validator("timeout")
    @classmethod
    def _loading_is_bounded(cls, value: float, info: ValidationInfo) -> float:
        """Only a waiting room may last hours; a page still loading after ten minutes will not load."""
        kind = info.data.get("kind")
        if kind in ("domcontentloaded", "load") and value > MAX_LOADING_WAIT:
            raise ValueError(
                f"{value:g} s is too long to wait for a page to load (kind {kind!r}); at most {MAX_LOADING_WAIT:g} s"
                " (only a waiting room, kind 'selector' or 'signal', may be longer)"
            )
        return value

    @model_validator(mode="after")
    def _selector_needed(self) -> WaitFor:
        if self.kind == "selector" and not (self.selector and self.selector.strip()):
            raise ValueError("wait_for.kind 'selector' needs a non-empty 'selector' (a CSS selector)")
        return self

    @staticmethod
    def flag_fields(text: str, timeout: float = 30.0) -> dict[str, Any]:
        """The fields of the CLI form `domcontentloaded`, `load`, `signal` or `selector:CSS`, validated with the
        rest of the spec (so a bad timeout is named as the field it is)."""
        if text in ("domcontentloaded", "load", "signal"):
            return {"kind": text, "timeout": timeout}
        if text.startswith("selector:"):
            return {"kind": "selector", "selector": text[len("selector:") :], "timeout": timeout}
        raise ValueError(f"--wait-for {text!r}: use domcontentloaded, load, signal or selector:CSS")


class StopWhen(BaseModel):
    """Stop before the duration when the meeting is over. Each condition is off unless set; the first to
    hold stops the recording and names the stop reason. The file keeps everything up to the trigger
    (the silent or frozen window included): nothing is trimmed."""

    model_config = ConfigDict(extra="forbid")

    selector: Selector | None = Field(default=None, description="stop when this CSS selector becomes visible")
    silence: float | None = Field(
        default=None, ge=1, le=3600, description="stop after this many seconds with no audio above silence_db"
    )
    silence_db: float = Field(default=-50.0, ge=-90, le=-10, description="the level below which audio is silence")
    frozen: float | None = Field(
        default=None, ge=1, le=3600, description="stop after this many seconds with no change on screen"
    )
    navigated_away: bool = Field(default=False, description="stop when the page leaves the recorded URL's origin")
    page_closed: bool = Field(default=True, description="stop when the page closes itself")


class RecordingSpec(BaseModel):
    """A recording request as the recorder sees it; the orchestrator's API model builds one of these."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)

    url: str
    duration: float = Field(default=3600.0, gt=0, le=24 * 3600, description="maximum length in seconds")
    width: int = Field(default=1280, ge=160, le=MAX_WIDTH)
    height: int = Field(default=720, ge=120, le=MAX_HEIGHT)
    fps: int = Field(default=30, ge=1, le=60)
    wait_for: WaitFor = Field(default_factory=WaitFor)
    start_from: Literal["ready", "commit"] = Field(
        default="ready",
        alias="from",
        description="'ready': capture starts at readiness; 'commit': as soon as the page's navigation commits,"
        " so nothing it shows or plays while loading is lost",
    )
    actions: list[Step] = Field(
        default_factory=list,
        max_length=MAX_STEPS,
        description=f"join script, run after navigation and before readiness; up to {MAX_STEPS} steps",
    )
    actions_timeout: float = Field(
        default=120.0, gt=0, le=MAX_SCRIPT_SECONDS, description="seconds the whole join script may take"
    )
    stop_on_signal: bool = Field(default=True, description="stop when the page logs END_RECORDING")
    stop_when: StopWhen = Field(default_factory=StopWhen)
    video: bool = Field(default=True, description="false: record the page's audio alone, to rec.m4a (AAC)")
    live_upload: bool = Field(default=False, description="upload segments while recording")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError("only http and https URLs can be recorded")
        if not parts.hostname:
            raise ValueError("the URL has no host")
        return url

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"{value} is odd: H.264 4:2:0 needs even width and height")
        return value

    @field_validator("start_from")
    @classmethod
    def _capture_or_wait(cls, value: str, info: ValidationInfo) -> str:
        wait_for = info.data.get("wait_for")
        if value == "commit" and wait_for is not None and wait_for.is_waiting_room:
            raise ValueError(
                f"'commit' captures while the page loads, but wait_for.kind {wait_for.kind!r} is a waiting room,"
                " where nothing is captured: use one or the other"
            )
        return value

    @field_validator("stop_when")
    @classmethod
    def _detection_from_readiness(cls, value: StopWhen, info: ValidationInfo) -> StopWhen:
        """Silence and a still screen are measured from the capture's start, which with `from: commit` is
        before the join: a quiet pre-join screen would end the meeting before it began."""
        if info.data.get("start_from") == "commit" and (value.silence is not None or value.frozen is not None):
            raise ValueError(
                "silence and frozen cannot be combined with from 'commit': they would count the quiet, still"
                " pre-join screen; start from readiness, or stop by selector"
            )
        return value

    @field_validator("video")
    @classmethod
    def _screen_for_frozen(cls, value: bool, info: ValidationInfo) -> bool:
        stop_when = info.data.get("stop_when")
        if not value and stop_when is not None and stop_when.frozen is not None:
            raise ValueError("false (audio-only) has no screen to watch: drop stop_when.frozen, or record video")
        return value
