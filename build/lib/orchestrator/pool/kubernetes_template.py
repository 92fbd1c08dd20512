"""Recorder pods built from the pod template that operators own.

The template is a plain Pod manifest (a YAML file, mounted from a ConfigMap in the cluster) holding what
operators decide: image, resources, node selectors, tolerations, volumes. The backend adds only what it
needs to manage the pool: a generated name, the pool and release labels, the worker id, and the owner
reference that lets the cluster garbage-collect recorder pods with the orchestrator.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

APP_LABEL = "app"
APP_VALUE = "recorder"
POOL_LABEL = "recorder-farm/pool"
RELEASE_LABEL = "recorder-farm/release"
RECORDER_CONTAINER = "recorder"
WORKER_ID_ENV = "WORKER_ID"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class TemplateError(ValueError):
    """The operator's pod template cannot be used; the message says what to fix."""


def check_label_value(value: str, what: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise TemplateError(f"{what} {value!r} is not a valid Kubernetes label value")
    return value


@dataclass(frozen=True)
class OwnerRef:
    """The object recorder pods belong to, so deleting the orchestrator deletes its recorders.

    Never a controller reference: the orchestrator's ReplicaSet must not try to adopt or release pods
    whose labels it does not select, and blockOwnerDeletion would need rights on the owner's finalizers.
    """

    api_version: str
    kind: str
    name: str
    uid: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": False,
            "blockOwnerDeletion": False,
        }


@dataclass(frozen=True)
class PodTemplate:
    """A parsed template and its digest; the digest changes whenever the template's content does."""

    pod: dict[str, Any]
    digest: str

    @classmethod
    def from_yaml(cls, text: str, source: str = "pod template") -> PodTemplate:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TemplateError(f"{source}: not valid YAML: {exc}") from exc
        if not isinstance(doc, dict):
            raise TemplateError(f"{source}: expected a Pod manifest (a mapping)")
        if doc.get("kind") == "PodTemplate":
            doc = {"apiVersion": "v1", "kind": "Pod", **(doc.get("template") or {})}
        kind = doc.setdefault("kind", "Pod")
        api_version = doc.setdefault("apiVersion", "v1")
        if kind != "Pod" or api_version != "v1":
            raise TemplateError(f"{source}: expected apiVersion v1, kind Pod; got {api_version} {kind}")
        spec = doc.get("spec")
        if not isinstance(spec, dict) or not isinstance(spec.get("containers"), list) or not spec["containers"]:
            raise TemplateError(f"{source}: spec.containers must list at least one container")
        names = [c.get("name") for c in spec["containers"] if isinstance(c, dict)]
        if len(names) != len(spec["containers"]) or not all(names):
            raise TemplateError(f"{source}: every container needs a name")
        doc.setdefault("metadata", {})
        doc.pop("status", None)
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return cls(pod=doc, digest=hashlib.sha256(canonical.encode()).hexdigest())

    @classmethod
    def load(cls, path: Path) -> PodTemplate:
        try:
            text = path.read_text()
        except OSError as exc:
            raise TemplateError(f"cannot read pod template {path}: {exc}") from exc
        return cls.from_yaml(text, source=str(path))

    def release_for(self, version: str) -> str:
        """A release label that moves with the project version and with every template change.

        Editing the template (a new image, new resources) therefore drains pods built from the old one.
        """
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", version)[:52].strip("-_.")
        return check_label_value(f"{safe}-{self.digest[:10]}" if safe else self.digest[:10], "release")

    def build(self, *, namespace: str, pool: str, release: str, owner: OwnerRef | None = None) -> dict[str, Any]:
        """The Pod to create: the template plus the labels, name and environment the pool relies on."""
        if not _DNS_LABEL.match(pool) or len(pool) > 40:
            raise TemplateError(f"pool name {pool!r} must be a DNS label of at most 40 characters")
        check_label_value(release, "release")
        pod = copy.deepcopy(self.pod)
        meta = pod["metadata"]
        meta.pop("name", None)
        meta.pop("resourceVersion", None)
        meta.pop("uid", None)
        meta["namespace"] = namespace
        meta.setdefault("generateName", f"recorder-{pool}-")
        meta["labels"] = {
            **(meta.get("labels") or {}),
            APP_LABEL: APP_VALUE,
            POOL_LABEL: pool,
            RELEASE_LABEL: release,
        }
        if owner is not None:
            others = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != owner.uid]
            meta["ownerReferences"] = [*others, owner.to_dict()]

        spec = pod["spec"]
        # Single-use, API-less workers unless the operator says otherwise: a pod exits after its
        # recording and is replaced, and a recorder has no business talking to the API server.
        spec.setdefault("restartPolicy", "Never")
        spec.setdefault("automountServiceAccountToken", False)
        container = _recorder_container(spec["containers"])
        env = [e for e in container.get("env") or [] if e.get("name") != WORKER_ID_ENV]
        env.insert(0, {"name": WORKER_ID_ENV, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
        container["env"] = env
        return pod


def _recorder_container(containers: list[dict[str, Any]]) -> dict[str, Any]:
    """The container named `recorder`, or the first one: it gets the worker id."""
    for c in containers:
        if c.get("name") == RECORDER_CONTAINER:
            return c
    return containers[0]


def pool_selector(pool: str) -> str:
    """The label selector of one pool's pods, as sent to the API server."""
    return f"{APP_LABEL}={APP_VALUE},{POOL_LABEL}={pool}"
