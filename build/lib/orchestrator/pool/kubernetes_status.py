"""What a recorder pod's status means for the pool: starting, running, failed (and why), or gone.

Kept apart from the backend as a pure function of the pod object and the clock, because this is where
operators' questions land ("why was my recording retried?") and it is easiest to read and test alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.pool.backend import WorkerPhase

# Container waiting reasons that will not fix themselves in time for a recording.
WAITING_FAILURES = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)


@dataclass(frozen=True)
class PodHealth:
    phase: WorkerPhase
    # In words an operator can act on, e.g. "OOMKilled: container recorder exceeded its memory limit".
    reason: str | None = None
    # A short, bounded code for metrics and error codes, e.g. "OOMKilled", "Unschedulable".
    code: str | None = None
    # True while the pod's containers may still run: a failed pod that is alive must be deleted
    # at once so it never takes work; a dead one can stay a while for `kubectl logs`.
    alive: bool = True


def parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _statuses(status: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def _terminated_text(name: str, term: dict[str, Any]) -> tuple[str, str]:
    code = term.get("reason") or "Error"
    detail = f"container {name} exited with code {term.get('exitCode')}"
    if code == "OOMKilled":
        detail = f"container {name} exceeded its memory limit (exit code {term.get('exitCode')})"
    if term.get("message"):
        detail += f": {term['message']}"
    return code, f"{code}: {detail}"


def pod_health(pod: dict[str, Any], *, now: float, pending_timeout: float) -> PodHealth:
    """Classify one pod. `now` is wall-clock seconds, compared with the pod's creationTimestamp."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"

    if phase == "Succeeded":
        return PodHealth("gone", "Completed", None, alive=False)
    if phase == "Failed":
        code = status.get("reason")
        if code:
            text = f"{code}: {status.get('message') or 'the pod failed'}"
            return PodHealth("failed", text, code, alive=False)
        for cs in _statuses(status):
            term = (cs.get("state") or {}).get("terminated")
            if term and term.get("exitCode", 0) != 0:
                code, text = _terminated_text(cs.get("name", "?"), term)
                return PodHealth("failed", text, code, alive=False)
        return PodHealth("failed", f"Failed: {status.get('message') or 'the pod failed'}", "Failed", False)
    if meta.get("deletionTimestamp"):
        return PodHealth("gone", "Terminating")
    if phase == "Unknown":
        return PodHealth("failed", f"NodeLost: {status.get('message') or 'the node stopped reporting'}", "NodeLost")

    for cs in _statuses(status):
        name = cs.get("name", "?")
        state = cs.get("state") or {}
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in WAITING_FAILURES:
            text = f"{waiting['reason']}: {waiting.get('message') or f'container {name} cannot start'}"
            return PodHealth("failed", text, waiting["reason"])
        term = state.get("terminated")
        if term and term.get("exitCode", 0) != 0:
            code, text = _terminated_text(name, term)
            return PodHealth("failed", text, code)
        last = (cs.get("lastState") or {}).get("terminated")
        if last and cs.get("restartCount", 0) > 0:
            # The worker in this pod crashed once already; its recording went with it.
            code, text = _terminated_text(name, last)
            return PodHealth("failed", text, code)

    if phase == "Running":
        return PodHealth("running")

    created = parse_time(meta.get("creationTimestamp"))
    age = now - created if created is not None else 0.0
    if age <= pending_timeout:
        return PodHealth("starting")
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
            code = cond.get("reason") or "Unschedulable"
            return PodHealth("failed", f"{code}: {cond.get('message') or 'no node can run the pod'}", code)
    waiting_reasons = [(cs.get("state") or {}).get("waiting", {}).get("reason") for cs in _statuses(status)]
    detail = ", ".join(r for r in waiting_reasons if r) or "not started"
    return PodHealth("failed", f"PendingTimeout: pending for {age:.0f} s ({detail})", "PendingTimeout")
