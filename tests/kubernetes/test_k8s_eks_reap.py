"""``gpuprov reap`` on EKS: an expired gpuprov cluster goes with its managed node groups (groups first: EKS
refuses a cluster that has any), a colleague's live one stays; AWS's API is moto in server mode on loopback
(the EKS and EC2 contract, not AWS: moto deletes at once where AWS takes minutes)."""

from __future__ import annotations

import json
import time

import boto3

from gpuprov.infra.owner import owner_label

ROLE = "arn:aws:iam::123456789012:role/gpuprov-test"
ME, COLLEAGUE = "kubeops@reaper-test", "colleague@elsewhere"




def tags(stack: str, owner: str, expires_in_s: int) -> dict[str, str]:
    now = int(time.time())
    return {"gpuprov-managed": "true", "gpuprov-stack": stack, "gpuprov-owner": owner_label(owner),
            "gpuprov-origin": "ci", "gpuprov-created-at": str(now - 7200), "gpuprov-expires-at": str(now + expires_in_s)}


def cluster(eks, stack: str, owner: str, expires_in_s: int, groups: tuple[str, ...] = ("gpu", "system")) -> str:
    name = f"gpuprov-{stack}"
    t = tags(stack, owner, expires_in_s)
    eks.create_cluster(name=name, roleArn=ROLE, resourcesVpcConfig={"subnetIds": ["subnet-1"]}, tags=t)
    for g in groups:
        eks.create_nodegroup(clusterName=name, nodegroupName=g, nodeRole=ROLE, subnets=["subnet-1"], tags=t)
    return name


def test_reap_removes_an_expired_eks_cluster_with_its_node_groups_and_keeps_a_live_one(moto_url, gpuprov_cli,
                                                                                        monkeypatch):
    env = {"AWS_ENDPOINT_URL": moto_url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "GPUPROV_OWNER": ME}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    eks = boto3.client("eks", region_name="us-east-1", endpoint_url=moto_url)
    old = cluster(eks, "eks-old", COLLEAGUE, -3600)
    live = cluster(eks, "eks-live", COLLEAGUE, 3600)
    eks.create_cluster(name="not-gpuprovs", roleArn=ROLE, resourcesVpcConfig={"subnetIds": ["subnet-1"]})

    preview = gpuprov_cli("reap", "--cloud", "eks", "--dry-run", "--json", env=env)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    found = {(f["kind"], f["id"], f["reason"]) for f in json.loads(preview.stdout)["found"]}
    assert found == {("cluster", old, "expired"), ("nodegroup", f"{old}/gpu", "expired"),
                     ("nodegroup", f"{old}/system", "expired")}
    assert sorted(eks.list_clusters()["clusters"]) == sorted([old, live, "not-gpuprovs"])  # a preview removes nothing

    result = gpuprov_cli("reap", "--cloud", "eks", "--json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert {f["id"] for f in report["removed"]} == {old, f"{old}/gpu", f"{old}/system"} and report["remaining"] == []
    assert sorted(eks.list_clusters()["clusters"]) == sorted([live, "not-gpuprovs"])
    assert sorted(eks.list_nodegroups(clusterName=live)["nodegroups"]) == ["gpu", "system"]
