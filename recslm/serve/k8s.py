"""The SGLang fleet on Kubernetes as plain dicts: one function per object, ``render_fleet``
for all of them, ``to_yaml`` for ``kubectl apply -f -``.

Reached by the pipeline only through :mod:`recslm.serve.kube_target`, which the flow does not
drive yet; ``infra/k8s/sglang-fleet.yaml`` is a rendered example.

Plain dicts (no kubernetes client objects) keep rendering pure and dependency-free: tests
validate them against the API schemas offline, and the deploy flow can diff, apply or
store them as an artifact.

Shape of a fleet for model ``m`` at version ``v``:

- **workers**: a Deployment ``sglang-m-vv`` of ``serve.replicas`` pods, each one SGLang
  replica on ``serve.tensor_parallel`` GPUs. An init container copies the checkpoint from
  ``model_uri`` (S3 or any S3-compatible store) into a node-local volume, so the image
  stays generic and the model version is data, not a rebuild. Every version gets its own
  Deployment, Service and disruption budget: the new version starts beside the old one,
  is smoke-tested through its own Service, and only then receives traffic.
- **router**: one ``sglang-router-m`` per model, the stable entry point. It discovers the
  worker pods of exactly one version by label (``--selector``), so promoting or rolling
  back a version is re-applying the router with the other version's selector. Routing
  within one version only matters: a member's candidates scored by two different models
  would not be comparable. One replica on purpose: the cache-aware tree and the member
  → worker table live in the router's memory, and two routers would disagree.

Pods run as a fixed non-root user (``RUN_AS_USER``, the same as docker/serving's image)
with no privilege escalation and no capabilities; S3 credentials only ever come from the
Secret ``serve.s3_secret``, by reference.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from typing import Any

import yaml

from recslm.config import ServeConfig
from recslm.errors import ConfigError
from recslm.serve.sglang import HEALTH_CHECK_TIMEOUT_S, ROUTER_METRICS_PORT, launch_command, router_command

AWS_CLI_IMAGE = "amazon/aws-cli:2.22.0"  # >= 2.13 reads AWS_ENDPOINT_URL
RUN_AS_USER = 10001  # matches docker/serving/Dockerfile; not 1000, which Ubuntu 24.04 images already use
MODELS_DIR = "/models"
CACHE_DIR = "/cache"  # HOME of the server: Triton/FlashInfer JIT caches land here
STARTUP_PROBE_PERIOD_S = 10
WORKER_GRACE_S = 60  # ranking requests take milliseconds; this covers the preStop delay and a drain
ENDPOINT_DRAIN_S = 10  # preStop sleep: let Services and the router drop the pod before SIGTERM

_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_MAX_NAME = 63  # DNS-1035 label: Services need it, so every object uses it

# The download step. Values come from env vars, not string formatting, so nothing in the
# URI can be interpreted by the shell; a prefix without config.json fails here, with the
# URI in the message, instead of as an obscure SGLang error after the pod is scheduled.
FETCH_SCRIPT = """set -eu
aws s3 sync "$MODEL_URI" "$MODEL_DIR" --no-progress --only-show-errors
if [ ! -s "$MODEL_DIR/config.json" ]; then
  echo "fetch-model: no config.json under $MODEL_URI; expected a Hugging Face model directory" >&2
  exit 1
fi
"""


# --------------------------------------------------------------------------- names and labels


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _slug(value: str) -> str:
    """``value`` as lowercase alphanumerics and dashes. A lossy mapping gets a hash of the
    original, so ``Llama_64x2.pruned`` and ``llama-64x2-pruned`` never share a name."""
    slug = re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-")
    return slug if slug == value else f"{slug}-{_short_hash(value)}".lstrip("-")


def _fit(name: str) -> str:
    """Cut a name to the 63-character limit, keeping it unique with a hash of the whole."""
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[: _MAX_NAME - 7].rstrip('-')}-{_short_hash(name)}"


def worker_name(model_name: str, version: str) -> str:
    """Name of a version's Deployment, Service and PodDisruptionBudget."""
    return _fit(f"sglang-{_slug(model_name)}-v{_slug(version)}")


