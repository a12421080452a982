"""Team and cluster infrastructure: infra/k8s manifests and the Prefect GPU job template against
the Kubernetes API schemas, the security rules every workload follows (non-root, no escalation,
requests and limits, pinned images, credentials only from Secrets, least-privilege RBAC), the
docker compose stack and the Dockerfiles. Static checks only: no cluster, no Docker daemon."""

from __future__ import annotations

import json
import re
import shlex
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from prefect.server.schemas.actions import validate_base_job_template
from prefect.utilities.templating import apply_values, find_placeholders

K8S_VERSION = "1.33"
REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "infra" / "k8s"
GENERATED = {"sglang-fleet.yaml"}  # rendered by recslm.serve.k8s, checked by tests/production/test_serve_fleet.py
MANIFESTS = ["mlflow.yaml", "namespace.yaml", "postgres.yaml", "prefect-server.yaml", "prefect-worker.yaml", "recslm-deployer.yaml"]
TEMPLATE = REPO / "infra" / "prefect" / "k8s-gpu-job-template.json"
COMPOSE_DIR = REPO / "infra" / "compose"
DOCKERFILES = {name: REPO / "docker" / name / "Dockerfile" for name in ("trainer", "mlflow", "serving")}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}

# prefect-kubernetes checks a job manifest against its base manifest, which has these two Job
# fields inside the pod spec; the template must keep them there or the worker refuses it. The API
# server drops them as unknown fields (fieldValidation=Warn); a strict schema check refuses them.
PREFECT_POD_SPEC_FIELDS = {"parallelism": 1, "completions": 1}

CREDENTIAL_NAME = re.compile(r"PASSW|SECRET|TOKEN|KEY|AUTH|CREDENTIAL|ROOT_USER", re.IGNORECASE)
SECRET_REFERENCE_NAME = ("_SECRET_NAME", "_SECRET_KEY")  # name a Secret or a key in it, hold no credential
DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
COMPOSE_REQUIRED = re.compile(r"^\$\{([A-Z][A-Z0-9_]*):\?[^}]+\}$")  # ${VAR:?message}
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@\"']+:([^@\s\"']+)@", re.IGNORECASE)
# ${VAR}, $${VAR} (compose), $(VAR) (Kubernetes), $VAR (shell), or <placeholder> in docs
REFERENCE = re.compile(r"^(\$+[({]?[A-Za-z_]|<[^<>\s]+>$)")
# NAME: value / NAME=value for credential-looking names (no space before the colon: not SQL's
# `PASSWORD :'var'`; not followed by ? = + -: not a shell ${NAME:?...} expansion)
LITERAL_ASSIGNMENT = re.compile(r"\b[A-Z][A-Z0-9_]*(?:PASSWORD|SECRET|TOKEN|ACCESS_KEY|AUTH_STRING)[A-Z0-9_]*[:=](?![?=+-])[ \t]*[\"']?([^\s\"'#,]+)")
KNOWN_KEY_SHAPES = [re.compile(r"\bAKIA[0-9A-Z]{16}\b"), re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")]


# --------------------------------------------------------------------------- loading


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S_DIR.glob("*.yaml") if p.name not in GENERATED)


def load_objects(path: Path) -> list[dict]:
    return [obj for obj in yaml.safe_load_all(path.read_text()) if obj]


def k8s_objects() -> list[tuple[str, dict]]:
    return [(path.name, obj) for path in manifest_files() for obj in load_objects(path)]


def template() -> dict:
    return json.loads(TEMPLATE.read_text())


def variable_defaults(tmpl: dict) -> dict:
    # As Prefect's worker does: variables whose default is null are left out, so a placeholder
    # standing alone for one of them removes its key.
    return {name: spec["default"] for name, spec in tmpl["variables"]["properties"].items() if spec.get("default") is not None}


