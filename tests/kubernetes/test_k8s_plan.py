"""``gpuprov plan`` for the cluster targets: every resource, every exposure (nothing public by default), the
node pools at min and max, no secret in the output; run as a user would, with no credentials and no network."""

from __future__ import annotations

import json

import pytest

from gpuprov.cost import catalog
from gpuprov.infra.clouds.kubernetes.prices import CONTROL_PLANE, SYSTEM_POOL

IMAGE = "monai_label_image: ghcr.io/example/ohif-ai-monai-label:1.0\n"
CONFIGS = {
    "kubernetes": "cloud: kubernetes\nkubernetes: {gpu: L4, max_replicas: 2}\n" + IMAGE,
    "eks": "cloud: eks\nallowed_cidrs: [203.0.113.7/32]\nkubernetes: {max_replicas: 3}\n" + IMAGE,
    "gke": "cloud: gke\nallowed_cidrs: [203.0.113.7/32]\nkubernetes: {max_replicas: 3}\n" + IMAGE,
}
WORKLOADS = {"kubernetes:apps/v1:Deployment": 3, "kubernetes:core/v1:Service": 3,
             "kubernetes:core/v1:PersistentVolumeClaim": 3, "kubernetes:keda.sh/v1alpha1:ScaledObject": 1,
             "kubernetes:core/v1:Secret": 1, "kubernetes:core/v1:Namespace": 1,
             "kubernetes:networking.k8s.io/v1:NetworkPolicy": 2}
CLUSTER = {"kubernetes": {}, "eks": {"eks:index:Cluster": 1, "eks:index:ManagedNodeGroup": 2},
           "gke": {"gcp:container/cluster:Cluster": 1, "gcp:container/nodePool:NodePool": 2}}


