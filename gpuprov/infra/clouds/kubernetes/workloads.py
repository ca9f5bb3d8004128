"""The stack's apps on Kubernetes, as plain manifests (data): what the Pulumi program declares, one resource each.

Plain ``pulumi-kubernetes`` resources rather than vLLM's production-stack Helm chart: every object is
gpuprov's own data, so ``plan`` lists each one and its exposure, the tests validate each one against the
Kubernetes OpenAPI schemas, and the security rules (the NetworkPolicies, no public Service without
``allow_public``) are gpuprov's to keep, not a chart's defaults to override. The chart also brings a
router gpuprov does not need for one model.

What each app becomes (namespace ``gpuprov-<stack>`` unless ``kubernetes.namespace`` says another):

- vLLM: a Deployment (one GPU per pod, the settings :mod:`gpuprov.apps.vllm_cxr.sizing` picks for the
  pool's GPU, the API key from a Secret, the model cache on a PVC, a startup probe on ``/health``), a
  ClusterIP Service, and a KEDA ScaledObject on ``vllm:num_requests_waiting`` from ``min_replicas``
  (0 by default) to ``max_replicas``, back to the minimum after ``idle_minutes`` without requests.
- Open WebUI: one replica, its data on a PVC, vLLM's key from the same Secret.
- MONAI Label: one replica (nnInteractive's session is a process-wide global: a second replica would
  split sessions), its downloaded checkpoints on a PVC; only with ``monai_label_image`` (no host to build on).
- NetworkPolicies: everything in the namespace denies ingress; vLLM admits Open WebUI's pods (and the
  Prometheus namespace, for ``/metrics``); Open WebUI and MONAI Label admit only ``allowed_cidrs``, and
  only when their port is in ``open_ports`` (then their Service is a LoadBalancer limited to those
  ranges). ``kubectl port-forward`` goes through the kubelet, which NetworkPolicies do not filter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from gpuprov.infra.config import StackConfig

VLLM, WEBUI, MONAI = "vllm", "open-webui", "monai-label"
VLLM_PORT, WEBUI_PORT, MONAI_PORT = 8000, 3000, 8002
WEBUI_CONTAINER_PORT = 8080
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
POOL_LABEL = "gpuprov-pool"  # gpu | system, on the node pools gpuprov creates
QUEUE_METRIC = "vllm:num_requests_waiting"
RUNNING_METRIC = "vllm:num_requests_running"
ACTIVITY_TARGET = 1000  # the activity trigger's per-replica target: high, so it holds one replica and adds none
QUEUE_PER_REPLICA = 4  # waiting requests per replica before KEDA adds one
POLL_S = 30
SIZES_GI = {"model-cache": 50, "open-webui-data": 5, "monai-label-checkpoints": 20}
STARTUP_BUDGET_S = 30 * 60  # the model downloads on a first start: up to 30 minutes before the probe gives up
PART_OF = "gpuprov"


def namespace(config: StackConfig) -> str:
    k = config.kubernetes
    return k.namespace if k and k.namespace else f"gpuprov-{config.stack}"


def _labels(config: StackConfig, tags: dict[str, str], component: str | None = None) -> dict[str, str]:
    out = {"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "gpuprov", **tags}
    if component:
        out["app.kubernetes.io/name"] = component
    return out


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": PART_OF}


def _meta(config: StackConfig, tags: dict[str, str], name: str, component: str | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace(config), "labels": _labels(config, tags, component)}


@dataclass(frozen=True)
class ScaleRule:
    """When vLLM scales, as data: KEDA's ScaledObject is written from this, and the tests read it."""

    min_replicas: int
    max_replicas: int
    idle_s: int  # KEDA's cooldownPeriod: how long every trigger is inactive before scaling to min_replicas
    metric: str
    query: str  # the queue: waiting requests, ``threshold`` per replica before KEDA adds one
    threshold: int  # waiting requests per replica
    polling_s: int
    activity_query: str = ""  # requests running or waiting: while above 0 the stack is in use, not idle

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0


def scale_rule(config: StackConfig) -> ScaleRule:
    k = config.kubernetes
    low, high = (k.min_replicas, k.max_replicas) if k else (0, 1)
    where = f'{{namespace="{namespace(config)}"}}'
    query = f"sum({QUEUE_METRIC}{where}) or vector(0)"
    # The queue alone would call a replica serving one request at a time idle (nothing waits), so activity is
    # its own trigger: requests running or waiting keep it up; idle_minutes of neither take it to the minimum.
    activity = f"(sum({RUNNING_METRIC}{where}) or vector(0)) + (sum({QUEUE_METRIC}{where}) or vector(0))"
    return ScaleRule(low, high, config.idle_minutes * 60, QUEUE_METRIC, query, QUEUE_PER_REPLICA, POLL_S, activity)