def rendered_job(**overrides) -> dict:
    """The template's Job with default (or overridden) variables, completed as the worker completes it."""
    tmpl = template()
    job = apply_values(tmpl["job_configuration"]["job_manifest"], {**variable_defaults(tmpl), **overrides})
    pod = job["spec"]["template"]["spec"]
    for field in PREFECT_POD_SPEC_FIELDS:
        pod.pop(field, None)  # test_job_template_keeps_what_prefect_kubernetes_requires checks they are there
    container = pod["containers"][0]
    container["env"] = [{"name": k, "value": v} for k, v in container["env"].items()]  # the worker turns the dict into a list
    container.setdefault("args", ["prefect", "flow-run", "execute"])  # the worker fills an empty command
    return job


def workloads() -> list[tuple[str, dict]]:
    found = [(f"{name}:{obj['metadata']['name']}", obj) for name, obj in k8s_objects() if obj["kind"] in WORKLOADS]
    return [*found, ("job-template", rendered_job())]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def compose() -> dict:
    return yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())


def compose_dockerfile(service: dict) -> Path:
    build = service["build"]
    return (COMPOSE_DIR / build["context"] / build.get("dockerfile", "Dockerfile")).resolve()


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, current = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        op, _, args = (current + line).partition(" ")
        instructions.append((op.upper(), args.strip()))
        current = ""
    return instructions


def dockerfile_user(path: Path) -> str:
    """The USER in effect at the first ENTRYPOINT or CMD (root when none was set)."""
    user = "root"
    for op, args in dockerfile_instructions(path):
        if op == "USER":
            user = args.strip()
        if op in {"ENTRYPOINT", "CMD"}:
            return user
    return user


def dockerfile_base(path: Path) -> str:
    (args,) = [args for op, args in dockerfile_instructions(path) if op == "FROM"]
    return next(word for word in args.split() if not word.startswith("--"))


def dockerfile_arg(path: Path, name: str) -> str:
    for op, args in dockerfile_instructions(path):
        if op == "ARG" and args.startswith(name + "="):
            return args.split("=", 1)[1].strip('"')
    raise AssertionError(f"{path}: no ARG {name}")


def is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition("/")[2].partition(":")
    return bool(name and tag) and tag != "latest" and any(ch.isdigit() for ch in tag)


def is_reference(value: str) -> bool:
    return bool(REFERENCE.match(value))


def command_option(command: list[str], name: str) -> str | None:
    for i, arg in enumerate(command):
        if arg == name:
            return command[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def infra_text_files() -> list[Path]:
    files = [p for p in (REPO / "infra").rglob("*") if p.is_file() and p.name not in GENERATED]
    return sorted(files + list(DOCKERFILES.values()) + [REPO / ".dockerignore"])


# --------------------------------------------------------------------------- Kubernetes schema


def test_the_manifests_exist_in_the_recslm_namespace():
    assert set(MANIFESTS) <= {p.name for p in manifest_files()}
    assert all(obj["metadata"].get("namespace", "recslm") == "recslm" for _, obj in k8s_objects())


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_object_passes_the_kubernetes_schema_strictly(path):
    objects = load_objects(path)
    assert objects
    for obj in objects:
        assert kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True) == K8S_VERSION, obj["kind"]


def test_job_template_uses_only_declared_variables_and_prefect_accepts_it():
    tmpl = template()
    used = {p.name for p in find_placeholders(tmpl["job_configuration"])}
    declared = set(tmpl["variables"]["properties"])
    assert used <= declared, f"undeclared: {sorted(used - declared)}"
    assert declared <= used, f"declared but never used (their values would be ignored): {sorted(declared - used)}"
    validate_base_job_template(tmpl)  # the Prefect server's own check on work-pool creation


@pytest.mark.parametrize(
    "overrides",
    [{}, {"gpus": 0}, {"gpus": 8, "gpu_product": "NVIDIA-H100-80GB-HBM3", "backoff_limit": 0, "service_account_name": "recslm-deployer"}],
    ids=["defaults", "cpu-only", "8-gpus-h100"],
)
def test_job_manifest_passes_the_kubernetes_schema_strictly(overrides):
    job = rendered_job(**overrides)
    assert find_placeholders(job) == set()
    assert kubernetes_validate.validate(job, desired_version=K8S_VERSION, strict=True) == K8S_VERSION


