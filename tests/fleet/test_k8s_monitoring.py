"""What k8s/ ships for monitoring: the ServiceMonitor finds the orchestrator's /metrics, and the Grafana
dashboard is a well-formed dashboard whose every query uses only metrics the code exports.

The manifests are rendered by test_k8s_manifests.render; the PromQL check is the one the alert rules use.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.api.bearer import realm_of
from orchestrator.pool.kubernetes import POD_FAILURES
from tests.fleet.test_k8s_manifests import (
    REPO,
    TARGETS,
    env_of,
    one,
    promql_metric_names,
    render,
    unexported_metrics,
)
from tests.support.kube_apiserver import parse_selector, selector_matches

DASHBOARD_KEY = "recorder-farm.json"
# What Prometheus adds to every scraped series from its target (Service discovery), besides the metric's own.
TARGET_LABELS = {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}
# kubectl's client-side apply keeps the whole object in an annotation, which the API server caps at 256 KiB.
LAST_APPLIED_LIMIT = 256 * 1024
GRID_COLUMNS = 24


@pytest.fixture(scope="module", params=TARGETS, ids=lambda p: str(p.relative_to(REPO)))
def rendered(request: pytest.FixtureRequest) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in render(request.param)}


def dashboard_of(rendered: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    (config_map,) = [
        r for (kind, _), r in rendered.items() if kind == "ConfigMap" and DASHBOARD_KEY in r.get("data", {})
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1", "Grafana's sidecar loads it by this label"
    return json.loads(config_map["data"][DASHBOARD_KEY])


def data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel that shows data: rows only group them (and may nest collapsed panels)."""
    panels = []
    for panel in dashboard["panels"]:
        panels.extend(panel.get("panels") or [] if panel["type"] == "row" else [panel])
    return panels


