"""An existing cluster: the preflight's rules as data, and ``up`` / ``down`` end to end under Pulumi's mock
runtime, the ``kubernetes`` client asking a stand-in Kubernetes API (gpuprov/testing/kube_api.py), not a cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpuprov.infra.clouds.kubernetes.cluster import KEDA_CRD, ClusterFacts, missing
from gpuprov.infra.config import build_config
from gpuprov.testing.kube_api import ready_cluster, serve, write_kubeconfig

READY = ClusterFacts(gpu_nodes=["gpu-1"], nodes=2, plugins=["kube-system/nvidia-device-plugin-daemonset"],
                     storage_classes={"gp3": True}, crds=[KEDA_CRD])


def config(**kube):
    return build_config({"cloud": "kubernetes", "apps": ["vllm_cxr"], "kubernetes": kube})


@pytest.mark.parametrize(("facts", "kube", "says"), [
    (READY, {}, []),
    # a pool at zero: no GPU node now, but the device plugin is there to advertise the next one
    (ClusterFacts(nodes=1, plugins=["gpu-operator/nvidia-device-plugin-daemonset"], storage_classes={"gp3": True},
                  crds=[KEDA_CRD]), {}, []),
    (ClusterFacts(nodes=3, storage_classes={"gp3": True}, crds=[KEDA_CRD]), {}, ["GPU nodes (nvidia.com/gpu allocatable on none of its 3 nodes"]),
    (ClusterFacts(gpu_nodes=["g"], nodes=1, storage_classes={"gp3": False}, crds=[KEDA_CRD]), {}, ["a default StorageClass (it has: gp3)"]),
    (READY, {"storage_class": "fast"}, ["the StorageClass fast (it has: gp3)"]),
    (ClusterFacts(gpu_nodes=["g"], nodes=1, storage_classes={"gp3": True}), {}, ["KEDA (no scaledobjects.keda.sh CRD)"]),
])
def test_what_the_preflight_says_is_missing(facts, kube, says):
    found = missing(facts, config(**kube))
    assert len(found) == len(says)
    for line, start in zip(found, says, strict=True):
        assert line.startswith(start)


@pytest.fixture
def cluster(tmp_path: Path):
    """A stand-in API serving a cluster that has what gpuprov needs; rewrite the state file to change it."""
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps(ready_cluster()))
    with serve(state) as url:
        yield state, write_kubeconfig(tmp_path / "kubeconfig", url)


STACK = "k8s-e2e"


def cli_env(kubeconfig: Path) -> dict[str, str]:
    return {"GPUPROV_PULUMI": "mock", "KUBECONFIG": str(kubeconfig), "GPUPROV_VERIFY_TIMEOUT_S": "1"}


def test_up_refuses_a_cluster_without_gpus_before_anything_is_created(cluster, gpuprov_cli, tmp_path):
    state, kubeconfig = cluster
    bare = ready_cluster() | {"nodes": [], "daemonsets": [], "crds": []}
    state.write_text(json.dumps(bare))
    result = gpuprov_cli("up", "--stack", STACK, config="cloud: kubernetes\napps: [vllm_cxr]\n", env=cli_env(kubeconfig))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr  # one line says it all (after the progress)
    assert "the cluster lacks GPU nodes" in lines[0] and "KEDA" in lines[0] and "device plugin" in lines[0]
    assert not list((tmp_path / "gpuprov-home").rglob(f"{STACK}.json"))  # no stack state was written


def test_up_then_down_on_an_existing_cluster_under_mocks(cluster, gpuprov_cli):
    state, kubeconfig = cluster
    env = cli_env(kubeconfig)
    cfg = "cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {gpu: L4}\n"
    up = gpuprov_cli("up", "--stack", STACK, config=cfg, env=env)
    assert up.returncode == 0, up.stderr
    assert f"workloads applied in namespace gpuprov-{STACK}" in up.stdout
    assert f"kubectl port-forward -n gpuprov-{STACK} svc/open-webui 3000:3000" in up.stdout
    status = gpuprov_cli("status", "--json", env=env)
    (row,) = json.loads(status.stdout)["stacks"]
    assert (row["stack"], row["cloud"], row["state"], row["gpu"]) == (STACK, "kubernetes", "cluster", "L4")

    deploy = gpuprov_cli("deploy", "--stack", STACK, env=env)  # nothing to deploy over SSH: it says so
    assert deploy.returncode == 2, deploy.stdout + deploy.stderr
    assert "runs on a Kubernetes cluster" in deploy.stderr and "Traceback" not in deploy.stderr

    # down asks the cluster again: a gpuprov namespace of the stack that is still there fails it (exit 5)
    leftover = ready_cluster()
    leftover["namespaces"] = [{"metadata": {"name": f"gpuprov-{STACK}", "labels": {
        "gpuprov-managed": "true", "gpuprov-stack": STACK}}, "status": {"phase": "Active"}}]
    leftover["services"] = [{"metadata": {"name": "open-webui", "namespace": f"gpuprov-{STACK}", "labels": {
        "gpuprov-managed": "true", "gpuprov-stack": STACK}}, "spec": {"type": "LoadBalancer"}}]
    state.write_text(json.dumps(leftover))
    refused = gpuprov_cli("down", "--stack", STACK, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert f"kubernetes namespace gpuprov-{STACK}" in refused.stderr
    assert f"kubernetes load-balancer gpuprov-{STACK}/open-webui" in refused.stderr

    state.write_text(json.dumps(ready_cluster()))  # the namespace is gone: down verifies and forgets the stack
    down = gpuprov_cli("down", "--stack", STACK, env=env)
    assert down.returncode == 0, down.stderr
    assert f"{STACK}: kubernetes stack removed" in down.stdout
    assert json.loads(gpuprov_cli("status", "--json", env=env).stdout)["stacks"] == []
