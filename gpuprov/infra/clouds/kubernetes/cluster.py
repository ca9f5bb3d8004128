"""Asking a cluster: what it has (the preflight) and what of gpuprov's it still holds (``down``, the reaper).

The ``kubernetes`` Python client is imported here only. :func:`cluster_facts` reads the client's objects
into plain data and :func:`missing` judges that data, so the rules are tested with data and the client
is exercised against an API server (a real one, or the stand-in in :mod:`gpuprov.testing.kube_api`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpuprov.infra.clouds.base import Leftover
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK

if TYPE_CHECKING:
    from gpuprov.infra.config import StackConfig

GPU = "nvidia.com/gpu"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
KEDA_CRD = "scaledobjects.keda.sh"
# DaemonSets that advertise nvidia.com/gpu: NVIDIA's device plugin (its chart, its static manifest, the GPU
# operator's) and GKE's own.
PLUGIN_NAMES = ("nvidia-device-plugin", "nvidia-gpu-device-plugin")
OPERATOR_NAMESPACE = "gpu-operator"


@dataclass
class ClusterFacts:
    """What the preflight needs to know of a cluster, as plain data."""

    gpu_nodes: list[str] = field(default_factory=list)  # nodes with nvidia.com/gpu allocatable > 0
    nodes: int = 0
    plugins: list[str] = field(default_factory=list)  # namespace/name of device-plugin DaemonSets
    storage_classes: dict[str, bool] = field(default_factory=dict)  # name -> is the default
    crds: list[str] = field(default_factory=list)


def _quantity(value: Any) -> int:
    try:
        return int(str(value or "0"))
    except ValueError:
        return 0


def facts_from(nodes: list[Any], daemonsets: list[Any], classes: list[Any], crds: list[Any]) -> ClusterFacts:
    """Read the ``kubernetes`` client's objects (V1Node, V1DaemonSet, V1StorageClass, V1CustomResourceDefinition)."""
    facts = ClusterFacts(nodes=len(nodes))
    for node in nodes:
        allocatable = (node.status.allocatable or {}) if node.status else {}
        if _quantity(allocatable.get(GPU)) > 0:
            facts.gpu_nodes.append(node.metadata.name)
    for ds in daemonsets:
        ns, name = ds.metadata.namespace, ds.metadata.name
        if ns == OPERATOR_NAMESPACE or any(p in name for p in PLUGIN_NAMES):
            facts.plugins.append(f"{ns}/{name}")
    for sc in classes:
        annotations = sc.metadata.annotations or {}
        facts.storage_classes[sc.metadata.name] = annotations.get(DEFAULT_CLASS) == "true"
    facts.crds = [c.metadata.name for c in crds]
    return facts


def missing(facts: ClusterFacts, config: StackConfig) -> list[str]:
    """What the cluster lacks for ``config``'s stack, each with what to do; [] when it has it all.

    A GPU pool that scales to zero has no GPU node while idle: a device plugin DaemonSet is then enough
    (nodes come when vLLM's pod asks for one)."""
    out = []
    if not facts.gpu_nodes and not facts.plugins:
        out.append(f"GPU nodes ({GPU} allocatable on none of its {facts.nodes} nodes, and no NVIDIA device plugin or "
                   "GPU operator DaemonSet): add a GPU node pool and install NVIDIA's device plugin or GPU operator")
    wanted = config.kubernetes.storage_class if config.kubernetes else None
    if wanted and wanted not in facts.storage_classes:
        out.append(f"the StorageClass {wanted} (it has: {', '.join(facts.storage_classes) or 'none'}): set "
                   "kubernetes.storage_class to one of its classes")
    if not wanted and not any(facts.storage_classes.values()):
        out.append(f"a default StorageClass (it has: {', '.join(facts.storage_classes) or 'none'}): set "
                   "kubernetes.storage_class to one of them, or mark one default")
    if KEDA_CRD not in facts.crds:
        out.append(f"KEDA (no {KEDA_CRD} CRD), which scales vLLM to zero: helm install keda kedacore/keda "
                   "--namespace keda --create-namespace")
    return out


