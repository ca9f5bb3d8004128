"""A stand-in for the Kubernetes API: the read-only list calls gpuprov makes, answered from a JSON file.

Stand-in, not a cluster: it serves what gpuprov's preflight and its ``down`` verification read
(nodes, DaemonSets, StorageClasses, CRDs, and gpuprov-labelled namespaces, PVCs and Services), as the
real API shapes its ``*List`` answers (``apiVersion``, ``kind``, ``metadata``, ``items``), with
``labelSelector`` of ``k=v[,k=v]`` applied as the API server applies it. The ``kubernetes`` Python
client talks to it through an ordinary kubeconfig (:func:`write_kubeconfig`). The state file is read
on every request, so a test changes the cluster by rewriting it.
"""

from __future__ import annotations

import contextlib
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
            if _namespaced_list(self, state_file, url.path, parse_qs(url.query)):
                return
            route = ROUTES.get(url.path)
            if route is None and _namespaced_get(self, url, state_file):  # pods, port-forward, scale: below
                return
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

        def do_PATCH(self) -> None:  # noqa: N802 (http.server's name)
            _namespaced_patch(self, urlparse(self.path), state_file)

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


def _namespaced_list(handler: Any, state_file: Path, path: str, query: dict[str, list[str]]) -> bool:
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


# --- namespaced reads, scale and port-forward (what ``gpuprov tunnel`` and ``gpuprov wake`` ask) ------------
#
# State keys of this block: ``services`` (namespaced Services, above too), ``deployments`` and ``scaledobjects``.
# A Deployment item may carry a ``standin`` block, which no real API returns: ``ready_after_s`` (how long its
# pods take to become Ready after a scale from 0: the GPU node joining, the model loading) and ``forward``
# ({container port: a local TCP port}: where the port-forward of its pods' port goes, standing in for the pod's
# network namespace). Pods are the stand-in's Deployment controller at work: ``replicas`` pods per Deployment,
# named ``<deployment>-standin-<i>``, Ready once ``ready_after_s`` has passed since the scale-up.
# The stand-in's KEDA: the ScaledObject annotation ``autoscaling.keda.sh/paused-replicas: N`` sets its target to N
# replicas; removing it hands the count back to KEDA, which (seeing no activity: the stand-in has no metrics)
# scales the target to ``minReplicaCount`` at once, as KEDA does when the cooldown since the last activity is over.

import base64  # noqa: E402 (this block's own imports, kept with it)
import hashlib  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import time  # noqa: E402

PAUSED_REPLICAS = "autoscaling.keda.sh/paused-replicas"
PORT_FORWARD_PROTOCOL = "v4.channel.k8s.io"  # what the API server's port-forward websocket speaks
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_state_lock = threading.Lock()

_NAMESPACED = re.compile(
    r"^/(?:api/v1|apis/(?P<group>apps|keda\.sh)/(?P<version>v1|v1alpha1))/namespaces/(?P<ns>[a-z0-9-]+)/"
    r"(?P<kind>services|pods|deployments|scaledobjects)(?:/(?P<name>[a-z0-9.-]+))?(?:/(?P<sub>scale|portforward))?$")


def _not_found(handler: Any, what: str) -> bool:
    handler._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                        "code": 404, "message": f"{what} not found"})
    return True


def _in(items: list[dict[str, Any]], ns: str, name: str | None = None) -> list[dict[str, Any]]:
    return [i for i in items if i["metadata"].get("namespace") == ns
            and (name is None or i["metadata"]["name"] == name)]


def _pods(state: dict[str, Any], ns: str) -> list[dict[str, Any]]:
    """The stand-in Deployment controller's pods of namespace ``ns``, from each Deployment's replicas."""
    now = time.time()
    out = []
    for d in _in(state.get("deployments", []), ns):
        extra = d.get("standin", {})
        ready = now - extra.get("scaled_at", 0) >= extra.get("ready_after_s", 0)
        labels = d["spec"]["selector"]["matchLabels"]
        ports = [{"containerPort": int(p)} for p in extra.get("forward", {})]
        for i in range(int(d["spec"].get("replicas") or 0)):
            out.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": f"{d['metadata']['name']}-standin-{i}", "namespace": ns, "labels": labels},
                        "spec": {"containers": [{"name": d["metadata"]["name"], "ports": ports}]},
                        "status": {"phase": "Running" if ready else "Pending", "conditions": [
                            {"type": "Ready", "status": "True" if ready else "False"}]},
                        "standin": {"forward": extra.get("forward", {})}})
    return out


