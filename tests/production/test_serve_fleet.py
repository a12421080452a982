"""The SGLang fleet: launch args against SGLang's own parser, manifests against the
Kubernetes API schemas, and the invariants a GPU fleet needs (GPUs = tp, probes that
outlast model loading, RAM-backed /dev/shm, non-root everywhere, selectors that match)."""

from __future__ import annotations

import contextlib
import io
import logging
import re

import kubernetes_validate
import pytest
import yaml

from recslm.config import ServeConfig
from recslm.errors import ConfigError
from recslm.serve.k8s import render_fleet, to_yaml
from recslm.serve.sglang import HEALTH_CHECK_TIMEOUT_S, launch_args, launch_command, validate_launch_args

K8S_VERSION = "1.35"  # newest schema set kubernetes-validate ships that is <= 1.35
MODEL = "llama-64x2-pruned"
URI = "s3://recslm-models/llama-64x2-pruned/1/"
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

VARIANTS = {
    "tp1-defaults": ServeConfig(),
    "tp2-fp8-fcfs": ServeConfig(tensor_parallel=2, quantization="fp8", schedule_policy="fcfs", port=31000),
    "tp8-compressed-random": ServeConfig(tensor_parallel=8, quantization="compressed-tensors", schedule_policy="random", mem_fraction_static=0.7),
    "flashinfer-dfs-weight": ServeConfig(attention_backend="flashinfer", schedule_policy="dfs-weight", max_running_requests=64),
}


def fleet(cfg: ServeConfig | None = None, model: str = MODEL, version: str = "1") -> dict[str, dict]:
    objects = render_fleet(cfg or ServeConfig(), model_name=model, version=version, model_uri=URI)
    out: dict[str, dict] = {}
    for obj in objects:
        role = "router" if obj["metadata"]["labels"]["app.kubernetes.io/component"] == "router" else "worker"
        out[f"{role}/{obj['kind']}"] = obj
    assert len(out) == len(objects) == 8, sorted(out)
    return out


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def all_containers(deployment: dict) -> list[dict]:
    spec = pod_spec(deployment)
    return spec.get("initContainers", []) + spec["containers"]


def container(deployment: dict, name: str) -> dict:
    return next(c for c in all_containers(deployment) if c["name"] == name)


def flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


@pytest.fixture(scope="module")
def parse():
    """SGLang's own ``prepare_server_args`` (imported once: it takes seconds), with the
    root logging it re-configures put back afterwards."""
    import sglang.srt.server_args as server_args  # installed by `make test` (the sglang wheel without its GPU deps)

    def run(args: list[str]):
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                return server_args.prepare_server_args(args)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)

    return run


# --------------------------------------------------------------------------- launch args


@pytest.mark.parametrize("name", VARIANTS)
def test_launch_args_parse_with_sglang_into_the_configured_server(parse, name):
    cfg = VARIANTS[name]
    args = launch_args(cfg, "/models/m")
    parsed = parse(args)
    assert parsed.model_path == "/models/m" and parsed.host == "0.0.0.0" and parsed.port == cfg.port
    assert parsed.tp_size == cfg.tensor_parallel
    assert parsed.quantization == ("fp8" if cfg.quantization == "fp8" else None)
    assert parsed.schedule_policy == cfg.schedule_policy
    assert parsed.mem_fraction_static == pytest.approx(cfg.mem_fraction_static)
    assert parsed.enable_metrics is True
    assert parsed.attention_backend == cfg.attention_backend
    assert parsed.max_running_requests == cfg.max_running_requests
    assert parsed.disable_radix_cache is False and parsed.skip_tokenizer_init is False
    assert parsed.load_format == "safetensors"
    validate_launch_args(args)


def test_compressed_tensors_passes_no_quantization_flag_so_sglang_reads_the_checkpoint():
    assert "--quantization" not in launch_args(ServeConfig(quantization="compressed-tensors"), "/m")
    assert "--quantization" not in launch_args(ServeConfig(), "/m")
    assert flag(launch_args(ServeConfig(quantization="fp8"), "/m"), "--quantization") == "fp8"


