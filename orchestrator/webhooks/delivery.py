"""The delivery loop: POSTs the outbox's due events, on the leader alone.

At-least-once: an event stays pending until a 2xx answer is recorded, so an attempt cut short (a stop, a
crash) is made again, with the same `webhook-id`; receivers dedupe by it. Each attempt is one POST, then
`record_attempt` with where the event stands: delivered, pending again after an exponential backoff with
jitter (ORCHESTRATOR_WEBHOOK_BACKOFF doubling up to ORCHESTRATOR_WEBHOOK_MAX_BACKOFF), or failed once its
next try would fall after its horizon (ORCHESTRATOR_WEBHOOK_HORIZON after the state change), after
ORCHESTRATOR_WEBHOOK_ATTEMPTS attempts when that is set, or at once when the URL policy now refuses it.

A retry is a time in the store, never a task asleep: no slot is held through a backoff, and at most
ORCHESTRATOR_WEBHOOK_PER_DESTINATION attempts go to one destination at once (of
ORCHESTRATOR_WEBHOOK_CONCURRENCY in all), so one bad receiver never delays another's events.

The loop wakes when a state change is published here, when an attempt ends, at the next due time, and
at least every POLL seconds, so events written by other replicas are seen. Redirects are not followed
and connections only go to addresses the URL policy allows (`GuardedResolver`). The secret is chosen at
send time from the event's owner: ORCHESTRATOR_WEBHOOK_SECRETS, else ORCHESTRATOR_WEBHOOK_SECRET.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping

import aiohttp
import structlog

from orchestrator.config import OrchestratorSettings
from orchestrator.events import StateChange
from orchestrator.metrics import OrchestratorMetrics
from orchestrator.store.base import RecordingStore
from orchestrator.store.outbox import Delivery, DeliveryAttempt, DeliveryStatus
from orchestrator.url_policy import GuardedResolver, UrlDenied, UrlPolicy
from orchestrator.webhooks.signing import signed_headers

log = structlog.get_logger("orchestrator.webhooks")

# Longest sleep between two looks at the store: events other replicas wrote are seen within it.
POLL = 1.0
# How long in-flight attempts may finish when the loop stops; the rest are cancelled and stay pending.
STOP_GRACE = 1.0
# The most due events read at once, beyond what can start now (some may wait for their destination).
DUE_BATCH = 64
# The shortest pause between two looks at the store, however much is due.
MIN_SLEEP = 0.02


def backoff_delay(attempt: int, base: float, cap: float) -> float:
    """Delay after failed attempt `attempt` (1-based): base * 2^(attempt-1), capped, with equal jitter."""
    delay = min(cap, base * 2 ** min(attempt - 1, 60))
    return delay / 2 + random.uniform(0, delay / 2)


def warn_if_unsigned(settings: OrchestratorSettings) -> None:
    """Locally, unsigned webhooks are allowed with a warning (on Kubernetes the settings refuse them)."""
    unsigned = settings.unsigned_webhook_callers
    if unsigned:
        log.warning(
            "webhooks_unsigned",
            callers=unsigned,
            hint="set ORCHESTRATOR_WEBHOOK_SECRET (or ORCHESTRATOR_WEBHOOK_SECRETS) so receivers can verify events",
        )


class WebhookDelivery:
    """The loop (start/stop as one of the leader's loops) and its attempts."""

    def __init__(
        self,
        store: RecordingStore,
        policy: UrlPolicy,
        metrics: OrchestratorMetrics,
        *,
        secret: str | None,
        secrets: Mapping[str, str] | None = None,
        backoff: float,
        max_backoff: float,
        attempts: int | None,
        timeout: float,
        concurrency: int,
        per_destination: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.metrics = metrics
        self.secret = secret
        # Per caller (ORCHESTRATOR_WEBHOOK_SECRETS): a receiver can only verify its own caller's events.
        self.secrets = dict(secrets or {})
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_attempts = attempts
        self.timeout = timeout
        self.concurrency = concurrency
        self.per_destination = per_destination
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}  # event id: its attempt
        self._busy: Counter[str] = Counter()  # destination: attempts in flight
        self._gauged_at = 0.0

    @classmethod
    def from_settings(
        cls, settings: OrchestratorSettings, store: RecordingStore, policy: UrlPolicy, metrics: OrchestratorMetrics
    ) -> WebhookDelivery:
        return cls(
            store,
            policy,
            metrics,
            secret=settings.webhook_secret,
            secrets=settings.caller_webhook_secrets,
            backoff=settings.webhook_backoff,
            max_backoff=settings.webhook_max_backoff,
            attempts=settings.webhook_attempts,
            timeout=settings.webhook_timeout,
            concurrency=settings.webhook_concurrency,
            per_destination=settings.webhook_per_destination,
        )

    def secret_for(self, owner: str | None) -> str | None:
        """The owner's own secret, else ORCHESTRATOR_WEBHOOK_SECRET."""
        return self.secrets.get(owner or "", self.secret)

    def wake(self, change: StateChange | None = None) -> None:
        """A bus listener: a change of a recording with a webhook_url wrote an event, so look now. Other
        changes (most of them, under load) must not wake the loop: each look is two queries."""
        if change is None or change.recording.request.get("webhook_url"):
            self._wake.set()

    # lifecycle (one of the leader's loops)

    async def start(self) -> None:
        if self._loop is not None:
            return
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.policy), limit=self.concurrency, limit_per_host=self.per_destination
        )
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False
        )
        self._wake.set()
        self._loop = asyncio.create_task(self._run(), name="webhook-delivery")

    async def stop(self) -> None:
        """Stop sending: in-flight attempts get STOP_GRACE seconds, then are cancelled and stay pending."""
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop
        attempts = list(self._in_flight.values())
        if attempts:
            _, unfinished = await asyncio.wait(attempts, timeout=STOP_GRACE)
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            if unfinished:
                log.info("webhook_attempts_cut_short", count=len(unfinished), hint="they stay pending and are retried")
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.metrics.clear_webhook_backlog()

    # the loop

    async def _run(self) -> None:
        while True:
            try:
                await self._start_due()
                await self._gauge()
                await self._sleep()
            except asyncio.CancelledError:
                raise
            except Exception:
                # The store may be briefly unavailable; the loop must outlive that.
                log.exception("webhook_loop_error")
                await asyncio.sleep(POLL)

    def _full(self) -> list[str]:
        """Destinations with no free slot: their due events wait, and must not crowd out anyone else's."""
        return [destination for destination, busy in self._busy.items() if busy >= self.per_destination]

    async def _start_due(self) -> None:
        """Start what is due and has a free slot."""
        self._wake.clear()
        free = self.concurrency - len(self._in_flight)
        if free <= 0:
            return
        due = await self.store.due_deliveries(
            self.clock(), free + DUE_BATCH, skip=list(self._in_flight), full=self._full()
        )
        for delivery in due:
            if len(self._in_flight) >= self.concurrency:
                return
            if delivery.id not in self._in_flight and self._busy[delivery.destination] < self.per_destination:
                self._launch(delivery)

    async def _sleep(self) -> None:
        """Until woken (a change, an attempt's end), or the next time something startable is due, or POLL.
        What is in flight or waits for a slot is left out of "next", so the loop never spins on it; and
        it never looks more often than every MIN_SLEEP."""
        timeout = POLL
        if len(self._in_flight) < self.concurrency:
            next_at = await self.store.next_delivery_at(skip=list(self._in_flight), full=self._full())
            if next_at is not None:
                timeout = min(POLL, next_at - self.clock())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(MIN_SLEEP, timeout))

    def _launch(self, delivery: Delivery) -> None:
        self._busy[delivery.destination] += 1
        task = asyncio.create_task(self._attempt(delivery), name=f"webhook-{delivery.id}")
        self._in_flight[delivery.id] = task

        def done(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(delivery.id, None)
            self._busy[delivery.destination] -= 1
            if self._busy[delivery.destination] <= 0:
                del self._busy[delivery.destination]
            self._wake.set()

        task.add_done_callback(done)

    async def _gauge(self) -> None:
        """The backlog gauges, at most once a second."""
        now = self.clock()
        if now - self._gauged_at < POLL:
            return
        self._gauged_at = now
        self.metrics.set_webhook_backlog(await self.store.delivery_backlog(), now)

    # one attempt

    async def _attempt(self, delivery: Delivery) -> None:
        number = delivery.attempts + 1
        bound = log.bind(event_id=delivery.id, recording_id=delivery.recording_id, attempt=number)
        at = self.clock()
        started = time.monotonic()
        try:
            await self.policy.check(delivery.url, "webhook_url")
        except UrlDenied as denied:
            refused = DeliveryAttempt(delivery.id, number, at, 0.0, None, denied.message)
            if denied.code == "url_unresolvable":
                # DNS can fail for a while (a resolver restarting): retried like a network error.
                await self._retry_or_give_up(delivery, refused, bound)
                return
            await self._record(refused, DeliveryStatus.FAILED, None)
            self.metrics.webhooks.labels("failed").inc()
            bound.warning("webhook_failed", problem=denied.message, reason="the URL policy refuses it now")
            return
        status_code: int | None = None
        try:
            status_code = await self._post(delivery)
            error = None if 200 <= status_code < 300 else f"HTTP {status_code}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        attempt = DeliveryAttempt(delivery.id, number, at, time.monotonic() - started, status_code, error)
        if error is None:
            await self._record(attempt, DeliveryStatus.DELIVERED, None)
            self.metrics.webhooks.labels("delivered").inc()
            bound.info("webhook_delivered", status=status_code, latency=round(attempt.latency, 3))
            return
        await self._retry_or_give_up(delivery, attempt, bound)

    async def _retry_or_give_up(
        self, delivery: Delivery, attempt: DeliveryAttempt, bound: structlog.typing.FilteringBoundLogger
    ) -> None:
        done = attempt.at + attempt.latency
        retry_at = done + backoff_delay(attempt.number, self.backoff, self.max_backoff)
        capped = self.max_attempts is not None and attempt.number >= self.max_attempts
        if capped or retry_at > delivery.expires_at:
            await self._record(attempt, DeliveryStatus.FAILED, None)
            self.metrics.webhooks.labels("failed").inc()
            why = "attempts" if capped else "horizon"
            # The destination, never the URL: a webhook URL often carries a token in its query.
            bound.warning("webhook_failed", problem=attempt.error, gave_up_on=why, destination=delivery.destination)
            return
        await self._record(attempt, DeliveryStatus.PENDING, retry_at)
        self.metrics.webhooks.labels("retried").inc()
        bound.info("webhook_retry", problem=attempt.error, delay=round(retry_at - done, 3))

    async def _record(self, attempt: DeliveryAttempt, status: DeliveryStatus, next_attempt_at: float | None) -> None:
        # Shielded: an attempt that got its answer is logged even when the loop stops meanwhile.
        await asyncio.shield(self.store.record_attempt(attempt, status=status, next_attempt_at=next_attempt_at))

    async def _post(self, delivery: Delivery) -> int:
        assert self._session is not None, "delivery not started"
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "recorder-farm",
            **signed_headers(self.secret_for(delivery.owner), delivery.id, int(time.time()), body),
        }
        async with self._session.post(delivery.url, data=body, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response.status
