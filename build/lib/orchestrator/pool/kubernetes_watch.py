"""A current view of one pool's pods: list once, then watch from that resourceVersion.

The watch asks for bookmarks, so a quiet pool still advances its resourceVersion and a reconnect after a
timeout rarely falls out of the API server's window. When it does (410 Gone, "too old resource version")
the view is rebuilt from a fresh list; pods missing from that list were deleted while nobody watched.

Events are read as raw JSON lines rather than through kubernetes_asyncio's `Watch`, which turns every
event into a model object and retries a 410 with the same, already expired, resourceVersion.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio.client import CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException

log = logging.getLogger(__name__)


class WatchExpired(Exception):
    """The API server no longer holds history back to our resourceVersion: relist."""


class PodWatcher:
    def __init__(
        self,
        api: CoreV1Api,
        namespace: str,
        label_selector: str,
        *,
        on_change: Callable[[], None] = lambda: None,
        watch_timeout: int = 300,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
        request_timeout: float = 60.0,
    ) -> None:
        self._api = api
        self.namespace = namespace
        self.label_selector = label_selector
        self._on_change = on_change
        self.watch_timeout = watch_timeout
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.request_timeout = request_timeout
        self.events = 0  # events and bookmarks received, over all watches
        self.pods: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None
        self.relists = 0
        self.expired = 0
        # monotonic time at which the last relist started; pods created before it and missing from
        # its result are known to be gone.
        self.last_relist_started = 0.0
        self.synced = asyncio.Event()

    async def relist(self) -> None:
        started = time.monotonic()
        resp = await self._api.list_namespaced_pod(
            self.namespace,
            label_selector=self.label_selector,
            _preload_content=False,
            _request_timeout=self.request_timeout,
        )
        try:
            body = await resp.read()
            if resp.status != 200:
                raise ApiException(status=resp.status, reason=body.decode(errors="replace")[:500])
        finally:
            resp.release()
        data = json.loads(body)
        self.pods = {p["metadata"]["name"]: p for p in data.get("items") or []}
        self.resource_version = data["metadata"]["resourceVersion"]
        self.relists += 1
        self.last_relist_started = started
        self.synced.set()
        self._on_change()

    async def run(self) -> None:
        """Watch until cancelled; every failure ends in a reconnect or a relist, never in silence.

        Failures back off exponentially up to `max_retry_delay`; so does a server that keeps closing
        watches at once without sending anything.
        """
        delay = self.retry_delay
        while True:
            started, events = time.monotonic(), self.events
            try:
                if self.resource_version is None:
                    await self.relist()
                await self.watch_once()
                if self.events > events or time.monotonic() - started >= 1.0:
                    delay = self.retry_delay
                    continue
                log.debug("pod watch closed at once; reconnecting in %.1f s", delay)
            except asyncio.CancelledError:
                raise
            except WatchExpired as exc:
                self.expired += 1
                log.info("pod watch expired (%s); relisting", exc)
                self.resource_version = None
                continue
            except Exception as exc:
                log.warning("pod watch interrupted: %r; retrying in %.1f s", exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_retry_delay)

    async def watch_once(self) -> None:
        """One watch request, until the server ends it (timeoutSeconds) or it fails."""
        resp = await self._api.list_namespaced_pod(
            self.namespace,
            label_selector=self.label_selector,
            watch=True,
            allow_watch_bookmarks=True,
            resource_version=self.resource_version,
            timeout_seconds=self.watch_timeout,
            _preload_content=False,
            _request_timeout=(10, self.watch_timeout + 30),
        )
        try:
            if resp.status == 410:
                raise WatchExpired(f"HTTP 410 at resourceVersion {self.resource_version}")
            if resp.status != 200:
                body = await resp.read()
                raise ApiException(status=resp.status, reason=body.decode(errors="replace")[:500])
            async for line in resp.content:
                if line.strip():
                    self._apply(json.loads(line))
        finally:
            with contextlib.suppress(Exception):
                resp.release()

    def _apply(self, event: dict[str, Any]) -> None:
        self.events += 1
        kind = event.get("type")
        obj = event.get("object") or {}
        meta = obj.get("metadata") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpired(obj.get("message") or "Gone")
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
        if kind == "BOOKMARK":
            self.resource_version = meta.get("resourceVersion") or self.resource_version
            return
        name = meta.get("name")
        if not name:
            return
        if kind in ("ADDED", "MODIFIED"):
            self.pods[name] = obj
        elif kind == "DELETED":
            current = self.pods.get(name)
            if current is not None and current["metadata"].get("uid") == meta.get("uid"):
                del self.pods[name]
        self.resource_version = meta.get("resourceVersion") or self.resource_version
        self._on_change()
