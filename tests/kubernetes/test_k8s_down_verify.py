"""What ``down`` verifies is gone on a cluster: gpuprov-labelled namespaces, PVCs, LoadBalancer Services and nodes,
asked of the Kubernetes API (the stand-in, gpuprov/testing/kube_api.py, not a cluster); on EKS, while AWS
(moto in server mode) still lists the stack's cluster, what the cluster's API lists of the stack too."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from gpuprov.testing.kube_api import ready_cluster, serve, write_kubeconfig

STACK = "k8s-downv"
LABELS = {"gpuprov-managed": "true", "gpuprov-stack": STACK}


@pytest.fixture
def cluster(tmp_path: Path):
    state = tmp_path / "cluster.json"
    state.write_text(json.dumps(ready_cluster()))
    with serve(state) as url:
        yield state, write_kubeconfig(tmp_path / "kubeconfig", url)




def leftovers() -> dict:
    return ready_cluster() | {
        "nodes": [*ready_cluster()["nodes"], {"metadata": {"name": "gpu-pool-node-1", "labels": {
            **LABELS, "gpuprov-pool": "gpu"}}, "status": {"allocatable": {"nvidia.com/gpu": "1"}}}],
        "pvcs": [{"metadata": {"name": "model-cache", "namespace": f"gpuprov-{STACK}", "labels": LABELS},
                  "spec": {"accessModes": ["ReadWriteOnce"]}, "status": {"phase": "Bound"}}]}


def test_down_on_a_cluster_fails_while_a_labelled_node_or_pvc_remains(cluster, gpuprov_cli):
    state, kubeconfig = cluster
    env = {"GPUPROV_PULUMI": "mock", "KUBECONFIG": str(kubeconfig), "GPUPROV_VERIFY_TIMEOUT_S": "1"}
    cfg = "cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {gpu: L4}\n"
    assert gpuprov_cli("up", "--stack", STACK, config=cfg, env=env).returncode == 0
    state.write_text(json.dumps(leftovers()))
    refused = gpuprov_cli("down", "--stack", STACK, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "kubernetes node gpu-pool-node-1" in refused.stderr
    assert f"kubernetes pvc gpuprov-{STACK}/model-cache" in refused.stderr and "Traceback" not in refused.stderr
    state.write_text(json.dumps(ready_cluster()))
    down = gpuprov_cli("down", "--stack", STACK, env=env)
    assert down.returncode == 0, down.stdout + down.stderr


def eks_env(moto_url: str) -> dict[str, str]:
    return {"GPUPROV_PULUMI": "mock", "AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1", "GPUPROV_VERIFY_TIMEOUT_S": "1"}


def eks_config(kubeconfig: Path) -> str:
    return f"cloud: eks\napps: [vllm_cxr]\nallowed_cidrs: [203.0.113.7/32]\nkubernetes: {{kubeconfig: {kubeconfig}}}\n"


def test_eks_down_lists_what_bills_inside_a_cluster_aws_still_lists(cluster, moto_url, gpuprov_cli, monkeypatch):
    state, kubeconfig = cluster
    env, cfg = eks_env(moto_url), eks_config(kubeconfig)
    assert gpuprov_cli("up", "--stack", STACK, config=cfg, env=env).returncode == 0
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    eks = boto3.client("eks", region_name="us-east-1", endpoint_url=moto_url)
    # a cluster of the same name that is not the caller's (another owner's reference): down does not remove it
    eks.create_cluster(name=f"gpuprov-{STACK}", roleArn="arn:aws:iam::123456789012:role/x",
                       resourcesVpcConfig={"subnetIds": ["subnet-1"]},
                       tags={"gpuprov-managed": "true", "gpuprov-stack": STACK, "gpuprov-owner": "someone-0123456789ab"})
    state.write_text(json.dumps(leftovers()))
    refused = gpuprov_cli("down", "--stack", STACK, config=cfg, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert f"eks cluster gpuprov-{STACK}" in refused.stderr
    assert f"kubernetes pvc gpuprov-{STACK}/model-cache" in refused.stderr  # what bills inside it, too
    assert "kubernetes node gpu-pool-node-1" in refused.stderr
    assert f"gpuprov-{STACK}" in eks.list_clusters()["clusters"]


def test_eks_down_removes_its_own_cluster_no_state_recorded_and_verifies(cluster, moto_url, gpuprov_cli, monkeypatch):
    state, kubeconfig = cluster
    env, cfg = eks_env(moto_url), eks_config(kubeconfig)
    assert gpuprov_cli("up", "--stack", STACK, config=cfg, env=env).returncode == 0
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    eks = boto3.client("eks", region_name="us-east-1", endpoint_url=moto_url)
    name = f"gpuprov-{STACK}"
    eks.create_cluster(name=name, roleArn="arn:aws:iam::123456789012:role/x", resourcesVpcConfig={"subnetIds": ["s-1"]})
    eks.create_nodegroup(clusterName=name, nodegroupName="gpu", nodeRole="arn:aws:iam::123456789012:role/x",
                         subnets=["s-1"])
    state.write_text(json.dumps(leftovers()))  # inside it: a node and a claim, which go with the cluster
    down = gpuprov_cli("down", "--stack", STACK, config=cfg, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"eks: deleting node group {name}/gpu" in down.stderr and f"eks: deleting cluster {name}" in down.stderr
    assert eks.list_clusters()["clusters"] == []
