"""The manifests in k8s/: what kustomize renders is valid, least-privilege and consistent.

No cluster and no kustomize binary are installed by the project's scripts, so `render` below builds
the kustomizations itself, for exactly the subset k8s/ uses (resources, namespace, labels without
selectors, configMapGenerator without hash suffix, JSON 6902 patches, replacements) and refuses
anything else. Where a `kubectl` or `kustomize` binary happens to exist, its output is compared with
this renderer's. Every rendered object is validated offline against the OpenAPI schema of a current
Kubernetes release bundled with kubernetes-validate; the PrometheusRule and the ServiceMonitor (CRDs,
not in that schema) are validated against structural schemas of the fields the Prometheus Operator reads.
Every PromQL expression of the rules and the Grafana dashboard may use only metric names the code exports.
"""

from __future__ import annotations

import asyncio
import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from orchestrator.pool.kubernetes import RBAC_PERMISSIONS, KubernetesBackend
from orchestrator.pool.kubernetes_config import KubernetesSettings
from orchestrator.pool.kubernetes_template import PodTemplate
from tests.support.kube_apiserver import FakeKubeApiServer, parse_selector, selector_matches

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
TARGETS = [K8S, *OVERLAYS]
# The overlay of several orchestrator replicas on PostgreSQL (no SQLite store, no claim).
POSTGRES_HA = K8S / "overlays" / "postgres-ha"
K8S_VERSION = kubernetes_validate.latest_version()
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "StorageClass",
}
FINALIZE_SECONDS = 300  # finalize + upload after the longest recording, as the template comment promises


# -- a renderer for the kustomize subset k8s/ uses ----------------------------------------------------


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json_patch(doc: dict[str, Any], ops: list[dict[str, Any]]) -> None:
    for op in ops:
        *parents, last = _pointer(op["path"])
        node: Any = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if op["op"] == "replace":
            if isinstance(node, list):
                node[int(last)] = op["value"]
            else:
                if last not in node:
                    raise KeyError(f"replace of a missing path {op['path']}")
                node[last] = op["value"]
        elif op["op"] == "add":
            if isinstance(node, list):
                node.insert(len(node) if last == "-" else int(last), op["value"])
            else:
                node[last] = op["value"]
        elif op["op"] == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise NotImplementedError(f"JSON patch op {op['op']}")


def _field_nodes(node: Any, parts: list[str], create: bool = False) -> list[tuple[Any, str]]:
    """(parent, key) pairs a dotted field path with `*` wildcards points at."""
    if len(parts) == 1:
        return [(node, parts[0])] if isinstance(node, dict) and (create or parts[0] in node) else []
    head, rest = parts[0], parts[1:]
    if head == "*":
        items = node if isinstance(node, list) else []
        return [hit for item in items for hit in _field_nodes(item, rest, create)]
    if isinstance(node, dict) and head in node:
        return _field_nodes(node[head], rest, create)
    return []


def _select(resources: list[dict[str, Any]], select: dict[str, Any]) -> list[dict[str, Any]]:
    unknown = set(select) - {"kind", "name"}
    if unknown:
        raise NotImplementedError(f"selector fields {unknown}")
    return [
        r
        for r in resources
        if r["kind"] == select.get("kind", r["kind"])
        and r["metadata"]["name"] == select.get("name", r["metadata"]["name"])
    ]


def _delete(resources: list[dict[str, Any]], patch: dict[str, Any]) -> list[dict[str, Any]]:
    """A strategic-merge patch that deletes one object (`$patch: delete`), the only such patch k8s/ uses."""
    if patch.get("$patch") != "delete":
        raise NotImplementedError("strategic-merge patches other than `$patch: delete`")
    select = {"kind": patch["kind"], "name": patch["metadata"]["name"]}
    doomed = _select(resources, select)
    assert len(doomed) == 1, f"delete patch {select} matches {len(doomed)} objects"
    return [r for r in resources if r is not doomed[0]]


