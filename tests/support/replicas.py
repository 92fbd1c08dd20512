"""Helpers for several `orchestrator serve` replicas on one PostgreSQL database.

- `start_replicas(make, dsn, count, **env)`: that many replicas (made by the `orchestrator_process`
  fixture, so each is killed with its process group at the end of the test), all on `dsn`.
- `leading(api)`: what a replica's `orchestrator_leader` gauge says (None when it does not answer).
- `wait_for_leader(apis, timeout)`: the index of the one replica leading, once exactly one does.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Sequence

import aiohttp

from tests.support.orchestrator import Api, OrchestratorProcess

_LEADER = re.compile(r"^orchestrator_leader\s+([0-9.eE+-]+)\s*$", re.M)


def start_replicas(
    make: Callable[..., OrchestratorProcess], dsn: str, count: int = 2, **env: str
) -> list[OrchestratorProcess]:
    # Replicas sign the replay page's links with one shared key (a per-process key would not verify elsewhere).
    shared = {"ORCHESTRATOR_VIEW_SECRET": "test-view-secret-0123456789", **env}
    replicas = [make(ORCHESTRATOR_DB=dsn, **shared) for _ in range(count)]
    for replica in replicas:
        replica.start()
    return replicas


async def leading(api: Api) -> bool | None:
    """True/False from the replica's /metrics; None when it does not answer (killed, not yet listening)."""
    with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
        r = await api.request("GET", "/metrics", timeout=2.0)
        if r.status == 200:
            text = r.body.decode() if isinstance(r.body, bytes) else str(r.body)
            found = _LEADER.search(text)
            assert found is not None, "every orchestrator exports orchestrator_leader"
            return float(found.group(1)) == 1.0
    return None


async def wait_for_leader(apis: Sequence[Api], timeout: float = 20.0) -> int:
    """The index of the leader once exactly one replica says it leads and every other says it does not."""
    deadline = time.monotonic() + timeout
    roles: list[bool | None] = []
    while time.monotonic() < deadline:
        roles = [await leading(api) for api in apis]
        if roles.count(True) == 1 and roles.count(False) == len(apis) - 1:
            return roles.index(True)
        await asyncio.sleep(0.1)
    raise AssertionError(f"no single leader within {timeout} s: {roles}")
