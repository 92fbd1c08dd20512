"""Discrete-event simulation of the warm pool at internet scale, driven by the orchestrator's own policy.

- `workload`: when recordings arrive (diurnal Poisson, bursts on the hour) and how long they last.
- `policies`: static pool, reactive warm pool, predictive warm pool; each only chooses a `PoolConfig`,
  the decision itself is always `orchestrator.pool.policy.decide`.
- `engine`: the event loop (arrivals, pods becoming ready, recordings ending, policy ticks) and its figures.
"""