def _pvc(config: StackConfig, tags: dict[str, str], name: str, default_class: str | None) -> dict[str, Any]:
    """A ReadWriteOnce claim of the config's storage class, else ``default_class`` (None: the cluster's default)."""
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                            "resources": {"requests": {"storage": f"{SIZES_GI[name]}Gi"}}}
    chosen = config.kubernetes.storage_class if config.kubernetes and config.kubernetes.storage_class else \
        default_class
    if chosen:
        spec["storageClassName"] = chosen
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(config, tags, name), "spec": spec}


def _secret_env(name: str, secret: str, key: str, optional: bool = False) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name, "valueFrom": {"secretKeyRef": ref}}


_RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


GENERATED = "(generated at up time)"  # a Secret value the program fills from a random password
SECRET_KEYS = ("VLLM_API_KEY", "WEBUI_SECRET_KEY", "WEBUI_ADMIN_PASSWORD")


def vllm_manifests(config: StackConfig, tags: dict[str, str], settings: dict[str, str],
                   storage_class: str | None = None) -> list[dict[str, Any]]:
    """vLLM: Secret, model cache PVC, Deployment, Service. ``settings``: the sizing's values for the pool's GPU.

    The Secret's generated values are placeholders here; the program puts Pulumi secrets in their place."""
    ns_meta = _meta(config, tags, VLLM, VLLM)
    data = {**dict.fromkeys(SECRET_KEYS, GENERATED), "WEBUI_ADMIN_EMAIL": f"admin@{config.stack}.gpuprov.local"}
    if config.hf_token_value:
        data["HF_TOKEN"] = GENERATED.replace("generated", "HF_TOKEN, set")
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": _meta(config, tags, "gpuprov-secrets"),
              "stringData": data}
    args = [config.model_id, "--host", "0.0.0.0", "--port", str(VLLM_PORT),
            "--dtype", settings["VLLM_DTYPE"], "--max-model-len", settings["MAX_MODEL_LEN"],
            "--limit-mm-per-prompt", settings["LIMIT_MM_PER_PROMPT"],
            "--mm-processor-kwargs", settings["MM_PROCESSOR_KWARGS"], "--trust-remote-code",
            "--gpu-memory-utilization", settings["GPU_MEMORY_UTILIZATION"], "--enforce-eager",
            "--served-model-name", config.served_model_name]
    probe = {"httpGet": {"path": "/health", "port": VLLM_PORT}, "periodSeconds": 10}
    container = {
        "name": VLLM, "image": config.vllm_image, "args": args,
        "ports": [{"name": "http", "containerPort": VLLM_PORT}],
        "env": [_secret_env("VLLM_API_KEY", "gpuprov-secrets", "VLLM_API_KEY"),
                _secret_env("HF_TOKEN", "gpuprov-secrets", "HF_TOKEN", optional=True)],
        "resources": {"limits": {GPU_RESOURCE: 1}, "requests": {"cpu": "2", "memory": "12Gi"}},
        "startupProbe": {**probe, "failureThreshold": STARTUP_BUDGET_S // 10},
        "readinessProbe": {**probe, "failureThreshold": 3},
        "livenessProbe": {**probe, "failureThreshold": 6},
        "volumeMounts": [{"name": "model-cache", "mountPath": "/root/.cache/huggingface"},
                         {"name": "shm", "mountPath": "/dev/shm"}],  # docker's ipc: host, in Kubernetes terms
        "securityContext": _RESTRICTED,
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": ns_meta,
        "spec": {
            "replicas": scale_rule(config).min_replicas,  # KEDA owns the count from here
            "strategy": {"type": "Recreate"},  # the model cache is ReadWriteOnce: one pod at a time on it
            "selector": {"matchLabels": _selector(VLLM)},
            "template": {
                "metadata": {"labels": _labels(config, tags, VLLM), "annotations": {
                    "prometheus.io/scrape": "true", "prometheus.io/port": str(VLLM_PORT),
                    "prometheus.io/path": "/metrics"}},
                "spec": {"containers": [container], "tolerations": [GPU_TOLERATION],
                         "automountServiceAccountToken": False,
                         "volumes": [{"name": "model-cache", "persistentVolumeClaim": {"claimName": "model-cache"}},
                                     {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}]},
            },
        },
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": _meta(config, tags, VLLM, VLLM),
               "spec": {"type": "ClusterIP", "selector": _selector(VLLM),
                        "ports": [{"name": "http", "port": VLLM_PORT, "targetPort": VLLM_PORT}]}}
    return [secret, _pvc(config, tags, "model-cache", storage_class), deployment, service]


def _service(config: StackConfig, tags: dict[str, str], name: str, port: int, target: int) -> dict[str, Any]:
    """ClusterIP (reached by port-forward) unless ``port`` is in ``open_ports``: then a LoadBalancer that
    admits ``allowed_cidrs`` only, keeping client addresses (``Local``) so the NetworkPolicy can check them."""
    spec: dict[str, Any] = {"type": "ClusterIP", "selector": _selector(name),
                            "ports": [{"name": "http", "port": port, "targetPort": target}]}
    if port in config.open_ports:
        spec |= {"type": "LoadBalancer", "loadBalancerSourceRanges": list(config.allowed_cidrs),
                 "externalTrafficPolicy": "Local"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(config, tags, name, name), "spec": spec}


def webui_manifests(config: StackConfig, tags: dict[str, str], storage_class: str | None = None) -> list[dict[str, Any]]:
    container = {
        "name": WEBUI, "image": config.open_webui_image,
        "ports": [{"name": "http", "containerPort": WEBUI_CONTAINER_PORT}],
        "env": [{"name": "OPENAI_API_BASE_URL", "value": f"http://{VLLM}.{namespace(config)}.svc:{VLLM_PORT}/v1"},
                {"name": "WEBUI_AUTH", "value": "True"}, {"name": "ENABLE_PERSISTENT_CONFIG", "value": "False"},
                {"name": "ENABLE_SIGNUP", "value": "False"},
                _secret_env("OPENAI_API_KEY", "gpuprov-secrets", "VLLM_API_KEY"),
                *(_secret_env(k, "gpuprov-secrets", k) for k in ("WEBUI_SECRET_KEY", "WEBUI_ADMIN_EMAIL",
                                                                   "WEBUI_ADMIN_PASSWORD"))],
        "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}},
        "readinessProbe": {"httpGet": {"path": "/health", "port": WEBUI_CONTAINER_PORT}, "periodSeconds": 10},
        "volumeMounts": [{"name": "data", "mountPath": "/app/backend/data"}],
        "securityContext": _RESTRICTED,
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(config, tags, WEBUI, WEBUI),
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": _selector(WEBUI)},
                 "template": {"metadata": {"labels": _labels(config, tags, WEBUI)},
                              "spec": {"containers": [container], "automountServiceAccountToken": False,
                                       "nodeSelector": {POOL_LABEL: "system"} if _own_pools(config) else {},
                                       "volumes": [{"name": "data", "persistentVolumeClaim": {
                                           "claimName": "open-webui-data"}}]}}},
    }
    return [_pvc(config, tags, "open-webui-data", storage_class), deployment,
            _service(config, tags, WEBUI, WEBUI_PORT, WEBUI_CONTAINER_PORT)]


