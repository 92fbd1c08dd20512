"""The worker's side of `contract.protocol`: lease, heartbeat and report over HTTP.

The orchestrator may be restarting or briefly unreachable; a worker must lose nothing then. So lease
polls and reports are retried with capped exponential backoff (with jitter, so a fleet does not come
back in lock-step) until they get through. A heartbeat is tried once per beat: the next beat is its retry.

Answers that no retry can change are raised at once: `LeaseLost` (410, the lease is no longer ours) and
`Unauthorized` (401/403, a wrong WORKER_TOKEN).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import TypeVar

import aiohttp
import structlog
from pydantic import BaseModel, ValidationError

from contract.protocol import Heartbeat, HeartbeatReply, Lease, LeaseRequest, Report

log = structlog.get_logger(__name__)

M = TypeVar("M", bound=BaseModel)

LEASE_PATH = "/v1/worker/lease"
HEARTBEAT_PATH = "/v1/worker/heartbeat"
REPORT_PATH = "/v1/worker/report"


class LeaseLost(Exception):
    """410: the orchestrator no longer holds this lease for us (lapsed, reassigned, or the recording ended)."""


class Unauthorized(Exception):
    """401/403: the orchestrator refused WORKER_TOKEN; retrying cannot help."""


class Unavailable(Exception):
    """The orchestrator could not be reached or answered with an error a retry may cure."""


class Backoff:
    """Capped exponential backoff with full jitter."""

    def __init__(self, first: float = 0.5, cap: float = 10.0, rand: Callable[[], float] = random.random) -> None:
        self.first = first
        self.cap = cap
        self.rand = rand
        self.attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return ceiling * (0.5 + 0.5 * self.rand())

    def reset(self) -> None:
        self.attempt = 0


class OrchestratorClient:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        request_timeout: float = 10.0,
        backoff_first: float = 0.5,
        backoff_cap: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.request_timeout = request_timeout
        self.backoff_first = backoff_first
        self.backoff_cap = backoff_cap
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> OrchestratorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            self._session = aiohttp.ClientSession(headers=headers)
        return self._session

    # -- the three calls ---------------------------------------------------------------------------

    async def lease(self, request: LeaseRequest, *, deadline: float | None = None) -> Lease | None:
        """Long-poll for a lease; None when none came within `request.wait`.

        Retries while the orchestrator cannot be reached, until `deadline` (loop time) if one is given."""
        return await self._retrying(
            lambda: self._call(LEASE_PATH, request, Lease, timeout=request.wait + self.request_timeout),
            what="lease poll",
            deadline=deadline,
        )

    async def heartbeat(self, heartbeat: Heartbeat) -> HeartbeatReply:
        """One attempt; raises Unavailable when it did not get through (the next beat retries)."""
        reply = await self._call(HEARTBEAT_PATH, heartbeat, HeartbeatReply, timeout=self.request_timeout)
        return reply or HeartbeatReply()

    async def report(self, report: Report, *, deadline: float | None = None) -> HeartbeatReply:
        """Deliver a report, retrying until it is acknowledged, or until `deadline` (loop time) has passed."""
        reply = await self._retrying(
            lambda: self._call(REPORT_PATH, report, HeartbeatReply, timeout=self.request_timeout),
            what="report",
            deadline=deadline,
        )
        return reply or HeartbeatReply()

    # -- plumbing ----------------------------------------------------------------------------------

    async def _retrying(self, attempt: Callable, *, what: str, deadline: float | None = None):  # type: ignore[no-untyped-def]
        backoff = Backoff(self.backoff_first, self.backoff_cap)
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await attempt()
                if backoff.attempt:
                    log.info("worker.orchestrator_reachable_again", call=what)
                return result
            except Unavailable as exc:
                delay = backoff.next()
                if deadline is not None:
                    if loop.time() >= deadline:
                        raise
                    delay = min(delay, deadline - loop.time())  # one last try right at the deadline
                if backoff.attempt == 1 or backoff.attempt % 10 == 0:
                    log.warning("worker.orchestrator_unreachable", call=what, error=str(exc), retry_in=round(delay, 2))
                await asyncio.sleep(delay)

    async def _call(self, path: str, body: BaseModel, model: type[M], *, timeout: float) -> M | None:
        url = self.base_url + path
        try:
            async with self._http().post(
                url,
                data=body.model_dump_json(),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unavailable(f"POST {url}: {type(exc).__name__}: {exc}") from exc
        if status == 204:
            return None
        if status == 410:
            raise LeaseLost(_message(text) or f"POST {url}: 410 lease gone")
        if status in (401, 403):
            raise Unauthorized(
                f"POST {url}: {status} {_message(text) or 'refused'}: check WORKER_TOKEN (--token) matches the "
                "orchestrator's WORKER_TOKEN"
            )
        if status >= 400:
            # 5xx and 429 are the orchestrator's trouble (restarting, overloaded); a 4xx other than those
            # means this worker and the orchestrator disagree on the protocol, which a retry will not cure
            # but which must not lose a recording either: keep trying, loudly.
            raise Unavailable(f"POST {url}: {status} {_message(text)}")
        try:
            return model.model_validate_json(text)
        except ValidationError as exc:
            raise Unavailable(f"POST {url}: unexpected answer: {exc}") from exc


def _message(text: str) -> str:
    """The `message` of a JSON error body, else the body itself (shortened)."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and "message" in error:
            return str(error["message"])
    return text[:300]