def test_job_template_keeps_what_prefect_kubernetes_requires():
    config = template()["job_configuration"]
    for key in ("command", "env", "labels", "name", "namespace"):
        assert config[key] == f"{{{{ {key} }}}}", key
    job = config["job_manifest"]
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    pod = job["spec"]["template"]["spec"]
    assert {k: pod.get(k) for k in PREFECT_POD_SPEC_FIELDS} == PREFECT_POD_SPEC_FIELDS
    assert pod["restartPolicy"] == "Never" and pod["containers"][0]["name"] == "prefect-job"
    assert pod["containers"][0]["args"] == "{{ command }}" and pod["containers"][0]["env"] == "{{ env }}"


def test_job_requests_gpus_shm_and_retries_from_its_variables():
    defaults = variable_defaults(template())
    assert defaults["gpus"] == 1 and defaults["backoff_limit"] > 0 and defaults["finished_job_ttl"] > 0
    job = rendered_job(gpus=4, backoff_limit=5, shm_size="32Gi", finished_job_ttl=600)
    pod = pod_spec(job)
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 4
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert job["spec"]["backoffLimit"] == 5 and job["spec"]["ttlSecondsAfterFinished"] == 600
    (shm,) = [m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    assert next(v for v in pod["volumes"] if v["name"] == shm["name"])["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": defaults["env_secret_name"]}}]
    assert "nodeSelector" not in pod or pod["nodeSelector"] == {}  # any GPU node unless gpu_product is set
    assert pod_spec(rendered_job(gpu_product="NVIDIA-A100-SXM4-80GB"))["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}


# --------------------------------------------------------------------------- workload security


@pytest.mark.parametrize(("name", "workload"), workloads(), ids=[name for name, _ in workloads()])
def test_no_container_runs_as_root_or_can_escalate(name, workload):
    pod = pod_spec(workload)
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"].get("runAsUser") != 0
    for c in containers(pod):
        security = {**pod["securityContext"], **c["securityContext"]}
        assert security["runAsNonRoot"] is True, c["name"]
        assert isinstance(security["runAsUser"], int) and security["runAsUser"] != 0, c["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], c["name"]
        assert "privileged" not in c["securityContext"] or c["securityContext"]["privileged"] is False


@pytest.mark.parametrize(("name", "workload"), workloads(), ids=[name for name, _ in workloads()])
def test_every_container_has_cpu_and_memory_requests_and_limits(name, workload):
    assert containers(pod_spec(workload)), name
    for c in containers(pod_spec(workload)):
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), c["name"]


def test_images_are_pinned_everywhere():
    images = [c["image"] for _, w in workloads() for c in containers(pod_spec(w))]
    images += [s["image"] for s in compose()["services"].values()]
    images += [dockerfile_base(path) for path in DOCKERFILES.values()]
    assert len(images) >= 12
    assert [image for image in images if not is_pinned(image)] == []


def test_servers_have_probes_on_declared_ports():
    assert any(c.get("ports") for _, w in workloads() for c in containers(pod_spec(w))), "no server among the workloads"
    for name, workload in workloads():
        for c in containers(pod_spec(workload)):
            if not c.get("ports"):
                continue
            assert "livenessProbe" in c and "readinessProbe" in c, (name, c["name"])
            ports = {p["name"] for p in c["ports"]} | {p["containerPort"] for p in c["ports"]}
            for probe in (c.get(k) for k in ("startupProbe", "readinessProbe", "livenessProbe")):
                if probe and "httpGet" in probe:
                    assert probe["httpGet"]["port"] in ports, (name, c["name"])


def test_services_select_pods_of_their_workload():
    objects = [obj for _, obj in k8s_objects()]
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in objects if w["kind"] in WORKLOADS]
    services = [o for o in objects if o["kind"] == "Service"]
    assert services and pod_labels
    for service in services:
        selector = service["spec"]["selector"]
        assert any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels), service["metadata"]["name"]


# --------------------------------------------------------------------------- RBAC