def router_name(model_name: str) -> str:
    """Name of a model's router Deployment, Service, ServiceAccount, Role and RoleBinding."""
    return _fit(f"sglang-router-{_slug(model_name)}")


def worker_selector(model_name: str, version: str) -> dict[str, str]:
    """Labels that identify the worker pods of one model version (Deployment, Service,
    PDB and router all select on exactly these)."""
    _check_identity(model_name, version)
    return {"app.kubernetes.io/name": "sglang", "recslm/model": model_name, "recslm/version": version}


def router_selector(model_name: str) -> dict[str, str]:
    """Labels of a model's router pods; ``name=sglang-router`` keeps them out of the workers' selector."""
    _check_label("model_name", model_name)
    return {"app.kubernetes.io/name": "sglang-router", "recslm/model": model_name}


def _common_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/component": component, "app.kubernetes.io/part-of": "recslm", "app.kubernetes.io/managed-by": "recslm"}


def _check_identity(model_name: str, version: str) -> None:
    _check_label("model_name", model_name)
    _check_label("version", version)


def _check_label(field: str, value: str) -> None:
    """Model name and version become label values (and the model name a folder under
    /models): both need the label-value alphabet, which also rules out '/' and '..'."""
    if not _LABEL_VALUE.match(value or ""):
        raise ConfigError(
            f"{field}: expected 1-63 characters of letters, digits, '-', '_' or '.', starting and ending "
            f"with a letter or digit (it becomes a Kubernetes label value), got {value!r}"
        )


def _check_model_uri(model_uri: str) -> None:
    if not _S3_URI.match(model_uri or ""):
        raise ConfigError(f"model_uri: expected s3://bucket/prefix of a Hugging Face model directory, got {model_uri!r}")


def _meta(name: str, cfg: ServeConfig, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": cfg.namespace, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


# --------------------------------------------------------------------------- shared pod parts


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security(*, read_only_root: bool) -> dict[str, Any]:
    """Restricted container settings. The SGLang server keeps a writable root filesystem:
    its JIT kernels and libraries write caches in places no single volume covers."""
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": read_only_root,
        "capabilities": {"drop": ["ALL"]},
    }


def _env(name: str, value: str) -> dict[str, Any]:
    return {"name": name, "value": value}


def _secret_env(name: str, secret: str, *, optional: bool) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": name, "optional": optional}}}


def _http_probe(path: str, port: str, *, period_s: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": port},
        "periodSeconds": period_s,
        # a little longer than SGLang's own wait, so a slow check is seen as its 503, not a timeout
        "timeoutSeconds": HEALTH_CHECK_TIMEOUT_S + 5,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


# --------------------------------------------------------------------------- workers


def fetch_model_container(cfg: ServeConfig, *, model_uri: str, model_dir: str) -> dict[str, Any]:
    """Init container that copies the checkpoint from S3 into the pod's model volume."""
    _check_model_uri(model_uri)
    return {
        "name": "fetch-model",
        "image": AWS_CLI_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", FETCH_SCRIPT],
        "env": [
            _env("MODEL_URI", model_uri),
            _env("MODEL_DIR", model_dir),
            _env("HOME", "/tmp"),
            _secret_env("AWS_ACCESS_KEY_ID", cfg.s3_secret, optional=False),
            _secret_env("AWS_SECRET_ACCESS_KEY", cfg.s3_secret, optional=False),
            # absent on AWS itself; set for MinIO, Ceph, R2 and other S3-compatible stores
            _secret_env("AWS_ENDPOINT_URL", cfg.s3_secret, optional=True),
            _secret_env("AWS_DEFAULT_REGION", cfg.s3_secret, optional=True),
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
        "securityContext": _container_security(read_only_root=True),
    }


def sglang_container(cfg: ServeConfig, *, model_name: str, model_dir: str) -> dict[str, Any]:
    """The SGLang server of one replica: ``tensor_parallel`` GPUs, the model read-only."""
    resources = {"cpu": cfg.cpu, "memory": cfg.memory, "nvidia.com/gpu": cfg.tensor_parallel}
    return {
        "name": "sglang",
        "image": cfg.image,
        "imagePullPolicy": "IfNotPresent",
        "command": launch_command(cfg, model_dir, served_model_name=model_name),
        "env": [
            _env("HOME", CACHE_DIR),
            _env("USER", "sglang"),  # getpass.getuser() fails for a UID without a passwd entry
            _env("HF_HUB_OFFLINE", "1"),  # the model is local: never reach for the Hub
            _env("TRANSFORMERS_OFFLINE", "1"),
            _env("SGLANG_HEALTH_CHECK_TIMEOUT", str(HEALTH_CHECK_TIMEOUT_S)),
        ],
        "ports": [{"name": "http", "containerPort": cfg.port, "protocol": "TCP"}],
        # requests == limits: GPUs require it, and memory over-commit on a GPU node only moves the OOM
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "dshm", "mountPath": "/dev/shm"},
            {"name": "cache", "mountPath": CACHE_DIR},
        ],
        # /health_generate answers 503 until the model is loaded and warmed up, then runs a
        # one-token generation: ready means able to score, not merely listening.
        "startupProbe": _http_probe(
            "/health_generate", "http", period_s=STARTUP_PROBE_PERIOD_S, failures=math.ceil(cfg.startup_timeout_s / STARTUP_PROBE_PERIOD_S)
        ),
        "readinessProbe": _http_probe("/health_generate", "http", period_s=10, failures=3),
        "livenessProbe": _http_probe("/health", "http", period_s=30, failures=4),
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_DRAIN_S)]}}},
        "securityContext": _container_security(read_only_root=False),
    }


