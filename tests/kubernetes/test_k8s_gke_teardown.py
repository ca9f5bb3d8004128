"""A GKE stack under Pulumi's mock runtime: ``up`` declares it, ``down`` asks GCP (the Compute and GKE stand-ins
in gpuprov/testing, through google-cloud-compute and google-cloud-container) for what bills after the cluster:
the cluster itself, its node VMs, the disks the PD CSI driver made for the stack's claims and the forwarding
rules and target pools its LoadBalancer Services made. It fails while one remains, removes its own cluster
that no state recorded, and never another owner's."""

from __future__ import annotations

import json
import time

from gpuprov.infra.owner import owner_label

STACK, PROJECT, ZONE, REGION = "k8s-gke2", "gke-test", "us-central1-a", "us-central1"
NAMESPACE = f"gpuprov-{STACK}"
CONFIG = "cloud: gke\napps: [vllm_cxr]\nallowed_cidrs: [203.0.113.7/32]\n"
ME = "kubeops@down-test"


def claim(namespace: str, name: str) -> str:
    """A disk's description as the PD CSI driver writes it for a claim (pkg/common/parameters.go's tag keys)."""
    return json.dumps({"kubernetes.io/created-for/pv/name": f"pvc-{name}", "kubernetes.io/created-for/pvc/name": name,
                       "kubernetes.io/created-for/pvc/namespace": namespace,
                       "storage.gke.io/created-by": "pd.csi.storage.gke.io"})


def stack_labels(owner: str) -> dict[str, str]:
    now = int(time.time())
    return {"gpuprov-managed": "true", "gpuprov-stack": STACK, "gpuprov-owner": owner_label(owner),
            "gpuprov-origin": "stack", "gpuprov-created-at": str(now), "gpuprov-expires-at": str(now + 3600)}


def up(gpuprov_cli, env: dict[str, str]) -> None:
    result = gpuprov_cli("up", "--stack", STACK, config=CONFIG, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"gke workloads applied in namespace {NAMESPACE}" in result.stdout


def test_gke_down_fails_while_a_claims_disk_or_a_services_load_balancer_remains(gcp_apis, gpuprov_cli):
    compute, _gke, env = gcp_apis
    env = {**env, "GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_TIMEOUT_S": "1", "GPUPROV_OWNER": ME}
    up(gpuprov_cli, env)
    compute.add_disk(PROJECT, ZONE, "pvc-0a1b2c3d", 100, description=claim(NAMESPACE, "model-cache"))
    compute.add_service_balancer(PROJECT, REGION, "a0b1c2d3e4f5", f"{NAMESPACE}/open-webui")
    # another stack's claim and Service (a namespace whose name starts with this one's), and a disk of no claim
    compute.add_disk(PROJECT, ZONE, "pvc-other", description=claim(f"{NAMESPACE}-b", "model-cache"))
    compute.add_service_balancer(PROJECT, REGION, "f5e4d3c2b1a0", f"{NAMESPACE}-b/open-webui")
    compute.add_disk(PROJECT, ZONE, "scratch", description="a disk of someone's")

    refused = gpuprov_cli("down", "--stack", STACK, config=CONFIG, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert "Traceback" not in refused.stderr
    assert f"gke disk pvc-0a1b2c3d 'model-cache' in {ZONE}" in refused.stderr
    assert f"gke forwarding-rule a0b1c2d3e4f5 '{NAMESPACE}/open-webui' in {REGION}" in refused.stderr
    assert f"gke target-pool a0b1c2d3e4f5 '{NAMESPACE}/open-webui' in {REGION}" in refused.stderr
    assert "pvc-other" not in refused.stderr and "f5e4d3c2b1a0" not in refused.stderr and "scratch" not in refused.stderr
    assert (ZONE, "pvc-0a1b2c3d") in compute.disks  # a claim's data is never deleted by tag

    del compute.disks[(ZONE, "pvc-0a1b2c3d")]
    del compute.forwarding_rules[(REGION, "a0b1c2d3e4f5")], compute.target_pools[(REGION, "a0b1c2d3e4f5")]
    down = gpuprov_cli("down", "--stack", STACK, config=CONFIG, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"verified: the gke API lists nothing left of stack '{STACK}'" in down.stdout + down.stderr


def test_gke_down_reports_another_owners_cluster_of_the_stacks_name_and_leaves_it(gcp_apis, gpuprov_cli):
    compute, gke, env = gcp_apis
    env = {**env, "GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_TIMEOUT_S": "1", "GPUPROV_OWNER": ME}
    up(gpuprov_cli, env)
    theirs = stack_labels("colleague@elsewhere")
    gke.add_cluster(PROJECT, ZONE, f"gpuprov-{STACK}-gke-9f8e7d6", theirs, {"gpu": {"resourceLabels": theirs}})

    refused = gpuprov_cli("down", "--stack", STACK, config=CONFIG, env=env)
    assert refused.returncode == 5, refused.stdout + refused.stderr
    assert f"gke cluster gpuprov-{STACK}-gke-9f8e7d6 in {ZONE} (running)" in refused.stderr
    assert f"gke instance gke-gpuprov-{STACK}-gke-9f8e7d6-gpu-1a2b3c4d-x0x0" in refused.stderr
    assert (ZONE, f"gpuprov-{STACK}-gke-9f8e7d6") in gke.clusters and len(compute.instances) == 1
    assert not [m for m, _p in gke.requests if m == "DELETE"]


def test_gke_down_removes_its_own_cluster_no_state_recorded_with_its_nodes_and_verifies(gcp_apis, gpuprov_cli):
    compute, gke, env = gcp_apis
    env = {**env, "GPUPROV_PULUMI": "mock", "GPUPROV_VERIFY_TIMEOUT_S": "1", "GPUPROV_OWNER": ME}
    up(gpuprov_cli, env)
    mine, name = stack_labels(ME), f"gpuprov-{STACK}-gke-0c1d2e3"
    gke.add_cluster(PROJECT, ZONE, name, mine, {"gpu": {"resourceLabels": mine}, "system": {"resourceLabels": mine}})

    down = gpuprov_cli("down", "--stack", STACK, config=CONFIG, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"gke: deleting cluster {name} in {ZONE}" in down.stderr
    assert gke.clusters == {} and compute.instances == {}  # the node VMs went with the cluster, none deleted alone
    assert [p for m, p in gke.requests if m == "DELETE"] == [f"/v1/projects/{PROJECT}/locations/{ZONE}/clusters/{name}"]
    assert not [p for m, p in compute.requests if m == "DELETE"]