def test_launch_command_runs_the_sglang_server_module():
    command = launch_command(ServeConfig(tensor_parallel=4), "/models/x", served_model_name="x")
    assert command[:3] == ["python", "-m", "sglang.launch_server"]
    assert flag(command, "--tp-size") == "4" and flag(command, "--served-model-name") == "x"


def test_unknown_attention_backend_is_a_config_error_naming_the_field(parse):
    with pytest.raises(ConfigError) as err:
        validate_launch_args(launch_args(ServeConfig(attention_backend="nonsense"), "/m"))
    message = str(err.value)
    assert "serve.attention_backend (--attention-backend)" in message and "'nonsense'" in message and "flashinfer" in message


def test_bad_values_and_unknown_flags_name_the_argument(parse):
    with pytest.raises(ConfigError, match=r"serve\.tensor_parallel \(--tp-size\).*invalid int value: 'two'"):
        validate_launch_args(["--model-path", "/m", "--tp-size", "two"])
    with pytest.raises(ConfigError, match=r"unrecognized arguments: --no-such-flag"):
        validate_launch_args(["--model-path", "/m", "--no-such-flag"])


def test_empty_model_path_is_refused():
    with pytest.raises(ConfigError, match="model path"):
        launch_args(ServeConfig(), "")


# --------------------------------------------------------------------------- schema


@pytest.mark.parametrize(
    "cfg",
    [*VARIANTS.values(), ServeConfig(replicas=3, gpu_type="NVIDIA-H100-80GB-HBM3", router_policy="member_hash", router_image="example/router:1")],
    ids=[*VARIANTS, "gpu-type-member-hash"],
)
def test_every_object_passes_the_kubernetes_schema_strictly(cfg):
    objects = render_fleet(cfg, model_name="Llama_64x2.pruned", version="1", model_uri=URI)
    assert {o["kind"] for o in objects} >= {"Deployment", "Service"}
    for obj in objects:
        assert kubernetes_validate.validate(obj, desired_version=K8S_VERSION, strict=True) == K8S_VERSION, obj["kind"]


# --------------------------------------------------------------------------- behaviour


