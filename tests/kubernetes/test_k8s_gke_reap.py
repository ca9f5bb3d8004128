"""``gpuprov reap`` on GKE: an expired gpuprov cluster goes with its node pools (GKE deletes a cluster's pools and
their VMs with it), a pool whose own labels expired goes alone, a colleague's live cluster and a cluster that is not
gpuprov's stay; the GCP sweep leaves GKE's node VMs to their pool. The APIs are the stand-ins in gpuprov/testing
(Compute and GKE REST, on loopback, through google-cloud-compute and google-cloud-container), not Google's."""

from __future__ import annotations

import json
import time

from gpuprov.infra.owner import owner_label

PROJECT, ZONE = "gke-test", "us-central1-a"
ME, COLLEAGUE = "kubeops@reaper-test", "colleague@elsewhere"


def labels(stack: str, owner: str, expires_in_s: int) -> dict[str, str]:
    now = int(time.time())
    return {"gpuprov-managed": "true", "gpuprov-stack": stack, "gpuprov-owner": owner_label(owner),
            "gpuprov-origin": "stack", "gpuprov-created-at": str(now - 7200),
            "gpuprov-expires-at": str(now + expires_in_s)}


def cluster(gke, stack: str, owner: str, expires_in_s: int, gpu_expires_in_s: int | None = None) -> str:
    """A cluster as gpuprov's program makes it (gpuprov/infra/clouds/kubernetes/program.py ``_gke``): its labels
    on the cluster and on each pool's VMs, the pools' Kubernetes labels."""
    name, tags = f"gpuprov-{stack}-gke-1f2e3d4", labels(stack, owner, expires_in_s)
    gpu_tags = tags if gpu_expires_in_s is None else labels(stack, owner, gpu_expires_in_s)
    gke.add_cluster(PROJECT, ZONE, name, tags, {
        "gpu": {"labels": {"gpuprov-pool": "gpu", "gpuprov-managed": "true", "gpuprov-stack": stack},
                "resourceLabels": gpu_tags},
        "system": {"labels": {"gpuprov-pool": "system", "gpuprov-managed": "true", "gpuprov-stack": stack},
                   "resourceLabels": tags}})
    return name


def test_reap_gke_removes_an_expired_cluster_with_its_pools_and_an_expired_pool_alone(gcp_apis, gpuprov_cli):
    compute, gke, env = gcp_apis
    env = {**env, "GPUPROV_OWNER": ME}
    old = cluster(gke, "gke-old", COLLEAGUE, -3600)
    live = cluster(gke, "gke-live", COLLEAGUE, 3600, gpu_expires_in_s=-60)  # its GPU pool's own labels expired
    gke.add_cluster(PROJECT, ZONE, "not-gpuprovs", {"team": "data"}, {"default": {}})

    preview = gpuprov_cli("reap", "--cloud", "gke", "--dry-run", "--json", env=env)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    found = {(f["kind"], f["id"], f["reason"]) for f in json.loads(preview.stdout)["found"]}
    assert found == {("cluster", old, "expired"), ("node-pool", f"{old}/gpu", "expired"),
                     ("node-pool", f"{old}/system", "expired"), ("node-pool", f"{live}/gpu", "expired")}
    assert len(gke.clusters) == 3 and len(compute.instances) == 5  # a preview removes nothing

    result = gpuprov_cli("reap", "--cloud", "gke", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {f["id"] for f in report["removed"]} == {old, f"{old}/gpu", f"{old}/system", f"{live}/gpu"}
    assert report["remaining"] == [] and report["errors"] == []
    assert sorted(name for _loc, name in gke.clusters) == sorted([live, "not-gpuprovs"])
    assert [p["name"] for p in gke.clusters[(ZONE, live)]["nodePools"]] == ["system"]
    assert sorted(name for _zone, name in compute.instances) == [  # GKE took the pools' VMs with them
        f"gke-{live}-system-1a2b3c4d-x0x0", "gke-not-gpuprovs-default-1a2b3c4d-x0x0"]
    deletes = [p for m, p in gke.requests if m == "DELETE"]
    assert deletes == [f"/v1/projects/{PROJECT}/locations/{ZONE}/clusters/{live}/nodePools/gpu",
                       f"/v1/projects/{PROJECT}/locations/{ZONE}/clusters/{old}"]  # the old cluster's pools with it


def test_the_gcp_sweep_leaves_gke_node_vms_to_their_pool_and_nothing_is_reported_twice(gcp_apis, gpuprov_cli):
    compute, gke, env = gcp_apis
    env = {**env, "GPUPROV_OWNER": ME}
    old = cluster(gke, "gke-old2", COLLEAGUE, -3600)
    compute.add_instance(PROJECT, ZONE, "gpuprov-vm-old", labels("vm-old", COLLEAGUE, -3600))

    gcp = gpuprov_cli("reap", "--cloud", "gcp", "--json", env=env)
    assert gcp.returncode == 0, gcp.stdout + gcp.stderr
    assert [(f["cloud"], f["id"]) for f in json.loads(gcp.stdout)["removed"]] == [("gcp", "gpuprov-vm-old")]
    assert len(compute.instances) == 2  # the node VMs: deleting one alone, its pool would recreate it

    both = gpuprov_cli("reap", "--cloud", "gcp", "--cloud", "gke", "--dry-run", "--json", env=env)
    assert both.returncode == 0, both.stdout + both.stderr
    found = sorted((f["cloud"], f["kind"], f["id"]) for f in json.loads(both.stdout)["found"])
    assert found == [("gke", "cluster", old), ("gke", "node-pool", f"{old}/gpu"), ("gke", "node-pool", f"{old}/system")]


def test_reap_gke_says_in_one_line_when_the_gke_api_refuses(gcp_apis, gpuprov_cli):
    _compute, _gke, env = gcp_apis
    env = {**env, "GPUPROV_GKE_API_ENDPOINT": "http://127.0.0.1:9"}  # nothing answers there
    result = gpuprov_cli("reap", "--cloud", "gke", env=env)
    assert result.returncode == 5 and "Traceback" not in result.stderr, result.stdout + result.stderr
    assert ("gke: could not list resources: GCP: listing the GKE clusters of project gke-test failed (no answer from "
            "the API at 127.0.0.1:9: ConnectionError); check the network") in result.stderr
