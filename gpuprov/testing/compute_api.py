"""A STAND-IN for the Compute Engine REST API (no emulator exists): a tiny local HTTP server.

It answers the real ``/compute/v1/...`` paths with the real JSON shapes for the
calls gpuprov makes (images by family, machine and accelerator types, instances
aggregated list and delete, guest attributes, firewalls list and delete, persistent disks aggregated list,
insert, get and delete (refused while attached, as the API does), forwarding rules and target pools
aggregated lists (what a cluster's LoadBalancer Service leaves), operations), from
in-memory state a test fills. Everything else answers 404 the way the API does,
so a helper that calls an unexpected path fails loudly.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs

BASE = "/compute/v1/projects/(?P<project>[^/]+)"


class Routes(Protocol):
    """What a stand-in answers each request with: (status, JSON body)."""

    def handle(self, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, dict[str, Any]]: ...


class LoopbackApi:
    """A stand-in's server: :meth:`start` serves its :meth:`handle` on a free loopback port, in a thread."""

    url = ""  # set by start()
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    def handle(self, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def start(self) -> str:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


class ComputeStandIn(LoopbackApi):
    """In-memory Compute Engine: fill ``images``, ``machine_types``, ``accelerators``, ``instances``, ``firewalls``."""

    def __init__(self) -> None:
        self.images: dict[tuple[str, str], dict[str, Any]] = {}  # (project, family) -> image
        self.machine_types: set[tuple[str, str]] = set()  # (zone, name)
        self.accelerators: set[tuple[str, str]] = set()  # (zone, name)
        self.instances: dict[tuple[str, str], dict[str, Any]] = {}  # (zone, name) -> instance
        self.firewalls: dict[str, dict[str, Any]] = {}
        # (zone, name) -> the guest attributes the instance's guest agent has published ({namespace, key, value}
        # each); absent: none yet, answered 404 as the API does
        self.guest_attributes: dict[tuple[str, str], list[dict[str, str]]] = {}
        self.guest_attributes_after: dict[tuple[str, str], int] = {}  # 404s to answer before they appear (boot)
        self.guest_queries: list[str] = []  # the queryPath of each getGuestAttributes request
        self.disks: dict[tuple[str, str], dict[str, Any]] = {}  # (zone, name) -> disk
        self.forwarding_rules: dict[tuple[str, str], dict[str, Any]] = {}  # (region, name) -> forwarding rule
        self.target_pools: dict[tuple[str, str], dict[str, Any]] = {}  # (region, name) -> target pool
        self.requests: list[tuple[str, str]] = []  # (method, path) seen, for assertions
        self._ops = 0

    # --- helpers for tests ------------------------------------------------------------
    def add_instance(self, project: str, zone: str, name: str, labels: dict[str, str], status: str = "RUNNING") -> None:
        self.instances[(zone, name)] = {
            "kind": "compute#instance", "id": str(abs(hash(name)) % 10**12), "name": name, "status": status,
            "zone": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}",
            "labels": labels, "machineType": f"zones/{zone}/machineTypes/n1-standard-4",
            "labelFingerprint": _fingerprint(labels),
        }

    def publish_host_keys(self, zone: str, name: str, keys: dict[str, str], after_polls: int = 0) -> None:
        """What the guest agent of an instance with ``enable-guest-attributes`` publishes once sshd's keys exist:
        namespace ``hostkeys``, one key per type (``ssh-ed25519``), the key's base64 as the value."""
        self.guest_attributes[(zone, name)] = [{"namespace": "hostkeys", "key": kind, "value": value}
                                               for kind, value in keys.items()]
        self.guest_attributes_after[(zone, name)] = after_polls

    def add_firewall(self, project: str, name: str, target_tags: list[str], source_ranges: list[str]) -> None:
        self.firewalls[name] = {
            "kind": "compute#firewall", "name": name, "network": f"projects/{project}/global/networks/default",
            "targetTags": target_tags, "sourceRanges": source_ranges,
            "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "direction": "INGRESS",
        }

    def add_disk(self, project: str, zone: str, name: str, size_gb: int = 10, labels: dict[str, str] | None = None,
                 description: str = "") -> None:
        """A disk made by something else than gpuprov's calls (the PD CSI driver, which writes its claim in the
        description as JSON)."""
        link = f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/disks/{name}"
        self.disks[(zone, name)] = {
            "kind": "compute#disk", "id": str(abs(hash(name)) % 10**12), "name": name, "status": "READY",
            "sizeGb": str(size_gb), "zone": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}",
            "type": f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/diskTypes/pd-balanced",
            "labels": dict(labels or {}), "selfLink": link, "users": [], "description": description,
        }

    def add_service_balancer(self, project: str, region: str, name: str, service: str) -> None:
        """What the GCE service controller makes for a Service of type LoadBalancer ``NAMESPACE/NAME``: a target
        pool and a forwarding rule to it, both named for the Service and described by it."""
        base = f"https://www.googleapis.com/compute/v1/projects/{project}/regions/{region}"
        description = json.dumps({"kubernetes.io/service-name": service})
        self.target_pools[(region, name)] = {
            "kind": "compute#targetPool", "name": name, "region": base, "description": description,
            "selfLink": f"{base}/targetPools/{name}", "instances": []}
        self.forwarding_rules[(region, name)] = {
            "kind": "compute#forwardingRule", "name": name, "region": base, "description": description,
            "IPAddress": "203.0.113.40", "IPProtocol": "TCP", "portRange": "3000-3000",
            "loadBalancingScheme": "EXTERNAL", "target": f"{base}/targetPools/{name}",
            "selfLink": f"{base}/forwardingRules/{name}"}

    def attach_disk(self, zone: str, name: str, instance: str) -> None:
        """Mark a disk as attached to ``instance`` (``users``), as a VM with it in ``attachedDisks`` does."""
        self.disks[(zone, name)]["users"].append(instance)

    def _operation(self, project: str, zone: str | None, target: str) -> dict[str, Any]:
        self._ops += 1
        op: dict[str, Any] = {
            "kind": "compute#operation", "id": str(self._ops), "name": f"operation-{self._ops}",
            "operationType": "delete", "status": "DONE", "progress": 100, "targetLink": target,
        }
        scope = f"zones/{zone}" if zone else "global"
        op["selfLink"] = f"https://www.googleapis.com/compute/v1/projects/{project}/{scope}/operations/{op['name']}"
        if zone:
            op["zone"] = f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}"
        return op

    # --- routing ----------------------------------------------------------------------
    def handle(self, method: str, path: str, body: Any = None, query: str = "") -> tuple[int, dict[str, Any]]:
        self.requests.append((method, path))
        routes: list[tuple[str, str, Callable[..., tuple[int, dict[str, Any]]]]] = [
            ("GET", BASE + "/global/images/family/(?P<family>[^/]+)", self._image_from_family),
            ("GET", BASE + "/zones/(?P<zone>[^/]+)/machineTypes/(?P<name>[^/]+)", self._machine_type),
            ("GET", BASE + "/zones/(?P<zone>[^/]+)/acceleratorTypes/(?P<name>[^/]+)", self._accelerator),
            ("GET", BASE + "/aggregated/instances", self._aggregated_instances),
            ("DELETE", BASE + "/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", self._delete_instance),
            ("GET", BASE + "/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)", self._get_instance),
            ("POST", BASE + "/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/setLabels", self._set_labels),
            ("GET", BASE + "/zones/(?P<zone>[^/]+)/instances/(?P<name>[^/]+)/getGuestAttributes",
             self._guest_attributes),
            ("GET", BASE + "/aggregated/disks", self._aggregated_disks),
            ("POST", BASE + "/zones/(?P<zone>[^/]+)/disks", self._insert_disk),
            ("GET", BASE + "/zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)", self._get_disk),
            ("DELETE", BASE + "/zones/(?P<zone>[^/]+)/disks/(?P<name>[^/]+)", self._delete_disk),
            ("GET", BASE + "/aggregated/forwardingRules", self._aggregated_forwarding_rules),
            ("GET", BASE + "/aggregated/targetPools", self._aggregated_target_pools),
            ("GET", BASE + "/global/firewalls", self._list_firewalls),
            ("DELETE", BASE + "/global/firewalls/(?P<name>[^/]+)", self._delete_firewall),
            ("GET", BASE + "/zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)", self._get_operation),
            ("GET", BASE + "/global/operations/(?P<name>[^/]+)", self._get_operation),
            ("POST", BASE + "/zones/(?P<zone>[^/]+)/operations/(?P<name>[^/]+)/wait", self._get_operation),
            ("POST", BASE + "/global/operations/(?P<name>[^/]+)/wait", self._get_operation),
        ]
        for verb, pattern, fn in routes:
            m = re.fullmatch(pattern, path)
            if verb == method and m:
                extra = ({"body": body} if fn in (self._set_labels, self._insert_disk)
                         else {"query": query} if fn == self._guest_attributes else {})
                return fn(**m.groupdict(), **extra)
        return _not_found(f"no such path in the stand-in: {method} {path}")

    def _image_from_family(self, project: str, family: str) -> tuple[int, dict[str, Any]]:
        image = self.images.get((project, family))
        return (200, image) if image else _not_found(f"The resource 'projects/{project}/global/images/family/{family}' was not found")

    def _machine_type(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        if (zone, name) not in self.machine_types:
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/machineTypes/{name}' was not found")
        return 200, {"kind": "compute#machineType", "name": name, "zone": zone, "guestCpus": 4}

    def _accelerator(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        if (zone, name) not in self.accelerators:
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/acceleratorTypes/{name}' was not found")
        return 200, {"kind": "compute#acceleratorType", "name": name, "zone": zone, "maximumCardsPerInstance": 4}

    def _aggregated_instances(self, project: str) -> tuple[int, dict[str, Any]]:
        items: dict[str, Any] = {}
        for (zone, _name), inst in sorted(self.instances.items()):
            items.setdefault(f"zones/{zone}", {"instances": []})["instances"].append(inst)
        return 200, {"kind": "compute#instanceAggregatedList", "items": items}

    def _get_instance(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        inst = self.instances.get((zone, name))
        return (200, inst) if inst else _not_found(f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")

    def _guest_attributes(self, project: str, zone: str, name: str, query: str) -> tuple[int, dict[str, Any]]:
        """``instances.getGuestAttributes``: ``queryPath`` ``NAMESPACE/`` lists a namespace's entries; none
        published (yet) answers 404 as the API does."""
        if (zone, name) not in self.instances:
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        query_path = (parse_qs(query).get("queryPath") or [""])[0]
        self.guest_queries.append(query_path)
        namespace = query_path.rstrip("/")
        left = self.guest_attributes_after.get((zone, name), 0)
        items = [i for i in self.guest_attributes.get((zone, name), []) if not namespace or i["namespace"] == namespace]
        if left > 0 or not items:
            self.guest_attributes_after[(zone, name)] = max(0, left - 1)
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/instances/{name}/guestAttributes/"
                              f"{query_path}' was not found")
        link = f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/instances/{name}"
        return 200, {"kind": "compute#guestAttributes", "queryPath": query_path, "selfLink": link,
                     "queryValue": {"items": items}}

    def _set_labels(self, project: str, zone: str, name: str, body: Any) -> tuple[int, dict[str, Any]]:
        """``instances.setLabels``: replaces every label, only with the fingerprint of the labels it replaces."""
        inst = self.instances.get((zone, name))
        if inst is None:
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        if not isinstance(body, dict) or body.get("labelFingerprint") != inst["labelFingerprint"]:
            message = "Labels fingerprint either invalid or resource labels have changed"
            return 412, {"error": {"code": 412, "message": message, "errors": [{"reason": "conditionNotMet",
                                                                                "message": message}]}}
        inst["labels"] = dict(body.get("labels") or {})
        inst["labelFingerprint"] = _fingerprint(inst["labels"])
        return 200, self._operation(project, zone, f"projects/{project}/zones/{zone}/instances/{name}")

    def _delete_instance(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        if self.instances.pop((zone, name), None) is None:
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/instances/{name}' was not found")
        return 200, self._operation(project, zone, f"projects/{project}/zones/{zone}/instances/{name}")

    def _aggregated_disks(self, project: str) -> tuple[int, dict[str, Any]]:
        items: dict[str, Any] = {}
        for (zone, _name), disk in sorted(self.disks.items()):
            items.setdefault(f"zones/{zone}", {"disks": []})["disks"].append(disk)
        return 200, {"kind": "compute#diskAggregatedList", "items": items}

    def _insert_disk(self, project: str, zone: str, body: Any) -> tuple[int, dict[str, Any]]:
        name = str((body or {}).get("name") or "")
        if (zone, name) in self.disks:
            message = f"The resource 'projects/{project}/zones/{zone}/disks/{name}' already exists"
            return 409, {"error": {"code": 409, "message": message, "errors": [{"reason": "alreadyExists",
                                                                                "message": message}]}}
        link = f"https://www.googleapis.com/compute/v1/projects/{project}/zones/{zone}/disks/{name}"
        self.disks[(zone, name)] = {
            "kind": "compute#disk", "id": str(abs(hash(name)) % 10**12), "name": name, "status": "READY",
            "sizeGb": str(body.get("sizeGb") or "10"), "zone": f"https://www.googleapis.com/compute/v1/projects/"
            f"{project}/zones/{zone}", "type": str(body.get("type") or ""), "labels": dict(body.get("labels") or {}),
            "selfLink": link, "users": [],
        }
        return 200, self._operation(project, zone, link)

    def _get_disk(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        disk = self.disks.get((zone, name))
        return (200, disk) if disk else _not_found(f"The resource 'projects/{project}/zones/{zone}/disks/{name}' was not found")

    def _delete_disk(self, project: str, zone: str, name: str) -> tuple[int, dict[str, Any]]:
        disk = self.disks.get((zone, name))
        if disk is None:
            return _not_found(f"The resource 'projects/{project}/zones/{zone}/disks/{name}' was not found")
        if disk["users"]:
            message = (f"The disk resource 'projects/{project}/zones/{zone}/disks/{name}' is already being used by "
                       f"'{disk['users'][0]}'")
            return 400, {"error": {"code": 400, "message": message, "errors": [
                {"reason": "resourceInUseByAnotherResource", "message": message}]}}
        del self.disks[(zone, name)]
        return 200, self._operation(project, zone, disk["selfLink"])

    def _aggregated_forwarding_rules(self, project: str) -> tuple[int, dict[str, Any]]:
        items: dict[str, Any] = {}
        for (region, _name), rule in sorted(self.forwarding_rules.items()):
            items.setdefault(f"regions/{region}", {"forwardingRules": []})["forwardingRules"].append(rule)
        return 200, {"kind": "compute#forwardingRuleAggregatedList", "items": items}

    def _aggregated_target_pools(self, project: str) -> tuple[int, dict[str, Any]]:
        items: dict[str, Any] = {}
        for (region, _name), pool in sorted(self.target_pools.items()):
            items.setdefault(f"regions/{region}", {"targetPools": []})["targetPools"].append(pool)
        return 200, {"kind": "compute#targetPoolAggregatedList", "items": items}

    def _list_firewalls(self, project: str) -> tuple[int, dict[str, Any]]:
        return 200, {"kind": "compute#firewallList", "items": list(self.firewalls.values())}

    def _delete_firewall(self, project: str, name: str) -> tuple[int, dict[str, Any]]:
        if self.firewalls.pop(name, None) is None:
            return _not_found(f"The resource 'projects/{project}/global/firewalls/{name}' was not found")
        return 200, self._operation(project, None, f"projects/{project}/global/firewalls/{name}")

    def _get_operation(self, project: str, name: str, zone: str | None = None) -> tuple[int, dict[str, Any]]:
        op = self._operation(project, zone, "")
        op["name"] = name
        return 200, op


def _fingerprint(labels: dict[str, str]) -> str:
    return base64.b64encode(hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).digest()[:8]).decode()


def _not_found(message: str) -> tuple[int, dict[str, Any]]:
    return 404, {"error": {"code": 404, "message": message, "errors": [{"reason": "notFound", "message": message}]}}


def _handler_for(standin: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                sent = json.loads(raw) if raw else None
            except ValueError:
                sent = None
            path, _, query = self.path.partition("?")
            code, body = standin.handle(self.command, path, sent, query)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer  # noqa: N815

        def log_message(self, *_args: Any) -> None:  # quiet test output
            return None

    return Handler