def worker_deployment(cfg: ServeConfig, *, model_name: str, version: str, model_uri: str) -> dict[str, Any]:
    """The replicas of one model version."""
    selector = worker_selector(model_name, version)
    labels = {**selector, **_common_labels("worker")}
    model_dir = f"{MODELS_DIR}/{model_name}"
    pod_spec: dict[str, Any] = {
        "securityContext": _pod_security(),
        "automountServiceAccountToken": False,  # the server never talks to the API
        "enableServiceLinks": False,  # no <SERVICE>_PORT env vars next to SGLANG_* settings
        "terminationGracePeriodSeconds": WORKER_GRACE_S,
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}
        ],
        "initContainers": [fetch_model_container(cfg, model_uri=model_uri, model_dir=model_dir)],
        "containers": [sglang_container(cfg, model_name=model_name, model_dir=model_dir)],
        "volumes": [
            {"name": "models", "emptyDir": {"sizeLimit": cfg.model_disk}},
            {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": cfg.shm_size}},
            {"name": "cache", "emptyDir": {"sizeLimit": "20Gi"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    }
    if cfg.gpu_type:
        pod_spec["nodeSelector"] = {"nvidia.com/gpu.product": cfg.gpu_type}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(worker_name(model_name, version), cfg, labels, {"recslm/model-uri": model_uri}),
        "spec": {
            "replicas": cfg.replicas,
            "selector": {"matchLabels": selector},
            # keep serving capacity during a rollout (needs room for one extra replica)
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            # the default 600 s would call a healthy rollout failed while a large model downloads and loads
            "progressDeadlineSeconds": 2 * cfg.startup_timeout_s,
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(cfg.port), "prometheus.io/path": "/metrics"},
                },
                "spec": pod_spec,
            },
        },
    }


def worker_service(cfg: ServeConfig, *, model_name: str, version: str) -> dict[str, Any]:
    """Direct access to one version's replicas: the deploy flow smoke-tests a version here
    before the router sends it traffic."""
    selector = worker_selector(model_name, version)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(worker_name(model_name, version), cfg, {**selector, **_common_labels("worker")}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [{"name": "http", "port": cfg.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def worker_disruption_budget(cfg: ServeConfig, *, model_name: str, version: str) -> dict[str, Any]:
    """At most one replica evicted at a time by drains and upgrades. ``maxUnavailable: 1``
    (not ``minAvailable``) so a single-replica fleet can still be drained; unhealthy pods
    may always be evicted, so a crash-looping replica never blocks node maintenance."""
    selector = worker_selector(model_name, version)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(worker_name(model_name, version), cfg, {**selector, **_common_labels("worker")}),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector}, "unhealthyPodEvictionPolicy": "AlwaysAllow"},
    }


# --------------------------------------------------------------------------- router


