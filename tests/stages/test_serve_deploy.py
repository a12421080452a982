"""Deploy and rollback: the decision logic against real local engine processes, and the
Kubernetes target's API calls against an in-memory API server."""

from __future__ import annotations

import pytest

from recslm.config import ServeConfig
from recslm.models.factory import save_model
from recslm.serve.deploy import DeployError, LocalTarget, deploy
from recslm.serve.k8s import router_name, worker_name
from recslm.serve.kube_target import ACTIVE_ANNOTATION, KubernetesTarget
from recslm.serve.release import offline_smoke_test
from tests.fake_kube import FakeKube
from tests.helpers import answers_health, tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("releases")
    for name, seed in (("a", 1), ("b", 2)):
        save_model(tiny_model(tokenizer, "llama", seed=seed), tokenizer, root / name)
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    return root


def smoke_for(model_dir, records, tokenizer):
    """The smoke test of ``model_dir``: its offline scores of 3 members."""
    return offline_smoke_test(model_dir, records, tokenizer, members=3)




def test_deploy_moves_traffic_only_after_checks_and_rolls_back_every_failure(models, records, tokenizer, tmp_path):
    target = LocalTarget(tmp_path / "fleet", cache_tokens=2_000, threads=1)
    smoke_a, smoke_b = smoke_for(models / "a", records, tokenizer), smoke_for(models / "b", records, tokenizer)
    try:
        first = deploy(target, "1", str(models / "a"), smoke_a, ready_timeout_s=120)
        assert first.previous is None and target.active().version == "1" and first.smoke_direct["max_abs_diff"] < 1e-4
        v1 = target.active()

        second = deploy(target, "2", str(models / "b"), smoke_b, ready_timeout_s=120)
        v2 = target.active()
        assert second.previous == "1" and v2.version == "2" and second.traffic_endpoint == v2.endpoint
        assert answers_health(v2.endpoint) and not answers_health(v1.endpoint)  # the old version was stopped after the switch

        # a version that cannot start: traffic never moves
        with pytest.raises(DeployError, match="(?s)version 3 failed before it got traffic .*exited while starting.*not a loadable.*2 keeps serving"):
            deploy(target, "3", str(models / "broken"), smoke_b, ready_timeout_s=120)
        assert target.active().version == "2" and answers_health(v2.endpoint)

        # a version that serves the wrong model: caught by the direct smoke test, stopped
        with pytest.raises(DeployError, match="scores differ from the offline scores"):
            deploy(target, "4", str(models / "a"), smoke_b, ready_timeout_s=120)
        assert target.active().version == "2" and set(target._state()["releases"]) == {"2"}

        # a failure only visible through the traffic endpoint: traffic goes back, the new one stops
        calls = []

        def flaky(endpoint):
            calls.append(endpoint)
            if len(calls) == 2:
                raise RuntimeError("router smoke failed")
            return smoke_a(endpoint)

        with pytest.raises(DeployError, match="(?s)version 5 failed its smoke test through .*traffic is back on 2"):
            deploy(target, "5", str(models / "a"), flaky, ready_timeout_s=120)
        assert target.active().version == "2" and answers_health(v2.endpoint) and not answers_health(calls[0])
        with pytest.raises(DeployError, match="already the active version"):
            deploy(target, "2", str(models / "b"), smoke_b)
    finally:
        for release in [target.active()] if target.active() else []:
            target.stop(release)
    assert target.active() is None


def test_kubernetes_target_applies_versions_switches_the_router_and_cleans_up():
    cfg = ServeConfig(target="kubernetes", replicas=2)
    api = FakeKube(never_ready={"3"})
    target = KubernetesTarget(cfg, "llama-64x2-pruned", api=api, poll_s=0.01)
    seen = []
    smoke = lambda endpoint: seen.append(endpoint) or {"ok": True}  # noqa: E731 - no cluster DNS here: record where it would go
    result = deploy(target, "1", "s3://models/llama/1/model/", smoke)
    assert result.previous is None and target.active().version == "1"
    assert seen == [f"http://{worker_name('llama-64x2-pruned', '1')}.recslm.svc:30000", f"http://{router_name('llama-64x2-pruned')}.recslm.svc:8000"]
    router = api.objects[("Deployment", router_name("llama-64x2-pruned"))]
    assert router["metadata"]["annotations"][ACTIVE_ANNOTATION] == "1" and "recslm/version=1" in " ".join(router["spec"]["template"]["spec"]["containers"][0]["command"])

    deploy(target, "2", "s3://models/llama/2/model/", smoke)
    assert target.active().version == "2"
    assert ("Deployment", worker_name("llama-64x2-pruned", "1")) not in api.objects  # the old version is gone
    assert target.status() == {
        "router": f"http://{router_name('llama-64x2-pruned')}.recslm.svc:8000", "policy": "cache_aware", "version": "2", "namespace": "recslm",
        "declared": 2, "healthy": 2, "degraded": False,
    }  # fmt: skip
    api.objects[("Deployment", worker_name("llama-64x2-pruned", "2"))]["status"]["availableReplicas"] = 1  # a replica lost
    assert target.status()["degraded"] and target.status()["healthy"] == 1
    # a version that never becomes ready: its objects are deleted, the router never moved
    api.calls.clear()
    with pytest.raises(DeployError, match="(?s)did not finish rolling out within 0.05 s.*2 keeps serving"):
        deploy(target, "3", "s3://models/llama/3/model/", smoke, ready_timeout_s=0.05)
    assert target.active().version == "2"
    assert ("apply", "Deployment", router_name("llama-64x2-pruned")) not in api.calls
    assert {c[1] for c in api.calls if c[0] == "delete"} == {"Deployment", "Service", "PodDisruptionBudget"}
