"""Prometheus metrics of the orchestrator, in a registry of its own (several orchestrators can share a
process in tests).

No label takes a value a worker or caller chooses freely, so a hostile worker token cannot grow the
series without bound: error codes outside the known set count as "other", block reasons outside
`BLOCK_REASONS` as "other". The per-recording gauges are labelled with ids the orchestrator generates,
set only for recordings a worker holds a lease on, and removed when the recording leaves its active
states, so there are at most as many as recordings are leased at once. Worker ids are never labels.
The webhook backlog is labelled by destination (host[:port] of a caller's webhook_url): only those with
pending events, at most MAX_BACKLOG_DESTINATIONS of them (the largest), the rest summed as "other".
WebRTC quality is labelled only by the orchestrator's own `pool` and `region` (its settings), and read
from a completed recording's `quality.timeline` summary (contract.timeline.TimelineSummary), whose
numbers a worker reports: values outside their range are left out. A recording is judged as a whole:
the share of packets its worst inbound track lost over the recording (`inbound_loss`), never the worst
single stats interval (`worst_inbound_loss`, which one bad second of an hour-long call would set), and
the freeze seconds of its most frozen video track per recorded minute.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeGuard, get_args

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from contract.errors import CALLER_SIDE, ErrorCode
from contract.protocol import Progress
from contract.security import BLOCK_REASONS
from contract.spec import StopReason
from orchestrator.events import StateChange
from orchestrator.states import ENDED, TERMINAL, State
from orchestrator.store.outbox import Backlog

# Error codes the orchestrator itself sets, besides the recorder's `ErrorCode`s.
ORCHESTRATOR_CODES = frozenset({"invalid_report", "unknown"})
FAILURE_CODES = frozenset(c.value for c in ErrorCode) | ORCHESTRATOR_CODES
# Failures of what the caller asked for (a lobby that never admitted the recorder, a join step that found
# no button), not of the farm: the `side` label keeps them out of the system-failure alert.
CALLER_SIDE_CODES = frozenset(c.value for c in CALLER_SIDE)
STOP_REASONS = frozenset(get_args(StopReason))
# Destinations with a backlog series of their own; the rest count as "other".
MAX_BACKLOG_DESTINATIONS = 50
# A report claiming more denied requests than this for one reason is not believed.
MAX_BLOCKED_PER_REPORT = 1_000_000


def bounded(value: str, known: frozenset[str]) -> str:
    """`value` when it is one of `known`, else "other": a label never takes an unbounded value."""
    return value if value in known else "other"


def failure_side(code: str) -> str:
    """ "caller" for a failure of what the caller asked for, "system" for one of the farm."""
    return "caller" if code in CALLER_SIDE_CODES else "system"


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# A recording's inbound WebRTC quality is bad above either of these: what the regional alert counts.
BAD_INBOUND_LOSS = 0.05  # of the worst inbound track's packets, over the whole recording
BAD_FREEZE_SECONDS_PER_MINUTE = 5.0


@dataclass(frozen=True)
class WebRtcQuality:
    """A completed recording's inbound WebRTC, as the metrics see it."""

    freeze_per_minute: float  # seconds the most frozen inbound video track froze, per recorded minute
    loss: float | None  # the share of packets its worst inbound track lost over the recording; None: not reported

    @property
    def bad(self) -> bool:
        lossy = self.loss is not None and self.loss > BAD_INBOUND_LOSS
        return lossy or self.freeze_per_minute > BAD_FREEZE_SECONDS_PER_MINUTE


def webrtc_quality(quality: object) -> WebRtcQuality | None:
    """The inbound WebRTC quality of a quality report whose timeline summary shows WebRTC; None without
    WebRTC, or when the duration is not plausible.

    The loss is the summary's `inbound_loss` (the whole recording); a summary without it (an older worker)
    has its loss left unjudged rather than judged by one interval. A track's freeze seconds are capped at
    the duration (a freeze that began before the first frame or went on through a pause counts whole
    minutes at most), and implausible values are left out."""
    if not isinstance(quality, dict):
        return None
    summary = quality.get("timeline")
    if not isinstance(summary, dict):
        return None
    worst = summary.get("worst_inbound_loss")
    loss = summary.get("inbound_loss")
    if not (_share(worst) or _share(loss)):
        return None  # null: no inbound WebRTC
    duration = quality.get("duration")
    freezes = summary.get("freeze_seconds") or {}
    if not _real(duration) or duration <= 0 or not isinstance(freezes, dict):
        return None
    frozen = [min(float(v), float(duration)) for v in freezes.values() if _real(v) and v >= 0]
    return WebRtcQuality(
        freeze_per_minute=max(frozen, default=0.0) / (duration / 60.0),
        loss=float(loss) if _share(loss) else None,
    )


def _share(value: object) -> bool:
    return _real(value) and 0 <= value <= 1


