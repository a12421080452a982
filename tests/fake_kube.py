"""In-memory Kubernetes for the deploy tests (no API server can be installed on this machine).

:class:`FakeKube` is the API server: server-side apply, get, delete, and Deployments that
report a finished rollout unless their version is in ``never_ready``. :class:`LocalKubelet`
adds what the nodes and cluster DNS would do, so the flow's deploy stage can run against it
end to end: a worker Deployment's pods are one ``recslm serve`` process, fed the way the
rendered init container feeds a pod (the model copied from the ``s3://`` URI on the
Deployment), and a Service's URL reaches the engine of the pods it selects (the router's
Service: the version its ``--selector`` names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recslm.serve.deploy import LocalTarget, Release


def _version(obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("labels", {}).get("recslm/version")


def _component(obj: dict[str, Any]) -> str | None:
    return obj["metadata"].get("labels", {}).get("app.kubernetes.io/component")


class FakeKube:
    """An in-memory API server: applied Deployments become ready unless their version is in ``never_ready``."""

    def __init__(self, never_ready: set[str] = frozenset()):
        self.objects: dict[tuple[str, str], dict] = {}
        self.never_ready = set(never_ready)
        self.calls: list[tuple[str, str, str]] = []

    def apply(self, obj: dict[str, Any]) -> None:
        self.calls.append(("apply", obj["kind"], obj["metadata"]["name"]))
        obj = {**obj, "metadata": {**obj["metadata"], "generation": 1}}
        if obj["kind"] == "Deployment" and self.schedule(obj):
            n = obj["spec"]["replicas"]
            obj["status"] = {"observedGeneration": 1, "replicas": n, "updatedReplicas": n, "availableReplicas": n}
        self.objects[(obj["kind"], obj["metadata"]["name"])] = obj

    def schedule(self, deployment: dict[str, Any]) -> bool:
        """Whether the Deployment's pods come up (here: unless its version never does)."""
        return _version(deployment) not in self.never_ready

    def get(self, api_version: str, kind: str, name: str, namespace: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        self.calls.append(("delete", kind, name))
        self.objects.pop((kind, name), None)

    def service_url(self, name: str, namespace: str, port: int) -> str:
        return f"http://{name}.{namespace}.svc:{port}"

    def routed_version(self) -> str | None:
        """The version whose workers the router Deployment's command selects."""
        for (kind, _), obj in self.objects.items():
            if kind == "Deployment" and _component(obj) == "router":
                command = obj["spec"]["template"]["spec"]["containers"][0]["command"]
                return next((arg.split("=", 1)[1] for arg in command if arg.startswith("recslm/version=")), None)
        return None


class LocalKubelet(FakeKube):
    """:class:`FakeKube` whose worker pods run: one local engine per worker Deployment, loaded
    from the model its ``recslm/model-uri`` annotation names in S3 (read with the
    environment's AWS settings, as the init container reads them from its Secret)."""

    def __init__(self, work_dir: Path, never_ready: set[str] = frozenset()):
        super().__init__(never_ready)
        self.work_dir = Path(work_dir)
        self.engines = LocalTarget(self.work_dir / "engines", cache_tokens=20_000, threads=1)
        self.pods: dict[str, Release] = {}  # version -> its engine
        self.fetched: dict[str, str] = {}  # version -> the model URI its pod downloaded

    def schedule(self, deployment: dict[str, Any]) -> bool:
        if not super().schedule(deployment):
            return False
        version = _version(deployment)
        if _component(deployment) != "worker" or version in self.pods:
            return True
        uri = deployment["metadata"]["annotations"]["recslm/model-uri"]
        model_dir = self._download(uri, self.work_dir / "models" / version)
        release = self.engines.start(version, str(model_dir))
        self.engines.wait_ready(release, 120)
        self.pods[version], self.fetched[version] = release, uri
        return True

    @staticmethod
    def _download(uri: str, folder: Path) -> Path:
        import boto3

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = prefix.rstrip("/") + "/"
        s3 = boto3.client("s3")
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix) for o in page.get("Contents", [])]
        if not keys:
            raise FileNotFoundError(f"fetch-model: nothing at {uri}")
        for key in keys:
            target = folder / key[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, key, str(target))
        return folder

    def delete(self, api_version: str, kind: str, name: str, namespace: str) -> None:
        obj = self.objects.get((kind, name))
        super().delete(api_version, kind, name, namespace)
        if kind == "Deployment" and obj is not None and _component(obj) == "worker":
            release = self.pods.pop(_version(obj), None)
            if release is not None:
                self.engines.stop(release)

    def service_url(self, name: str, namespace: str, port: int) -> str:
        """The engine behind the Service; its cluster DNS name (which does not resolve here) when
        no running pod backs it, as a Service without ready endpoints refuses connections."""
        service = self.objects.get(("Service", name))
        version = None if service is None else _version(service) if _component(service) == "worker" else self.routed_version()
        release = self.pods.get(version) if version else None
        return release.endpoint if release else super().service_url(name, namespace, port)

    def shutdown(self) -> None:
        for release in list(self.pods.values()):
            self.engines.stop(release)
        self.pods.clear()