# --- the client ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def boundary(what: str) -> Iterator[None]:
    """The client's errors, as one line: what failed and what to do."""
    from gpuprov.infra.clouds.kubernetes.driver import KubernetesError

    try:
        yield
    except KubernetesError:
        raise
    except Exception as err:  # the client raises ApiException, urllib3's errors, ConfigException, OSError
        status = getattr(err, "status", None)
        reason = getattr(err, "reason", None) or str(err).splitlines()[0] if str(err) else type(err).__name__
        detail = f"HTTP {status} {reason}" if status else reason
        raise KubernetesError(f"kubernetes: {what} failed ({detail}); check the kubeconfig, its context, and that "
                              "the cluster's API answers from here") from None


def api_client(kubeconfig: Path, context: str | None) -> Any:
    """An ApiClient for ``kubeconfig`` (and ``context``), or a one-line error."""
    from gpuprov.infra.clouds.kubernetes.driver import KubernetesError

    if not kubeconfig.is_file():
        raise KubernetesError(f"kubernetes: no kubeconfig at {kubeconfig}; set kubernetes.kubeconfig or KUBECONFIG")
    with boundary(f"reading {kubeconfig}"):
        from kubernetes import config as kube_config

        return kube_config.new_client_from_config(config_file=str(kubeconfig), context=context)


def cluster_facts(client: Any) -> ClusterFacts:
    from kubernetes import client as k

    with boundary("listing the cluster's nodes, DaemonSets, StorageClasses and CRDs"):
        return facts_from(k.CoreV1Api(client).list_node().items, k.AppsV1Api(client).list_daemon_set_for_all_namespaces().items,
                          k.StorageV1Api(client).list_storage_class().items,
                          k.ApiextensionsV1Api(client).list_custom_resource_definition().items)


def labelled(client: Any, stack: str | None) -> list[Leftover]:
    """gpuprov's namespaces, PVCs, LoadBalancer Services and nodes on the cluster (of ``stack`` when named):
    what bills, or holds what bills, after a ``down``. Nodes carry the stack's labels in the pools gpuprov
    creates (:func:`gpuprov.infra.clouds.kubernetes.program.pool_labels`)."""
    from kubernetes import client as k

    selector = f"{TAG_MANAGED}=true" + (f",{TAG_STACK}={stack}" if stack else "")
    core = k.CoreV1Api(client)
    found: list[Leftover] = []
    with boundary(f"listing gpuprov's namespaces, volumes and load balancers ({selector})"):
        for ns in core.list_namespace(label_selector=selector).items:
            found.append(_leftover("namespace", ns, None, (ns.status.phase or "").lower() if ns.status else None))
        for pvc in core.list_persistent_volume_claim_for_all_namespaces(label_selector=selector).items:
            found.append(_leftover("pvc", pvc, pvc.metadata.namespace, pvc.status.phase if pvc.status else None))
        for svc in core.list_service_for_all_namespaces(label_selector=selector).items:
            if svc.spec and svc.spec.type == "LoadBalancer":
                found.append(_leftover("load-balancer", svc, svc.metadata.namespace, None))
        for node in core.list_node(label_selector=selector).items:  # a node pool of the stack's (eks, gke)
            found.append(_leftover("node", node, None, None))
    return found


def _leftover(kind: str, obj: Any, namespace: str | None, state: str | None) -> Leftover:
    labels = dict(obj.metadata.labels or {})
    name = f"{namespace}/{obj.metadata.name}" if namespace else obj.metadata.name
    return Leftover("kubernetes", kind, name, labels.get(TAG_STACK), name, None, state, labels)


