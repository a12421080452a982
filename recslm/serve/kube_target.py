"""The Kubernetes deploy target: the SGLang fleet of :mod:`recslm.serve.k8s` as a :class:`Target`.

The flow's deploy stage and ``deploy_champion`` use it with ``serve.target: kubernetes``: the
workers' init container downloads the model from the S3 artifact store (the config requires
an ``s3://`` store), and the deploy stage smoke-tests and benchmarks through the cluster.

A version is its own Deployment, Service and PodDisruptionBudget (``render_fleet``'s
worker objects); the model's single router selects exactly one version's pods, so moving
traffic is re-applying the router with the new version's selector, and the active
version is read back from the router's ``recslm/active-version`` annotation. The API
calls sit behind :class:`KubeApi` (server-side apply, status, delete) so the decision
logic of :func:`recslm.serve.deploy.deploy` stays the one tested with the local target.
Endpoints are cluster DNS names: the deploy task runs inside the cluster (a Kubernetes
work pool), where they resolve.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from recslm.config import ServeConfig
from recslm.serve.deploy import DeployError, Release
from recslm.serve.k8s import render_fleet, router_name, worker_name

ACTIVE_ANNOTATION = "recslm/active-version"
_WORKER_KINDS = ("Deployment", "Service", "PodDisruptionBudget")


class KubeApi(Protocol):
    """The cluster, as far as a deploy needs it: objects, and how this process reaches a Service."""

    def apply(self, obj: dict[str, Any]) -> None: ...
    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None: ...
    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None: ...
    def service_url(self, name: str, namespace: str, port: int) -> str: ...


def connect() -> KubeApi:
    """The cluster the deploy runs against: in-cluster config in a Kubernetes work pool's pod,
    else the kubeconfig (``KUBECONFIG`` or ``~/.kube/config``)."""
    return DynamicKubeApi()


class DynamicKubeApi:
    """:class:`KubeApi` over the official client's dynamic API (kubeconfig, or in-cluster config)."""

    def __init__(self) -> None:
        from kubernetes import config, dynamic
        from kubernetes.client import api_client

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        self.client = dynamic.DynamicClient(api_client.ApiClient())

    def _resource(self, api_version: str, kind: str):
        return self.client.resources.get(api_version=api_version, kind=kind)

    def apply(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._resource(obj["apiVersion"], obj["kind"]).server_side_apply(
            body=obj, name=meta["name"], namespace=meta.get("namespace"), field_manager="recslm", force_conflicts=True
        )

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self._resource(api_version, kind).get(name=name, namespace=namespace).to_dict()
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def service_url(self, name: str, namespace: str, port: int) -> str:
        """Cluster DNS: the deploy task runs inside the cluster (a Kubernetes work pool)."""
        return f"http://{name}.{namespace}.svc:{port}"


def rollout_complete(deployment: dict[str, Any] | None) -> bool:
    """Kubernetes' own definition (``kubectl rollout status``): the controller saw the latest
    spec and every replica is updated and available."""
    if not deployment:
        return False
    spec, status = deployment.get("spec", {}), deployment.get("status") or {}
    want = spec.get("replicas", 1)
    return (
        status.get("observedGeneration", 0) >= deployment.get("metadata", {}).get("generation", 0)
        and status.get("updatedReplicas", 0) == want
        and status.get("availableReplicas", 0) == want
        and status.get("replicas", 0) == want
    )


class KubernetesTarget:
    """Blue/green on a cluster: a version is its own worker Deployment; the router moves."""

    def __init__(self, cfg: ServeConfig, model_name: str, model_uri_of: dict[str, str] | None = None, api: KubeApi | None = None, poll_s: float = 5.0):
        self.cfg, self.model_name, self.poll_s = cfg, model_name, poll_s
        self.api = api or connect()
        self.model_uri_of = model_uri_of or {}

    def _objects(self, version: str, model_uri: str) -> list[dict[str, Any]]:
        return render_fleet(self.cfg, model_name=self.model_name, version=version, model_uri=model_uri)

    def _endpoint(self, version: str) -> str:
        return self.api.service_url(worker_name(self.model_name, version), self.cfg.namespace, self.cfg.port)

    def router_endpoint(self) -> str:
        return self.api.service_url(router_name(self.model_name), self.cfg.namespace, self.cfg.router_port)

    def active(self) -> Release | None:
        router = self.api.get("apps/v1", "Deployment", router_name(self.model_name), self.cfg.namespace)
        version = ((router or {}).get("metadata", {}).get("annotations") or {}).get(ACTIVE_ANNOTATION)
        return None if version is None else Release(version, self._endpoint(version), {"version": version})

    def start(self, version: str, model: str) -> Release:
        self.model_uri_of[version] = model
        for obj in self._objects(version, model):
            if obj["kind"] in _WORKER_KINDS and obj["metadata"]["name"] == worker_name(self.model_name, version):
                self.api.apply(obj)
        return Release(version, self._endpoint(version), {"version": version})

    def _wait(self, name: str, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if rollout_complete(self.api.get("apps/v1", "Deployment", name, self.cfg.namespace)):
                return
            time.sleep(self.poll_s)
        raise DeployError(f"{what}: Deployment {self.cfg.namespace}/{name} did not finish rolling out within {timeout_s:g} s")

    def wait_ready(self, release: Release, timeout_s: float) -> None:
        self._wait(worker_name(self.model_name, release.version), timeout_s, f"version {release.version}")

    def route(self, release: Release) -> str:
        uri = self.model_uri_of.get(release.version, "s3://unknown-bucket/")  # renders the workers, which are skipped here
        for obj in self._objects(release.version, uri):
            if obj["kind"] in _WORKER_KINDS and obj["metadata"]["name"] == worker_name(self.model_name, release.version):
                continue
            if obj["kind"] == "Deployment":
                obj["metadata"].setdefault("annotations", {})[ACTIVE_ANNOTATION] = release.version
            self.api.apply(obj)
        self._wait(router_name(self.model_name), self.cfg.startup_timeout_s, "router")
        return self.router_endpoint()

    def stop(self, release: Release) -> None:
        name = worker_name(self.model_name, release.version)
        for kind, api_version in (("Deployment", "apps/v1"), ("Service", "v1"), ("PodDisruptionBudget", "policy/v1")):
            self.api.delete(api_version, kind, name, self.cfg.namespace)

    def status(self) -> dict[str, Any]:
        """The router, the active version and its replicas as the Deployment reports them;
        ``degraded`` when fewer are available than declared (what the deploy stage records)."""
        active = self.active()
        worker = self.api.get("apps/v1", "Deployment", worker_name(self.model_name, active.version), self.cfg.namespace) if active else None
        available = int(((worker or {}).get("status") or {}).get("availableReplicas", 0))
        return {
            "router": self.router_endpoint(), "policy": self.cfg.router_policy, "version": active.version if active else None,
            "namespace": self.cfg.namespace, "declared": self.cfg.replicas, "healthy": available, "degraded": available < self.cfg.replicas,
        }  # fmt: skip
