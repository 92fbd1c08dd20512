"""The Kubernetes backend against an HTTP stand-in of the API server (tests/support/kube_apiserver.py).

No cluster exists here; the stand-in keeps the semantics the backend relies on (resourceVersion,
409 on conflicts and failed preconditions, label selectors, watch with bookmarks and 410 Gone).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import REGISTRY

from orchestrator.pool.backend import WorkerInfo
from orchestrator.pool.kubernetes import KubernetesBackend
from orchestrator.pool.kubernetes_config import KubernetesSettings
from orchestrator.pool.kubernetes_status import pod_health
from orchestrator.pool.kubernetes_template import PodTemplate, TemplateError
from tests.support.kube_apiserver import FakeKubeApiServer, parse_selector, selector_matches

REPO = Path(__file__).resolve().parents[2]
SHIPPED_TEMPLATE = REPO / "k8s" / "base" / "recorder" / "pod-template.yaml"
K8S_VERSION = kubernetes_validate.latest_version()
NS = "default"


class FakeClock:
    """Wall-clock seconds that a test moves forward, for the Pending-too-long threshold."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.02)


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("recorder_pod_failures_total", {"reason": reason}) or 0.0


def edit_image(template: Path, image: str) -> None:
    text = template.read_text()
    template.write_text(re.sub(r"image: \S+", f"image: {image}", text))


def by_name(infos: list[WorkerInfo]) -> dict[str, WorkerInfo]:
    return {i.name: i for i in infos}


@pytest.fixture
def template_path(tmp_path: Path) -> Path:
    """A copy of the pod template the manifests ship, so a test may edit it."""
    path = tmp_path / "pod-template.yaml"
    path.write_text(SHIPPED_TEMPLATE.read_text())
    return path


@pytest.fixture
def orchestrator_pod(kube_apiserver: FakeKubeApiServer) -> dict[str, Any]:
    """The orchestrator's own pod, owned by its ReplicaSet, as a Deployment would create it."""
    return kube_apiserver.create_pod(
        NS,
        {
            "metadata": {
                "name": "orchestrator-7d9f8-abcde",
                "labels": {"app": "orchestrator"},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": "orchestrator-7d9f8",
                        "uid": "6f1c1a52-0000-4000-8000-00000000abcd",
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "orchestrator", "image": "registry.example.com/recorder-farm:0.1.0"}]},
        },
    )


BackendFactory = Callable[..., Awaitable[KubernetesBackend]]


@pytest.fixture
async def make_backend(
    kubeconfig: Path, template_path: Path, orchestrator_pod: dict[str, Any]
) -> AsyncIterator[BackendFactory]:
    made: list[KubernetesBackend] = []

    async def make(clock: FakeClock | None = None, on_failure: Any = None, **overrides: Any) -> KubernetesBackend:
        fields: dict[str, Any] = {
            "kubeconfig": str(kubeconfig),
            "namespace": NS,
            "pool": "default",
            "pod_template": template_path,
            "pending_timeout": 300.0,
            "failed_retention": 3600.0,
            "housekeeping_interval": 0.05,
            "watch_timeout": 30,
            "pod_name": orchestrator_pod["metadata"]["name"],
            "pod_namespace": NS,
            "release": None,
        }
        fields.update(overrides)
        backend = KubernetesBackend(
            KubernetesSettings(**fields), version="0.1.0", clock=clock or FakeClock(), on_failure=on_failure
        )
        await backend.start()
        made.append(backend)
        return backend

    try:
        yield make
    finally:
        for backend in made:
            await backend.close()


async def wait_view(backend: KubernetesBackend, server: FakeKubeApiServer) -> None:
    """Until the backend's watch has caught up with every change on the server."""

    async def caught_up() -> bool:
        watcher = backend._watcher
        return (
            watcher is not None and watcher.resource_version is not None and int(watcher.resource_version) >= server.rv
        )

    await eventually(caught_up, what="the watch to catch up")


# -- scale up / down --------------------------------------------------------------------------------