def monai_manifests(config: StackConfig, tags: dict[str, str], storage_class: str | None = None) -> list[dict[str, Any]]:
    assert config.monai_label_image is not None  # the driver's check_config asks for it
    container = {
        "name": MONAI, "image": config.monai_label_image,
        "command": ["python", "-m", "monailabel.main", "start_server", "--app", "/code/apps/radiology",
                    "--studies", "/code/studies", "--conf", "models", "segmentation",
                    "--conf", "use_pretrained_model", "false", "--host", "0.0.0.0", "-p", str(MONAI_PORT)],
        "env": [{"name": "CUDA_VISIBLE_DEVICES", "value": "0"}],
        "ports": [{"name": "http", "containerPort": MONAI_PORT}],
        "resources": {"limits": {GPU_RESOURCE: 1}, "requests": {"cpu": "2", "memory": "12Gi"}},
        "volumeMounts": [{"name": "checkpoints", "mountPath": "/code/checkpoints/nnInteractive_v1.0",
                          "subPath": "nnInteractive_v1.0"},
                         {"name": "checkpoints", "mountPath": "/code/checkpoints/.cache", "subPath": ".cache"},
                         {"name": "shm", "mountPath": "/dev/shm"}],
        "securityContext": _RESTRICTED,
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(config, tags, MONAI, MONAI),
        # One replica, replaced not rolled: nnInteractive keeps its session in one process.
        "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": _selector(MONAI)},
                 "template": {"metadata": {"labels": _labels(config, tags, MONAI)},
                              "spec": {"containers": [container], "tolerations": [GPU_TOLERATION],
                                       "automountServiceAccountToken": False,
                                       "volumes": [{"name": "checkpoints", "persistentVolumeClaim": {
                                           "claimName": "monai-label-checkpoints"}},
                                           {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "10Gi"}}]}}},
    }
    return [_pvc(config, tags, "monai-label-checkpoints", storage_class), deployment,
            _service(config, tags, MONAI, MONAI_PORT, MONAI_PORT)]