def plan(cloud: str, cli, extra: str = "") -> dict:
    result = cli("plan", "--json", "--stack", f"k8s-{cloud}", config=CONFIGS[cloud] + extra, offline=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("cloud", ["kubernetes", "eks", "gke"])
def test_plan_lists_the_cluster_the_workloads_and_no_public_exposure(cloud, gpuprov_cli):
    found = plan(cloud, gpuprov_cli)
    types = [r["type"] for r in found["resources"]]
    for kind, count in {**WORKLOADS, **CLUSTER[cloud]}.items():
        assert types.count(kind) == count, kind
    exposure = {e["service"]: e for e in found["exposure"]}
    assert {e["port"] for e in found["exposure"]} == {443, 8000, 3000, 8002}
    for service in ("vllm", "open-webui", "monai-label"):  # nothing reachable from outside by default
        assert exposure[service]["from"] == [] and "port-forward" in exposure[service]["via"]
    assert "from namespace monitoring and pods open-webui" in exposure["vllm"]["via"]
    if cloud != "kubernetes":  # the API endpoint admits the operator's range only
        assert exposure["kubernetes-api"]["from"] == ["203.0.113.7/32"]
    services = [r for r in found["resources"] if r["type"] == "kubernetes:core/v1:Service"]
    assert {r["inputs"]["spec"]["type"] for r in services} == {"ClusterIP"}
    secret = next(r for r in found["resources"] if r["type"] == "kubernetes:core/v1:Secret")
    assert secret["inputs"]["stringData"] == "(secret)"  # no value of a secret is printed


def test_the_eks_plan_prices_each_pool_at_min_and_max(gpuprov_cli):
    found = plan("eks", gpuprov_cli)
    pools = {p["pool"]: p for p in found["node_pools"]}
    g5 = catalog.find_offer("aws", "g5.xlarge")
    assert g5 is not None
    # min_replicas 0: the GPU pool idles with the one GPU node MONAI Label keeps (its session is in-process)
    assert (pools["gpu"]["min_nodes"], pools["gpu"]["max_nodes"]) == (1, 4)
    assert pools["gpu"]["usd_hour_per_node"] == g5.usd_hour and pools["gpu"]["instance_type"] == "g5.xlarge"
    fixed = CONTROL_PLANE["eks"][0] + SYSTEM_POOL["eks"][1]
    assert found["cost"]["at_min"]["hourly_usd"] == round(fixed + g5.usd_hour, 4)
    assert found["cost"]["hourly_usd"] == round(fixed + 4 * g5.usd_hour, 4)
    assert "budget_usd are not enforced here" in found["idle_protection"]  # plan says what does not protect it
    group = next(r for r in found["resources"] if r["name"].endswith("-gpu"))
    assert group["inputs"]["amiType"] == "AL2023_x86_64_NVIDIA"
    assert group["inputs"]["scalingConfig"] == {"minSize": 1, "desiredSize": 1, "maxSize": 4}


def test_without_monai_label_the_gpu_pool_scales_to_zero(gpuprov_cli):
    found = gpuprov_cli("plan", "--json", "--stack", "k8s-gke0", offline=True,
                        config="cloud: gke\napps: [vllm_cxr]\nallowed_cidrs: [203.0.113.7/32]\n")
    assert found.returncode == 0, found.stderr
    result = json.loads(found.stdout)
    gpu = next(p for p in result["node_pools"] if p["pool"] == "gpu")
    assert (gpu["min_nodes"], gpu["usd_hour_at_min"]) == (0, 0)
    pool = next(r for r in result["resources"] if r["type"] == "gcp:container/nodePool:NodePool"
                and r["name"].endswith("-gpu"))
    assert pool["inputs"]["autoscaling"] == {"minNodeCount": 0, "maxNodeCount": 1}
    assert pool["inputs"]["nodeConfig"]["guestAccelerators"][0]["type"] == "nvidia-l4"


def test_an_opened_port_is_a_load_balancer_limited_to_allowed_cidrs(gpuprov_cli):
    found = plan("eks", gpuprov_cli, extra="open_ports: [3000]\n")
    webui = next(e for e in found["exposure"] if e["service"] == "open-webui")
    assert webui["from"] == ["203.0.113.7/32"] and webui["via"].startswith("LoadBalancer")
    policy = next(r for r in found["resources"] if r["name"].endswith("open-webui-from-allowed-cidrs"))
    assert policy["inputs"]["spec"]["ingress"][0]["from"] == [{"ipBlock": {"cidr": "203.0.113.7/32"}}]


@pytest.mark.parametrize(("config", "key"), [
    ("cloud: eks\napps: [vllm_cxr]\n", "allowed_cidrs"),  # the API endpoint would admit nobody we know
    ("cloud: gke\napps: [vllm_cxr]\nallowed_cidrs: [0.0.0.0/0]\n", "allowed_cidrs"),  # public needs allow_public
    ("cloud: kubernetes\n", "monai_label_image"),  # no host to build it on (refused at plan and up, not at down)
    ("cloud: kubernetes\napps: [vllm_cxr]\nallowed_cidrs: [203.0.113.7/32]\nopen_ports: [8000]\n", "open_ports"),
    ("cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {min_replicas: 3, max_replicas: 2}\n", "kubernetes.min_replicas"),
    ("cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {namespace: Bad_NS}\n", "kubernetes.namespace"),
    ("cloud: kubernetes\napps: [vllm_cxr]\nkubernetes: {replicas: 2}\n", "kubernetes.replicas"),
    ("cloud: aws\nkubernetes: {max_replicas: 2}\n", "kubernetes"),
])
def test_a_cluster_config_gpuprov_cannot_use_is_refused_naming_the_key(config, key, gpuprov_cli):
    result = gpuprov_cli("plan", "--json", config=config, offline=True)
    assert result.returncode == 2, result.stdout
    assert f"config key '{key}'" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("host", "cluster"), [("aws", "eks"), ("gcp", "gke")])
def test_one_host_to_a_cluster_is_one_config_change(host, cluster, gpuprov_cli):
    """The README's claim: the same file, with only ``cloud:`` changed, plans a host and then a cluster."""
    rest = "allowed_cidrs: [203.0.113.7/32]\nmonai_label_image: ghcr.io/you/ohif-ai-monai-label:179fe0d\n"
    one = gpuprov_cli("plan", "--json", "--stack", "k8s-move", config=f"cloud: {host}\n{rest}", offline=True)
    assert one.returncode == 0, one.stderr
    assert "node_pools" not in json.loads(one.stdout)
    many = gpuprov_cli("plan", "--json", "--stack", "k8s-move", config=f"cloud: {cluster}\n{rest}", offline=True)
    assert many.returncode == 0, many.stderr
    found = json.loads(many.stdout)
    assert {p["pool"] for p in found["node_pools"]} == {"control-plane", "system", "gpu"}
    assert all(e["from"] in ([], ["203.0.113.7/32"]) for e in found["exposure"])


def test_cost_shows_the_clusters_pools_and_its_node_type_as_the_configured_offer(gpuprov_cli):
    result = gpuprov_cli("cost", "--offline", "--json", config=CONFIGS["eks"])
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert (found["configured"]["cloud"], found["configured"]["type"]) == ("aws", "g5.xlarge")
    gpu = next(p for p in found["node_pools"] if p["pool"] == "gpu")
    assert (gpu["min_nodes"], gpu["max_nodes"]) == (1, 4)