def _scale(d: dict[str, Any], replicas: int) -> None:
    if int(d["spec"].get("replicas") or 0) == 0 and replicas > 0:
        d.setdefault("standin", {})["scaled_at"] = time.time()
    d["spec"]["replicas"] = replicas


def _namespaced_get(handler: Any, url: Any, state_file: Path) -> bool:
    """Answer a namespaced GET this block serves; False when the path is none of them."""
    m = _NAMESPACED.match(url.path)
    if m is None:
        return False
    state = json.loads(state_file.read_text())
    ns, kind, name, sub = m["ns"], m["kind"], m["name"], m["sub"]
    if kind == "pods":
        pods = _pods(state, ns)
        if name is None:
            selector = parse_qs(url.query).get("labelSelector", [""])[0]
            handler._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                                "items": [p for p in pods if _matches(p, selector)]})
            return True
        pod = next((p for p in pods if p["metadata"]["name"] == name), None)
        if pod is None:
            return _not_found(handler, f'pods "{name}"')
        if sub == "portforward":
            ports = parse_qs(url.query).get("ports", [""])[0]
            _port_forward(handler, pod, [int(p) for p in ports.split(",") if p.isdigit()])
            return True
        handler._send(200, pod)
        return True
    key = {"services": "services", "deployments": "deployments", "scaledobjects": "scaledobjects"}[kind]
    found = _in(state.get(key, []), ns, name) if name else []
    if not found:
        return _not_found(handler, f'{kind} "{name}"')
    obj = found[0]
    if sub == "scale":
        handler._send(200, {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": obj["metadata"],
                            "spec": {"replicas": obj["spec"].get("replicas", 0)}})
        return True
    handler._send(200, {k: v for k, v in obj.items() if k != "standin"})
    return True


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386 JSON merge patch (what strategic merge does for these fields too): null removes."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


def _namespaced_patch(handler: Any, url: Any, state_file: Path) -> None:
    m = _NAMESPACED.match(url.path)
    if m is None or m["kind"] not in ("deployments", "scaledobjects") or not m["name"]:
        _not_found(handler, url.path)
        return
    body = json.loads(handler.rfile.read(int(handler.headers.get("Content-Length") or 0)) or b"{}")
    kind = (handler.headers.get("Content-Type") or "").split(";")[0]
    if not isinstance(body, dict) or kind not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
        handler._send(415, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 415,
                            "message": f"the stand-in takes merge patches only, not {kind}"})
        return
    with _state_lock:
        state = json.loads(state_file.read_text())
        ns, name = m["ns"], m["name"]
        found = _in(state.get(m["kind"], []), ns, name)
        if not found:
            _not_found(handler, f'{m["kind"]} "{name}"')
            return
        obj = found[0]
        if m["kind"] == "deployments":
            _scale(obj, int(body.get("spec", {}).get("replicas", obj["spec"].get("replicas", 0))))
            answer: dict[str, Any] = {"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": obj["metadata"],
                                      "spec": {"replicas": obj["spec"]["replicas"]}}
        else:
            was = (obj["metadata"].get("annotations") or {}).get(PAUSED_REPLICAS)
            _merge(obj, body)
            now = (obj["metadata"].get("annotations") or {}).get(PAUSED_REPLICAS)
            target = _in(state.get("deployments", []), ns, obj["spec"]["scaleTargetRef"]["name"])
            if target and now is not None:
                _scale(target[0], int(now))
            elif target and was is not None:
                _scale(target[0], int(obj["spec"].get("minReplicaCount", 0)))
            answer = obj
        state_file.write_text(json.dumps(state))
    handler._send(200, answer)


def _ws_send(conn: socket.socket, payload: bytes, opcode: int = 2) -> None:
    head = bytes([0x80 | opcode])
    n = len(payload)
    head += bytes([n]) if n < 126 else (bytes([126]) + struct.pack(">H", n) if n < 65536
                                         else bytes([127]) + struct.pack(">Q", n))
    conn.sendall(head + payload)