@pytest.mark.parametrize("tp", [1, 2, 8])
def test_gpus_requested_and_limited_equal_tensor_parallel(tp):
    server = container(fleet(ServeConfig(tensor_parallel=tp))["worker/Deployment"], "sglang")
    assert server["resources"]["requests"]["nvidia.com/gpu"] == tp
    assert server["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert flag(server["command"], "--tp-size") == str(tp)


@pytest.mark.parametrize("timeout_s", [60, 1800, 1801, 3599])
def test_probes_check_generation_and_the_startup_window_covers_loading(timeout_s):
    cfg = ServeConfig(startup_timeout_s=timeout_s, port=31000)
    deployment = fleet(cfg)["worker/Deployment"]
    server = container(deployment, "sglang")
    startup, ready, live = server["startupProbe"], server["readinessProbe"], server["livenessProbe"]
    assert startup["httpGet"]["path"] == ready["httpGet"]["path"] == "/health_generate"
    assert live["httpGet"]["path"] == "/health"
    assert startup["failureThreshold"] * startup["periodSeconds"] >= timeout_s
    assert deployment["spec"]["progressDeadlineSeconds"] > timeout_s
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    for probe in (startup, ready, live):
        assert ports[probe["httpGet"]["port"]] == 31000
        assert probe["timeoutSeconds"] > HEALTH_CHECK_TIMEOUT_S  # SGLang answers within its own timeout
    assert {"name": "SGLANG_HEALTH_CHECK_TIMEOUT", "value": str(HEALTH_CHECK_TIMEOUT_S)} in server["env"]


def test_shm_is_a_memory_backed_empty_dir_with_a_limit():
    deployment = fleet(ServeConfig(shm_size="32Gi"))["worker/Deployment"]
    mount = next(m for m in container(deployment, "sglang")["volumeMounts"] if m["mountPath"] == "/dev/shm")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"])
    assert volume["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}


def test_no_container_runs_as_root_or_can_escalate():
    assert sum(name.endswith("Deployment") for name in fleet()) >= 2  # the workers and the router
    for name, deployment in fleet().items():
        if not name.endswith("Deployment"):
            continue
        pod_security = pod_spec(deployment)["securityContext"]
        for c in all_containers(deployment):
            security = {**pod_security, **c["securityContext"]}
            assert security["runAsNonRoot"] is True and security["runAsUser"] != 0, (name, c["name"])
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_every_container_including_init_has_cpu_and_memory_limits():
    names = []
    for name, deployment in fleet().items():
        if name.endswith("Deployment"):
            for c in all_containers(deployment):
                names.append(c["name"])
                assert {"cpu", "memory"} <= set(c["resources"]["limits"]), c["name"]
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
    assert sorted(names) == ["fetch-model", "router", "sglang"]


def test_router_discovers_exactly_this_versions_workers_by_label():
    cfg = ServeConfig(namespace="ranking", port=31000)
    objects = fleet(cfg, version="7")
    worker_labels = objects["worker/Deployment"]["spec"]["template"]["metadata"]["labels"]
    router_labels = objects["router/Deployment"]["spec"]["template"]["metadata"]["labels"]
    command = container(objects["router/Deployment"], "router")["command"]
    assert command[:3] == ["python", "-m", "sglang_router.launch_router"] and "--service-discovery" in command
    start = command.index("--selector") + 1
    values = command[start : next(i for i in range(start, len(command)) if command[i].startswith("--"))]
    selector = dict(value.split("=", 1) for value in values)
    assert selector["recslm/version"] == "7" and selector["recslm/model"] == MODEL
    assert matches(selector, worker_labels) and not matches(selector, router_labels)
    assert flag(command, "--service-discovery-port") == "31000" and flag(command, "--service-discovery-namespace") == "ranking"
    other_version = fleet(cfg, version="8")["worker/Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert not matches(selector, other_version)


def test_services_budget_and_deployments_select_their_own_pods():
    objects = fleet()
    worker_labels = objects["worker/Deployment"]["spec"]["template"]["metadata"]["labels"]
    router_labels = objects["router/Deployment"]["spec"]["template"]["metadata"]["labels"]
    for kind, own, other in (("worker", worker_labels, router_labels), ("router", router_labels, worker_labels)):
        service = objects[f"{kind}/Service"]["spec"]["selector"]
        assert matches(service, own) and not matches(service, other), kind
        assert matches(objects[f"{kind}/Deployment"]["spec"]["selector"]["matchLabels"], own)
        port_names = {p["name"] for c in all_containers(objects[f"{kind}/Deployment"]) for p in c.get("ports", [])}
        assert {p["targetPort"] for p in objects[f"{kind}/Service"]["spec"]["ports"]} <= port_names
    budget = objects["worker/PodDisruptionBudget"]["spec"]["selector"]["matchLabels"]
    assert matches(budget, worker_labels) and not matches(budget, router_labels)


@pytest.mark.parametrize("replicas", [1, 2, 5])
def test_disruption_budget_lets_a_drain_evict_one_replica_and_no_more(replicas):
    spec = fleet(ServeConfig(replicas=replicas))["worker/PodDisruptionBudget"]["spec"]
    allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
    assert allowed == 1
    assert fleet(ServeConfig(replicas=replicas))["worker/Deployment"]["spec"]["replicas"] == replicas


@pytest.mark.parametrize("model", ["Llama_64x2.pruned", "llama-64x2-pruned", "Qwen3.MoE-A3B", "x" * 63, "7b"])
@pytest.mark.parametrize("version", ["1", "2025.06.01", "RC_2"])
def test_names_are_dns_labels_for_odd_model_names(model, version):
    objects = fleet(model=model, version=version)
    for obj in objects.values():
        name = obj["metadata"]["name"]
        assert DNS_1035.match(name) and len(name) <= 63, name
        assert obj["metadata"]["namespace"] == "recslm"
    deployment = objects["worker/Deployment"]
    assert flag(container(deployment, "sglang")["command"], "--model-path") == f"/models/{model}"
    assert {"name": "MODEL_DIR", "value": f"/models/{model}"} in container(deployment, "fetch-model")["env"]


def test_names_that_slug_alike_stay_apart():
    names = {fleet(model=m)["worker/Deployment"]["metadata"]["name"] for m in ("Llama_64x2.pruned", "llama-64x2-pruned", "llama.64x2.pruned")}
    assert len(names) == 3
    assert fleet(model="llama-64x2-pruned")["worker/Deployment"]["metadata"]["name"] == "sglang-llama-64x2-pruned-v1"


@pytest.mark.parametrize("model", ["org/model", "", "-lead", "trail.", "x" * 64, "../etc"])
def test_model_names_that_cannot_be_labels_are_config_errors(model):
    with pytest.raises(ConfigError, match="model_name: expected"):
        render_fleet(ServeConfig(), model_name=model, version="1", model_uri=URI)


@pytest.mark.parametrize("uri", ["https://bucket/m", "s3://", "/local/dir", "s3://Bad_Bucket/m"])
def test_model_uri_must_be_s3(uri):
    with pytest.raises(ConfigError, match="model_uri: expected s3://"):
        render_fleet(ServeConfig(), model_name=MODEL, version="1", model_uri=uri)


def test_s3_credentials_only_come_from_the_secret(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA-SENTINEL-ID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "sentinel-secret-value")
    cfg = ServeConfig(s3_secret="models-s3")
    objects = render_fleet(cfg, model_name=MODEL, version="1", model_uri=URI)
    text = to_yaml(objects)
    assert "SENTINEL" not in text and "sentinel-secret" not in text
    fetch = container(fleet(cfg)["worker/Deployment"], "fetch-model")
    env = {e["name"]: e for e in fetch["env"]}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        assert "value" not in env[key]
        assert env[key]["valueFrom"]["secretKeyRef"]["name"] == "models-s3"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["optional"] is False
    assert env["AWS_ENDPOINT_URL"]["valueFrom"]["secretKeyRef"]["optional"] is True  # absent on AWS itself
    for deployment in (o for o in objects if o["kind"] == "Deployment"):
        for c in all_containers(deployment):
            literal = {e["name"] for e in c.get("env", []) if "value" in e}
            assert not literal & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"}, c["name"]


def test_model_is_downloaded_into_a_volume_the_server_reads_only():
    deployment = fleet()["worker/Deployment"]
    fetch, server = container(deployment, "fetch-model"), container(deployment, "sglang")
    assert {"name": "MODEL_URI", "value": URI} in fetch["env"] and "aws s3 sync" in fetch["command"][-1]
    (fetch_mount,) = [m for m in fetch["volumeMounts"] if m["mountPath"] == "/models"]
    (server_mount,) = [m for m in server["volumeMounts"] if m["mountPath"] == "/models"]
    assert fetch_mount["name"] == server_mount["name"] and server_mount["readOnly"] is True and not fetch_mount.get("readOnly")
    volume = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == server_mount["name"])
    assert "sizeLimit" in volume["emptyDir"]


def test_images_are_pinned():
    deployments = [o for o in fleet().values() if o["kind"] == "Deployment"]
    assert deployments and all(all_containers(d) for d in deployments)
    for deployment in deployments:
        for c in all_containers(deployment):
            image = c["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), image


def test_gpu_scheduling_tolerates_gpu_taints_and_honours_gpu_type():
    spec = pod_spec(fleet(ServeConfig(gpu_type="NVIDIA-A100-SXM4-80GB"))["worker/Deployment"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}
    assert "nodeSelector" not in pod_spec(fleet()["worker/Deployment"])
    assert spec["terminationGracePeriodSeconds"] > int(container(fleet()["worker/Deployment"], "sglang")["lifecycle"]["preStop"]["exec"]["command"][-1])


@pytest.mark.parametrize(("policy", "expected"), [("cache_aware", "cache_aware"), ("round_robin", "round_robin"), ("member_hash", "manual")])
def test_router_policy(policy, expected):
    command = container(fleet(ServeConfig(router_policy=policy))["router/Deployment"], "router")["command"]
    assert flag(command, "--policy") == expected


def test_router_may_only_read_pods_in_its_namespace():
    objects = fleet(ServeConfig(namespace="ranking"))
    account = objects["router/ServiceAccount"]["metadata"]["name"]
    assert pod_spec(objects["router/Deployment"])["serviceAccountName"] == account
    assert pod_spec(objects["worker/Deployment"])["automountServiceAccountToken"] is False
    binding = objects["router/RoleBinding"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "ranking"}]
    assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] == objects["router/Role"]["metadata"]["name"]
    assert objects["router/Role"]["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]


def test_router_args_parse_with_the_router_cli():
    import sglang_router.router_args as router_args  # installed by `make test` (--no-deps)
    import argparse

    command = container(fleet(ServeConfig(router_policy="member_hash"))["router/Deployment"], "router")["command"]
    parser = argparse.ArgumentParser()
    router_args.RouterArgs.add_cli_args(parser, use_router_prefix=False)
    parsed = router_args.RouterArgs.from_cli_args(parser.parse_args(command[3:]), use_router_prefix=False)
    assert parsed.policy == "manual" and parsed.service_discovery and parsed.service_discovery_port == 30000
    assert parsed.selector == {"app.kubernetes.io/name": "sglang", "recslm/model": MODEL, "recslm/version": "1"}


def test_yaml_round_trips_and_the_checked_in_example_is_current(repo_root):
    objects = render_fleet(ServeConfig(replicas=2), model_name=MODEL, version="1", model_uri=URI)
    assert list(yaml.safe_load_all(to_yaml(objects))) == objects
    example = (repo_root / "infra" / "k8s" / "sglang-fleet.yaml").read_text()
    assert example.startswith("# Generated by recslm.serve.k8s.render_fleet")
    assert list(yaml.safe_load_all(example)) == objects, "regenerate infra/k8s/sglang-fleet.yaml (command in its header)"


@pytest.mark.parametrize("policy", ["cache_aware", "round_robin", "member_hash"])
def test_the_kubernetes_router_runs_the_local_fleets_router_with_the_same_routing(policy):
    """Both fleets start ``sglang_router.launch_router``; parsed by the router wheel's own
    parser, they route and health-check alike and differ only in how they learn the workers:
    the local fleet through its worker API, the cluster's by pod labels."""
    from sglang_router.launch_router import parse_router_args

    from recslm.serve.fleet import router_command as local_router_command

    cfg = ServeConfig(router_policy=policy)
    cluster_command = container(fleet(cfg)["router/Deployment"], "router")["command"]
    local_command = local_router_command(8000, policy, health_interval_s=5, health_failures=2, python="python")
    assert cluster_command[:3] == local_command[:3] == ["python", "-m", "sglang_router.launch_router"]
    cluster, local = vars(parse_router_args(cluster_command[3:])), vars(parse_router_args(local_command[3:]))
    how_workers_are_found = {"service_discovery", "selector", "service_discovery_port", "service_discovery_namespace", "host", "worker_urls"}
    ports_and_timeouts = {"port", "prometheus_port", "prometheus_host", "worker_startup_timeout_secs"}
    differs = {key for key in cluster.keys() | local.keys() if cluster.get(key) != local.get(key)}
    assert differs <= how_workers_are_found | ports_and_timeouts, differs - how_workers_are_found - ports_and_timeouts
    assert cluster["service_discovery"] and not local["service_discovery"] and local["worker_urls"] == []
    assert cluster["health_check_interval_secs"] == 5 and cluster["health_failure_threshold"] == 2  # not the router's 60 s x 3
    assert cluster["policy"] == {"member_hash": "manual"}.get(policy, policy)