def render(directory: Path) -> list[dict[str, Any]]:
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    known = {
        "apiVersion",
        "kind",
        "namespace",
        "labels",
        "resources",
        "configMapGenerator",
        "generatorOptions",
        "patches",
        "replacements",
    }
    if set(kust) - known:
        raise NotImplementedError(f"{directory}: kustomization fields {set(kust) - known}")
    resources: list[dict[str, Any]] = []
    for entry in kust.get("resources") or []:
        path = (directory / entry).resolve()
        if path.is_dir():
            resources.extend(render(path))
        else:
            resources.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for gen in kust.get("configMapGenerator") or []:
        if not (kust.get("generatorOptions") or {}).get("disableNameSuffixHash"):
            raise NotImplementedError("configMapGenerator with a hash suffix")
        if set(gen) - {"name", "files", "options"}:
            raise NotImplementedError(f"configMapGenerator fields {set(gen) - {'name', 'files', 'options'}}")
        if set(gen.get("options") or {}) - {"labels"}:
            raise NotImplementedError(f"configMapGenerator options {set(gen['options']) - {'labels'}}")
        data = {}
        for f in gen.get("files") or []:
            key, _, src = f.rpartition("=") if "=" in f else (Path(f).name, "", f)
            data[key] = (directory / src).read_text()
        metadata: dict[str, Any] = {"name": gen["name"]}
        if (gen.get("options") or {}).get("labels"):
            metadata["labels"] = dict(gen["options"]["labels"])
        resources.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    for patch in kust.get("patches") or []:
        if set(patch) == {"patch"}:
            resources = _delete(resources, yaml.safe_load(patch["patch"]))
            continue
        if set(patch) != {"target", "patch"}:
            raise NotImplementedError(f"patch form {set(patch)}")
        targets = _select(resources, patch["target"])
        assert targets, f"patch target {patch['target']} matches nothing"
        for target in targets:
            _json_patch(target, yaml.safe_load(patch["patch"]))
    if kust.get("namespace"):
        for r in resources:
            if r["kind"] not in CLUSTER_SCOPED:
                r["metadata"]["namespace"] = kust["namespace"]
            for subject in r.get("subjects") or [] if r["kind"] == "RoleBinding" else []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = kust["namespace"]
    for spec in kust.get("labels") or []:
        if spec.get("includeSelectors") or spec.get("includeTemplates"):
            raise NotImplementedError("labels on selectors or templates")
        for r in resources:
            r["metadata"].setdefault("labels", {}).update(spec["pairs"])
    for rep in kust.get("replacements") or []:
        src = rep["source"]
        (source,) = _select(resources, {"kind": src["kind"], "name": src["name"]})
        ((parent, key),) = _field_nodes(source, src["fieldPath"].split("."))
        value = parent[key]
        for target in rep["targets"]:
            for obj in _select(resources, target["select"]):
                for field_path in target["fieldPaths"]:
                    hits = _field_nodes(obj, field_path.split("."))
                    assert hits, f"replacement target {field_path} matches nothing"
                    for p, k in hits:
                        p[k] = copy.deepcopy(value)
    return resources


def _key(r: dict[str, Any]) -> tuple[str, str]:
    return r["kind"], r["metadata"]["name"]


@pytest.fixture(scope="module", params=TARGETS, ids=lambda p: str(p.relative_to(REPO)))
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    docs = render(request.param)
    keyed = {_key(d): d for d in docs}
    assert len(keyed) == len(docs), "two objects share a kind and name"
    return keyed


def one(rendered: dict[tuple[str, str], dict[str, Any]], kind: str) -> dict[str, Any]:
    (obj,) = [r for (k, _), r in rendered.items() if k == kind]
    return obj


