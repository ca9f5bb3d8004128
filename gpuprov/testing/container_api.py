"""A STAND-IN for the GKE (Kubernetes Engine) REST API, v1 (no emulator exists): a tiny local HTTP server.

It answers the real ``/v1/projects/P/locations/L/...`` paths with the real JSON shapes
(https://cloud.google.com/kubernetes-engine/docs/reference/rest) for the calls gpuprov makes: clusters list
(location ``-``: every location) and get, each cluster with its ``resourceLabels`` and ``nodePools``
(``config.labels``: Kubernetes labels, ``config.resourceLabels``: the VMs' labels), cluster delete and node pool
delete, each answering an ``Operation`` that is ``RUNNING`` until asked once with ``operations.get``, then
``DONE``. As GKE does, a cluster runs one operation at a time: another change meanwhile is refused (400
``FAILED_PRECONDITION``). With a Compute stand-in (:class:`~gpuprov.testing.compute_api.ComputeStandIn`), a
cluster's pools have node VMs there, labelled as GKE labels them, and they go with their pool or cluster.
Everything else answers 404 the way the API does, so a helper that calls an unexpected path fails loudly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from gpuprov.testing.compute_api import ComputeStandIn, LoopbackApi

BASE = "/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"


class ContainerStandIn(LoopbackApi):
    """In-memory GKE: :meth:`add_cluster` fills ``clusters``; ``compute``: where the node VMs live (optional)."""

    def __init__(self, compute: ComputeStandIn | None = None) -> None:
        self.compute = compute
        self.clusters: dict[tuple[str, str], dict[str, Any]] = {}  # (location, name) -> cluster
        self.operations: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) seen, for assertions
        self._ops = 0

    # --- helpers for tests ------------------------------------------------------------
    def add_cluster(self, project: str, location: str, name: str, resource_labels: dict[str, str],
                    pools: dict[str, dict[str, dict[str, str]]], status: str = "RUNNING") -> None:
        """A cluster with node pools ``{pool: {"labels": ..., "resourceLabels": ...}}``; one node VM per pool in
        the Compute stand-in, labelled as GKE labels a node (the cluster's and pool's resource labels, and
        ``goog-gke-node``, ``goog-k8s-cluster-name``, ``goog-k8s-node-pool-name``)."""
        link = f"https://container.googleapis.com/v1/projects/{project}/locations/{location}/clusters/{name}"
        node_pools = []
        for pool, config in pools.items():
            node_pools.append({"name": pool, "status": "RUNNING", "selfLink": f"{link}/nodePools/{pool}",
                               "config": {"machineType": "g2-standard-8", "labels": dict(config.get("labels", {})),
                                          "resourceLabels": dict(config.get("resourceLabels", {}))},
                               "initialNodeCount": 1, "locations": [location]})
            if self.compute is not None:
                self.compute.add_instance(project, location, f"gke-{name}-{pool}-1a2b3c4d-x0x0", {
                    **resource_labels, **config.get("resourceLabels", {}), "goog-gke-node": "",
                    "goog-k8s-cluster-name": name, "goog-k8s-cluster-location": location,
                    "goog-k8s-node-pool-name": pool})
        self.clusters[(location, name)] = {
            "name": name, "location": location, "zone": location, "status": status, "selfLink": link,
            "resourceLabels": dict(resource_labels), "nodePools": node_pools, "currentNodeCount": len(node_pools),
            "endpoint": "203.0.113.20", "network": "gpuprov-net"}

    def _drop_nodes(self, cluster: str, pool: str | None = None) -> None:
        if self.compute is None:
            return
        for key, inst in list(self.compute.instances.items()):
            labels = inst["labels"]
            if labels.get("goog-k8s-cluster-name") == cluster and pool in (None, labels.get("goog-k8s-node-pool-name")):
                del self.compute.instances[key]

    # --- routing ----------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        routes: list[tuple[str, str, Callable[..., tuple[int, dict[str, Any]]]]] = [
            ("GET", BASE + "/clusters", self._list_clusters),
            ("GET", BASE + "/clusters/(?P<name>[^/]+)", self._get_cluster),
            ("DELETE", BASE + "/clusters/(?P<name>[^/]+)", self._delete_cluster),
            ("DELETE", BASE + "/clusters/(?P<name>[^/]+)/nodePools/(?P<pool>[^/]+)", self._delete_pool),
            ("GET", BASE + "/operations/(?P<op>[^/]+)", self._get_operation),
        ]
        for verb, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if verb == method and m:
                return fn(**m.groupdict())
        return _error(404, "NOT_FOUND", f"no such path in the stand-in: {method} {path}")

    def _list_clusters(self, project: str, location: str) -> tuple[int, dict[str, Any]]:
        return 200, {"clusters": [c for (loc, _n), c in sorted(self.clusters.items()) if location in ("-", loc)]}

    def _get_cluster(self, project: str, location: str, name: str) -> tuple[int, dict[str, Any]]:
        cluster = self.clusters.get((location, name))
        return (200, cluster) if cluster else _gone(project, location, name)

    def _busy(self, project: str, location: str, name: str) -> tuple[int, dict[str, Any]] | None:
        running = [op for op in self.operations.values()
                   if op["status"] == "RUNNING" and op["targetLink"].endswith(f"/locations/{location}/clusters/{name}")]
        if running:
            return _error(400, "FAILED_PRECONDITION", f"Cluster is running incompatible operation {running[0]['name']}.")
        return None

    def _delete_cluster(self, project: str, location: str, name: str) -> tuple[int, dict[str, Any]]:
        if (location, name) not in self.clusters:
            return _gone(project, location, name)
        refused = self._busy(project, location, name)
        if refused:
            return refused
        del self.clusters[(location, name)]
        self._drop_nodes(name)
        return 200, self._operation(project, location, name, "DELETE_CLUSTER")

    def _delete_pool(self, project: str, location: str, name: str, pool: str) -> tuple[int, dict[str, Any]]:
        cluster = self.clusters.get((location, name))
        if cluster is None or not any(p["name"] == pool for p in cluster["nodePools"]):
            return _error(404, "NOT_FOUND", f"Not found: projects/{project}/locations/{location}/clusters/{name}/"
                                            f"nodePools/{pool}.")
        refused = self._busy(project, location, name)
        if refused:
            return refused
        cluster["nodePools"] = [p for p in cluster["nodePools"] if p["name"] != pool]
        self._drop_nodes(name, pool)
        return 200, self._operation(project, location, name, "DELETE_NODE_POOL")

    def _operation(self, project: str, location: str, cluster: str, kind: str) -> dict[str, Any]:
        self._ops += 1
        name = f"operation-{1700000000000 + self._ops}-{self._ops:08x}"
        base = f"https://container.googleapis.com/v1/projects/{project}/locations/{location}"
        op = {"name": name, "zone": location, "location": location, "operationType": kind, "status": "RUNNING",
              "selfLink": f"{base}/operations/{name}", "targetLink": f"{base}/clusters/{cluster}",
              "startTime": "2026-01-01T00:00:00Z"}
        self.operations[name] = op
        return dict(op)

    def _get_operation(self, project: str, location: str, op: str) -> tuple[int, dict[str, Any]]:
        found = self.operations.get(op)
        if found is None:
            return _error(404, "NOT_FOUND", f"Not found: projects/{project}/locations/{location}/operations/{op}.")
        found["status"] = "DONE"  # asked once: finished
        found["endTime"] = "2026-01-01T00:05:00Z"
        return 200, dict(found)


def _gone(project: str, location: str, name: str) -> tuple[int, dict[str, Any]]:
    return _error(404, "NOT_FOUND", f"Not found: projects/{project}/locations/{location}/clusters/{name}.")


def _error(code: int, status: str, message: str) -> tuple[int, dict[str, Any]]:
    return code, {"error": {"code": code, "message": message, "status": status}}