def _real(value: object) -> TypeGuard[float]:
    """A finite number (not a bool, not NaN or infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class OrchestratorMetrics:
    def __init__(self, pool: str = "local", region: str = "local") -> None:
        self.registry = CollectorRegistry()
        self.place = (pool, region)
        r = self.registry
        self.pool_workers = Gauge("orchestrator_pool_workers", "Workers by state", ["state"], registry=r)
        self.recordings = Gauge("orchestrator_recordings", "Recordings by state", ["state"], registry=r)
        self.transitions = Counter(
            "orchestrator_transitions_total", "State transitions", ["from_state", "to_state"], registry=r
        )
        self.start_latency = Histogram(
            "orchestrator_start_latency_seconds",
            "From the API request to the first captured frame",
            buckets=(0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0),
            registry=r,
        )
        self.fps = Gauge(
            "orchestrator_recording_fps", "Captured fps per active recording", ["recording_id"], registry=r
        )
        self.dropped = Gauge(
            "orchestrator_recording_dropped_frames", "Dropped frames per active recording", ["recording_id"], registry=r
        )
        self.speed = Gauge(
            "orchestrator_recording_speed",
            "Capture speed (1.0 = real time) per active recording",
            ["recording_id"],
            registry=r,
        )
        self.behind = Gauge(
            "orchestrator_recording_behind", "1 while a capture is behind real time", ["recording_id"], registry=r
        )
        self.hosts_behind = Gauge(
            "orchestrator_hosts_behind",
            "Machines with a recording behind real time, whose workers get no lease (this replica's view)",
            registry=r,
        )
        self.leases_held_back = Counter(
            "orchestrator_leases_held_back_total",
            "Lease polls held back (once per poll) because a recording on the worker's machine is behind real time",
            registry=r,
        )
        self.upload_bytes = Counter("orchestrator_upload_bytes_total", "Bytes of completed uploads", registry=r)
        self.upload_seconds = Histogram(
            "orchestrator_upload_seconds",
            "Time recordings spent uploading",
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.failures = Counter(
            "orchestrator_failures_total",
            "Failed recordings by error code and side (caller: the page or request; system: the farm)",
            ["code", "side"],
            registry=r,
        )
        self.waiting_seconds = Histogram(
            "orchestrator_waiting_seconds",
            "Time recordings spent in the waiting room (the `waiting` state), observed when they leave it",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.stopped = Counter(
            "orchestrator_recordings_stopped_total",
            "Ended recordings by what stopped their capture (the worker's stop_reason)",
            ["stop_reason"],
            registry=r,
        )
        self.lapsed = Counter("orchestrator_leases_lapsed_total", "Leases lost to a silent worker", registry=r)
        self.leader = Gauge("orchestrator_leader", "1 while this replica runs the leader's loops", registry=r)
        self.webhooks = Counter(
            "orchestrator_webhook_deliveries_total",
            "Webhook delivery attempts by result (delivered; retried: failed, tried again later; failed: given up)",
            ["result"],
            registry=r,
        )
        self.webhook_backlog = Gauge(
            "orchestrator_webhook_backlog",
            "Pending webhook events by destination (host[:port]); set by the leader",
            ["destination"],
            registry=r,
        )
        self.webhook_oldest_pending = Gauge(
            "orchestrator_webhook_oldest_pending_seconds",
            "Age of the oldest pending webhook event (0: none pending); set by the leader",
            registry=r,
        )
        self.blocked = Counter(
            "recorder_blocked_requests_total",
            "Requests of recorded pages the workers' egress guards denied, by reason (address class)",
            ["reason"],
            registry=r,
        )
        self.purged_bytes = Counter(
            "orchestrator_purged_bytes_total",
            "Bytes of recordings' files deleted by a purge or by retention, by where they were (local, s3)",
            ["where"],
            registry=r,
        )
        self.purged_recordings = Counter(
            "orchestrator_purged_recordings_total",
            "Recordings purged (their files deleted, the row kept as purged), by what purged them (api, retention)",
            ["by"],
            registry=r,
        )
        self.deleted_rows = Counter(
            "orchestrator_retention_deleted_rows_total",
            "Recordings whose store row retention deleted (RECORDS_RETENTION_DELETE_ROWS)",
            registry=r,
        )
        self.webrtc_freeze = Histogram(
            "orchestrator_webrtc_freeze_seconds_per_minute",
            "Completed recordings with WebRTC: seconds their most frozen inbound video track froze per recorded minute",
            ["pool", "region"],
            buckets=(0.0, 0.5, 1, 2, 5, 10, 20, 30, 60),
            registry=r,
        )
        self.webrtc_loss = Histogram(
            "orchestrator_webrtc_inbound_loss",
            "Completed recordings with WebRTC: the share of packets their worst inbound track lost over the recording",
            ["pool", "region"],
            buckets=(0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
            registry=r,
        )
        self.webrtc_recordings = Counter(
            "orchestrator_webrtc_recordings_total",
            "Completed recordings with inbound WebRTC tracks",
            ["pool", "region"],
            registry=r,
        )
        self.webrtc_bad = Counter(
            "orchestrator_webrtc_bad_quality_recordings_total",
            f"Completed recordings whose inbound WebRTC was bad: a track lost over {BAD_INBOUND_LOSS:.0%} of its"
            f" packets over the recording, or one froze more than {BAD_FREEZE_SECONDS_PER_MINUTE:g} s per minute",
            ["pool", "region"],
            registry=r,
        )
        for family in (self.webrtc_freeze, self.webrtc_loss, self.webrtc_recordings, self.webrtc_bad):
            family.labels(*self.place)  # the series exist at 0, so a ratio over them is defined from the start
        self._active: set[str] = set()
        self._backlog_destinations: set[str] = set()

    def on_state_change(self, change: StateChange) -> None:
        self.transitions.labels(change.old.value if change.old else "none", change.new.value).inc()
        row = change.recording
        if change.new is State.FAILED:
            code = bounded(row.error_code or "unknown", FAILURE_CODES)
            self.failures.labels(code, failure_side(code)).inc()
        if change.old is State.WAITING:
            entered = row.timestamps.get(State.WAITING.value)
            if entered is not None:
                self.waiting_seconds.observe(max(0.0, change.at - entered))
        if change.new in ENDED and row.stop_reason:
            self.stopped.labels(bounded(row.stop_reason, STOP_REASONS)).inc()
        if change.new in TERMINAL or change.new is State.QUEUED:
            self.forget(row.id)
        if change.new is State.COMPLETED:
            self.observe_webrtc(row.quality)
        if change.new is State.COMPLETED and row.location and row.location.startswith("s3://"):
            if row.progress:
                self.upload_bytes.inc(float(row.progress.get("bytes") or 0))
            started = row.timestamps.get("uploading")
            if started is not None:
                self.upload_seconds.observe(max(0.0, change.at - started))

    def observe_webrtc(self, quality: object) -> None:
        """A completed recording's inbound WebRTC quality, when it had any."""
        measured = webrtc_quality(quality)
        if measured is None:
            return
        self.webrtc_recordings.labels(*self.place).inc()
        self.webrtc_freeze.labels(*self.place).observe(measured.freeze_per_minute)
        if measured.loss is not None:
            self.webrtc_loss.labels(*self.place).observe(measured.loss)
        if measured.bad:
            self.webrtc_bad.labels(*self.place).inc()

    def count_blocked(self, blocked: Mapping[str, int]) -> None:
        """Add a finished recording's denied requests; unknown reasons count as "other", and negative or
        absurd counts are ignored."""
        for reason, count in blocked.items():
            if isinstance(count, int) and 0 < count <= MAX_BLOCKED_PER_REPORT:
                self.blocked.labels(bounded(reason, BLOCK_REASONS)).inc(count)

    def observe_progress(self, recording_id: str, progress: Progress) -> None:
        self._active.add(recording_id)
        self.fps.labels(recording_id).set(progress.fps)
        self.dropped.labels(recording_id).set(progress.dropped)
        self.speed.labels(recording_id).set(progress.speed)
        self.behind.labels(recording_id).set(1 if progress.behind else 0)

    def forget(self, recording_id: str) -> None:
        if recording_id in self._active:
            self._active.discard(recording_id)
            for gauge in (self.fps, self.dropped, self.speed, self.behind):
                gauge.remove(recording_id)

    def set_counts(self, recordings: Mapping[State, int], workers: Mapping[str, int]) -> None:
        for state, n in recordings.items():
            self.recordings.labels(state.value).set(n)
        for state, n in workers.items():
            self.pool_workers.labels(state).set(n)

    def set_webhook_backlog(self, backlog: Iterable[Backlog], now: float) -> None:
        """The outbox as the delivery loop last read it: destinations no longer pending lose their series."""
        ranked = sorted(backlog, key=lambda b: (-b.pending, b.destination))
        pending: dict[str, int] = {b.destination: b.pending for b in ranked[:MAX_BACKLOG_DESTINATIONS]}
        rest = sum(b.pending for b in ranked[MAX_BACKLOG_DESTINATIONS:])
        if rest:
            pending["other"] = pending.get("other", 0) + rest
        for gone in self._backlog_destinations - set(pending):
            self.webhook_backlog.remove(gone)
        for destination, n in pending.items():
            self.webhook_backlog.labels(destination).set(n)
        self._backlog_destinations = set(pending)
        oldest = min((b.oldest_created_at for b in ranked), default=None)
        self.webhook_oldest_pending.set(0.0 if oldest is None else max(0.0, now - oldest))

    def clear_webhook_backlog(self) -> None:
        """This orchestrator stopped delivering: the leader now reports the backlog."""
        for destination in self._backlog_destinations:
            self.webhook_backlog.remove(destination)
        self._backlog_destinations = set()
        self.webhook_oldest_pending.set(0.0)

    def render(self) -> bytes:
        """The orchestrator's own metrics, then the process-wide registry (process and runtime metrics,
        and what pool backends count there, such as pod failures by reason)."""
        return generate_latest(self.registry) + generate_latest(REGISTRY)