def pod_template_of(rendered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    return yaml.safe_load(rendered[("ConfigMap", "recorder-pod-template")]["data"]["pod-template.yaml"])


def is_replicated(rendered: dict[tuple[str, str], dict[str, Any]]) -> bool:
    """The orchestrator's store is PostgreSQL (ORCHESTRATOR_DB from a Secret), not SQLite on a claim."""
    (container,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    return any(e["name"] == "ORCHESTRATOR_DB" for e in container.get("env") or [])


def env_of(container: dict[str, Any], rendered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """A container's environment: envFrom ConfigMaps first, then env entries (which win)."""
    env: dict[str, Any] = {}
    for src in container.get("envFrom") or []:
        if "configMapRef" in src:
            env.update(rendered[("ConfigMap", src["configMapRef"]["name"])]["data"])
    for e in container.get("env") or []:
        env[e["name"]] = e.get("value", e.get("valueFrom"))
    return env


# -- rendering and schema -----------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS, ids=lambda p: str(p.relative_to(REPO)))
def test_renderer_matches_kustomize_where_available(target: Path) -> None:
    if shutil.which("kustomize"):
        cmd = ["kustomize", "build", str(target)]
    elif shutil.which("kubectl"):
        cmd = ["kubectl", "kustomize", str(target)]
    else:
        pytest.skip("no kustomize or kubectl binary here; the built-in renderer is used alone")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=60).stdout
    theirs = {_key(d): d for d in yaml.safe_load_all(out) if d}
    ours = {_key(d): d for d in render(target)}
    assert ours == theirs


def test_every_rendered_object_validates_against_the_kubernetes_schema(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    kinds = {k for k, _ in rendered}
    assert {
        "Namespace",
        "Deployment",
        "Service",
        *([] if is_replicated(rendered) else ["PersistentVolumeClaim"]),
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "ServiceMonitor",
    } <= kinds
    for (kind, name), obj in rendered.items():
        if kind in CUSTOM_RESOURCE_SCHEMAS:
            jsonschema.validate(obj, CUSTOM_RESOURCE_SCHEMAS[kind])
            continue
        version = kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        assert version == kubernetes_validate.utils.major_minor(K8S_VERSION), f"{kind}/{name}"
    # The pod template inside its ConfigMap is a Pod too.
    kubernetes_validate.validate(pod_template_of(rendered), K8S_VERSION, strict=True)
    for (kind, name), obj in rendered.items():
        if kind not in CLUSTER_SCOPED:
            assert obj["metadata"]["namespace"] == "recorder-farm", f"{kind}/{name}"


def test_strict_validation_catches_a_misspelt_field(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = copy.deepcopy(one(rendered, "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["groups"],
            "additionalProperties": False,
            "properties": {
                "groups": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "rules"],
                        "additionalProperties": False,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "rules": {
                                "type": "array",
                                "minItems": 1,
                                "items": {
                                    "type": "object",
                                    "required": ["expr"],
                                    "additionalProperties": False,
                                    "oneOf": [{"required": ["alert"]}, {"required": ["record"]}],
                                    "properties": {
                                        "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                                        "record": {"type": "string"},
                                        "expr": {"type": "string", "minLength": 1},
                                        "for": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                                        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
                                    },
                                },
                            },
                        },
                    },
                }
            },
        },
    },
}


_DURATION = r"^(\d+(ms|s|m|h))+$"
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "matchLabels": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object", "required": ["key", "operator"]}},
    },
}
# The fields of monitoring.coreos.com/v1 ServiceMonitor this repository may use, named as in the CRD; the
# CRD's own OpenAPI schema ships with no package the tests install, so a misspelt field fails here instead.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
                },
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "oneOf": [{"required": ["port"]}, {"required": ["targetPort"]}],
                        "properties": {
                            "port": {"type": "string", "minLength": 1},
                            "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": _DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": _DURATION},
                            "honorLabels": {"type": "boolean"},
                            "bearerTokenSecret": {
                                "type": "object",
                                "required": ["name", "key"],
                                "additionalProperties": False,
                                "properties": {"name": {"type": "string"}, "key": {"type": "string"}},
                            },
                            "relabelings": {"type": "array", "items": {"type": "object"}},
                            "metricRelabelings": {"type": "array", "items": {"type": "object"}},
                        },
                    },
                },
            },
        },
    },
}
CUSTOM_RESOURCE_SCHEMAS = {"PrometheusRule": PROMETHEUS_RULE_SCHEMA, "ServiceMonitor": SERVICE_MONITOR_SCHEMA}


def _exported_metric_names() -> set[str]:
    """Every series name the orchestrator's /metrics and the Kubernetes backend can produce."""
    from prometheus_client import REGISTRY

    from orchestrator.metrics import OrchestratorMetrics

    names: set[str] = set()
    for registry in (OrchestratorMetrics().registry, REGISTRY):
        for family in registry.collect():
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["_sum", "_count"],
            }.get(family.type, [""])
            names.update(family.name + s for s in suffixes)
    return names


# -- the metric names a PromQL expression uses ----------------------------------------------------------

