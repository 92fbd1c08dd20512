"""The event loop: recordings arrive, take a warm pod or queue, pods start cold, record once and exit.

Pods are single-use (capacity 1): a pod that has recorded exits, and the policy replaces it if the pool
still needs it. A queued recording takes the first pod that becomes ready; an arriving one takes the pod
that has been idle longest (the scheduler serves the oldest long-poll first). The policy runs every `tick`
seconds, a coarser step than the orchestrator's 1 s loop and its wake-ups, which adds at most one tick
to a pod's start on top of its 20-60 s cold start.

The day is preceded by a warm-up (the previous evening: recordings still running at midnight, a pool
already sized, the predictive policy's learned hourly pattern), and only the day itself is measured:
waits of recordings requested during the day, pod-hours spent during the day.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.sim.decide import decide_folded, foldable_idle, retirement_candidates
from bench.sim.policies import PoolPolicy
from bench.sim.workload import DAY, HOUR, Workload
from orchestrator.pool.policy import PoolSnapshot, WorkerView, decide

_READY, _END = 0, 1


@dataclass(frozen=True)
class PodModel:
    cold_start_min: float = 20.0
    cold_start_max: float = 60.0
    # After the recording: finalize and upload, then the pod exits.
    finalize: float = 5.0


@dataclass
class SimResult:
    policy: str
    per_day: float
    recordings: int
    waits: np.ndarray = field(repr=False)
    pod_seconds: dict[str, float]
    peak_pods: int
    decide_calls: int
    runtime_s: float
    settings: dict[str, Any] = field(default_factory=dict)

    def _pct(self, q: float) -> float:
        return float(np.percentile(self.waits, q)) if self.waits.size else 0.0

    @property
    def p50_wait(self) -> float:
        return self._pct(50)

    @property
    def p99_wait(self) -> float:
        return self._pct(99)

    @property
    def share_over_5s(self) -> float:
        return float((self.waits > 5.0).mean()) if self.waits.size else 0.0

    @property
    def idle_share(self) -> float:
        total = sum(self.pod_seconds.values())
        return self.pod_seconds["idle"] / total if total else 0.0

    @property
    def starting_share(self) -> float:
        total = sum(self.pod_seconds.values())
        return self.pod_seconds["starting"] / total if total else 0.0

    def summary(self) -> dict[str, Any]:
        hours = {k: round(v / HOUR, 1) for k, v in self.pod_seconds.items()}
        return {
            "policy": self.policy,
            "per_day": self.per_day,
            "recordings": self.recordings,
            "settings": self.settings,
            "wait_p50_s": round(self.p50_wait, 3),
            "wait_p99_s": round(self.p99_wait, 3),
            "wait_max_s": round(float(self.waits.max()) if self.waits.size else 0.0, 3),
            "share_waiting_over_5s": round(self.share_over_5s, 5),
            "pod_hours": hours,
            "idle_share": round(self.idle_share, 4),
            "starting_share": round(self.starting_share, 4),
            "peak_pods": self.peak_pods,
            "decide_calls": self.decide_calls,
            "runtime_s": round(self.runtime_s, 2),
        }


def _overlap(start: float, end: float) -> float:
    """Seconds of [start, end) that fall in the measured day."""
    return max(0.0, min(end, DAY) - max(start, 0.0))


class Simulation:
    def __init__(
        self,
        workload: Workload,
        policy: PoolPolicy,
        *,
        pods: PodModel | None = None,
        seed: int = 1,
        tick: float = 2.0,
        warmup: float = 6 * HOUR,
        exact: bool = False,
    ) -> None:
        self.workload = workload
        self.policy = policy
        self.pods = pods or PodModel()
        self.seed = seed
        self.tick = tick
        self.warmup = warmup
        # exact: every busy pod is handed to `decide` as a view (slow; for checking the busy-count shortcut).
        self.exact = exact

    def run(self) -> SimResult:
        began = time.perf_counter()
        rng = np.random.default_rng(self.seed)
        arrivals = self.workload.arrivals(-self.warmup, DAY, rng)
        durations = self.workload.durations(arrivals.size, rng)
        # Each pod start draws its cold start from this stream; more pods than twice the recordings never start.
        pods = self.pods
        cold = iter(rng.uniform(pods.cold_start_min, pods.cold_start_max, 2 * arrivals.size + 10_000).tolist())
        times, lengths = arrivals.tolist(), (durations + pods.finalize).tolist()
        policy, exact, tick = self.policy, self.exact, self.tick

        events: list[tuple[float, int, str]] = []  # (time, kind, pod)
        names = (f"p{n:09d}" for n in itertools.count())
        starting: dict[str, WorkerView] = {}
        idle: OrderedDict[str, WorkerView] = OrderedDict()
        busy: dict[str, WorkerView] = {}  # views are kept only in exact mode
        busy_count = 0
        queue: deque[tuple[float, float]] = deque()
        waits: list[float] = []
        seconds = {"starting": 0.0, "idle": 0.0, "busy": 0.0}
        peak = calls = 0
        inf = float("inf")

        def start_recording(pod: str, created_at: float, now: float, arrival: float, length: float) -> None:
            nonlocal busy_count
            if arrival >= 0.0:
                waits.append(now - arrival)
            seconds["busy"] += _overlap(now, now + length)
            busy_count += 1
            if exact:
                busy[pod] = WorkerView(pod, "busy", created_at=created_at)
            heapq.heappush(events, (now + length, _END, pod))

        n = len(times)
        i = 0
        next_tick = now = -self.warmup
        while True:
            t_arrival = times[i] if i < n else inf
            t_event = events[0][0] if events else inf
            if next_tick <= t_arrival and next_tick <= t_event:
                if i >= n and not queue and next_tick >= DAY:
                    break
                now = next_tick
                next_tick += tick
                config = policy.config(now, arrivals[:i])
                if exact:
                    workers = (*starting.values(), *idle.values(), *busy.values())
                    decision = decide(PoolSnapshot(now=now, queued=len(queue), workers=workers), config)
                else:
                    # The longest idle, which this tick may retire, are listed; the others are counted.
                    keep = retirement_candidates(busy_count, len(queue), len(starting) + len(idle) + busy_count, config)
                    fold = foldable_idle(len(queue), config, max(0, len(idle) - keep))
                    listed = itertools.islice(idle.values(), len(idle) - fold)
                    snapshot = PoolSnapshot(now=now, queued=len(queue), workers=(*starting.values(), *listed))
                    decision = decide_folded(snapshot, config, busy=busy_count, idle=fold)
                calls += 1
                for pod in (*decision.retire, *decision.replace):
                    if pod in idle:
                        seconds["idle"] += _overlap(idle.pop(pod).idle_since or now, now)
                    elif pod in starting:
                        seconds["starting"] += _overlap(starting.pop(pod).created_at, now)
                for _ in range(decision.create):
                    pod = next(names)
                    starting[pod] = WorkerView(pod, "starting", created_at=now)
                    heapq.heappush(events, (now + next(cold), _READY, pod))
                peak = max(peak, len(starting) + len(idle) + busy_count)
            elif t_arrival <= t_event:
                now = t_arrival
                length = lengths[i]
                i += 1
                if idle:
                    pod, view = idle.popitem(last=False)
                    seconds["idle"] += _overlap(view.idle_since or now, now)
                    start_recording(pod, view.created_at, now, now, length)
                else:
                    queue.append((now, length))
            else:
                now, kind, pod = heapq.heappop(events)
                if kind == _END:
                    busy_count -= 1
                    busy.pop(pod, None)
                    continue
                view = starting.pop(pod, None)
                if view is None:  # replaced while starting
                    continue
                seconds["starting"] += _overlap(view.created_at, now)
                if queue:
                    arrival, length = queue.popleft()
                    start_recording(pod, view.created_at, now, arrival, length)
                else:
                    idle[pod] = WorkerView(pod, "idle", created_at=view.created_at, idle_since=now)
        for view in starting.values():
            seconds["starting"] += _overlap(view.created_at, now)
        for view in idle.values():
            seconds["idle"] += _overlap(view.idle_since or now, now)
        return SimResult(
            policy=policy.name,
            per_day=self.workload.per_day,
            recordings=len(waits),
            waits=np.asarray(waits),
            pod_seconds=seconds,
            peak_pods=peak,
            decide_calls=calls,
            runtime_s=time.perf_counter() - began,
            settings={"tick_s": tick, "seed": self.seed, "exact": exact},
        )