def test_worker_role_is_namespaced_and_least_privilege():
    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _, obj in k8s_objects()}
    assert not [key for key in objects if key[0] in {"ClusterRole", "ClusterRoleBinding"}]
    role, binding = objects[("Role", "prefect-worker")], objects[("RoleBinding", "prefect-worker")]
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
        assert "secrets" not in rule["resources"] and "resourceNames" not in rule
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert {"create", "watch"} <= granted["jobs"] and {"get", "list", "watch"} <= granted["pods"]
    assert granted["pods/log"] == {"get"} and {"list", "watch"} <= granted["events"]
    assert not ({"update", "patch", "escalate", "bind", "impersonate"} & set().union(*granted.values()))
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prefect-worker"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "prefect-worker", "namespace": role["metadata"]["namespace"]}]
    worker = objects[("Deployment", "prefect-worker")]
    assert pod_spec(worker)["serviceAccountName"] == "prefect-worker"
    env = {e["name"]: e.get("value") for e in pod_spec(worker)["containers"][0]["env"]}
    # Without this the observer watches the whole cluster, which a namespaced Role cannot allow.
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == role["metadata"]["namespace"]
    assert command_option(pod_spec(worker)["containers"][0]["command"], "--pool") == "recslm-k8s"
    assert variable_defaults(template())["namespace"] == role["metadata"]["namespace"]


def test_the_deployer_role_covers_every_object_the_kubernetes_target_applies_and_no_more():
    """What server-side apply, rollout status and removal need on every kind ``render_fleet``
    emits, the rights the router's own Role grants (Kubernetes refuses to let an account
    create a Role granting more than it holds), and nothing else."""
    from recslm.config import ServeConfig
    from recslm.serve.k8s import render_fleet

    objects = {(obj["kind"], obj["metadata"]["name"]): obj for _, obj in k8s_objects()}
    role, binding = objects[("Role", "recslm-deployer")], objects[("RoleBinding", "recslm-deployer")]
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"] and "resourceNames" not in rule, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    fleet = render_fleet(ServeConfig(replicas=2), model_name="ranker", version="1", model_uri="s3://models/ranker/1/")
    for obj in fleet:
        group = obj["apiVersion"].rpartition("/")[0]
        resource = obj["kind"].lower() + "s" if not obj["kind"].endswith("y") else obj["kind"].lower()[:-1] + "ies"
        assert {"get", "create", "patch", "delete"} <= granted.get((group, resource), set()), (group, resource)
        if obj["kind"] == "Role":
            for rule in obj["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        assert set(rule["verbs"]) <= granted[(group, resource)], (group, resource)
    touched = {(o["apiVersion"].rpartition("/")[0], o["kind"].lower()) for o in fleet}
    assert {"watch", "list"} <= granted[("apps", "deployments")]
    assert not [key for key in granted if key[1] in ("secrets", "pods/exec", "configmaps")] and len(granted) == len(touched) + 1  # + pods
    assert not ({"update", "escalate", "bind", "impersonate", "deletecollection"} & set().union(*granted.values()))
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "recslm-deployer", "namespace": role["metadata"]["namespace"]}]
    assert objects[("ServiceAccount", "recslm-deployer")]["automountServiceAccountToken"] is False


def test_only_the_worker_gets_an_api_token():
    assert any(w["metadata"].get("name") == "prefect-worker" for _, w in workloads())
    for name, workload in workloads():
        mounts = pod_spec(workload).get("automountServiceAccountToken")
        assert mounts is (workload["metadata"].get("name") == "prefect-worker"), name


# --------------------------------------------------------------------------- credentials


def test_k8s_credentials_only_come_from_secrets():
    assert not [obj for _, obj in k8s_objects() if obj["kind"] == "Secret"]
    for name, workload in workloads():
        for c in containers(pod_spec(workload)):
            for entry in c.get("env", []):
                value = entry.get("value")
                if value is not None:
                    for password in URL_PASSWORD.findall(value):
                        assert is_reference(password), (name, entry["name"])
                if not CREDENTIAL_NAME.search(entry["name"]):
                    continue
                if entry["name"].endswith(SECRET_REFERENCE_NAME) and DNS_NAME.match(value or ""):
                    continue
                assert "value" not in entry and "secretKeyRef" in entry["valueFrom"], (name, entry["name"])