async def test_scale_up_creates_labelled_pods_from_the_template(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer, orchestrator_pod: dict[str, Any]
) -> None:
    backend = await make_backend()
    names = await backend.create(3)

    assert len(set(names)) == 3
    assert all(n.startswith("recorder-default-") for n in names)
    # Reported at once, before the watch has delivered anything.
    assert {i.name for i in await backend.list() if i.phase == "starting"} == set(names)

    template = yaml.safe_load(SHIPPED_TEMPLATE.read_text())
    rs = orchestrator_pod["metadata"]["ownerReferences"][0]
    for name in names:
        pod = kube_apiserver.pod(name)
        labels = pod["metadata"]["labels"]
        assert labels["app"] == "recorder"
        assert labels["recorder-farm/pool"] == "default"
        assert labels["recorder-farm/release"] == backend.release
        assert labels["app.kubernetes.io/name"] == "recorder"  # the template's own labels stay
        container = pod["spec"]["containers"][0]
        assert container["image"] == template["spec"]["containers"][0]["image"]
        assert container["command"] == ["recorder", "worker"]
        assert {"name": "WORKER_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in container["env"]
        assert pod["spec"]["volumes"] == template["spec"]["volumes"]
        (owner,) = pod["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"]) == ("ReplicaSet", rs["name"], rs["uid"])
        assert owner["controller"] is False
        # What the backend created is a valid Pod for a current Kubernetes release.
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)

    for name in names:
        kube_apiserver.mark_running(name)
    await wait_view(backend, kube_apiserver)
    infos = by_name(await backend.list())
    assert set(infos) == set(names)  # the orchestrator's own pod is not a recorder
    assert {i.phase for i in infos.values()} == {"running"}
    assert all(i.release == backend.release and backend.is_current_release(i) for i in infos.values())


