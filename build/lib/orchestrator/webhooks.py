"""Signed webhook deliveries of state changes.

Each state change of a recording with a `webhook_url` becomes one `WebhookEvent`, POSTed as JSON with

    X-Recorder-Event-Id:  <event_id>                 the idempotency key: the same on every retry
    X-Recorder-Signature: t=<unix seconds>,v1=<hex>  HMAC-SHA256(secret, f"{t}.{body}")

The secret is the recording owner's entry in ORCHESTRATOR_WEBHOOK_SECRETS, else ORCHESTRATOR_WEBHOOK_SECRET,
so with per-caller secrets one caller's receiver cannot verify (or be fed) another caller's events.

`t` is the time of the attempt, so a receiver can refuse stale replays. Any non-2xx answer or network
error is retried with exponential backoff and jitter, up to ORCHESTRATOR_WEBHOOK_ATTEMPTS attempts.
Deliveries run in background tasks, in order per recording, and never block a transition. Redirects
are not followed and connections only go to addresses the URL policy allows. Pending deliveries live
in memory: a restart of the orchestrator drops them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
import uuid
from collections.abc import Callable, Mapping

import aiohttp
import structlog

from orchestrator.api.views import Recording, WebhookEvent, utc
from orchestrator.events import StateChange
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.store.base import RecordingRow
from orchestrator.url_policy import GuardedResolver, UrlDenied, UrlPolicy

log = structlog.get_logger("orchestrator.webhooks")

SIGNATURE_HEADER = "X-Recorder-Signature"
EVENT_ID_HEADER = "X-Recorder-Event-Id"
MAX_BACKOFF = 300.0
MAX_CONCURRENT = 16


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, tolerance: float = 300.0, now: float | None = None) -> bool:
    """What a receiver does: recompute the HMAC and refuse signatures older than `tolerance` seconds."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def backoff_delay(attempt: int, base: float, cap: float = MAX_BACKOFF) -> float:
    """Delay after failed attempt `attempt` (1-based): base * 2^(attempt-1), capped, with equal jitter."""
    delay = min(cap, base * 2 ** (attempt - 1))
    return delay / 2 + random.uniform(0, delay / 2)


class WebhookDispatcher:
    def __init__(
        self,
        *,
        secret: str | None,
        secrets: Mapping[str, str] | None = None,
        attempts: int,
        backoff: float,
        timeout: float,
        policy: UrlPolicy,
        metrics: OrchestratorMetrics,
        render: Callable[[RecordingRow], Recording],
    ) -> None:
        self.secret = secret
        # Per caller (ORCHESTRATOR_WEBHOOK_SECRETS): a receiver can only verify its own caller's events.
        self.secrets = dict(secrets or {})
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.policy = policy
        self.metrics = metrics
        self.render = render
        self._session: aiohttp.ClientSession | None = None
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONCURRENT)

    async def start(self) -> None:
        if not self.secret and not self.secrets:
            log.warning("webhooks_unsigned", hint="set ORCHESTRATOR_WEBHOOK_SECRET so receivers can verify events")
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), limit=MAX_CONCURRENT)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False
        )

    async def close(self, wait: float = 5.0) -> None:
        """Give pending deliveries `wait` seconds, then drop them."""
        pending = set(self._tasks)
        if pending:
            _, still = await asyncio.wait(pending, timeout=wait)
            for task in still:
                task.cancel()
            if still:
                log.warning("webhooks_dropped_at_shutdown", count=len(still))
                self.metrics.webhooks.labels("dropped").inc(len(still))
                await asyncio.gather(*still, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def on_state_change(self, change: StateChange) -> None:
        url = change.recording.request.get("webhook_url")
        if not url:
            return
        event = WebhookEvent(
            event_id=f"evt_{uuid.uuid4().hex}",
            recording_id=change.recording.id,
            old_state=change.old,
            new_state=change.new,
            occurred_at=utc(change.at),
            recording=self.render(change.recording),
        )
        self.submit(url, event, self.secret_for(change.recording.owner))

    def secret_for(self, owner: str | None) -> str | None:
        """The owner's own secret, else ORCHESTRATOR_WEBHOOK_SECRET."""
        return self.secrets.get(owner or "", self.secret)

    def submit(self, url: str, event: WebhookEvent, secret: str | None = None) -> None:
        body = event.model_dump_json().encode()
        previous = self._tails.get(event.recording_id)
        task = asyncio.create_task(self._deliver_after(previous, url, event, body, secret))
        self._tails[event.recording_id] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(event.recording_id, t))

    def _done(self, recording_id: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(recording_id) is task:
            del self._tails[recording_id]

    async def _deliver_after(
        self, previous: asyncio.Task[None] | None, url: str, event: WebhookEvent, body: bytes, secret: str | None
    ) -> None:
        if previous is not None:
            # Events of one recording arrive in the order they happened.
            await asyncio.wait([previous])
        await self._deliver(url, event, body, secret)

    async def _deliver(self, url: str, event: WebhookEvent, body: bytes, secret: str | None) -> None:
        bound = log.bind(recording_id=event.recording_id, event_id=event.event_id, new_state=event.new_state)
        problem = "not attempted"
        for attempt in range(1, self.attempts + 1):
            try:
                # A slot is held per attempt, never across the backoff: one caller's failing receivers
                # cannot hold every slot while they wait, and so delay every other caller's events.
                async with self._slots:
                    await self.policy.check(url, "webhook_url")
                    status = await self._post(url, event.event_id, body, secret)
                if 200 <= status < 300:
                    self.metrics.webhooks.labels("delivered").inc()
                    bound.info("webhook_delivered", attempt=attempt, status=status)
                    return
                problem = f"HTTP {status}"
            except UrlDenied as denied:
                problem = denied.message
                break
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt < self.attempts:
                delay = backoff_delay(attempt, self.backoff)
                self.metrics.webhooks.labels("retried").inc()
                bound.info("webhook_retry", attempt=attempt, problem=problem, delay=round(delay, 3))
                await asyncio.sleep(delay)
        self.metrics.webhooks.labels("failed").inc()
        bound.warning("webhook_failed", attempts=self.attempts, problem=problem, url=url)

    async def _post(self, url: str, event_id: str, body: bytes, secret: str | None) -> int:
        assert self._session is not None, "dispatcher not started"
        headers = {"Content-Type": "application/json", EVENT_ID_HEADER: event_id, "User-Agent": "recorder-farm"}
        if secret:
            headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
        async with self._session.post(url, data=body, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response.status