def test_no_credential_literals_in_any_infra_file():
    checked = infra_text_files()
    assert len(checked) >= 15
    for path in checked:
        text = path.read_text()
        where = path.relative_to(REPO)
        assert not [p.pattern for p in KNOWN_KEY_SHAPES if p.search(text)], where
        for password in URL_PASSWORD.findall(text):
            assert is_reference(password), (where, "password in a URL")
        if path.name == ".env.example":
            continue  # checked below: its values are empty
        for match in LITERAL_ASSIGNMENT.finditer(text):
            assert is_reference(match.group(1)), (where, match.group(0))


# --------------------------------------------------------------------------- docker compose


def test_compose_services_depend_on_existing_healthy_services():
    services = compose()["services"]
    assert services and any(s.get("depends_on") for s in services.values())
    for name, service in services.items():
        one_shot = service.get("restart") == "no"
        assert one_shot or "healthcheck" in service, name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, (name, dependency)
            expected = "service_completed_successfully" if services[dependency].get("restart") == "no" else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)


def test_compose_credentials_are_required_variables_listed_empty_in_env_example():
    services = compose()["services"]
    required: set[str] = set()
    for name, service in services.items():
        for key, value in service.get("environment", {}).items():
            value = str(value)
            for password in URL_PASSWORD.findall(value):
                assert is_reference(password), (name, key)
            if CREDENTIAL_NAME.search(key):
                match = COMPOSE_REQUIRED.match(value)
                assert match, (name, key, "expected ${VAR:?message}")
                required.add(match.group(1))
    assert {"POSTGRES_PASSWORD", "PREFECT_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "PREFECT_API_AUTH_STRING"} <= required
    example = dict(
        line.split("=", 1) for line in (COMPOSE_DIR / ".env.example").read_text().splitlines() if line and not line.startswith("#")
    )
    assert set(example) == required and set(example.values()) == {""}
    assert ".env" in (COMPOSE_DIR / ".gitignore").read_text().split()


def test_compose_services_drop_privileges_and_run_as_non_root():
    services = compose()["services"]
    assert len(services) > 1
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        if name == "minio":  # its image creates /data owned by root; a fresh volume is writable by root only
            continue
        user = service.get("user") or dockerfile_user(compose_dockerfile(service))
        assert user.split(":")[0] not in {"", "0", "root"}, name


def test_compose_volumes_are_named_and_declared():
    spec = compose()
    assert any(service.get("volumes") for service in spec["services"].values())
    for name, service in spec["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert source.startswith("./") or source in spec["volumes"], (name, volume)
            if source.startswith("./"):
                assert (COMPOSE_DIR / source).exists() and volume.endswith(":ro"), (name, volume)


def test_prefect_and_mlflow_use_postgres_and_s3_buckets_that_get_created():
    services = compose()["services"]
    prefect_url = urlsplit(services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert (prefect_url.scheme, prefect_url.hostname, prefect_url.path) == ("postgresql+asyncpg", "postgres", "/prefect")
    assert services["prefect-server"]["image"] == "prefecthq/prefect:3.9.1-python3.11"
    assert services["prefect-server"]["command"][:3] == ["prefect", "server", "start"]
    mlflow = services["mlflow"]["command"]
    store = urlsplit(command_option(mlflow, "--backend-store-uri"))
    assert (store.scheme, store.hostname, store.path, store.password) == ("postgresql+psycopg2", "postgres", "/mlflow", None)
    destination = command_option(mlflow, "--artifacts-destination")
    assert destination.startswith("s3://") and "--serve-artifacts" in mlflow
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    worker = services["prefect-worker"]["command"]
    assert (command_option(worker, "--pool"), command_option(worker, "--type")) == ("recslm-process", "process")
    assert services["prefect-worker"]["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    created = set(re.findall(r"store/([a-z0-9.-]+)", services["create-buckets"]["command"][0]))
    assert {"recslm-artifacts", urlsplit(destination).hostname} <= created
    policy = json.loads((COMPOSE_DIR / "minio" / "recslm-policy.json").read_text())
    assert {f"arn:aws:s3:::{bucket}" for bucket in ("recslm-artifacts", "mlflow")} == set(policy["Statement"][0]["Resource"])


def test_read_only_prefect_servers_write_home_and_ui_bundle_to_writable_mounts():
    service = compose()["services"]["prefect-server"]
    assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert all(service["environment"][k].startswith("/tmp/") for k in ("PREFECT_HOME", "PREFECT_UI_STATIC_DIRECTORY"))
    server = next(w for _, w in workloads() if w["metadata"].get("name") == "prefect-server")
    (container,) = pod_spec(server)["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    mounts = [m["mountPath"] + "/" for m in container["volumeMounts"]]
    for key in ("PREFECT_HOME", "PREFECT_UI_STATIC_DIRECTORY"):
        assert any((env[key] + "/").startswith(mount) for mount in mounts), key


def test_postgres_init_script_is_the_same_in_compose_and_k8s():
    script = (COMPOSE_DIR / "postgres" / "init-databases.sh").read_text()
    (config,) = [obj for obj in load_objects(K8S_DIR / "postgres.yaml") if obj["kind"] == "ConfigMap"]
    assert config["data"]["init-databases.sh"] == script
    assert "CREATE DATABASE prefect OWNER prefect" in script and "CREATE DATABASE mlflow OWNER mlflow" in script


def test_built_images_match_the_project_versions():
    services = compose()["services"]
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    mlflow_spec = re.search(r'"mlflow==([0-9.]+)\.\*"', pyproject).group(1)
    mlflow_version = dockerfile_arg(DOCKERFILES["mlflow"], "MLFLOW_VERSION")
    assert mlflow_version.startswith(mlflow_spec + ".")
    k8s_mlflow = next(obj for _, obj in k8s_objects() if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "mlflow")
    assert services["mlflow"]["image"] == pod_spec(k8s_mlflow)["containers"][0]["image"] == f"recslm/mlflow:{mlflow_version}"
    assert services["prefect-worker"]["image"] == variable_defaults(template())["image"] == f"recslm/trainer:{version}"
    assert compose_dockerfile(services["prefect-worker"]) == DOCKERFILES["trainer"]
    assert compose_dockerfile(services["mlflow"]) == DOCKERFILES["mlflow"]


# --------------------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_base_image_is_pinned_to_a_full_version(name):
    base = dockerfile_base(DOCKERFILES[name])
    assert is_pinned(base) and re.search(r":v?\d+\.\d+\.\d+", base), base  # not a floating 3.11-slim


@pytest.mark.parametrize("name", sorted(DOCKERFILES))
def test_dockerfile_switches_to_a_non_root_user_before_it_starts(name):
    user = dockerfile_user(DOCKERFILES[name])
    assert user.split(":")[0] not in {"root", "0"}
    assert re.fullmatch(r"10001(:10001)?", user), "10001 is the runAsUser of every manifest"


def test_trainer_installs_torch_before_the_project_against_that_torch():
    runs = [args for op, args in dockerfile_instructions(DOCKERFILES["trainer"]) if op == "RUN"]
    torch_step = next(i for i, args in enumerate(runs) if '"$TORCH_SPEC"' in args and "pip install" in args)
    project_step = next(i for i, args in enumerate(runs) if '".[deepspeed]"' in args)
    assert torch_step < project_step
    assert "--no-build-isolation" in shlex.split(runs[project_step]) and "DS_BUILD_OPS=0" in runs[project_step]
    makefile_default = re.search(r"^TORCH_SPEC \?= (\S+)", (REPO / "Makefile").read_text(), re.M).group(1)
    assert dockerfile_arg(DOCKERFILES["trainer"], "TORCH_SPEC") == makefile_default
    entrypoint = next(json.loads(args) for op, args in dockerfile_instructions(DOCKERFILES["trainer"]) if op == "ENTRYPOINT")
    assert entrypoint[0].endswith("tini") and "-g" not in entrypoint  # the prefect CLI forwards SIGTERM to the engine itself


def test_dockerignore_keeps_what_the_trainer_copies():
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines() if line and not line.startswith("#")]
    copied = [src for op, args in dockerfile_instructions(DOCKERFILES["trainer"]) if op == "COPY" for src in args.split()[:-1]]
    assert {"pyproject.toml", "README.md", "recslm", "tasks", "flows"} <= set(copied)
    for src in copied:
        assert (REPO / src).exists(), src
        assert not [p for p in patterns if fnmatch(src, p)], src
    assert {".venv", "runs", ".git"} <= set(patterns)
