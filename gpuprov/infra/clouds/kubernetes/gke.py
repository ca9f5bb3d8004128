"""GKE outside Pulumi, on google-cloud-container: gpuprov's clusters and node pools (the reaper's sweep), what a
GKE stack left in Compute Engine after its cluster went (``down``), and removing clusters and pools.

google-cloud-container is imported here only, and always on its REST transport; the endpoint comes from the
settings (``GPUPROV_GKE_API_ENDPOINT``: another one, e.g. the stand-in in :mod:`gpuprov.testing.container_api`).
The calls are the v1 API's (https://cloud.google.com/kubernetes-engine/docs/reference/rest):
``projects.locations.clusters.list`` (location ``-``: every zone and region) whose clusters carry their
``resourceLabels`` and ``nodePools[].config.resourceLabels``, ``clusters.delete`` and ``nodePools.delete``,
each answering an ``Operation`` (GKE's own, not a google.longrunning one) polled with ``operations.get`` until
``DONE``; one operation at a time runs on a cluster (another call meanwhile is refused), so they are waited for
one by one. Every error of the SDK becomes one :class:`~gpuprov.infra.clouds.gcp.sdk.GcpError` line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from gpuprov.infra.clouds.base import Leftover, sdk_call
from gpuprov.infra.clouds.gcp.sdk import (
    CLAIM_NAME_KEY,
    GKE_NODE_LABEL,
    SERVICE_NAME_KEY,
    ComputeApi,
    GcpError,
    Labelled,
    boundary,
)
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK

GKE_ROLES = "Kubernetes Engine rights in the project (roles/container.clusterAdmin)"
CLUSTER_LABEL = "goog-k8s-cluster-name"  # on a GKE node VM: its cluster's name
Progress = Callable[[str], None]
# What Kubernetes made in Compute Engine for the stack (:func:`gke_leftovers`): who made it, the gcloud command
LEFT_BY_KUBERNETES = {
    "disk": ("the PD CSI driver, for a claim of the stack's (its data: keep it or delete it)", "disks delete"),
    "forwarding-rule": ("a LoadBalancer Service of the stack's", "forwarding-rules delete"),
    "target-pool": ("a LoadBalancer Service of the stack's", "target-pools delete"),
}


@contextlib.contextmanager
def gke_boundary(what: str) -> Iterator[None]:
    with boundary(what, GKE_ROLES):
        yield


class GkeApi:
    """The GKE calls gpuprov makes outside Pulumi (REST transport; ``endpoint``: another API endpoint)."""

    def __init__(self, endpoint: str | None = None, poll_s: float = 5.0):
        self.endpoint, self.poll_s = endpoint, poll_s

    def _client(self) -> Any:
        from google.cloud import container_v1

        if self.endpoint:
            from google.auth.credentials import AnonymousCredentials

            return container_v1.ClusterManagerClient(transport="rest", credentials=AnonymousCredentials(),
                                                     client_options={"api_endpoint": self.endpoint})
        return container_v1.ClusterManagerClient(transport="rest")

    @sdk_call(gke_boundary, "listing the GKE clusters of project {project}")
    def clusters(self, project: str) -> list[Any]:
        """Every cluster of ``project`` in every location (``container_v1.Cluster``, with its node pools).
        A partial answer (zones the API could not reach) is an error: what it leaves out could be gpuprov's."""
        answer = self._client().list_clusters(parent=f"projects/{project}/locations/-")
        if answer.missing_zones:
            raise GcpError(f"GCP: GKE could not list the clusters in {', '.join(answer.missing_zones)} of project "
                           f"{project}; run the command again")
        return list(answer.clusters)

    @sdk_call(gke_boundary, "deleting GKE cluster {name} in {location}")
    def delete_cluster(self, project: str, location: str, name: str, timeout_s: float) -> None:
        """Delete a cluster (GKE deletes its node pools and their VMs with it) and wait; gone already is fine."""
        self._run(project, location, "delete_cluster", f"projects/{project}/locations/{location}/clusters/{name}",
                  timeout_s)

    @sdk_call(gke_boundary, "deleting GKE node pool {pool} of cluster {cluster} in {location}")
    def delete_node_pool(self, project: str, location: str, cluster: str, pool: str, timeout_s: float) -> None:
        """Delete a node pool (its instance group and VMs go with it) and wait; gone already is fine."""
        self._run(project, location, "delete_node_pool",
                  f"projects/{project}/locations/{location}/clusters/{cluster}/nodePools/{pool}", timeout_s)

    def _run(self, project: str, location: str, method: str, name: str, timeout_s: float) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import container_v1

        client = self._client()
        try:
            op = getattr(client, method)(name=name)
        except NotFound:
            return
        deadline = time.monotonic() + timeout_s
        op_name = f"projects/{project}/locations/{location}/operations/{op.name}"
        while op.status != container_v1.Operation.Status.DONE:
            if time.monotonic() >= deadline:
                raise GcpError(f"GCP: {name} was still being deleted after {timeout_s:g}s (operation {op.name}); "
                               "run the command again")
            op = client.get_operation(name=op_name)
            if op.status != container_v1.Operation.Status.DONE:
                time.sleep(self.poll_s)
        if op.error and op.error.message:
            raise GcpError(f"GCP: deleting {name} failed ({op.error.message}); check it in the console")


