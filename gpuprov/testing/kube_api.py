"""A stand-in for the Kubernetes API: the read-only list calls gpuprov makes, answered from a JSON file.

Stand-in, not a cluster: it serves what gpuprov's preflight and its ``down`` verification read
(nodes, DaemonSets, StorageClasses, CRDs, and gpuprov-labelled namespaces, PVCs and Services), as the
real API shapes its ``*List`` answers (``apiVersion``, ``kind``, ``metadata``, ``items``), with
``labelSelector`` of ``k=v[,k=v]`` applied as the API server applies it. The ``kubernetes`` Python
client talks to it through an ordinary kubeconfig (:func:`write_kubeconfig`). The state file is read
on every request, so a test changes the cluster by rewriting it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import yaml

ROUTES: dict[str, tuple[str, str, str]] = {  # path -> (state key, apiVersion, kind of the list)
    "/api/v1/nodes": ("nodes", "v1", "NodeList"),
    "/api/v1/namespaces": ("namespaces", "v1", "NamespaceList"),
    "/api/v1/persistentvolumeclaims": ("pvcs", "v1", "PersistentVolumeClaimList"),
    "/api/v1/services": ("services", "v1", "ServiceList"),
    "/apis/apps/v1/daemonsets": ("daemonsets", "apps/v1", "DaemonSetList"),
    "/apis/storage.k8s.io/v1/storageclasses": ("storageclasses", "storage.k8s.io/v1", "StorageClassList"),
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions": (
        "crds", "apiextensions.k8s.io/v1", "CustomResourceDefinitionList"),
}


def _matches(item: dict[str, Any], selector: str) -> bool:
    labels = item.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _handler(state_file: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            return None

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            url = urlparse(self.path)
            if _namespaced_get(self, state_file, url.path, parse_qs(url.query)):
                return
            route = ROUTES.get(url.path)
            if route is None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                 "code": 404, "message": f"the stand-in serves no {url.path}"})
                return
            key, api_version, kind = route
            state = json.loads(state_file.read_text())
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            items = [i for i in state.get(key, []) if _matches(i, selector)]
            self._send(200, {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"},
                             "items": items})

        def do_DELETE(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))  # DeleteOptions: the stand-in needs none
            _delete(self, state_file, urlparse(self.path).path)

        def _send(self, code: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


# --- gpuprov ci and the reaper: Deployments of a namespace, and deleting a namespace ------------------------
# ``GET /apis/apps/v1/namespaces/NS/deployments`` lists ``deployments`` whose metadata.namespace is NS;
# ``DELETE /api/v1/namespaces/NS`` removes the namespace and every object in it (the API server's namespace
# controller does that asynchronously, with the namespace Terminating meanwhile; the stand-in does it at once,
# or, when the namespace's state says ``"finalize_after": N``, after N more list requests, Terminating till then).

NAMESPACED_LISTS = {"deployments": ("/apis/apps/v1/namespaces/", "/deployments", "apps/v1", "DeploymentList")}
STATE_LOCK = threading.Lock()


def _namespaced_get(handler: Any, state_file: Path, path: str, query: dict[str, list[str]]) -> bool:
    with STATE_LOCK:
        state = json.loads(state_file.read_text())
        if _settle(state):
            state_file.write_text(json.dumps(state))
    for key, (head, tail, api_version, kind) in NAMESPACED_LISTS.items():
        if path.startswith(head) and path.endswith(tail):
            ns = path[len(head):-len(tail)]
            selector = query.get("labelSelector", [""])[0]
            items = [i for i in state.get(key, [])
                     if i.get("metadata", {}).get("namespace") == ns and _matches(i, selector)]
            handler._send(200, {"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"},
                                "items": items})
            return True
    return False


def _settle(state: dict[str, Any]) -> bool:
    """One more list request: Terminating namespaces count down, and go (with their objects) at zero."""
    changed = False
    for ns in list(state.get("namespaces", [])):
        left = ns.get("finalize_after")
        if ns.get("status", {}).get("phase") != "Terminating" or left is None:
            continue
        changed = True
        if left > 0:
            ns["finalize_after"] = left - 1
        else:
            _drop(state, ns["metadata"]["name"])
    return changed


def _drop(state: dict[str, Any], name: str) -> None:
    state["namespaces"] = [n for n in state.get("namespaces", []) if n["metadata"]["name"] != name]
    for key in ("pvcs", "services", *NAMESPACED_LISTS):
        state[key] = [i for i in state.get(key, []) if i.get("metadata", {}).get("namespace") != name]


def _delete(handler: Any, state_file: Path, path: str) -> None:
    head = "/api/v1/namespaces/"
    name = path[len(head):] if path.startswith(head) else ""
    with STATE_LOCK:
        state = json.loads(state_file.read_text())
        ns = next((n for n in state.get("namespaces", []) if n["metadata"]["name"] == name), None)
        if not name or "/" in name or ns is None:
            handler._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                                "code": 404, "message": f'namespaces "{name}" not found'})
            return
        state.setdefault("deleted", []).append(name)  # what a test asks: which namespaces were deleted
        if ns.get("finalize_after"):
            ns.setdefault("status", {})["phase"] = "Terminating"
        else:
            _drop(state, name)
        state_file.write_text(json.dumps(state))
    handler._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200,
                        "details": {"name": name, "kind": "namespaces"}})


@contextmanager
def serve(state_file: Path) -> Iterator[str]:
    """Serve ``state_file`` on 127.0.0.1 while inside; yields the server's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state_file))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_kubeconfig(path: Path, server: str, context: str = "standin") -> Path:
    """A kubeconfig whose ``context`` points at ``server`` (no credentials: the stand-in asks for none)."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "users": [{"name": context, "user": {}}],
    }))
    path.chmod(0o600)
    return path


def ready_cluster() -> dict[str, Any]:
    """A cluster with what gpuprov needs: a GPU node with nvidia.com/gpu allocatable, NVIDIA's device
    plugin DaemonSet, a default StorageClass and KEDA's CRD."""
    return {
        "nodes": [{"metadata": {"name": "cpu-1"}, "status": {"allocatable": {"cpu": "4", "memory": "16Gi"}}},
                  {"metadata": {"name": "gpu-1", "labels": {"nvidia.com/gpu.present": "true"}},
                   "status": {"allocatable": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}}],
        "daemonsets": [{"metadata": {"name": "nvidia-device-plugin-daemonset", "namespace": "kube-system"},
                        "spec": {"selector": {}, "template": {}}}],
        "storageclasses": [{"metadata": {"name": "gp3", "annotations": {
            "storageclass.kubernetes.io/is-default-class": "true"}}, "provisioner": "ebs.csi.aws.com"}],
        "crds": [{"metadata": {"name": "scaledobjects.keda.sh"},
                  "spec": {"group": "keda.sh", "names": {"kind": "ScaledObject", "plural": "scaledobjects"},
                           "scope": "Namespaced", "versions": []}}],
        "namespaces": [], "pvcs": [], "services": [],
    }


def deployment(namespace: str, name: str, replicas: int, available: int) -> dict[str, Any]:
    """A Deployment as the API returns it (the fields the client's model requires), ``available`` of ``replicas``."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "gpuprov"}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name}]}}},
            "status": {"replicas": available, "availableReplicas": available} if available else {}}