def eks_leftovers(region: str, stack: str) -> list[Leftover]:
    """What an EKS stack can leave that bills: its cluster, node instances (EKS tags them with the cluster's
    name), and EBS volumes the CSI driver made for the stack's claims."""
    from gpuprov.infra.clouds.aws.sdk import boundary as aws_boundary
    from gpuprov.infra.clouds.aws.sdk import client
    from gpuprov.infra.clouds.kubernetes.program import eks_cluster_name

    name = eks_cluster_name(stack)
    found: list[Leftover] = []
    with aws_boundary(f"listing what EKS cluster {name} left in {region}"):
        eks = client("eks", region)
        try:
            cluster = eks.describe_cluster(name=name)["cluster"]
            found.append(Leftover("eks", "cluster", name, stack, name, region, str(cluster.get("status", "")).lower(),
                                  dict(cluster.get("tags") or {})))  # its owner: a teardown removes only its own
        except eks.exceptions.ResourceNotFoundException:
            pass
        ec2 = client("ec2", region)
        live = ["pending", "running", "stopping", "stopped", "shutting-down"]
        for page in ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": "tag:eks:cluster-name", "Values": [name]}, {"Name": "instance-state-name", "Values": live}]):
            for res in page["Reservations"]:
                for i in res["Instances"]:
                    found.append(Leftover("eks", "instance", i["InstanceId"], stack, None, region, i["State"]["Name"]))
        for v in ec2.describe_volumes(Filters=[{"Name": "tag:kubernetes.io/created-for/pvc/namespace",
                                                "Values": [f"gpuprov-{stack}"]}])["Volumes"]:
            found.append(Leftover("eks", "volume", v["VolumeId"], stack, None, region, v.get("State")))
    return found


# --- gpuprov ci on a cluster, and the reaper's label sweep -----------------------------------------------


def expected_deployments(config: StackConfig) -> list[str]:
    """The Deployments the stack's workloads declare (:func:`gpuprov.infra.clouds.kubernetes.workloads.manifests`)."""
    from gpuprov.infra.clouds.kubernetes import workloads as wl

    return ([wl.VLLM, wl.WEBUI] if "vllm_cxr" in config.apps else []) + ([wl.MONAI] if "monai_label" in config.apps else [])


def rollout(deployments: list[Any], wanted: list[str]) -> tuple[list[str], list[str]]:
    """(ready, waiting) of the ``wanted`` Deployments, one line each, from the client's V1Deployment objects.

    A Deployment at 0 replicas (vLLM scaled to zero by KEDA) is ready: it has nothing to roll out, and its
    first request wakes it. One with replicas is ready when that many are available."""
    seen = {d.metadata.name: d for d in deployments}
    ready, waiting = [], []
    for name in wanted:
        d = seen.get(name)
        if d is None:
            waiting.append(f"{name} (not created yet)")
            continue
        want = d.spec.replicas if d.spec and d.spec.replicas is not None else 1
        have = (d.status.available_replicas or 0) if d.status else 0
        if want == 0:
            ready.append(f"{name} at 0 replicas (scaled to zero)")
        elif have >= want:
            ready.append(f"{name} {have}/{want} available")
        else:
            waiting.append(f"{name} {have}/{want} available")
    return ready, waiting


def wait_rollout(client: Any, namespace: str, wanted: list[str], timeout_s: float,
                 progress: Callable[[str], None] | None = None, poll_s: float = 2.0) -> list[str]:
    """Wait until every ``wanted`` Deployment in ``namespace`` is ready (:func:`rollout`); returns the ready lines.
    Raises :class:`KubernetesError` naming what is still waiting when ``timeout_s`` passes."""
    from kubernetes import client as k

    from gpuprov.infra.clouds.kubernetes.driver import KubernetesError

    deadline = time.monotonic() + timeout_s
    apps = k.AppsV1Api(client)
    while True:
        with boundary(f"listing the Deployments in namespace {namespace}"):
            ready, waiting = rollout(apps.list_namespaced_deployment(namespace).items, wanted)
        if not waiting:
            return ready
        if time.monotonic() >= deadline:
            raise KubernetesError(f"kubernetes: the workloads in namespace {namespace} were not ready within "
                                  f"{timeout_s:g}s (waiting: {', '.join(waiting)}); kubectl -n {namespace} get "
                                  "pods,events says why")
        if progress:
            progress(f"waiting for {', '.join(waiting)} in namespace {namespace}")
        time.sleep(poll_s)