def _status(obj: Any) -> str:
    return str(getattr(obj.status, "name", obj.status)).lower()


def gke_tagged(api: GkeApi, project: str) -> list[Leftover]:
    """gpuprov's GKE clusters (``gpuprov-managed`` in their resource labels) and their node pools, each with its
    own resource labels (the cluster's where a pool has none of gpuprov's): what the reaper's sweep judges."""
    found: list[Leftover] = []
    for cluster in api.clusters(project):
        tags = dict(cluster.resource_labels)
        if tags.get(TAG_MANAGED) != "true":
            continue
        for pool in cluster.node_pools:
            own = dict(pool.config.resource_labels) if pool.config else {}
            labels = own if own.get(TAG_MANAGED) == "true" else tags
            found.append(Leftover("gke", "node-pool", f"{cluster.name}/{pool.name}", labels.get(TAG_STACK), None,
                                  cluster.location, _status(pool), labels))
        found.append(Leftover("gke", "cluster", cluster.name, tags.get(TAG_STACK), cluster.name, cluster.location,
                              _status(cluster), tags))
    return found


def gke_leftovers(api: GkeApi, compute: ComputeApi, project: str, stack: str, namespace: str) -> list[Leftover]:
    """What a GKE stack can leave that bills: its cluster (found by its labels: Pulumi names it), the node VMs
    its pools keep, the disks the PD CSI driver made for its claims and the forwarding rules and target pools
    its LoadBalancer Services made (both in ``namespace``, named in their description), which outlive a
    cluster deleted before them."""
    found = [c for c in gke_tagged(api, project) if c.kind == "cluster" and c.stack == stack]
    found += [Leftover("gke", "instance", i.name, i.stack, i.name, i.zone, i.status, i.labels)
              for i in compute.find_labelled_instances(project, stack) if GKE_NODE_LABEL in i.labels]
    found += [_claim_disk(d) for d in compute.find_claim_disks(project, namespace)]
    found += [Leftover("gke", str(b.status), b.name, stack, b.labels.get(SERVICE_NAME_KEY), b.zone)
              for b in compute.find_service_balancers(project, namespace)]
    return [Leftover(i.cloud, i.kind, i.id, i.stack or stack, i.name, i.region, i.state, i.tags) for i in found]


def _claim_disk(disk: Labelled) -> Leftover:
    return Leftover("gke", "disk", disk.name, disk.stack, disk.labels.get(CLAIM_NAME_KEY), disk.zone,
                    "in-use" if disk.users else "unattached", dict(disk.labels))


def gke_remove(api: GkeApi, project: str, items: list[Leftover], timeout_s: float, progress: Progress) -> list[str]:
    """Remove ``items``: each cluster (its pools and node VMs go with it), each node pool of a cluster that
    stays, one at a time (GKE runs one operation per cluster). A node VM goes with its cluster or pool; what
    Kubernetes left in Compute Engine (a claim's disk, a Service's load balancer) is not removed by gpuprov:
    said, one line each. Returns errors, one line each; what was asked goes on after an error."""
    clusters = {i.id for i in items if i.kind == "cluster"}
    errors: list[str] = []
    for item in items:
        try:
            if item.kind == "node-pool" and item.id.split("/", 1)[0] not in clusters:
                cluster, pool = item.id.split("/", 1)
                progress(f"gke: deleting node pool {item.id}")
                api.delete_node_pool(project, str(item.region), cluster, pool, timeout_s)
            elif item.kind == "instance" and item.tags.get(CLUSTER_LABEL) not in clusters:
                errors.append(f"gke: {item} is a node of a GKE pool (its instance group would recreate it); "
                              "gpuprov removes it with its cluster or node pool, not alone")
            elif item.kind in LEFT_BY_KUBERNETES:
                what, command = LEFT_BY_KUBERNETES[item.kind]
                errors.append(f"gke: gpuprov does not remove {item} by tag: {what} made it and the cluster went "
                              f"before it; `gcloud compute {command} {item.id} --{'zone' if item.kind == 'disk' else 'region'}"
                              f" {item.region} --project {project}` removes it")
        except GpuprovError as err:
            errors.append(str(err))
    for item in (i for i in items if i.kind == "cluster"):
        try:
            progress(f"gke: deleting cluster {item.id} in {item.region} (its node pools go with it)")
            api.delete_cluster(project, str(item.region), item.id, timeout_s)
        except GpuprovError as err:
            errors.append(str(err))
    return errors