def network_policies(config: StackConfig, tags: dict[str, str]) -> list[dict[str, Any]]:
    """Deny all ingress in the namespace, then admit exactly: Open WebUI (and Prometheus) to vLLM, and
    ``allowed_cidrs`` to the services whose port is opened."""
    k = config.kubernetes
    prometheus_ns = k.prometheus_namespace if k else "monitoring"

    def policy(name: str, pod: dict[str, str], ingress: list[dict[str, Any]]) -> dict[str, Any]:
        spec: dict[str, Any] = {"podSelector": {"matchLabels": pod} if pod else {}, "policyTypes": ["Ingress"]}
        if ingress:
            spec["ingress"] = ingress
        return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": _meta(config, tags, name), "spec": spec}

    out = [policy("deny-all-ingress", {}, [])]
    out.append(policy("vllm-from-open-webui", _selector(VLLM), [{
        "from": [{"podSelector": {"matchLabels": _selector(WEBUI)}},
                 {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": prometheus_ns}}}],
        "ports": [{"protocol": "TCP", "port": VLLM_PORT}]}]))
    for name, port, target in ((WEBUI, WEBUI_PORT, WEBUI_CONTAINER_PORT), (MONAI, MONAI_PORT, MONAI_PORT)):
        if port in config.open_ports and (name != MONAI or "monai_label" in config.apps):
            out.append(policy(f"{name}-from-allowed-cidrs", _selector(name), [{
                "from": [{"ipBlock": {"cidr": c}} for c in config.allowed_cidrs],
                "ports": [{"protocol": "TCP", "port": target}]}]))
    return out


def scaled_object(config: StackConfig, tags: dict[str, str]) -> dict[str, Any]:
    """KEDA's ScaledObject for vLLM, from :func:`scale_rule`."""
    rule = scale_rule(config)
    k = config.kubernetes
    server = k.prometheus_url if k else "http://prometheus-server.monitoring.svc:80"
    return {
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": _meta(config, tags, VLLM, VLLM),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": VLLM},
            "minReplicaCount": rule.min_replicas, "maxReplicaCount": rule.max_replicas,
            "cooldownPeriod": rule.idle_s, "pollingInterval": rule.polling_s,
            "triggers": [
                {"type": "prometheus", "name": "queue", "metadata": {
                    "serverAddress": server, "query": rule.query, "threshold": str(rule.threshold),
                    "activationThreshold": "0"}},
                {"type": "prometheus", "name": "activity", "metadata": {
                    "serverAddress": server, "query": rule.activity_query, "threshold": str(ACTIVITY_TARGET),
                    "activationThreshold": "0"}},
            ],
        },
    }


def namespace_manifest(config: StackConfig, tags: dict[str, str]) -> dict[str, Any]:
    labels = _labels(config, tags)
    labels["pod-security.kubernetes.io/enforce"] = "baseline"  # no privileged pods, no host namespaces
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace(config), "labels": labels}}


def _own_pools(config: StackConfig) -> bool:
    from gpuprov.infra.clouds import driver_class

    return driver_class(config.cloud).creates_cloud_resources


def ebs_storage_class(tags: dict[str, str], name: str) -> dict[str, Any]:
    """EKS's default class uses the in-tree EBS provisioner, gone since 1.23: a gp3 class of the CSI driver."""
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "gpuprov", **tags}},
            "provisioner": "ebs.csi.aws.com", "parameters": {"type": "gp3", "encrypted": "true"},
            "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete", "allowVolumeExpansion": True}


def gpu_nodes_for(config: StackConfig) -> tuple[int, int]:
    """GPU nodes at the pool's min and max (:func:`gpuprov.infra.clouds.kubernetes.prices.gpu_nodes`)."""
    from gpuprov.infra.clouds.kubernetes.prices import gpu_nodes

    rule = scale_rule(config)
    return gpu_nodes(rule.min_replicas, rule.max_replicas, "monai_label" in config.apps)


def manifests(config: StackConfig, tags: dict[str, str], vllm_settings: dict[str, str],
              storage_class: str | None = None) -> list[dict[str, Any]]:
    """Every namespaced object of the stack, in the order they are created (the Namespace first).
    ``storage_class``: the class the PVCs use when the config names none (None: the cluster's default)."""
    out = [namespace_manifest(config, tags)]
    out += network_policies(config, tags)
    if "vllm_cxr" in config.apps:
        out += vllm_manifests(config, tags, vllm_settings, storage_class)
        out.append(scaled_object(config, tags))
        out += webui_manifests(config, tags, storage_class)
    if "monai_label" in config.apps:
        out += monai_manifests(config, tags, storage_class)
    return out


def redacted(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest safe to print: a Secret's values replaced by their names."""
    if manifest.get("kind") != "Secret":
        return manifest
    return {**manifest, "stringData": {k: "(secret)" for k in manifest.get("stringData", {})}}


def dumps(items: list[dict[str, Any]]) -> str:
    return json.dumps([redacted(m) for m in items], indent=2)
