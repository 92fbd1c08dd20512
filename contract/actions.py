"""A join script: the steps a recorder takes on a page after loading it and before waiting for readiness.

A script is data, not code: click, fill, press, wait for a selector, wait. Callers cannot run JavaScript;
the `evaluate` step parses, but a recorder runs it only where the operator set ACTIONS_ALLOW_EVALUATE, and
the API refuses it (422) otherwise.

Selectors are CSS (Playwright's CSS, so `:has-text("Join")` works too). A step reaches into an iframe
through `frame`: a list of CSS selectors of iframe elements, outermost first, each in the document the
previous one opened. Only frames of the page's own origin can be entered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator

MAX_STEPS = 50
MAX_STEP_TIMEOUT = 120.0
MAX_WAIT = 120.0
MAX_SCRIPT_SECONDS = 600.0
MAX_FRAME_DEPTH = 4
ALLOW_EVALUATE_ENV = "ACTIONS_ALLOW_EVALUATE"

Selector = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=1000),
    Field(description="CSS selector (Playwright CSS: `:has-text()`, `:visible` work)"),
]
StepTimeout = Annotated[
    float, Field(gt=0, le=MAX_STEP_TIMEOUT, description=f"seconds this step may take, up to {MAX_STEP_TIMEOUT:g}")
]
FramePath = Annotated[
    list[Selector],
    Field(
        max_length=MAX_FRAME_DEPTH,
        description="CSS selectors of same-origin iframes, outermost first, to run the step inside",
    ),
]


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Targeted(_Step):
    selector: Selector
    frame: FramePath = Field(default_factory=list)
    timeout: StepTimeout = 10.0


class Click(_Targeted):
    """Click the first element matching `selector` once it is visible and enabled."""

    do: Literal["click"]


class Fill(_Targeted):
    """Type `value` into an input (its old content replaced)."""

    do: Literal["fill"]
    value: Annotated[str, StringConstraints(max_length=2000)]


class Press(_Step):
    """Press a key (`Enter`, `Tab`, `Control+A`, …) on `selector`, or on whatever has focus when none is given.
    Inside a frame a selector is needed: the focus could be anywhere, another origin's frame included."""

    do: Literal["press"]
    key: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    selector: Selector | None = None
    frame: FramePath = Field(default_factory=list)
    timeout: StepTimeout = 10.0

    @field_validator("frame")
    @classmethod
    def _selector_inside_frames(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("selector") is None:
            raise ValueError("a press inside a frame needs a selector: the element that takes the key")
        return value


class WaitForElement(_Targeted):
    """Wait until `selector` is visible (or hidden: a spinner gone)."""

    do: Literal["wait_for"]
    state: Literal["visible", "hidden"] = "visible"


class Wait(_Step):
    """Pause the script for a fixed time."""

    do: Literal["wait"]
    seconds: Annotated[float, Field(gt=0, le=MAX_WAIT, description=f"up to {MAX_WAIT:g} s")]


class Evaluate(_Step):
    """Run JavaScript in the page. Off unless the operator sets ACTIONS_ALLOW_EVALUATE=true."""

    do: Literal["evaluate"]
    script: Annotated[str, StringConstraints(min_length=1, max_length=20_000)]
    timeout: StepTimeout = 10.0


Step = Annotated[Click | Fill | Press | WaitForElement | Wait | Evaluate, Field(discriminator="do")]


def evaluate_steps(actions: Sequence[object]) -> list[int]:
    """The indexes of `evaluate` steps, which run only where the operator set ACTIONS_ALLOW_EVALUATE: the API
    and `recorder record` refuse them up front with the same words."""
    return [index for index, step in enumerate(actions) if isinstance(step, Evaluate)]


EVALUATE_REFUSED = (
    f"an 'evaluate' step runs JavaScript in the page, which the operator has not enabled ({ALLOW_EVALUATE_ENV});"
    " use click, fill, press, wait_for and wait steps"
)


def describe(index: int, step: Click | Fill | Press | WaitForElement | Wait | Evaluate) -> str:
    """How an error names a step: `step 2 (click "#join")`."""
    target = getattr(step, "selector", None)
    frames = getattr(step, "frame", None) or []
    where = f' "{target}"' if target else ""
    inside = f" in frame {' > '.join(frames)}" if frames else ""
    return f"step {index} ({step.do}{where}{inside})"
