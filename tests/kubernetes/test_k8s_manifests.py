"""Every Kubernetes object the cluster targets declare validates against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: no unknown field) for each version the README names; the scale-to-zero rule
is data, and KEDA's ScaledObject is written from it."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from gpuprov.infra.clouds.kubernetes import workloads as wl
from gpuprov.infra.config import KUBERNETES_VERSIONS, build_config
from gpuprov.infra.plan import plan

BASE: dict[str, Any] = {"monai_label_image": "ghcr.io/example/ohif-ai-monai-label:1.0", "allowed_cidrs": ["203.0.113.0/24"]}
CASES: dict[str, dict[str, Any]] = {
    "kubernetes": {"cloud": "kubernetes", "kubernetes": {"gpu": "A10G", "storage_class": "fast"}},
    "kubernetes-open": {"cloud": "kubernetes", "open_ports": [3000, 8002], "kubernetes": {"namespace": "radiology"}},
    "eks": {"cloud": "eks", "kubernetes": {"max_replicas": 4, "version": "1.32"}},
    "gke": {"cloud": "gke", "open_ports": [3000], "kubernetes": {"min_replicas": 1, "max_replicas": 2}},
}
NOT_CORE = ("kubernetes:helm.sh/", "pulumi:providers:", "kubernetes:keda.sh/")  # a Helm release; KEDA's CRD


def declared(case: str) -> list[dict[str, Any]]:
    """The Kubernetes objects the program declares for ``case``, as the engine would send them."""
    config = build_config({"stack": f"k8s-{case}", **BASE, **CASES[case]})
    resources = plan(config)["resources"]
    return [r["inputs"] for r in resources if r["type"].startswith("kubernetes:") and not r["type"].startswith(NOT_CORE)]


@pytest.mark.parametrize("case", list(CASES))
def test_every_declared_object_validates_for_every_named_version(case):
    objects = declared(case)
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "Deployment", "Service", "PersistentVolumeClaim", "NetworkPolicy", "Secret"} <= kinds
    for obj in objects:
        if obj["kind"] == "Secret":  # the plan hides its values: validate the manifest the program starts from
            (obj,) = [m for m in wl.manifests(build_config({"stack": "s", **BASE, **CASES[case]}), {}, SETTINGS)
                      if m["kind"] == "Secret"]
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(obj, f"{version}.0", strict=True)


SETTINGS = {"VLLM_DTYPE": "bfloat16", "MAX_MODEL_LEN": "8192", "LIMIT_MM_PER_PROMPT": "{}", "MM_PROCESSOR_KWARGS": "{}",
            "GPU_MEMORY_UTILIZATION": "0.9"}


def test_a_broken_manifest_is_caught_by_the_same_check():
    """The check above can fail: a Deployment with a misspelt field or a string replica count is refused."""
    config = build_config({"stack": "s", **BASE, "cloud": "kubernetes"})
    deployment = next(m for m in wl.manifests(config, {}, SETTINGS) if m["kind"] == "Deployment")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "spec": {**deployment["spec"], "replica": 1}}, "1.33.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "spec": {**deployment["spec"], "replicas": "one"}}, "1.33.0")


@pytest.mark.parametrize(("keys", "expected"), [
    ({}, (0, 1, 1800, True)),
    ({"idle_minutes": 5, "kubernetes": {"max_replicas": 6}}, (0, 6, 300, True)),
    ({"idle_minutes": 60, "kubernetes": {"min_replicas": 1, "max_replicas": 2}}, (1, 2, 3600, False)),
])
def test_the_scale_to_zero_rule_as_data(keys, expected):
    config = build_config({"stack": "s", "cloud": "kubernetes", "apps": ["vllm_cxr"], **keys})
    rule = wl.scale_rule(config)
    assert (rule.min_replicas, rule.max_replicas, rule.idle_s, rule.scales_to_zero) == expected
    assert rule.metric == "vllm:num_requests_waiting" and 'namespace="gpuprov-s"' in rule.query
    scaled = wl.scaled_object(config, {})
    assert scaled["spec"]["minReplicaCount"] == rule.min_replicas
    assert scaled["spec"]["maxReplicaCount"] == rule.max_replicas
    assert scaled["spec"]["cooldownPeriod"] == rule.idle_s  # KEDA scales to the minimum after idle_minutes
    queue, activity = scaled["spec"]["triggers"]
    assert queue["type"] == "prometheus" and queue["metadata"]["query"] == rule.query
    assert queue["metadata"]["threshold"] == str(rule.threshold)
    # one request running and none waiting is use, not idleness: the activity trigger sees it
    assert activity["metadata"]["query"] == rule.activity_query
    assert "vllm:num_requests_running" in rule.activity_query and "vllm:num_requests_waiting" in rule.activity_query
    assert int(activity["metadata"]["threshold"]) > rule.max_replicas  # it holds a replica up, adds none
    deployment = next(m for m in wl.manifests(config, {}, SETTINGS) if m["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == rule.min_replicas  # the first up starts at the idle count
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                "name": deployment["metadata"]["name"]}


def test_vllm_gets_one_gpu_its_key_from_the_secret_and_a_startup_probe_on_health():
    (deployment,) = [r for r in declared("eks") if r["kind"] == "Deployment" and r["metadata"]["name"] == "vllm"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": 8000}
    assert {"name": "VLLM_API_KEY", "valueFrom": {"secretKeyRef": {"name": "gpuprov-secrets", "key": "VLLM_API_KEY"}}} \
        in container["env"]
    assert not any("sk-" in str(v) for v in container["args"])  # the key is never a flag
    args = container["args"]
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.9"  # A10G of its own (sizing.py)
    assert {"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}} in \
        deployment["spec"]["template"]["spec"]["volumes"]


def test_the_kubernetes_block_survives_pulumi_config():
    """``up`` through the Automation API hands the config over as Pulumi config text: the block is JSON there."""
    import json

    from gpuprov.infra.stacks import pulumi_config_values

    config = build_config({"stack": "s", "cloud": "kubernetes", "apps": ["vllm_cxr"],
                           "kubernetes": {"kubeconfig": "/k/config", "context": "team@prod", "max_replicas": 3}})
    text, secret = pulumi_config_values(config)["gpuprov:kubernetes"]
    assert not secret
    again = build_config({"stack": "s", "cloud": "kubernetes", "apps": ["vllm_cxr"], "kubernetes": json.loads(text)})
    assert again.kubernetes == config.kubernetes


@pytest.mark.parametrize(("budget", "hours", "exceeds"), [(None, None, False), (100.0, 25.0, False), (10.0, 2.5, True)])
def test_the_budget_rule_as_data(budget, hours, exceeds):
    """At $4/h at the maximum for 12 h, the worst case is $48: a $10 budget is gone in 2.5 h and plan says so."""
    from gpuprov.infra.clouds.kubernetes.prices import BudgetRule

    rule = BudgetRule(usd_hour_at_min=0.5, usd_hour_at_max=4.0, budget_usd=budget, max_lifetime_hours=12)
    assert rule.worst_case_usd == 48.0
    assert rule.hours_at_max == hours and rule.exceeds_budget is exceeds
    assert "not enforced here" in rule.warning()
    assert ("lower kubernetes.max_replicas" in rule.warning()) is exceeds