# Words PromQL reserves; an identifier followed by "(" is a function and never a metric.
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
PROMQL_KEYWORDS |= {"offset", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Every metric name `expr` selects: identifiers outside strings, label matchers, ranges and label
    lists that are neither functions nor keywords. Grafana's variables ($namespace) count as nothing."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if match.group(2) is None and match.group(1).lower() not in PROMQL_KEYWORDS:
            names.add(match.group(1))
    return names


def unexported_metrics(expr: str) -> set[str]:
    """The metric names `expr` uses that no code exports (a histogram counts by its _bucket/_sum/_count
    series); an expression that uses no metric at all is reported as using "(none)"."""
    used = promql_metric_names(expr)
    return used - _exported_metric_names() if used else {"(none)"}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (state) (orchestrator_pool_workers{namespace=~"$namespace", state="idle"})',
            {"orchestrator_pool_workers"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) (rate(latency_seconds_bucket[$__rate_interval]))) > 5",
            {"latency_seconds_bucket"},
        ),
        (
            "min_over_time(sum(orchestrator_recordings{state='queued'})[10m:30s]) > 0 and on() up == 1",
            {"orchestrator_recordings", "up"},
        ),
        ("a_total / ignoring(code) group_left b offset 5m", {"a_total", "b"}),
        ("sum(rate(x[1m])) by (code) * 1e3", {"x"}),
    ],
)
def test_promql_metric_names_finds_every_selected_metric(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_unexported_metrics_catches_a_misspelt_name_and_takes_histogram_series() -> None:
    assert unexported_metrics("rate(orchestrator_failure_total[5m])") == {"orchestrator_failure_total"}
    assert unexported_metrics("orchestrator_start_latency_seconds") == {"orchestrator_start_latency_seconds"}
    for series in ("_bucket", "_sum", "_count"):
        assert unexported_metrics(f"rate(orchestrator_start_latency_seconds{series}[5m])") == set()
    assert unexported_metrics("vector(1)") == {"(none)"}


AGGREGATIONS = ("sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile", "stddev", "stdvar", "group")


def aggregation_groupings(expr: str) -> list[str | None]:
    """The grouping of every aggregation in `expr`: "region" for `sum by (region) (...)`, None for none."""
    pattern = rf"\b({'|'.join(AGGREGATIONS)})\s*(?:(by|without)\s*\(([^)]*)\))?\s*\("
    found: list[str | None] = []
    for match in re.finditer(pattern, expr):
        if match.group(2) == "by":
            found.append(",".join(label.strip() for label in match.group(3).split(",")))
        else:
            found.append(None if match.group(2) is None else f"without {match.group(3)}")
    return found


def compares_regions(expr: str) -> bool:
    """Every aggregation of the expression keeps `region` alone: one result per region."""
    groupings = aggregation_groupings(expr)
    return bool(groupings) and all(g == "region" for g in groupings)


def test_aggregation_groupings_sees_every_aggregation() -> None:
    assert aggregation_groupings("sum by (region) (rate(x[5m])) / sum by (region) (y)") == ["region", "region"]
    assert not compares_regions("sum by (region) (x) / sum(y)")
    assert not compares_regions("sum by (code) (increase(x[15m])) > 3")
    assert not compares_regions("min_over_time(sum(x)[10m:30s]) > 0")
    assert compares_regions("sum by ( region ) (x) > 0.2 and sum by (region) (y) >= 10")


def test_prometheus_rule_alerts_are_well_formed_and_labelled_by_region(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    rule = one(rendered, "PrometheusRule")
    jsonschema.validate(rule, PROMETHEUS_RULE_SCHEMA)
    site = rendered[("ConfigMap", "recorder-farm-site")]["data"]
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {
        "RecorderPoolExhausted",
        "RecorderQueueWaiting",
        "RecorderPodFailures",
        "RecordingFailureRate",
        "RecordingStartLatencyHigh",
        "RecordingFpsBelowTarget",
        "RecordingUploadBacklog",
    } <= set(alerts)

    regional = {name for name, alert in alerts.items() if compares_regions(alert["expr"])}
    assert "WebRTCInboundQualityDegraded" in regional
    for name, alert in alerts.items():
        if name in regional:
            # Its region is the series' own: a fixed one would give every region's alert the same labels
            # (Prometheus refuses the evaluation) or name the wrong region.
            assert "region" not in alert["labels"] and "cluster" not in alert["labels"], name
        else:
            assert alert["labels"]["region"] == site["REGION"], name
            assert alert["labels"]["cluster"] == site["CLUSTER"], name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"], name
        assert unexported_metrics(alert["expr"]) == set(), f"{name} uses metrics nobody exports"
        assert alert["expr"].count("(") == alert["expr"].count(")"), name


# -- RBAC: exactly what the backend calls -------------------------------------------------------------


def test_role_grants_exactly_the_backends_permissions(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    role = one(rendered, "Role")
    granted = {(res, verb) for rule in role["rules"] for res in rule["resources"] for verb in rule["verbs"]}
    assert all(rule["apiGroups"] == [""] for rule in role["rules"])
    assert granted == set(RBAC_PERMISSIONS)
    assert not [k for k, _ in rendered if k in {"ClusterRole", "ClusterRoleBinding"}]

    binding = one(rendered, "RoleBinding")
    account = one(rendered, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    pod_spec = one(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod_spec["serviceAccountName"] == account["metadata"]["name"]


async def test_the_backend_calls_exactly_the_declared_permissions(
    kube_apiserver: FakeKubeApiServer, kubeconfig: Path, tmp_path: Path
) -> None:
    """Every request a full pool life cycle makes, mapped to the (resource, verb) RBAC would check."""
    kube_apiserver.create_pod(
        "recorder-farm",
        {
            "metadata": {
                "name": "orchestrator-0",
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "ReplicaSet",
                        "name": "orchestrator",
                        "uid": "u-1",
                        "controller": True,
                    }
                ],
            },
            "spec": {"containers": [{"name": "orchestrator", "image": "i"}]},
        },
    )
    template = tmp_path / "pod-template.yaml"
    template.write_text((K8S / "base" / "recorder" / "pod-template.yaml").read_text())
    backend = KubernetesBackend(
        KubernetesSettings(
            kubeconfig=str(kubeconfig),
            namespace="recorder-farm",
            pod_template=template,
            pod_name="orchestrator-0",
            pod_namespace="recorder-farm",
            housekeeping_interval=0.05,
            failed_retention=0.0,
        )
    )
    kube_apiserver.requests.clear()
    await backend.start()
    try:
        a, b = await backend.create(2)
        kube_apiserver.mark_running(a, ns="recorder-farm")
        kube_apiserver.mark_oom_killed(b, ns="recorder-farm")  # cleaned up by the backend itself
        for _ in range(500):
            running = {i.name for i in await backend.list() if i.phase == "running"}
            if a in running and b not in kube_apiserver.pod_names("recorder-farm"):
                break
            await asyncio.sleep(0.02)
        assert b not in kube_apiserver.pod_names("recorder-farm")
        assert await backend.retire(a) is True
    finally:
        await backend.close()
    used = {(r.resource, r.verb) for r in kube_apiserver.requests}
    assert used == set(RBAC_PERMISSIONS)
    assert backend.owner is not None and backend.owner.uid == "u-1"


# -- the recorder pod template -----------------------------------------------------------------------


def _max_duration(rendered: dict[tuple[str, str], dict[str, Any]]) -> float:
    from orchestrator.config import OrchestratorSettings

    container = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    configured = env_of(container, rendered).get("ORCHESTRATOR_MAX_DURATION")
    return float(configured) if configured else float(OrchestratorSettings.model_fields["max_duration"].default)


def _quantity(value: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "m": 1e-3}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert m, value
    return float(m.group(1)) * units.get(m.group(2), 1)


def test_recorder_pod_template_is_hardened_and_sized(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    pod = pod_template_of(rendered)
    spec = pod["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "recorder"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    shm = volumes[mounts["/dev/shm"]]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert _quantity(shm["sizeLimit"]) >= 2**30
    records_dir = env_of(container, rendered)["RECORDS_DIR"]
    assert "emptyDir" in volumes[mounts[records_dir]]

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"

    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert _quantity(resources["requests"][kind]) <= _quantity(resources["limits"][kind])
    assert spec["terminationGracePeriodSeconds"] >= _max_duration(rendered) + FINALIZE_SECONDS

    assert container["command"] == ["recorder", "worker"]
    env = {e["name"]: e for e in container["env"]}
    assert env["ORCHESTRATOR_URL"]["value"] == f"http://{one(rendered, 'Service')['metadata']['name']}:8080"
    assert env["WORKER_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "recorder-farm-tokens"
    # One image for both roles: an upgrade that changes one and not the other is caught here.
    orchestrator = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == orchestrator["image"]


def test_selectors_match_the_pods_they_are_meant_for(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The backend's labels are what the NetworkPolicy and the budget select; the Service finds the orchestrator."""
    built = PodTemplate.from_yaml(rendered[("ConfigMap", "recorder-pod-template")]["data"]["pod-template.yaml"]).build(
        namespace="recorder-farm", pool="default", release="r1"
    )
    deployment = one(rendered, "Deployment")
    orchestrator_pod = {"metadata": deployment["spec"]["template"]["metadata"]}

    def matches(selector: dict[str, str], pod: dict[str, Any]) -> bool:
        return selector_matches(parse_selector(",".join(f"{k}={v}" for k, v in selector.items())), pod)

    policy = one(rendered, "NetworkPolicy")
    assert matches(policy["spec"]["podSelector"]["matchLabels"], built)
    assert not matches(policy["spec"]["podSelector"]["matchLabels"], orchestrator_pod)
    pdb = rendered[("PodDisruptionBudget", "recorder")]
    assert matches(pdb["spec"]["selector"]["matchLabels"], built)
    assert not matches(pdb["spec"]["selector"]["matchLabels"], orchestrator_pod)
    orchestrator_budget = rendered.get(("PodDisruptionBudget", "orchestrator"))
    if orchestrator_budget is not None:
        assert matches(orchestrator_budget["spec"]["selector"]["matchLabels"], orchestrator_pod)
        assert not matches(orchestrator_budget["spec"]["selector"]["matchLabels"], built)
    assert matches(one(rendered, "Service")["spec"]["selector"], orchestrator_pod)
    assert matches(deployment["spec"]["selector"]["matchLabels"], orchestrator_pod)
    (to_orchestrator,) = [
        r for r in policy["spec"]["egress"] if any("podSelector" in t and "namespaceSelector" not in t for t in r["to"])
    ]
    assert matches(to_orchestrator["to"][0]["podSelector"]["matchLabels"], orchestrator_pod)
    assert to_orchestrator["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_network_policy_keeps_recorders_off_the_cluster_and_metadata(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    import ipaddress

    policy = one(rendered, "NetworkPolicy")["spec"]
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert policy["ingress"] == []
    blocks = [t["ipBlock"] for r in policy["egress"] for t in r["to"] if "ipBlock" in t]
    v4 = [b for b in blocks if ipaddress.ip_network(b["cidr"]).version == 4]
    (internet,) = v4
    assert internet["cidr"] == "0.0.0.0/0"
    excluded = [ipaddress.ip_network(c) for c in internet["except"]]
    for forbidden in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"):
        assert ipaddress.ip_network(forbidden) in excluded
    metadata = ipaddress.ip_address("169.254.169.254")
    assert any(metadata in net for net in excluded)
    for rule in policy["egress"]:
        for peer in rule["to"]:
            if "namespaceSelector" in peer:  # only DNS may be reached in another namespace
                assert peer["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
                assert {p["port"] for p in rule["ports"]} == {53}


def test_orchestrator_deployment(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    deployment = one(rendered, "Deployment")
    spec = deployment["spec"]
    if not is_replicated(rendered):  # one writer of the SQLite file: see test_replicas_on_postgresql otherwise
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    env = env_of(container, rendered)
    assert env["POOL_BACKEND"] == "kubernetes"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"

    # The SQLite store lives on the claim, at ORCHESTRATOR_STATE_DIR, and not inside RECORDS_DIR.
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    if not is_replicated(rendered):
        claim = volumes[mounts[env["ORCHESTRATOR_STATE_DIR"]]]["persistentVolumeClaim"]["claimName"]
        assert ("PersistentVolumeClaim", claim) in rendered
    assert not Path(env["ORCHESTRATOR_STATE_DIR"]).is_relative_to(env["RECORDS_DIR"])
    # The pod template is mounted where POOL_POD_TEMPLATE points.
    template_dir = str(Path(env["POOL_POD_TEMPLATE"]).parent)
    assert volumes[mounts[template_dir]]["configMap"]["name"] == "recorder-pod-template"
    assert Path(env["POOL_POD_TEMPLATE"]).name in rendered[("ConfigMap", "recorder-pod-template")]["data"]

    # Secrets by reference only; nothing secret-looking spelled out.
    for e in container["env"]:
        if any(word in e["name"] for word in ("TOKEN", "SECRET", "KEY", "PASSWORD")):
            assert "value" not in e and "secretKeyRef" in e["valueFrom"], e["name"]
    assert not [k for k, _ in rendered if k == "Secret"]
    for (_, name), obj in rendered.items():
        if obj["kind"] == "ConfigMap":
            for key in obj["data"]:
                assert not re.search(r"TOKEN|SECRET|PASSWORD|ACCESS_KEY", key), f"{name}: {key}"

    # The budget can never keep the pool above its floor: minAvailable is POOL_MIN.
    pdb = rendered[("PodDisruptionBudget", "recorder")]["spec"]
    assert isinstance(pdb["minAvailable"], int) and "maxUnavailable" not in pdb
    assert pdb["minAvailable"] == int(env["POOL_MIN"])
    assert int(env["POOL_MIN"]) <= int(env["POOL_MAX"])
    assert float(env["POOL_START_TIMEOUT"]) > float(env["POOL_PENDING_TIMEOUT"])


def test_replicas_on_postgresql() -> None:
    """The postgres-ha overlay: two replicas on PostgreSQL, rolled one at a time, never both evicted, no claim."""
    rendered = {_key(d): d for d in render(POSTGRES_HA)}
    assert POSTGRES_HA in OVERLAYS, "validated with every other target above"
    deployment = rendered[("Deployment", "orchestrator")]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    (db,) = [e for e in container["env"] if e["name"] == "ORCHESTRATOR_DB"]
    assert set(db) == {"name", "valueFrom"}, "the DSN carries a password: from a Secret only"
    assert set(db["valueFrom"]["secretKeyRef"]) == {"name", "key"}, "not optional: without it the store is SQLite"
    (view,) = [e for e in container["env"] if e["name"] == "ORCHESTRATOR_VIEW_SECRET"]
    assert view["valueFrom"]["secretKeyRef"] == {"name": db["valueFrom"]["secretKeyRef"]["name"], "key": "view-secret"}
    docs = (REPO / "docs" / "kubernetes.md").read_text()
    assert "patch secret recorder-farm-postgres" in docs and "view-secret" in docs, "the upgrade says to add the key"
    env = env_of(container, rendered)
    assert "ORCHESTRATOR_DB" not in rendered[("ConfigMap", "recorder-farm-site")]["data"]
    assert env["ORCHESTRATOR_DB"] == db["valueFrom"]

    # No claim, and no pod mounts one: any replica may run on any node.
    assert not [k for k, _ in rendered if k == "PersistentVolumeClaim"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert {m["name"] for m in container["volumeMounts"]} <= {v["name"] for v in pod["volumes"]}
    assert any(m["mountPath"] == env["ORCHESTRATOR_STATE_DIR"] for m in container["volumeMounts"]), "writable"

    # The budget keeps one replica through a drain, and selects the orchestrator's pods only.
    budget = rendered[("PodDisruptionBudget", "orchestrator")]["spec"]
    assert budget["minAvailable"] == 1 and "maxUnavailable" not in budget
    pod_labels = spec["template"]["metadata"]["labels"]
    assert budget["selector"]["matchLabels"].items() <= pod_labels.items()
    assert budget["selector"]["matchLabels"] == spec["selector"]["matchLabels"]

    # Spread across nodes when it can be, without stalling a rollout on a small cluster.
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (term,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert term["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= pod_labels.items()
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"

    # The base stays one replica on SQLite.
    base = {_key(d): d for d in render(K8S)}
    assert base[("Deployment", "orchestrator")]["spec"]["replicas"] == 1
    assert base[("Deployment", "orchestrator")]["spec"]["strategy"] == {"type": "Recreate"}
    assert ("PersistentVolumeClaim", "orchestrator-store") in base
    assert not is_replicated(base)


def test_dockerfile_installs_with_the_ci_script_and_runs_unprivileged() -> None:
    text = (REPO / "Dockerfile.recorder").read_text()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    # The base is debian:bookworm-slim, named directly or as the default of a build argument the FROM uses
    # (a build without registry access passes a locally made base instead).
    base = re.fullmatch(r"ARG (\w+)=(\S+)", lines[0])
    if base:
        assert base.group(2) == "debian:bookworm-slim"
        assert lines[1] in {f"FROM ${base.group(1)}", f"FROM ${{{base.group(1)}}}"}
    else:
        assert lines[0].startswith("FROM debian:bookworm-slim")
    assert any(ln.startswith("COPY") and "scripts/install-system-deps.sh" in ln for ln in lines)
    assert any(ln.startswith("RUN") and "install-system-deps.sh" in ln for ln in lines)
    assert (REPO / "scripts" / "install-system-deps.sh").exists()
    assert [ln for ln in lines if ln.startswith("USER")][-1] == "USER 10001"
    assert any(ln.startswith("HEALTHCHECK") for ln in lines)
    assert lines[-1].startswith("CMD") and '"recorder", "worker"' in lines[-1]


# -- every variable a manifest sets is one the code reads ---------------------------------------------


def _aws_variables() -> set[str]:
    """What boto3/botocore read from the environment: its session variables and the credential chain's."""
    import botocore.configprovider as provider
    from botocore.credentials import EnvProvider

    names = {EnvProvider.ACCESS_KEY, EnvProvider.SECRET_KEY, EnvProvider.EXPIRY_TIME, *EnvProvider.TOKENS}
    for _, env, _, _ in provider.BOTOCORE_DEFAUT_SESSION_VARIABLES.values():
        names.update([env] if isinstance(env, str) else env or [])
    return names


def _kustomize_only_keys() -> set[str]:
    """Site ConfigMap keys that are read by kustomize (the source of a `replacements` entry), not by a process."""
    keys = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        for rep in yaml.safe_load(kustomization.read_text()).get("replacements") or []:
            field_path = rep["source"]["fieldPath"]
            if field_path.startswith("data."):
                keys.add(field_path.removeprefix("data."))
    return keys


# Read by the programs the recorder starts, not by Python code: Chromium, PulseAudio and fontconfig use HOME.
PROCESS_VARIABLES = {"HOME"}


def _unread(env: dict[str, Any], known: set[str]) -> list[str]:
    return sorted(name for name in env if name not in known | _aws_variables() | _kustomize_only_keys())


def _recorder_known() -> set[str]:
    from recorder.config import known_variables

    return known_variables() | PROCESS_VARIABLES


def _orchestrator_known() -> set[str]:
    from contract.envcheck import settings_variables
    from orchestrator.config import OrchestratorSettings

    return settings_variables(OrchestratorSettings, KubernetesSettings)


def test_every_variable_the_recorder_pod_template_sets_is_read(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    from recorder.config import check_recorder_environment

    (container,) = pod_template_of(rendered)["spec"]["containers"]
    env = env_of(container, rendered)
    assert _unread(env, _recorder_known()) == []
    assert env["WORKER_SINGLE_USE"] == "true", "pods record once"
    check_recorder_environment({name: str(value) for name, value in env.items()})  # the worker starts with it

    # The check is not vacuous: the old misspelling is caught, by this test and by the worker itself.
    assert _unread({**env, "WORKER_MAX_RECORDINGS": "1"}, _recorder_known()) == ["WORKER_MAX_RECORDINGS"]
    from contract.envcheck import UnknownVariable

    with pytest.raises(UnknownVariable, match=r"WORKER_MAX_RECORDINGS.*WORKER_SINGLE_USE"):
        check_recorder_environment({"WORKER_MAX_RECORDINGS": "1"})


def test_every_variable_the_orchestrator_deployment_sets_is_read(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    (container,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = env_of(container, rendered)
    assert _unread(env, _orchestrator_known()) == []
    assert {"POD_NAME", "POD_NAMESPACE", "POOL_POD_TEMPLATE"} <= set(env), "the downward API and pool settings"
    assert _unread({**env, "POOL_MAXIMUM": "9"}, _orchestrator_known()) == ["POOL_MAXIMUM"]
