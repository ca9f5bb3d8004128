"""``gpuprov tunnel`` on a cluster: local 127.0.0.1 ports to the stack's pods through the Kubernetes API's
port-forward (the ``kubernetes`` client's websocket to ``pods/NAME/portforward``), no kubectl binary.

The same shape as the SSH tunnel (:mod:`gpuprov.provisioning.tunnel`): one listener per service on its
usual port when free, ``urls``, ``run_forever`` until Ctrl-C. Each accepted connection opens its own
port-forward stream to a ready pod behind the service's Service (picked from the Service's selector,
again per connection, so a restarted pod is followed). vLLM at 0 replicas is woken first
(:mod:`gpuprov.infra.clouds.kubernetes.wake`) and handed back to KEDA when the tunnel closes.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from typing import Any

from gpuprov.apps import registry
from gpuprov.infra.clouds.kubernetes.cluster import boundary
from gpuprov.infra.clouds.kubernetes.workloads import MONAI, VLLM, WEBUI, namespace
from gpuprov.infra.config import StackConfig
from gpuprov.provisioning.forwards import LocalForwards, Progress

K8S_SERVICE = {"vllm": VLLM, "open_webui": WEBUI, "monai_label": MONAI}  # gpuprov's service -> its Service


def is_ready(pod: Any) -> bool:
    """A pod that serves: Running, its Ready condition True, not being deleted."""
    if pod.metadata.deletion_timestamp is not None or not pod.status or pod.status.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def pick_pod(pods: list[Any]) -> Any | None:
    """The ready pod to forward to (the first by name, so one tunnel keeps to one MONAI Label session), or None."""
    ready = sorted((p for p in pods if is_ready(p)), key=lambda p: p.metadata.name)
    return ready[0] if ready else None


def target_port(service: Any, pod: Any) -> int:
    """The pod port behind the Service's first port: its targetPort, a number or a container port's name."""
    port = service.spec.ports[0]
    target = port.target_port if port.target_port is not None else port.port
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for c in pod.spec.containers:
        for p in c.ports or []:
            if p.name == target:
                return int(p.container_port)
    raise ValueError(f"no container port named {target}")


class KubeTunnel(LocalForwards):
    """``with KubeTunnel(config, client) as t: t.urls[SERVICE]`` -> ``http://127.0.0.1:PORT``."""

    def __init__(self, config: StackConfig, client: Any, *, services: list[str], same_ports: bool = False,
                 progress: Progress | None = None, local_ports: dict[str, int] | None = None,
                 wake_timeout_s: float = 1800.0):
        services = [s for s in services if s in K8S_SERVICE]
        super().__init__(services, {name: registry().service(name)[1].port for name in services},
                         same_ports=same_ports, local_ports=local_ports, progress=progress)
        self.client = client
        self.namespace = namespace(config)
        self.stack = config.stack
        self.wake_timeout_s = wake_timeout_s
        self._paused = False

    # --- the API --------------------------------------------------------------------------------------

    def _service(self, service: str) -> tuple[Any, list[Any]]:
        from kubernetes import client as k

        core = k.CoreV1Api(self.client)
        name = K8S_SERVICE[service]
        svc = core.read_namespaced_service(name, self.namespace)
        selector = ",".join(f"{key}={value}" for key, value in sorted((svc.spec.selector or {}).items()))
        return svc, core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def _exists(self, service: str) -> bool:
        from kubernetes import client as k
        from kubernetes.client.exceptions import ApiException

        try:
            k.CoreV1Api(self.client).read_namespaced_service(K8S_SERVICE[service], self.namespace)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    def ready_count(self, service: str) -> int:
        """How many ready pods ``service``'s Service selects (what the wake waits on)."""
        return sum(1 for p in self._service(service)[1] if is_ready(p))

    def _open(self, service: str) -> tuple[Any, Any, int]:
        """A port-forward stream to a ready pod of ``service``: (the PortForward, its socket, the pod port)."""
        from kubernetes import client as k
        from kubernetes.stream import portforward

        from gpuprov.infra.clouds.kubernetes.driver import KubernetesError

        with boundary(f"finding a ready pod of Service {K8S_SERVICE[service]} in {self.namespace}"):
            svc, pods = self._service(service)
        pod = pick_pod(pods)
        if pod is None:
            raise KubernetesError(f"kubernetes: no ready pod behind Service {K8S_SERVICE[service]} in "
                                  f"{self.namespace}; kubectl -n {self.namespace} get pods shows why")
        port = target_port(svc, pod)
        with boundary(f"port-forward to pod {pod.metadata.name}:{port}"):
            pf = portforward(k.CoreV1Api(self.client).connect_get_namespaced_pod_portforward,
                             pod.metadata.name, self.namespace, ports=str(port))
        return pf, pf.socket(port), port

    # --- forwarding -----------------------------------------------------------------------------------

    def _forward(self, service: str, client: socket.socket, peer: tuple[str, int]) -> None:
        pf, port = None, 0
        try:
            pf, remote, port = self._open(service)
            remote.setblocking(True)
            client_open = True
            while not self._stop.is_set():
                ready, _, _ = select.select([client, remote] if client_open else [remote], [], [], 1.0)
                if client in ready:
                    data = client.recv(65536)
                    if not data:  # the client sent all; keep reading the answer until the pod closes
                        client_open = False
                    else:
                        remote.sendall(data)
                if remote in ready:
                    data = remote.recv(65536)
                    if not data:
                        error = pf.error(port)
                        if error:
                            self.progress(f"forward to {service} failed: {error.strip()}")
                        return
                    client.sendall(data)
        except Exception as err:
            # The API's error channel says why the stream closed under us (a pod port that refuses): that, not
            # the broken pipe it left.
            said = pf.error(port) if pf is not None else None
            raise RuntimeError((said or str(err)).strip()) from err
        finally:
            if pf is not None:
                with contextlib.suppress(Exception):
                    pf.close()

    # --- lifecycle ------------------------------------------------------------------------------------

    def __enter__(self) -> KubeTunnel:
        from gpuprov.infra.clouds.kubernetes.driver import KubernetesError
        from gpuprov.infra.clouds.kubernetes.wake import wake

        try:
            # The namespace says what runs (a stack's record keeps no deployed list for a cluster): the services
            # whose Service is there. Fail now, with a clear line, when none is.
            with boundary(f"reading the stack's Services in {self.namespace}"):
                self.services = [s for s in self.services if self._exists(s)]
            if not self.services:
                raise KubernetesError(f"kubernetes: no Service of the stack in namespace {self.namespace}; "
                                      f"`gpuprov up --stack {self.stack}` applies the workloads")
            if "vllm" in self.services:  # Open WebUI answers from vLLM too: woken for either
                self._paused = wake(self.client, self.namespace, lambda: self.ready_count("vllm"),
                                    timeout_s=self.wake_timeout_s, by=f"gpuprov tunnel (pid {os.getpid()})",
                                    progress=self.progress)
            self._listen_all()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        from gpuprov.infra.clouds.kubernetes.wake import release

        super().close()
        if self._paused:
            self._paused = False
            try:
                release(self.client, self.namespace, self.progress)
            except Exception as err:  # noqa: BLE001 (said loudly: the pause holds a GPU pod that bills)
                self.progress(f"WARNING: {err}; vLLM stays held at 1 replica and bills until "
                              f"`gpuprov wake --stack {self.stack} --release`")