def dashboard_expressions(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the query variables' `label_values(metric, label)`."""
    exprs = [t["expr"] for p in data_panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert match, f"variable {variable['name']}: {query!r} is not label_values(metric, label)"
            assert match.group(2) in TARGET_LABELS, f"variable {variable['name']} reads label {match.group(2)}"
            exprs.append(match.group(1))
    return exprs


def exported_label_names() -> dict[str, set[str]]:
    """Each exported series name with the labels it can carry (histogram series add `le` to their buckets)."""
    from orchestrator.metrics import OrchestratorMetrics

    metrics = [m for m in vars(OrchestratorMetrics()).values() if hasattr(m, "_labelnames")] + [POD_FAILURES]
    labels: dict[str, set[str]] = {}
    for metric in metrics:
        own = set(metric._labelnames)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(metric._type, [""])
        for suffix in suffixes:
            labels[metric._name + suffix] = own | ({"le"} if suffix == "_bucket" else set())
    return labels


def label_matchers(expr: str) -> list[tuple[str, str, str, str]]:
    """(metric, label, operator, value) of every matcher written as metric{label op "value", ...}."""
    found = []
    for metric, body in re.findall(r"([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}", expr):
        for label, op, value in re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"', body):
            found.append((metric, label, op, value))
    return found


# -- the ServiceMonitor ---------------------------------------------------------------------------------


def test_service_monitor_scrapes_the_orchestrator_service_on_its_metrics_route(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    monitor = one(rendered, "ServiceMonitor")
    services = [r for (kind, _), r in rendered.items() if kind == "Service"]
    selector = ",".join(f"{k}={v}" for k, v in monitor["spec"]["selector"]["matchLabels"].items())
    selected = [s for s in services if selector_matches(parse_selector(selector), s)]
    assert [s["metadata"]["name"] for s in selected] == ["orchestrator"], "the monitor selects exactly one Service"
    (service,) = selected
    # No namespaceSelector: the monitor looks in its own namespace, which is the Service's.
    assert "namespaceSelector" not in monitor["spec"]
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]

    (endpoint,) = monitor["spec"]["endpoints"]
    (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    # The Service's port leads to the orchestrator container's port, which is the one it listens on.
    (container,) = one(rendered, "Deployment")["spec"]["template"]["spec"]["containers"]
    (container_port,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert int(env_of(container, rendered)["ORCHESTRATOR_PORT"]) == container_port["containerPort"]

    assert endpoint["path"] == "/metrics"
    # /metrics needs no token, so the monitor carries none: a token realm here would need bearerTokenSecret.
    assert realm_of(endpoint["path"]) is None
    assert "bearerTokenSecret" not in endpoint
    interval, timeout = (float(endpoint[k].removesuffix("s")) for k in ("interval", "scrapeTimeout"))
    assert timeout < interval


async def test_the_metrics_route_answers_prometheus_without_a_token_with_every_metric_the_dashboard_uses(
    start_orchestrator: Any,
) -> None:
    """A running orchestrator serves what the dashboard and the rules query, to a scraper with no token."""
    o = await start_orchestrator()
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in render(TARGETS[0])}
    endpoint = one(rendered, "ServiceMonitor")["spec"]["endpoints"][0]
    response = await o.client(None).request("GET", endpoint["path"])
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")

    served: set[str] = set()
    for family in text_string_to_metric_families(response.body.decode()):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        served.update(family.name + s for s in suffixes)
    rule = one(rendered, "PrometheusRule")
    exprs = [*dashboard_expressions(dashboard_of(rendered))]
    exprs += [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    used = set().union(*(promql_metric_names(e) for e in exprs))
    assert used - served == set()

    # The gauges the dashboard filters by state are set at every scrape, for every state it names.
    states = {
        (s.name, s.labels["state"])
        for family in text_string_to_metric_families(response.body.decode())
        for s in family.samples
        if "state" in s.labels
    }
    for expr in exprs:
        for metric, label, op, value in label_matchers(expr):
            if label == "state" and metric in {"orchestrator_recordings", "orchestrator_pool_workers"}:
                for wanted in value.split("|") if op == "=~" else [value]:
                    assert (metric, wanted) in states, f"{metric}{{state={wanted!r}}} is never exported: {expr}"


# -- the dashboard ---------------------------------------------------------------------------------------


def test_dashboard_is_a_loadable_grafana_dashboard(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    config_map = next(r for r in rendered.values() if DASHBOARD_KEY in r.get("data", {}))
    assert len(json.dumps(config_map).encode()) < LAST_APPLIED_LIMIT, "kubectl apply could not store it"
    dashboard = dashboard_of(rendered)
    assert dashboard["uid"] and dashboard["title"] and isinstance(dashboard["schemaVersion"], int)

    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    panels = data_panels(dashboard)
    ids = [p["id"] for p in dashboard["panels"]] + [p["id"] for r in dashboard["panels"] for p in r.get("panels") or []]
    assert len(ids) == len(set(ids)), "panel ids are unique"

    taken: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= GRID_COLUMNS, panel["title"]
        cells = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells

    for panel in panels:
        assert panel["title"] and panel.get("description"), panel["id"]
        assert panel["targets"], f"{panel['title']} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            expr = target["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            for variable in re.findall(r"\$(\w+)", expr):
                assert variable in variables or variable.startswith("__"), f"{panel['title']}: ${variable}"


def test_every_dashboard_query_uses_only_exported_metrics_and_their_labels(
    rendered: dict[tuple[str, str], dict[str, Any]],
) -> None:
    from contract.errors import ErrorCode
    from orchestrator.metrics import failure_side
    from orchestrator.states import State

    labels = exported_label_names()
    known_values = {
        ("orchestrator_recordings", "state"): {s.value for s in State},
        ("orchestrator_transitions_total", "from_state"): {s.value for s in State} | {"none"},
        ("orchestrator_transitions_total", "to_state"): {s.value for s in State},
        ("orchestrator_failures_total", "side"): {failure_side(c.value) for c in ErrorCode},
    }
    for expr in dashboard_expressions(dashboard_of(rendered)):
        assert unexported_metrics(expr) == set(), expr
        for metric, label, op, value in label_matchers(expr):
            assert label in labels[metric] | TARGET_LABELS, f"{metric} has no label {label}: {expr}"
            if (metric, label) in known_values and op in {"=", "=~"}:
                values = set(value.split("|")) if op == "=~" else {value}
                assert values <= known_values[metric, label], f"{metric}{{{label}}} never is {values}: {expr}"


def test_dashboard_covers_what_an_operator_watches(rendered: dict[tuple[str, str], dict[str, Any]]) -> None:
    used = set().union(*(promql_metric_names(e) for e in dashboard_expressions(dashboard_of(rendered))))
    assert {
        "orchestrator_pool_workers",
        "orchestrator_recordings",
        "orchestrator_transitions_total",
        "orchestrator_start_latency_seconds_bucket",
        "orchestrator_recording_fps",
        "orchestrator_recording_behind",
        "orchestrator_failures_total",
        "recorder_pod_failures_total",
        "orchestrator_waiting_seconds_bucket",
        "orchestrator_recordings_stopped_total",
        "orchestrator_upload_seconds_bucket",
        "orchestrator_webhook_deliveries_total",
        "orchestrator_webhook_backlog",
        "orchestrator_webhook_oldest_pending_seconds",
    } <= used


def test_label_checks_catch_a_wrong_label_and_a_wrong_state() -> None:
    """The dashboard check is not vacuous: a misspelt label or state value is found."""
    assert label_matchers('sum(orchestrator_recordings{namespace=~"$ns", state="uploding"})') == [
        ("orchestrator_recordings", "namespace", "=~", "$ns"),
        ("orchestrator_recordings", "state", "=", "uploding"),
    ]
    labels = exported_label_names()
    assert labels["orchestrator_failures_total"] == {"code", "side"}
    assert "le" in labels["orchestrator_start_latency_seconds_bucket"]
    assert "le" not in labels["orchestrator_start_latency_seconds_count"]