def router_service_account(cfg: ServeConfig, *, model_name: str) -> dict[str, Any]:
    """Identity of the router, for pod discovery."""
    labels = {**router_selector(model_name), **_common_labels("router")}
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(router_name(model_name), cfg, labels)}


def router_role(cfg: ServeConfig, *, model_name: str) -> dict[str, Any]:
    """Read-only access to pods in the fleet's namespace: all service discovery needs."""
    labels = {**router_selector(model_name), **_common_labels("router")}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(router_name(model_name), cfg, labels),
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}],
    }


def router_role_binding(cfg: ServeConfig, *, model_name: str) -> dict[str, Any]:
    """Grants ``router_role`` to ``router_service_account``."""
    name = router_name(model_name)
    labels = {**router_selector(model_name), **_common_labels("router")}
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(name, cfg, labels),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": cfg.namespace}],
    }


def router_deployment(cfg: ServeConfig, *, model_name: str, version: str) -> dict[str, Any]:
    """The SGLang router in front of ``version``'s workers (see the module docstring for
    why one replica)."""
    selector = router_selector(model_name)
    labels = {**selector, **_common_labels("router")}
    container = {
        "name": "router",
        "image": cfg.router_image or cfg.image,
        "imagePullPolicy": "IfNotPresent",
        "command": router_command(cfg, selector=worker_selector(model_name, version), namespace=cfg.namespace),
        "ports": [
            {"name": "http", "containerPort": cfg.router_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": ROUTER_METRICS_PORT, "protocol": "TCP"},
        ],
        "resources": {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "livenessProbe": {"httpGet": {"path": "/liveness", "port": "http"}, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readiness", "port": "http"}, "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 3},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(ENDPOINT_DRAIN_S)]}}},
        "securityContext": _container_security(read_only_root=True),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(router_name(model_name), cfg, labels),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": str(ROUTER_METRICS_PORT), "prometheus.io/path": "/metrics"},
                },
                "spec": {
                    "serviceAccountName": router_name(model_name),
                    "automountServiceAccountToken": True,  # discovery reads pods through the API
                    "enableServiceLinks": False,
                    "securityContext": _pod_security(),
                    "terminationGracePeriodSeconds": WORKER_GRACE_S,
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}],
                },
            },
        },
    }


def router_service(cfg: ServeConfig, *, model_name: str) -> dict[str, Any]:
    """The fleet's entry point: ``http://sglang-router-<model>.<namespace>:<router_port>``."""
    selector = router_selector(model_name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(router_name(model_name), cfg, {**selector, **_common_labels("router")}),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": cfg.router_port, "targetPort": "http", "protocol": "TCP"},
                {"name": "metrics", "port": ROUTER_METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


# --------------------------------------------------------------------------- the whole fleet


def render_fleet(cfg: ServeConfig, *, model_name: str, version: str, model_uri: str) -> list[dict[str, Any]]:
    """Every object of the fleet serving ``model_name`` at ``version`` from ``model_uri``,
    in apply order (RBAC before the router that uses it). Pure: checking the launch
    arguments against SGLang is ``recslm.serve.sglang.validate_launch_args``'s job.
    Objects share no nested dicts, so a caller may patch one without touching another."""
    _check_identity(model_name, version)
    _check_model_uri(model_uri)
    objects = [
        router_service_account(cfg, model_name=model_name),
        router_role(cfg, model_name=model_name),
        router_role_binding(cfg, model_name=model_name),
        worker_deployment(cfg, model_name=model_name, version=version, model_uri=model_uri),
        worker_service(cfg, model_name=model_name, version=version),
        worker_disruption_budget(cfg, model_name=model_name, version=version),
        router_deployment(cfg, model_name=model_name, version=version),
        router_service(cfg, model_name=model_name),
    ]
    return [json.loads(json.dumps(obj)) for obj in objects]  # a JSON round trip leaves no shared dicts


class _ManifestDumper(yaml.SafeDumper):
    """Safe YAML as people write manifests: no &anchors for repeated label sets, and
    multi-line strings (the download script) as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ManifestDumper.add_representer(str, _str)


def to_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """A multi-document YAML stream, keys in the order written (kind and metadata first)."""
    return yaml.dump_all(list(objects), Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False)
