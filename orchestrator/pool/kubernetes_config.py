"""Settings of the Kubernetes backend, and the API client they lead to.

Every field comes from the environment variable in its alias (documented in docs/kubernetes.md). Inside
a cluster the service account is used; outside, a kubeconfig (KUBECONFIG or ~/.kube/config).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.pool.kubernetes_template import OwnerRef

if TYPE_CHECKING:
    from kubernetes_asyncio.client import ApiClient

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class KubernetesSettings(BaseSettings):
    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    pod_template: Path = Field(
        default=Path("/etc/recorder-farm/pod-template.yaml"), validation_alias=_env("POOL_POD_TEMPLATE")
    )
    pool: str = Field(default="default", validation_alias=_env("POOL_NAME"))
    namespace: str | None = Field(
        default=None,
        validation_alias=_env("POOL_NAMESPACE"),
        description="where recorder pods live; defaults to the orchestrator's own namespace",
    )
    release: str | None = Field(
        default=None,
        validation_alias=_env("RECORDER_RELEASE"),
        description="release label of new pods; unset means <version>-<template digest>",
    )
    pending_timeout: float = Field(default=300.0, gt=0, validation_alias=_env("POOL_PENDING_TIMEOUT"))
    failed_retention: float = Field(
        default=900.0,
        ge=0,
        validation_alias=_env("POOL_FAILED_RETENTION"),
        description="how long a dead failed pod is kept for `kubectl logs` and reported as failed",
    )
    watch_timeout: int = Field(default=300, ge=1, validation_alias=_env("POOL_WATCH_TIMEOUT"))
    housekeeping_interval: float = Field(default=5.0, gt=0, validation_alias=_env("POOL_HOUSEKEEPING"))

    kubeconfig: str | None = Field(default=None, validation_alias=_env("KUBECONFIG"))
    kube_context: str | None = Field(default=None, validation_alias=_env("KUBE_CONTEXT"))

    # The orchestrator's own pod (downward API), used to find the owner of recorder pods.
    pod_name: str | None = Field(default=None, validation_alias=_env("POD_NAME"))
    pod_namespace: str | None = Field(default=None, validation_alias=_env("POD_NAMESPACE"))
    # Or the owner, given outright (e.g. a Deployment's uid, known to the tooling that deployed it).
    owner_api_version: str = Field(default="apps/v1", validation_alias=_env("POD_OWNER_API_VERSION"))
    owner_kind: str | None = Field(default=None, validation_alias=_env("POD_OWNER_KIND"))
    owner_name: str | None = Field(default=None, validation_alias=_env("POD_OWNER_NAME"))
    owner_uid: str | None = Field(default=None, validation_alias=_env("POD_OWNER_UID"))

    def resolved_namespace(self) -> str:
        if self.namespace:
            return self.namespace
        if self.pod_namespace:
            return self.pod_namespace
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"

    def explicit_owner(self) -> OwnerRef | None:
        if self.owner_kind and self.owner_name and self.owner_uid:
            return OwnerRef(self.owner_api_version, self.owner_kind, self.owner_name, self.owner_uid)
        return None


async def api_client(settings: KubernetesSettings) -> ApiClient:
    """An API client from the kubeconfig if one is named, else in-cluster, else ~/.kube/config."""
    # Imported here: the settings above are read by every orchestrator (its variable check), and the
    # client library is installed only with the `kubernetes` extra.
    from kubernetes_asyncio import config as kube_config
    from kubernetes_asyncio.client import ApiClient, Configuration

    cfg = Configuration()
    if settings.kubeconfig:
        await kube_config.load_kube_config(
            config_file=settings.kubeconfig,
            context=settings.kube_context,
            client_configuration=cfg,
            persist_config=False,
        )
    elif os.environ.get("KUBERNETES_SERVICE_HOST"):
        kube_config.load_incluster_config(client_configuration=cfg)
    else:
        await kube_config.load_kube_config(
            context=settings.kube_context, client_configuration=cfg, persist_config=False
        )
    return ApiClient(configuration=cfg)