def delete_namespaces(client: Any, names: list[str], timeout_s: float,
                      progress: Callable[[str], None] | None = None, poll_s: float = 2.0) -> list[str]:
    """Delete the namespaces ``names`` (everything in them goes with them: PVCs, LoadBalancer Services) and
    wait until the API lists none of them (a namespace terminates asynchronously). Returns errors, one line each."""
    from kubernetes import client as k

    core = k.CoreV1Api(client)
    errors: list[str] = []
    for name in names:
        try:
            with boundary(f"deleting namespace {name}"):
                try:
                    core.delete_namespace(name)
                except k.ApiException as err:
                    if err.status != 404:  # already gone: what was wanted
                        raise
            if progress:
                progress(f"kubernetes: deleting namespace {name}")
        except GpuprovError as err:
            errors.append(str(err))
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending and time.monotonic() < deadline:
        with boundary("listing namespaces"):
            pending &= {ns.metadata.name for ns in core.list_namespace().items}
        if pending:
            time.sleep(poll_s)
    return errors


def eks_tagged(region: str) -> list[Leftover]:
    """gpuprov's EKS clusters in ``region`` (``gpuprov-managed`` in their tags) and their managed node groups,
    each with its own tags (the cluster's where a group has none): what the reaper's sweep judges."""
    from gpuprov.infra.clouds.aws.sdk import boundary as aws_boundary
    from gpuprov.infra.clouds.aws.sdk import client

    found: list[Leftover] = []
    with aws_boundary(f"listing gpuprov's EKS clusters and node groups in {region}"):
        eks = client("eks", region)
        for page in eks.get_paginator("list_clusters").paginate():
            for name in page["clusters"]:
                try:
                    cluster = eks.describe_cluster(name=name)["cluster"]
                    tags = dict(cluster.get("tags") or {})
                    if tags.get(TAG_MANAGED) != "true":
                        continue
                    groups = [eks.describe_nodegroup(clusterName=name, nodegroupName=g)["nodegroup"]
                              for p in eks.get_paginator("list_nodegroups").paginate(clusterName=name)
                              for g in p["nodegroups"]]
                except eks.exceptions.ResourceNotFoundException:
                    continue  # deleted while listing
                stack = tags.get(TAG_STACK)
                for g in groups:
                    found.append(Leftover("eks", "nodegroup", f"{name}/{g['nodegroupName']}", stack, None, region,
                                          str(g.get("status", "")).lower(), dict(g.get("tags") or tags)))
                found.append(Leftover("eks", "cluster", name, stack, name, region,
                                      str(cluster.get("status", "")).lower(), tags))
    return found


def eks_remove(region: str, names: list[str], timeout_s: float, progress: Callable[[str], None] | None = None,
               poll_s: float = 5.0) -> list[str]:
    """Delete EKS clusters by name: their node groups first (EKS refuses a cluster that has any), waiting until
    they are gone, then the cluster. Returns errors, one line each; what was asked goes on after an error."""
    from gpuprov.infra.clouds.aws.sdk import boundary as aws_boundary
    from gpuprov.infra.clouds.aws.sdk import client

    eks = client("eks", region)

    def groups_of(name: str) -> list[str] | None:  # None: the cluster is gone
        try:
            return [g for p in eks.get_paginator("list_nodegroups").paginate(clusterName=name) for g in p["nodegroups"]]
        except eks.exceptions.ResourceNotFoundException:
            return None

    errors: list[str] = []
    for name in names:
        try:
            with aws_boundary(f"removing EKS cluster {name}'s node groups in {region}"):
                groups = groups_of(name)
                for g in groups or []:
                    if progress:
                        progress(f"eks: deleting node group {name}/{g}")
                    with contextlib.suppress(eks.exceptions.ResourceNotFoundException):
                        eks.delete_nodegroup(clusterName=name, nodegroupName=g)
                groups = groups_of(name) if groups else groups
                deadline = time.monotonic() + timeout_s
                while groups and time.monotonic() < deadline:
                    time.sleep(poll_s)
                    groups = groups_of(name)
            if groups is None:
                continue  # already gone: what was wanted
            if groups:
                errors.append(f"eks: node groups {', '.join(groups)} of cluster {name} still there after "
                              f"{timeout_s:g}s; the cluster was not deleted (run gpuprov reap again)")
                continue
            with aws_boundary(f"deleting EKS cluster {name} in {region}"):
                if progress:
                    progress(f"eks: deleting cluster {name}")
                with contextlib.suppress(eks.exceptions.ResourceNotFoundException):
                    eks.delete_cluster(name=name)
        except GpuprovError as err:
            errors.append(str(err))
    return errors
