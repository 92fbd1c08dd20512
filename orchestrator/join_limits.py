"""What the operator lets a recording do before it records: how long a waiting room may hold a recorder,
and whether a join script may run JavaScript.

The spec's own bounds (`contract.spec`, `contract.actions`) are the widest any farm accepts; these are
this farm's, checked when a request arrives so that a caller learns at once (422, naming the field)
what a recorder would otherwise refuse, or sit in a lobby for, hours later.
"""

from __future__ import annotations

from contract.actions import EVALUATE_REFUSED, evaluate_steps
from contract.spec import RecordingSpec
from orchestrator.errors import Detail, OrchestratorError

MAX_WAITING_ENV = "ORCHESTRATOR_MAX_WAITING"


def check_join(spec: RecordingSpec, *, max_waiting: float, allow_evaluate: bool) -> None:
    """Refuse a waiting room longer than `max_waiting` seconds and, unless `allow_evaluate`, any
    `evaluate` step; every problem is named by its field as the caller wrote it."""
    details: list[Detail] = []
    wait_for = spec.wait_for
    if wait_for.is_waiting_room and wait_for.timeout > max_waiting:
        details.append(
            Detail(
                "wait_for.timeout",
                f"{wait_for.timeout:g} s is above this server's limit of {max_waiting:g} s for a waiting room"
                f" (wait_for.kind {wait_for.kind!r}, {MAX_WAITING_ENV}); ask for at most {max_waiting:g}",
            )
        )
    if not allow_evaluate:
        details += [Detail(f"actions[{index}]", EVALUATE_REFUSED) for index in evaluate_steps(spec.actions)]
    if details:
        summary = "; ".join(f"{d.field}: {d.message}" for d in details[:3])
        if len(details) > 3:
            summary += f"; and {len(details) - 3} more (see details)"
        raise OrchestratorError("validation_error", summary, details)
