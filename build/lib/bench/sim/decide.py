"""The orchestrator's policy, called with most workers as counts instead of one view each.

At a million recordings a day tens of thousands of pods are busy at once and thousands are idle, and
handing each of them to `decide` on every tick would make the simulation take hours. Most of them enter
the policy only through their number:

- a busy worker is never retired, drained or replaced; it counts in `busy` and among the workers that
  remain;
- an idle worker of the current release that this tick will not retire (it has not idled for the cooldown,
  or it is not among the `remaining - desired` longest idle) counts only among the workers that remain.

`decide` creates `desired - remaining` workers and may retire `remaining - desired` cooled-down ones, so
only that difference matters. With B busy and U such idle workers left out, and x = queued + spare,

    clamp(B + x, min, ceiling) - B - U = clamp(x - U, max(0, min - B - U), ceiling - B - U)

when x >= U (the lower bound may be raised to 0 since x - U >= 0) or when min = ceiling (a fixed pool,
whose desired count is constant). So `decide` on the snapshot without them, with the bounds shifted down
by B + U and U taken off the spare (then the queue), returns the same creations, retirements and
replacements, and a desired count B + U lower. `tests/fleet/test_simulation.py` checks this against the full
snapshot on random pools, and a whole simulated day against one run with every worker listed.
"""

from __future__ import annotations

from dataclasses import replace

from orchestrator.pool.policy import Decision, PoolConfig, PoolSnapshot, decide, desired_workers


def foldable_idle(queued: int, config: PoolConfig, candidates: int) -> int:
    """How many of `candidates` idle workers that will not be retired may be left out of the snapshot."""
    if config.min == config.ceiling:
        return candidates
    return min(candidates, queued + config.spare)


def retirement_candidates(busy: int, queued: int, workers: int, config: PoolConfig) -> int:
    """How many of the longest-idle workers this tick may retire: those above the desired count
    (`workers` counts every live worker, busy ones included)."""
    return max(0, workers - desired_workers(busy, queued, config))


def decide_folded(snapshot: PoolSnapshot, config: PoolConfig, *, busy: int, idle: int = 0) -> Decision:
    """`decide` for `snapshot` plus `busy` busy workers and `idle` idle workers of the current release that
    are not listed in it: at most `foldable_idle` of them, none among the `retirement_candidates`."""
    folded = busy + idle
    if folded == 0:
        return decide(snapshot, config)
    ceiling = config.ceiling
    if folded > ceiling:
        raise ValueError(f"{folded} folded workers above the pool's ceiling {ceiling}")
    if idle > foldable_idle(snapshot.queued, config, idle):
        raise ValueError(f"{idle} idle workers cannot be folded with queued={snapshot.queued}, spare={config.spare}")
    spare = max(0, config.spare - idle)
    queued = max(0, snapshot.queued - (idle - (config.spare - spare)))
    shifted = replace(config, min=max(0, config.min - folded), max=ceiling - folded, spare=spare, capacity=None)
    decision = decide(replace(snapshot, queued=queued), shifted)
    return replace(decision, desired=decision.desired + folded)
