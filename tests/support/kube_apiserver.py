"""An HTTP stand-in of the Kubernetes API server: pods in namespaces, and nothing else.

No cluster exists where these tests run, so the Kubernetes backend is exercised against this aiohttp
app on 127.0.0.1. It keeps the semantics the backend relies on, as the real API server has them:

- one global, increasing resourceVersion; every pod carries the one of its last change;
- create with `generateName`, 409 AlreadyExists on a name conflict, 422 Invalid without containers;
- get, list with label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`);
- delete with `preconditions` {uid, resourceVersion}: 409 Conflict when they do not match;
- watch (`?watch=1&resourceVersion=…&allowWatchBookmarks=true&timeoutSeconds=…`) streaming JSON lines
  ADDED / MODIFIED / DELETED / BOOKMARK, replaying retained history after the given resourceVersion,
  and a 410 Gone ERROR event ("too old resource version") when that history was compacted;
- bearer-token authentication (401 without it).

Test hooks change pod status the way a kubelet or scheduler would (running, unschedulable, OOMKilled,
image pull back-off, evicted, completed), compact history, hold or drop watch streams, and record every
request so tests can see which verbs a client used.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet the real API server uses for generateName
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_TRUE = frozenset({"1", "t", "T", "true", "True", "TRUE"})  # Go's strconv.ParseBool, as the server parses
_SET_TERM = re.compile(r"^\s*(\S+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


# -- label selectors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "=":
            return value is not None and value in self.values
        if self.op == "!=":
            return value is None or value not in self.values
        if self.op == "in":
            return value is not None and value in self.values
        if self.op == "notin":
            return value is None or value not in self.values
        if self.op == "exists":
            return value is not None
        return value is None


def _split_terms(selector: str) -> list[str]:
    terms, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    return [t.strip() for t in terms if t.strip()]


def parse_selector(selector: str | None) -> list[Requirement]:
    """Parse a label selector as the API server does; ValueError on anything it would reject."""
    reqs: list[Requirement] = []
    for term in _split_terms(selector or ""):
        m = _SET_TERM.match(term)
        if m:
            key, op, raw = m.groups()
            values = frozenset(v.strip() for v in raw.split(",") if v.strip())
            reqs.append(Requirement(key, op, values))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            reqs.append(Requirement(key.strip(), "!=", frozenset({value.strip()})))
        elif "==" in term or "=" in term:
            key, value = term.split("==", 1) if "==" in term else term.split("=", 1)
            reqs.append(Requirement(key.strip(), "=", frozenset({value.strip()})))
        elif term.startswith("!"):
            reqs.append(Requirement(term[1:].strip(), "!exists"))
        else:
            reqs.append(Requirement(term, "exists"))
    for r in reqs:
        if not _LABEL_KEY.match(r.key):
            raise ValueError(f"invalid label key {r.key!r}")
    return reqs


def selector_matches(reqs: list[Requirement], obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(r.matches(labels) for r in reqs)


# -- the server --------------------------------------------------------------------------------------


def _now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str, name: str | None = None) -> web.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if name is not None:
        body["details"] = {"name": name, "kind": "pods"}
    return web.json_response(body, status=code)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int | None = None

    @property
    def verb(self) -> str:
        """The RBAC verb the real API server would authorize this request as."""
        named = len(self.path.strip("/").split("/")) >= 6  # api/v1/namespaces/{ns}/pods/{name}
        if self.method == "GET":
            if self.query.get("watch") in _TRUE:
                return "watch"
            return "get" if named else "list"
        if self.method == "POST":
            return "create"
        if self.method == "DELETE":
            return "delete" if named else "deletecollection"
        if self.method == "PUT":
            return "update"
        if self.method == "PATCH":
            return "patch"
        return self.method.lower()

    @property
    def resource(self) -> str:
        parts = self.path.strip("/").split("/")
        return parts[4] if len(parts) > 4 and parts[2] == "namespaces" else "/".join(parts)


@dataclass
class _Event:
    rv: int
    type: str
    obj: dict[str, Any]


@dataclass(eq=False)
class _Watcher:
    namespace: str
    selector: list[Requirement]
    pending: deque[dict[str, Any]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: bool = False

    def push(self, event: dict[str, Any]) -> None:
        self.pending.append(event)
        self.wake.set()


class FakeKubeApiServer:
    """See the module docstring. Start with `await start()`, stop with `await stop()`."""

    def __init__(
        self,
        *,
        token: str = "stand-in-token",
        history_limit: int = 1000,
        bookmark_interval: float = 0.5,
        graceful_delete: bool = False,
    ) -> None:
        self.token = token
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        # When set, deleting a running pod marks it terminating (deletionTimestamp) until
        # `finish_deletion`, like a kubelet honouring terminationGracePeriodSeconds.
        self.graceful_delete = graceful_delete
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.rv = 1000
        self.oldest_rv = self.rv  # a watch from an older resourceVersion gets 410 Gone
        self.history: deque[_Event] = deque()
        self.requests: list[RecordedRequest] = []
        self.expired_watches = 0
        self._watchers: set[_Watcher] = set()
        self._delivering = True
        self._watch_gate = asyncio.Event()
        self._watch_gate.set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application(middlewares=[self._record, self._auth])
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self._list_or_watch)
        app.router.add_post("/api/v1/namespaces/{ns}/pods", self._create)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self._get)
        app.router.add_delete("/api/v1/namespaces/{ns}/pods/{name}", self._delete)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        self._watch_gate.set()
        self.drop_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "stand-in", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": self.token}}],
                    "contexts": [
                        {
                            "name": "stand-in",
                            "context": {"cluster": "stand-in", "user": "tester", "namespace": namespace},
                        }
                    ],
                    "current-context": "stand-in",
                }
            )
        )
        return path

    # -- middleware ------------------------------------------------------------------------------

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        rec = RecordedRequest(request.method, request.path, dict(request.query))
        self.requests.append(rec)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            rec.status = exc.status
            raise
        rec.status = resp.status
        return resp

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized", "Unauthorized")
        return await handler(request)

    # -- handlers --------------------------------------------------------------------------------

    async def _list_or_watch(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["ns"]
        if "fieldSelector" in request.query:
            return _status(400, "BadRequest", "the stand-in does not implement fieldSelector")
        try:
            selector = parse_selector(request.query.get("labelSelector"))
        except ValueError as exc:
            return _status(400, "BadRequest", f"unable to parse requirement: {exc}")
        if request.query.get("watch") in _TRUE:
            return await self._watch(request, ns, selector)
        items = [
            copy.deepcopy(p) for (pns, _), p in sorted(self.pods.items()) if pns == ns and selector_matches(selector, p)
        ]
        return web.json_response(
            {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)}, "items": items}
        )

    async def _get(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        pod = self.pods.get((ns, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found', name)
        return web.json_response(pod)

    async def _create(self, request: web.Request) -> web.Response:
        ns = request.match_info["ns"]
        try:
            body = await request.json()
        except ValueError:
            return _status(400, "BadRequest", "the request body is not JSON")
        try:
            pod = self.create_pod(ns, body)
        except _ApiError as exc:
            return _status(exc.code, exc.reason, exc.message, exc.name)
        return web.json_response(pod, status=201)

    async def _delete(self, request: web.Request) -> web.Response:
        ns, name = request.match_info["ns"], request.match_info["name"]
        options: dict[str, Any] = {}
        if request.can_read_body:
            raw = await request.read()
            if raw.strip():
                options = json.loads(raw)
        pod = self.pods.get((ns, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found', name)
        pre = options.get("preconditions") or {}
        meta = pod["metadata"]
        for key, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(key) is not None and pre[key] != meta[key]:
                return _status(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on pods "{name}": Precondition failed: '
                    f"{label} in precondition: {pre[key]}, {label} in object meta: {meta[key]}",
                    name,
                )
        if meta.get("deletionTimestamp"):
            return web.json_response(pod)
        running = (pod.get("status") or {}).get("phase") == "Running"
        if self.graceful_delete and running:
            meta["deletionTimestamp"] = _now_rfc3339()
            meta["deletionGracePeriodSeconds"] = options.get(
                "gracePeriodSeconds", pod["spec"].get("terminationGracePeriodSeconds", 30)
            )
            self._changed("MODIFIED", ns, pod)
            return web.json_response(pod)
        return web.json_response(self._remove(ns, name))

    async def _watch(self, request: web.Request, ns: str, selector: list[Requirement]) -> web.StreamResponse:
        await self._watch_gate.wait()
        bookmarks = request.query.get("allowWatchBookmarks") in _TRUE
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        raw_rv = request.query.get("resourceVersion") or ""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        watcher = _Watcher(ns, selector)
        if raw_rv in ("", "0"):
            # "Start at most recent": the current objects as ADDED, then changes from here on.
            for (pns, _), pod in sorted(self.pods.items()):
                if pns == ns and selector_matches(selector, pod):
                    watcher.push({"type": "ADDED", "object": copy.deepcopy(pod)})
        else:
            try:
                since = int(raw_rv)
            except ValueError:
                since = -1
            if since < self.oldest_rv:
                self.expired_watches += 1
                gone = {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": f"too old resource version: {raw_rv} ({self.oldest_rv})",
                    "reason": "Expired",
                    "code": 410,
                }
                await resp.write(json.dumps({"type": "ERROR", "object": gone}).encode() + b"\n")
                await resp.write_eof()
                return resp
            for ev in self.history:
                if ev.rv > since and self._wants(watcher, ev.obj):
                    watcher.push({"type": ev.type, "object": copy.deepcopy(ev.obj)})
        self._watchers.add(watcher)
        deadline = time.monotonic() + timeout
        last_sent = time.monotonic()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or watcher.stopped:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(watcher.wake.wait(), timeout=min(remaining, self.bookmark_interval))
                watcher.wake.clear()
                if watcher.stopped:
                    break
                if not self._delivering:
                    continue
                while watcher.pending:
                    await resp.write(json.dumps(watcher.pending.popleft()).encode() + b"\n")
                    last_sent = time.monotonic()
                if bookmarks and time.monotonic() - last_sent >= self.bookmark_interval:
                    mark = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)}}
                    await resp.write(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
                    last_sent = time.monotonic()
            if not watcher.stopped:
                await resp.write_eof()
        except ConnectionResetError:
            pass
        finally:
            self._watchers.discard(watcher)
        return resp

    # -- state changes -----------------------------------------------------------------------------

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    @staticmethod
    def _wants(watcher: _Watcher, obj: dict[str, Any]) -> bool:
        return obj["metadata"].get("namespace") == watcher.namespace and selector_matches(watcher.selector, obj)

    def _changed(self, kind: str, ns: str, pod: dict[str, Any]) -> None:
        pod["metadata"]["resourceVersion"] = self._next_rv()
        snapshot = copy.deepcopy(pod)
        self.history.append(_Event(self.rv, kind, snapshot))
        while len(self.history) > self.history_limit:
            self.oldest_rv = self.history.popleft().rv
        for w in list(self._watchers):
            if self._wants(w, snapshot):
                w.push({"type": kind, "object": copy.deepcopy(snapshot)})

    def _remove(self, ns: str, name: str) -> dict[str, Any]:
        pod = self.pods.pop((ns, name))
        self._changed("DELETED", ns, pod)
        return pod

    def create_pod(self, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        """Create as the API server does (also a test hook for pods made by someone else)."""
        if body.get("kind", "Pod") != "Pod" or body.get("apiVersion", "v1") != "v1":
            raise _ApiError(400, "BadRequest", "expected apiVersion v1, kind Pod")
        pod = copy.deepcopy(body)
        pod["kind"], pod["apiVersion"] = "Pod", "v1"
        meta = pod.setdefault("metadata", {})
        if meta.get("namespace", ns) != ns:
            raise _ApiError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        name = meta.get("name")
        if not name:
            prefix = meta.get("generateName")
            if not prefix:
                raise _ApiError(422, "Invalid", "Pod is invalid: metadata.name: name or generateName is required")
            name = prefix[:58] + "".join(random.choice(NAME_CHARS) for _ in range(5))
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise _ApiError(422, "Invalid", f'Pod "{name}" is invalid: metadata.name: Invalid value', name)
        containers = (pod.get("spec") or {}).get("containers")
        if not isinstance(containers, list) or not containers:
            raise _ApiError(422, "Invalid", f'Pod "{name}" is invalid: spec.containers: Required value', name)
        if (ns, name) in self.pods:
            raise _ApiError(409, "AlreadyExists", f'pods "{name}" already exists', name)
        meta.update(name=name, namespace=ns, uid=str(uuid.uuid4()), creationTimestamp=_now_rfc3339())
        meta.pop("deletionTimestamp", None)
        pod["spec"].setdefault("restartPolicy", "Always")
        pod["spec"].setdefault("terminationGracePeriodSeconds", 30)
        pod["status"] = {"phase": "Pending", "qosClass": "Burstable"}
        self.pods[(ns, name)] = pod
        self._changed("ADDED", ns, pod)
        return copy.deepcopy(pod)

    # -- test hooks: what kubelets, schedulers and other actors do ------------------------------------

    def pod(self, name: str, ns: str = "default") -> dict[str, Any]:
        return self.pods[(ns, name)]

    def pod_names(self, ns: str = "default") -> set[str]:
        return {n for (pns, n) in self.pods if pns == ns}

    def set_status(self, name: str, status: dict[str, Any], ns: str = "default") -> None:
        pod = self.pods[(ns, name)]
        pod["status"] = copy.deepcopy(status)
        self._changed("MODIFIED", ns, pod)

    def annotate(self, name: str, annotations: dict[str, str], ns: str = "default") -> None:
        """Someone else changed the pod (e.g. marked it claimed): its resourceVersion moves."""
        pod = self.pods[(ns, name)]
        pod["metadata"].setdefault("annotations", {}).update(annotations)
        self._changed("MODIFIED", ns, pod)

    def delete_pod(self, name: str, ns: str = "default") -> None:
        self._remove(ns, name)

    def finish_deletion(self, name: str, ns: str = "default") -> None:
        """The kubelet is done with a terminating pod."""
        self._remove(ns, name)

    def _container_names(self, name: str, ns: str) -> list[str]:
        return [c["name"] for c in self.pods[(ns, name)]["spec"]["containers"]]

    def mark_running(self, name: str, ns: str = "default") -> None:
        started = _now_rfc3339()
        self.set_status(
            name,
            {
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": c,
                        "ready": True,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {"running": {"startedAt": started}},
                    }
                    for c in self._container_names(name, ns)
                ],
            },
            ns,
        )

    def mark_unschedulable(
        self, name: str, message: str = "0/3 nodes are available: 3 Insufficient memory.", ns: str = "default"
    ) -> None:
        self.set_status(
            name,
            {
                "phase": "Pending",
                "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                ],
            },
            ns,
        )

    def mark_image_pull_backoff(self, name: str, ns: str = "default") -> None:
        image = self.pods[(ns, name)]["spec"]["containers"][0].get("image", "")
        self.set_status(
            name,
            {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [
                    {
                        "name": c,
                        "ready": False,
                        "restartCount": 0,
                        "image": image,
                        "imageID": "",
                        "state": {
                            "waiting": {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{image}"'}
                        },
                    }
                    for c in self._container_names(name, ns)
                ],
            },
            ns,
        )

    def mark_oom_killed(self, name: str, ns: str = "default") -> None:
        """The recorder container went over its memory limit; with restartPolicy Never the pod fails."""
        self.set_status(
            name,
            {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": c,
                        "ready": False,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    }
                    for c in self._container_names(name, ns)
                ],
            },
            ns,
        )

    def mark_evicted(self, name: str, ns: str = "default") -> None:
        self.set_status(
            name,
            {
                "phase": "Failed",
                "reason": "Evicted",
                "message": "The node was low on resource: ephemeral-storage.",
            },
            ns,
        )

    def mark_succeeded(self, name: str, ns: str = "default") -> None:
        self.set_status(
            name,
            {
                "phase": "Succeeded",
                "containerStatuses": [
                    {
                        "name": c,
                        "ready": False,
                        "restartCount": 0,
                        "image": "",
                        "imageID": "",
                        "state": {"terminated": {"reason": "Completed", "exitCode": 0}},
                    }
                    for c in self._container_names(name, ns)
                ],
            },
            ns,
        )

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: watches from before now get 410 Gone."""
        self.history.clear()
        self.oldest_rv = self.rv

    def drop_watches(self) -> None:
        """End every open watch stream, as a restarting API server or a broken connection would."""
        for w in list(self._watchers):
            w.stopped = True
            w.wake.set()

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    @contextlib.contextmanager
    def holding_watches(self) -> Iterator[None]:
        """New watch requests wait, and open streams deliver nothing, until the block ends."""
        self._watch_gate.clear()
        self._delivering = False
        try:
            yield
        finally:
            self._delivering = True
            self._watch_gate.set()
            for w in list(self._watchers):
                w.wake.set()


class _ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.name = code, reason, message, name


@pytest.fixture
async def kube_apiserver() -> AsyncIterator[FakeKubeApiServer]:
    server = FakeKubeApiServer(bookmark_interval=0.3)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def kubeconfig(kube_apiserver: FakeKubeApiServer, tmp_path: Path) -> Path:
    return kube_apiserver.write_kubeconfig(tmp_path / "kubeconfig")
