"""Recorder pods on a Kubernetes cluster, as a PoolBackend (kubernetes_asyncio).

- Pods are built from the operator's template (kubernetes_template) and labelled with app, pool and
  release; the pod name is the worker id.
- A watch keeps the view current (kubernetes_watch); what a pod's status means is kubernetes_status.
- `retire` deletes with preconditions on the uid and resourceVersion the backend last saw, so a pod that
  changed since (claimed, restarted, recreated under the same name) is left alone and the caller decides
  again with fresh facts.
- Failed pods are counted in `recorder_pod_failures_total{reason}`, reported by `list()` with their reason
  for `failed_retention` seconds, and removed: at once while they could still run (so they never take
  work), after the retention once their containers are dead (so `kubectl logs` still works meanwhile).
- Pods of an older release are reported with that release; `is_current_release` tells the autoscaler
  which ones to retire when idle, so an upgrade drains without cutting recordings.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio.client import ApiClient, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter

from orchestrator import __version__
from orchestrator.pool.backend import WorkerInfo
from orchestrator.pool.kubernetes_config import KubernetesSettings, api_client
from orchestrator.pool.kubernetes_status import PodHealth, parse_time, pod_health
from orchestrator.pool.kubernetes_template import (
    RELEASE_LABEL,
    OwnerRef,
    PodTemplate,
    TemplateError,
    check_label_value,
    pool_selector,
)
from orchestrator.pool.kubernetes_watch import PodWatcher

log = logging.getLogger(__name__)

# Every (resource, verb) this backend asks of the API server. The Role in k8s/ grants exactly these,
# and tests/fleet/test_k8s_manifests.py checks both against the requests the backend really makes.
RBAC_PERMISSIONS: frozenset[tuple[str, str]] = frozenset(
    {("pods", "create"), ("pods", "get"), ("pods", "list"), ("pods", "watch"), ("pods", "delete")}
)

# Seconds any single API call may take (watches excepted: they last POOL_WATCH_TIMEOUT).
REQUEST_TIMEOUT = 30.0

POD_FAILURES = Counter(
    "recorder_pod_failures", "Recorder pods seen failing, by reason (OOMKilled, Unschedulable, ...)", ["reason"]
)


class KubernetesBackendError(RuntimeError):
    """The API server refused a pool operation; the message carries its reason."""


@dataclass
class _Failure:
    info: WorkerInfo
    alive: bool
    seen_at: float  # monotonic


class KubernetesBackend:
    name = "kubernetes"

    def __init__(
        self,
        settings: KubernetesSettings | None = None,
        *,
        client: ApiClient | None = None,
        version: str | None = None,
        clock: Callable[[], float] = time.time,
        on_failure: Callable[[WorkerInfo], None] | None = None,
    ) -> None:
        self.settings = settings or KubernetesSettings()
        self.namespace = self.settings.resolved_namespace()
        self.pool = self.settings.pool
        self.selector = pool_selector(self.pool)
        self.owner: OwnerRef | None = None
        self._version = version or __version__
        self._clock = clock
        self._on_failure = on_failure
        self._client = client
        self._owns_client = client is None
        self._core: CoreV1Api | None = None
        self._template: PodTemplate | None = None
        self._watcher: PodWatcher | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dirty = asyncio.Event()
        self._created: dict[str, float] = {}  # name -> monotonic time of creation, until the view has it
        self._retired: set[str] = set()
        self._failed: dict[str, _Failure] = {}  # by pod uid
        self._deleting: set[str] = set()  # uids with a cleanup delete in flight
        self._cleanups: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._template = await asyncio.to_thread(PodTemplate.load, self.settings.pod_template)
        if self.settings.release:
            check_label_value(self.settings.release, "RECORDER_RELEASE")
        if self._client is None:
            self._client = await api_client(self.settings)
        self._core = CoreV1Api(self._client)
        self.owner = await self._discover_owner()
        self._watcher = PodWatcher(
            self._core,
            self.namespace,
            self.selector,
            on_change=self._dirty.set,
            watch_timeout=self.settings.watch_timeout,
        )
        await self._watcher.relist()
        self._reconcile()
        self._tasks = [
            asyncio.create_task(self._watcher.run(), name="k8s-pod-watch"),
            asyncio.create_task(self._housekeeping(), name="k8s-pool-housekeeping"),
        ]
        log.info(
            "kubernetes pool %s in namespace %s: %d pods, release %s, owner %s",
            self.pool,
            self.namespace,
            len(self._watcher.pods),
            self.release,
            f"{self.owner.kind}/{self.owner.name}" if self.owner else "none",
        )

    async def close(self) -> None:
        tasks = [*self._tasks, *self._cleanups]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._client is not None and self._owns_client:
            await self._client.close()
            self._client = None

    # -- releases --------------------------------------------------------------------------------

    @property
    def release(self) -> str:
        """The release label new pods get."""
        if self.settings.release:
            return self.settings.release
        if self._template is None:
            raise RuntimeError("start() the backend first")
        return self._template.release_for(self._version)

    def is_current_release(self, info: WorkerInfo) -> bool:
        """False for pods built from an older image or template: retire them once idle."""
        return info.release == self.release

    async def _current_template(self) -> PodTemplate:
        """Re-read the template so an edited ConfigMap takes effect without a restart."""
        assert self._template is not None
        try:
            fresh = await asyncio.to_thread(PodTemplate.load, self.settings.pod_template)
        except TemplateError as exc:
            log.warning("keeping the previous pod template: %s", exc)
            return self._template
        if fresh.digest != self._template.digest:
            self._template = fresh
            log.info("pod template changed: new pods get release %s; older ones drain", self.release)
        return self._template

    # -- PoolBackend -----------------------------------------------------------------------------

    async def create(self, count: int) -> list[str]:
        core = self._api()
        template = await self._current_template()
        body = template.build(namespace=self.namespace, pool=self.pool, release=self.release, owner=self.owner)
        names: list[str] = []
        for _ in range(max(0, count)):
            for attempt in range(3):
                try:
                    pod = await core.create_namespaced_pod(self.namespace, body, _request_timeout=REQUEST_TIMEOUT)
                    break
                except ApiException as exc:
                    # A generated name can collide; the API server then answers 409 AlreadyExists.
                    if exc.status == 409 and attempt < 2:
                        continue
                    raise KubernetesBackendError(
                        f"creating a recorder pod in {self.namespace} failed: {exc.status} {_message(exc)}"
                    ) from exc
            names.append(pod.metadata.name)
            self._created[pod.metadata.name] = time.monotonic()
        return names

    async def retire(self, name: str) -> bool:
        core = self._api()
        pod = self._view().get(name)
        if pod is None:
            return False
        meta = pod["metadata"]
        body = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
            "preconditions": {"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
        }
        try:
            await core.delete_namespaced_pod(name, self.namespace, body=body, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            if exc.status in (404, 409):
                log.info("pod %s not retired: %s", name, _message(exc))
                return False
            raise KubernetesBackendError(f"deleting pod {name} failed: {exc.status} {_message(exc)}") from exc
        self._retired.add(name)
        return True

    async def list(self) -> list[WorkerInfo]:
        self._reconcile()
        view = self._view()
        infos: list[WorkerInfo] = []
        seen_uids: set[str] = set()
        for name, pod in view.items():
            uid = pod["metadata"]["uid"]
            seen_uids.add(uid)
            failure = self._failed.get(uid)
            if failure is not None:
                infos.append(failure.info)
            elif name in self._retired:
                infos.append(self._info(pod, PodHealth("gone", "Retired")))
            else:
                infos.append(self._info(pod, self._health(pod)))
        infos.extend(f.info for uid, f in self._failed.items() if uid not in seen_uids)
        now = self._clock()
        infos.extend(
            WorkerInfo(name=n, phase="starting", release=self.release, created_at=now)
            for n in self._created
            if n not in view
        )
        return infos

    # -- internals -------------------------------------------------------------------------------

    def _api(self) -> CoreV1Api:
        if self._core is None:
            raise RuntimeError("start() the backend first")
        return self._core

    def _view(self) -> dict[str, dict[str, Any]]:
        return self._watcher.pods if self._watcher is not None else {}

    def _health(self, pod: dict[str, Any]) -> PodHealth:
        return pod_health(pod, now=self._clock(), pending_timeout=self.settings.pending_timeout)

    def _info(self, pod: dict[str, Any], health: PodHealth) -> WorkerInfo:
        meta = pod["metadata"]
        labels = dict(meta.get("labels") or {})
        return WorkerInfo(
            name=meta["name"],
            phase=health.phase,
            release=labels.get(RELEASE_LABEL, ""),
            created_at=parse_time(meta.get("creationTimestamp")) or 0.0,
            reason=health.reason,
            labels=labels,
        )

    async def _discover_owner(self) -> OwnerRef | None:
        """The orchestrator's own controller (its ReplicaSet), so recorder pods go when it goes."""
        explicit = self.settings.explicit_owner()
        if explicit is not None:
            return explicit
        pod_name, pod_ns = self.settings.pod_name, self.settings.pod_namespace
        if not pod_name or not pod_ns:
            return None
        if pod_ns != self.namespace:
            log.warning(
                "recorder pods live in %s, the orchestrator in %s: no owner reference "
                "(owners must share the namespace)",
                self.namespace,
                pod_ns,
            )
            return None
        try:
            me = await self._api().read_namespaced_pod(pod_name, pod_ns, _request_timeout=REQUEST_TIMEOUT)
        except ApiException as exc:
            log.warning("cannot read the orchestrator's own pod %s: %s", pod_name, _message(exc))
            return None
        for ref in me.metadata.owner_references or []:
            if ref.controller:
                return OwnerRef(ref.api_version, ref.kind, ref.name, ref.uid)
        return None

    async def _housekeeping(self) -> None:
        """Re-evaluate the pool on every change, and on a timer (Pending pods age without events)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self.settings.housekeeping_interval)
            self._dirty.clear()
            try:
                self._reconcile()
            except Exception:
                log.exception("pool housekeeping failed")

    def _reconcile(self) -> None:
        """Count new failures, clean up dead and failed pods, forget what the view has caught up with."""
        view = self._view()
        mono = time.monotonic()
        uids = set()
        for pod in view.values():
            meta = pod["metadata"]
            uid = meta["uid"]
            uids.add(uid)
            health = self._health(pod)
            failure = self._failed.get(uid)
            if failure is None and health.phase == "failed":
                failure = _Failure(self._info(pod, health), alive=health.alive, seen_at=mono)
                self._failed[uid] = failure
                POD_FAILURES.labels(reason=health.code or "Unknown").inc()
                log.warning("recorder pod %s failed: %s", meta["name"], health.reason)
                if self._on_failure is not None:
                    try:
                        self._on_failure(failure.info)
                    except Exception:
                        log.exception("on_failure callback failed for pod %s", meta["name"])
            if failure is not None:
                if failure.alive and not meta.get("deletionTimestamp"):
                    self._cleanup(pod, "failed while it could still run")
                elif mono - failure.seen_at >= self.settings.failed_retention:
                    self._cleanup(pod, "failed; retention over")
            elif health.phase == "gone" and health.reason == "Completed":
                self._cleanup(pod, "completed")
        # Failures stay reported for the retention even after their pod is gone.
        for uid in [
            u for u, f in self._failed.items() if u not in uids and mono - f.seen_at >= self.settings.failed_retention
        ]:
            del self._failed[uid]
        self._deleting &= uids
        self._retired &= set(view)
        relisted = self._watcher.last_relist_started if self._watcher else 0.0
        for name in [n for n, t in self._created.items() if n in view or t < relisted]:
            del self._created[name]

    def _cleanup(self, pod: dict[str, Any], why: str) -> None:
        meta = pod["metadata"]
        if meta["uid"] in self._deleting or self._core is None:
            return
        self._deleting.add(meta["uid"])
        task = asyncio.create_task(self._delete_quietly(meta["name"], meta["uid"], why))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def _delete_quietly(self, name: str, uid: str, why: str) -> None:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            await self._api().delete_namespaced_pod(name, self.namespace, body=body, _request_timeout=REQUEST_TIMEOUT)
            log.info("deleted recorder pod %s (%s)", name, why)
        except ApiException as exc:
            if exc.status not in (404, 409):
                log.warning("could not delete pod %s (%s): %s", name, why, _message(exc))
                self._deleting.discard(uid)
        except Exception as exc:
            log.warning("could not delete pod %s (%s): %r", name, why, exc)
            self._deleting.discard(uid)


def _message(exc: ApiException) -> str:
    """The API server's own words (its Status.message) when it sent them."""
    try:
        return json.loads(exc.body).get("message") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
