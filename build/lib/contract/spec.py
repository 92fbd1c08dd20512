"""What to record: the one description of a recording shared by the CLI, the worker and the API."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_WIDTH = 3840
MAX_HEIGHT = 2160


class WaitFor(BaseModel):
    """Readiness: the page `load` event, a CSS selector becoming visible, or the page logging START_RECORDING."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["load", "selector", "signal"] = "load"
    selector: str | None = Field(default=None, description="CSS selector, required when kind is 'selector'")
    timeout: float = Field(default=30.0, gt=0, le=600, description="seconds to wait for readiness")

    @model_validator(mode="after")
    def _selector_needed(self) -> WaitFor:
        if self.kind == "selector" and not (self.selector and self.selector.strip()):
            raise ValueError("wait_for.kind 'selector' needs a non-empty 'selector' (a CSS selector)")
        return self

    @classmethod
    def parse(cls, text: str, timeout: float = 30.0) -> WaitFor:
        """Parse the CLI form: `load`, `signal` or `selector:CSS`."""
        if text in ("load", "signal"):
            return cls(kind=text, timeout=timeout)
        if text.startswith("selector:"):
            return cls(kind="selector", selector=text[len("selector:") :], timeout=timeout)
        raise ValueError(f"--wait-for {text!r}: use load, signal or selector:CSS")


class RecordingSpec(BaseModel):
    """A recording request as the recorder sees it; the orchestrator's API model builds one of these."""

    model_config = ConfigDict(extra="forbid")

    url: str
    duration: float = Field(default=3600.0, gt=0, le=24 * 3600, description="maximum length in seconds")
    width: int = Field(default=1280, ge=160, le=MAX_WIDTH)
    height: int = Field(default=720, ge=120, le=MAX_HEIGHT)
    fps: int = Field(default=30, ge=1, le=60)
    wait_for: WaitFor = Field(default_factory=WaitFor)
    stop_on_signal: bool = Field(default=True, description="stop when the page logs END_RECORDING")
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