async def test_scale_down_retires_only_the_idle_pods(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    kube_apiserver.graceful_delete = True  # deleted running pods terminate, as with a real kubelet
    backend = await make_backend()
    names = await backend.create(4)
    for name in names:
        kube_apiserver.mark_running(name)
    await wait_view(backend, kube_apiserver)

    busy, idle = names[:2], names[2:]  # what the scheduler knows: two hold leases
    assert [await backend.retire(n) for n in idle] == [True, True]

    for name in busy:
        assert kube_apiserver.pod(name)["metadata"].get("deletionTimestamp") is None
    for name in idle:
        assert kube_apiserver.pod(name)["metadata"]["deletionTimestamp"]
    # Terminating pods no longer count as pool members.
    infos = by_name(await backend.list())
    assert {n for n, i in infos.items() if i.phase == "running"} == set(busy)
    assert {n for n, i in infos.items() if i.phase == "gone"} == set(idle)

    for name in idle:
        kube_apiserver.finish_deletion(name)

    async def only_busy_left() -> bool:
        return set(by_name(await backend.list())) == set(busy)

    await eventually(only_busy_left, what="retired pods to leave the view")
    assert kube_apiserver.pod_names() - {"orchestrator-7d9f8-abcde"} == set(busy)
    # A second retire of a pod that is gone is a no-op, not an error.
    assert await backend.retire(idle[0]) is False


async def test_a_pod_claimed_after_the_backends_view_survives_retire(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    backend = await make_backend()
    claimed, other = await backend.create(2)
    kube_apiserver.mark_running(claimed)
    kube_apiserver.mark_running(other)
    await wait_view(backend, kube_apiserver)
    seen_rv = backend._view()[claimed]["metadata"]["resourceVersion"]

    with kube_apiserver.holding_watches():
        # The pod changes before the backend hears of it (watch latency).
        kube_apiserver.annotate(claimed, {"recorder-farm/claimed-by": "rec_123"})
        assert kube_apiserver.pod(claimed)["metadata"]["resourceVersion"] != seen_rv
        assert await backend.retire(claimed) is False
        assert await backend.retire(other) is True

    assert claimed in kube_apiserver.pod_names()
    assert other not in kube_apiserver.pod_names()
    deletes = {(r.path.rsplit("/", 1)[-1], r.status) for r in kube_apiserver.requests if r.method == "DELETE"}
    assert (claimed, 409) in deletes and (other, 200) in deletes

    await wait_view(backend, kube_apiserver)
    info = by_name(await backend.list())[claimed]
    assert info.phase == "running"


# -- failures ---------------------------------------------------------------------------------------


async def test_pending_too_long_is_reported_failed_with_the_scheduler_reason(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    clock = FakeClock()
    seen: list[WorkerInfo] = []
    backend = await make_backend(clock=clock, on_failure=seen.append, pending_timeout=300.0)
    before = failures("Unschedulable")
    (name,) = await backend.create(1)
    kube_apiserver.mark_unschedulable(name, "0/3 nodes are available: 3 Insufficient memory.")
    await wait_view(backend, kube_apiserver)

    # Pending for less than the threshold: still starting, nothing counted.
    assert by_name(await backend.list())[name].phase == "starting"
    assert failures("Unschedulable") == before

    clock.now += 301

    async def failed() -> bool:
        info = by_name(await backend.list()).get(name)
        return info is not None and info.phase == "failed"

    await eventually(failed, what="the pending pod to be reported failed")
    info = by_name(await backend.list())[name]
    assert info.reason is not None and info.reason.startswith("Unschedulable:")
    assert "Insufficient memory" in info.reason
    assert failures("Unschedulable") == before + 1
    assert [i.name for i in seen] == [name]

    # It never ran, so it is deleted at once (it must not start later and take work) ...
    async def deleted() -> bool:
        return name not in kube_apiserver.pod_names()

    await eventually(deleted, what="the failed pending pod to be deleted")
    await wait_view(backend, kube_apiserver)
    # ... yet stays reported with its reason, so the replacement and the error can name it.
    info = by_name(await backend.list())[name]
    assert info.phase == "failed" and "Insufficient memory" in (info.reason or "")
    assert failures("Unschedulable") == before + 1


async def test_oom_killed_recorder_is_failed_counted_once_and_kept_for_logs(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    backend = await make_backend()
    before = failures("OOMKilled")
    (name,) = await backend.create(1)
    kube_apiserver.mark_running(name)
    await wait_view(backend, kube_apiserver)
    kube_apiserver.mark_oom_killed(name)

    async def failed() -> bool:
        info = by_name(await backend.list()).get(name)
        return info is not None and info.phase == "failed"

    await eventually(failed, what="the OOMKilled pod to be reported failed")
    info = by_name(await backend.list())[name]
    assert info.reason is not None and info.reason.startswith("OOMKilled:")
    assert "memory limit" in info.reason
    # Later changes to the same pod do not count it again.
    kube_apiserver.annotate(name, {"note": "seen"})
    await wait_view(backend, kube_apiserver)
    await backend.list()
    assert failures("OOMKilled") == before + 1
    # Its containers are dead: it stays for `kubectl logs` during the retention period.
    assert name in kube_apiserver.pod_names()
    assert await backend.retire(name) is True
    assert name not in kube_apiserver.pod_names()


@pytest.mark.parametrize(
    ("hook", "code", "deleted_at_once"),
    [
        ("mark_image_pull_backoff", "ImagePullBackOff", True),
        ("mark_evicted", "Evicted", False),
    ],
)
async def test_other_pod_failures_surface_with_their_reason(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer, hook: str, code: str, deleted_at_once: bool
) -> None:
    backend = await make_backend()
    before = failures(code)
    (name,) = await backend.create(1)
    getattr(kube_apiserver, hook)(name)

    async def failed() -> bool:
        info = by_name(await backend.list()).get(name)
        return info is not None and info.phase == "failed"

    await eventually(failed, what=f"{code} to be reported")
    info = by_name(await backend.list())[name]
    assert info.reason is not None and info.reason.startswith(f"{code}:")
    assert failures(code) == before + 1
    if deleted_at_once:

        async def deleted() -> bool:
            return name not in kube_apiserver.pod_names()

        await eventually(deleted, what="the failed pod to be deleted")
    else:
        assert name in kube_apiserver.pod_names()


async def test_completed_single_use_pods_are_cleaned_up(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    backend = await make_backend()
    (name,) = await backend.create(1)
    kube_apiserver.mark_running(name)
    kube_apiserver.mark_succeeded(name)

    async def gone() -> bool:
        return name not in kube_apiserver.pod_names() and name not in by_name(await backend.list())

    await eventually(gone, what="the completed pod to be deleted")


# -- the watch ----------------------------------------------------------------------------------------


async def test_watch_expiry_relists_and_the_view_is_right(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    backend = await make_backend()
    a, b, c = await backend.create(3)
    for name in (a, b, c):
        kube_apiserver.mark_running(name)
    await wait_view(backend, kube_apiserver)
    assert backend._watcher is not None
    relists = backend._watcher.relists

    with kube_apiserver.holding_watches():
        kube_apiserver.drop_watches()
        # While nobody watches: one pod deleted by someone else, one OOMKilled, and a pod of this pool
        # created by someone else; then the history is compacted away.
        kube_apiserver.delete_pod(a)
        kube_apiserver.mark_oom_killed(b)
        stranger = kube_apiserver.create_pod(
            NS,
            {
                "metadata": {
                    "name": "recorder-default-manual",
                    "labels": {
                        "app": "recorder",
                        "recorder-farm/pool": "default",
                        "recorder-farm/release": "0.0.9-old",
                    },
                },
                "spec": {"containers": [{"name": "recorder", "image": "registry.example.com/recorder-farm:0.0.9"}]},
            },
        )["metadata"]["name"]
        kube_apiserver.mark_running(stranger)
        kube_apiserver.compact()

    async def relisted() -> bool:
        return backend._watcher is not None and backend._watcher.relists > relists

    await eventually(relisted, what="a relist after 410 Gone")
    assert kube_apiserver.expired_watches >= 1
    assert backend._watcher.expired >= 1
    await wait_view(backend, kube_apiserver)

    infos = by_name(await backend.list())
    assert set(infos) == {b, c, stranger}
    assert infos[b].phase == "failed" and (infos[b].reason or "").startswith("OOMKilled")
    assert infos[c].phase == "running"
    assert infos[stranger].phase == "running" and infos[stranger].release == "0.0.9-old"

    # And the watch goes on after the relist.
    kube_apiserver.mark_running(c)  # a new resourceVersion for c
    await wait_view(backend, kube_apiserver)
    assert backend._view()[c]["metadata"]["resourceVersion"] == kube_apiserver.pod(c)["metadata"]["resourceVersion"]


async def test_bookmarks_keep_a_quiet_watch_from_expiring(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    backend = await make_backend()
    await backend.create(1)
    await wait_view(backend, kube_apiserver)
    assert backend._watcher is not None
    relists = backend._watcher.relists
    # Activity elsewhere in the namespace moves the global resourceVersion; none of it is ours.
    for i in range(3):
        kube_apiserver.create_pod(
            NS,
            {
                "metadata": {"name": f"other-{i}", "labels": {"app": "other"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        )
    # Only a bookmark can tell the backend about it ...
    await wait_view(backend, kube_apiserver)
    # ... so after a compaction and a reconnect it resumes without a 410 and without a relist.
    kube_apiserver.compact()
    kube_apiserver.drop_watches()

    async def rewatched() -> bool:
        return kube_apiserver.open_watches >= 1 and sum(1 for r in kube_apiserver.requests if r.verb == "watch") >= 2

    await eventually(rewatched, what="the watch to reconnect")
    assert kube_apiserver.expired_watches == 0
    assert backend._watcher.relists == relists


# -- releases -------------------------------------------------------------------------------------------


async def test_pods_of_an_older_release_are_reported_for_drain(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer, template_path: Path
) -> None:
    backend = await make_backend()
    old = await backend.create(2)
    old_release = backend.release

    # The operator edits the template (a new image); the next pods get a new release label.
    await asyncio.to_thread(edit_image, template_path, "registry.example.com/recorder-farm:0.2.0")
    (new,) = await backend.create(1)
    assert backend.release != old_release
    assert kube_apiserver.pod(new)["spec"]["containers"][0]["image"].endswith(":0.2.0")

    await wait_view(backend, kube_apiserver)
    infos = by_name(await backend.list())
    assert {n for n, i in infos.items() if not backend.is_current_release(i)} == set(old)
    assert infos[new].release == backend.release
    assert {infos[n].release for n in old} == {old_release}


async def test_an_explicit_release_labels_new_pods(
    make_backend: BackendFactory, kube_apiserver: FakeKubeApiServer
) -> None:
    backend = await make_backend(release="2026.11.1")
    (name,) = await backend.create(1)
    assert kube_apiserver.pod(name)["metadata"]["labels"]["recorder-farm/release"] == "2026.11.1"


# -- pure parts -----------------------------------------------------------------------------------------


def test_template_errors_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="kind Pod"):
        PodTemplate.from_yaml("apiVersion: apps/v1\nkind: Deployment\nspec: {}\n")
    with pytest.raises(TemplateError, match=r"spec\.containers"):
        PodTemplate.from_yaml("apiVersion: v1\nkind: Pod\nspec: {containers: []}\n")
    with pytest.raises(TemplateError, match="cannot read"):
        PodTemplate.load(tmp_path / "missing.yaml")
    template = PodTemplate.load(SHIPPED_TEMPLATE)
    with pytest.raises(TemplateError, match="pool name"):
        template.build(namespace=NS, pool="Not_A_DNS_Label", release="r1")
    # Formatting and comments do not change the digest; content does.
    reformatted = PodTemplate.from_yaml(yaml.safe_dump(yaml.safe_load(SHIPPED_TEMPLATE.read_text())))
    assert reformatted.digest == template.digest


@pytest.mark.parametrize(
    ("status", "age", "phase", "code"),
    [
        ({"phase": "Pending"}, 10, "starting", None),
        ({"phase": "Pending"}, 400, "failed", "PendingTimeout"),
        ({"phase": "Running"}, 10, "running", None),
        ({"phase": "Succeeded"}, 10, "gone", None),
        ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}, 10, "failed", "Evicted"),
        (
            {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "recorder",
                        "restartCount": 1,
                        "state": {"running": {}},
                        "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
                    }
                ],
            },
            10,
            "failed",
            "OOMKilled",
        ),
        (
            {
                "phase": "Failed",
                "containerStatuses": [
                    {"name": "recorder", "state": {"terminated": {"reason": "Error", "exitCode": 3}}}
                ],
            },
            10,
            "failed",
            "Error",
        ),
        ({"phase": "Unknown"}, 10, "failed", "NodeLost"),
    ],
)
def test_pod_health(status: dict[str, Any], age: float, phase: str, code: str | None) -> None:
    now = time.time()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - age))
    pod = {"metadata": {"name": "p", "creationTimestamp": created}, "status": status}
    health = pod_health(pod, now=now, pending_timeout=300)
    assert (health.phase, health.code) == (phase, code)
    if phase == "failed":
        assert health.reason and health.reason.startswith(f"{code}:")


# -- the stand-in keeps the API server's semantics ------------------------------------------------------


@pytest.fixture
async def core(kubeconfig: Path) -> AsyncIterator[CoreV1Api]:
    cfg = Configuration()
    await kube_config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg, persist_config=False)
    async with ApiClient(configuration=cfg) as client:
        yield CoreV1Api(client)


async def test_stand_in_conflicts_and_preconditions(core: CoreV1Api, kube_apiserver: FakeKubeApiServer) -> None:
    body = {
        "metadata": {"name": "p1", "labels": {"app": "recorder"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    created = await core.create_namespaced_pod(NS, body)
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod(NS, body)
    assert exc.value.status == 409 and "AlreadyExists" in exc.value.body
    with pytest.raises(ApiException) as exc:
        await core.create_namespaced_pod(NS, {"metadata": {"name": "p2"}, "spec": {"containers": []}})
    assert exc.value.status == 422

    stale = {"preconditions": {"uid": created.metadata.uid, "resourceVersion": "1"}}
    with pytest.raises(ApiException) as exc:
        await core.delete_namespaced_pod("p1", NS, body=stale)
    assert exc.value.status == 409 and "Precondition failed" in exc.value.body
    fresh = {"preconditions": {"uid": created.metadata.uid, "resourceVersion": created.metadata.resource_version}}
    await core.delete_namespaced_pod("p1", NS, body=fresh)
    with pytest.raises(ApiException) as exc:
        await core.read_namespaced_pod("p1", NS)
    assert exc.value.status == 404


async def test_stand_in_resource_versions_and_selectors(core: CoreV1Api, kube_apiserver: FakeKubeApiServer) -> None:
    rvs = []
    for name, pool in (("a", "x"), ("b", "y"), ("c", None)):
        labels = {"app": "recorder", **({"pool": pool} if pool else {})}
        pod = await core.create_namespaced_pod(
            NS, {"metadata": {"name": name, "labels": labels}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
        )
        rvs.append(int(pod.metadata.resource_version))
    assert rvs == sorted(rvs) and len(set(rvs)) == 3

    async def names(selector: str) -> set[str]:
        return {p.metadata.name for p in (await core.list_namespaced_pod(NS, label_selector=selector)).items}

    assert await names("app=recorder,pool in (x, y)") == {"a", "b"}
    assert await names("pool!=x") == {"b", "c"}
    assert await names("app==recorder,!pool") == {"c"}
    assert await names("pool notin (y)") == {"a", "c"}
    assert await names("pool") == {"a", "b"}
    assert not selector_matches(parse_selector("app=recorder"), {"metadata": {"labels": {}}})
    with pytest.raises(ApiException) as exc:
        await core.list_namespaced_pod(NS, label_selector="bad key!=x")
    assert exc.value.status == 400


async def test_stand_in_watch_replays_history_and_expires(core: CoreV1Api, kube_apiserver: FakeKubeApiServer) -> None:
    start = str(kube_apiserver.rv)
    kube_apiserver.create_pod(NS, {"metadata": {"name": "w1"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    kube_apiserver.mark_running("w1")
    kube_apiserver.delete_pod("w1")

    async def events(rv: str) -> list[dict[str, Any]]:
        resp = await core.list_namespaced_pod(
            NS, watch=True, resource_version=rv, timeout_seconds=1, allow_watch_bookmarks=False, _preload_content=False
        )
        try:
            return [yaml.safe_load(line) async for line in resp.content if line.strip()]
        finally:
            resp.release()

    assert [e["type"] for e in await events(start)] == ["ADDED", "MODIFIED", "DELETED"]
    kube_apiserver.compact()
    (gone,) = await events(start)
    assert gone["type"] == "ERROR" and gone["object"]["code"] == 410
    assert "too old resource version" in gone["object"]["message"]
    assert await events(str(kube_apiserver.rv)) == []