def _ws_recv(conn: Any) -> tuple[int, bytes] | None:
    """One frame from the client (masked, as RFC 6455 has clients send); None at EOF."""
    head = conn.read(2)
    if len(head) < 2:
        return None
    opcode, n = head[0] & 0x0F, head[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", conn.read(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", conn.read(8))[0]
    mask = conn.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = conn.read(n)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def _port_forward(handler: Any, pod: dict[str, Any], ports: list[int]) -> None:
    """The pod's port-forward subresource over websocket, as the API server serves it: subprotocol
    v4.channel.k8s.io; per port (index i) channel 2i carries data and 2i+1 errors, and the first frame of
    each channel is the port number, 2 bytes little-endian. One TCP connection per port, per websocket."""
    offered = [p.strip() for p in (handler.headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    if handler.headers.get("Upgrade", "").lower() != "websocket" or PORT_FORWARD_PROTOCOL not in offered or not ports:
        handler._send(400, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 400,
                            "message": f"port-forward wants a websocket with subprotocol {PORT_FORWARD_PROTOCOL} "
                                       "and ?ports="})
        return
    key = handler.headers["Sec-WebSocket-Key"]
    accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
    handler.send_response(101, "Switching Protocols")
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept)
    handler.send_header("Sec-WebSocket-Protocol", PORT_FORWARD_PROTOCOL)
    handler.end_headers()
    handler.close_connection = True
    conn: socket.socket = handler.connection
    forward = pod.get("standin", {}).get("forward", {})
    targets: dict[int, socket.socket] = {}
    send_lock = threading.Lock()
    for ix, port in enumerate(ports):
        for channel in (2 * ix, 2 * ix + 1):
            _ws_send(conn, bytes([channel]) + struct.pack("<H", port))
        try:
            targets[ix] = socket.create_connection(("127.0.0.1", int(forward[str(port)])), timeout=5)
        except (KeyError, OSError) as err:
            _ws_send(conn, bytes([2 * ix + 1]) + f"error forwarding port {port} to pod "
                     f"{pod['metadata']['name']}: {err}".encode())

    def pump(ix: int, sock: socket.socket) -> None:  # the pod's answer -> the data channel
        sock.settimeout(None)
        while (chunk := _recv(sock)):
            with send_lock:
                _ws_send(conn, bytes([2 * ix]) + chunk)
        with send_lock, contextlib.suppress(OSError):
            _ws_send(conn, b"", opcode=8)  # the pod closed: so does the stream

    pumps = [threading.Thread(target=pump, args=(ix, s), daemon=True) for ix, s in targets.items()]
    for t in pumps:
        t.start()
    reader = handler.rfile
    while (frame := _ws_recv(reader)) is not None:
        opcode, data = frame
        if opcode == 8:
            break
        if opcode == 2 and data and data[0] % 2 == 0 and data[0] // 2 in targets:
            targets[data[0] // 2].sendall(data[1:])
    for s in targets.values():
        with contextlib.suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)
        s.close()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def wake_cluster(namespace: str, vllm_forward: int, webui_forward: int | None = None, *, replicas: int = 0,
                 ready_after_s: float = 0.0) -> dict[str, Any]:
    """:func:`ready_cluster` plus a stack's workloads in ``namespace``: vLLM's Deployment at ``replicas``
    under KEDA's ScaledObject, Open WebUI's at 1, their Services as gpuprov writes them, the pods' ports
    forwarded to local TCP servers (``*_forward``)."""
    sel = {"app.kubernetes.io/part-of": "gpuprov"}
    state = ready_cluster()

    def svc(name: str, port: int, target: int) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": namespace},
                "spec": {"type": "ClusterIP", "selector": {"app.kubernetes.io/name": name, **sel},
                         "ports": [{"name": "http", "port": port, "targetPort": target}]}}

    def deploy(name: str, n: int, port: int, local: int, after: float) -> dict[str, Any]:
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
                "spec": {"replicas": n, "selector": {"matchLabels": {"app.kubernetes.io/name": name, **sel}},
                         "template": {}},
                "standin": {"ready_after_s": after, "forward": {str(port): local}}}

    state["services"] = [svc("vllm", 8000, 8000)]
    state["deployments"] = [deploy("vllm", replicas, 8000, vllm_forward, ready_after_s)]
    if webui_forward is not None:
        state["services"].append(svc("open-webui", 3000, 8080))
        state["deployments"].append(deploy("open-webui", 1, 8080, webui_forward, 0.0))
    state["scaledobjects"] = [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
                               "metadata": {"name": "vllm", "namespace": namespace, "annotations": {}},
                               "spec": {"scaleTargetRef": {"name": "vllm"}, "minReplicaCount": 0,
                                        "maxReplicaCount": 1}}]
    return state

def deployment(namespace: str, name: str, replicas: int, available: int) -> dict[str, Any]:
    """A Deployment as the API returns it (the fields the client's model requires), ``available`` of ``replicas``."""
    labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": "gpuprov"}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name}]}}},
            "status": {"replicas": available, "availableReplicas": available} if available else {}}
