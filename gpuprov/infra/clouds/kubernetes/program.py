"""The cluster targets' Pulumi program: a cluster (EKS, GKE) or an existing one, and the apps on it.

Children of one ``gpuprov:kubernetes:Stack``:

- ``eks``: an EKS cluster (pulumi-eks) whose API endpoint admits ``allowed_cidrs`` only, the VPC CNI's
  NetworkPolicy enforcement on, a managed node group ``system`` (1 x t3.medium) and a managed node group
  ``gpu`` of ``g5.xlarge`` on the EKS-optimised NVIDIA AMI (``AL2023_x86_64_NVIDIA``) from
  ``min_replicas`` (0) to ``max_replicas`` nodes, tainted ``nvidia.com/gpu``; the EBS CSI driver and a
  gp3 StorageClass (PVCs need them), and Helm releases of the NVIDIA device plugin (the AMI has the
  driver, not the plugin) and the Cluster Autoscaler (a managed node group does not scale by itself).
- ``gke``: a VPC of the stack's own with Cloud NAT (private nodes: no node has a public address), a
  GKE cluster with Dataplane V2 (it enforces NetworkPolicies), its endpoint limited to ``allowed_cidrs``
  (master authorised networks), a ``system`` pool (1 x e2-standard-2) and an autoscaled ``gpu`` pool of
  ``g2-standard-4`` with its L4 as a guest accelerator and GKE's own driver installation; GKE runs the
  device plugin and the autoscaler itself.
- ``kubernetes`` (an existing cluster): a provider for ``kubernetes.kubeconfig`` / ``kubernetes.context``;
  nothing cluster-wide is installed (the preflight says what is missing instead).
- Both created clusters: Helm releases of KEDA and a Prometheus server (KEDA's Prometheus scaler reads
  ``vllm:num_requests_waiting`` from it).
- Then the workloads of :mod:`.workloads`, the generated secrets as ``random`` passwords (Pulumi secrets).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pulumi

from gpuprov.infra.clouds.kubernetes import workloads as wl
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost, utcnow
from gpuprov.infra.tags import TAG_MANAGED, TAG_STACK, stack_tags

COMPONENT_TYPE = "gpuprov:kubernetes:Stack"
CHARTS = {  # name -> (repository, chart, version): pinned, as images are
    "keda": ("https://kedacore.github.io/charts", "keda", "2.17.2"),
    "prometheus": ("https://prometheus-community.github.io/helm-charts", "prometheus", "27.28.0"),
    "nvidia-device-plugin": ("https://nvidia.github.io/k8s-device-plugin", "nvidia-device-plugin", "0.17.1"),
    "cluster-autoscaler": ("https://kubernetes.github.io/autoscaler", "cluster-autoscaler", "9.46.6"),
}
EKS_GPU_AMI = "AL2023_x86_64_NVIDIA"
EKS_STORAGE_CLASS = "gpuprov-gp3"
GKE_SUBNET, GKE_MASTER_RANGE = "10.20.0.0/20", "172.16.0.32/28"
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryReadOnly",
                 "AmazonEBSCSIDriverPolicy")
GKE_AUTH_PLUGIN = "gke-gcloud-auth-plugin"


def eks_cluster_name(stack: str) -> str:
    return f"gpuprov-{stack}"


def _server(kubeconfig: Any) -> str:
    """The API server a kubeconfig names (JSON text or a mapping); a placeholder where it is not known yet."""
    try:
        doc = json.loads(kubeconfig) if isinstance(kubeconfig, str) else kubeconfig
        return str(doc["clusters"][0]["cluster"]["server"])
    except (TypeError, ValueError, KeyError, IndexError):
        return "(the cluster's API endpoint: known once it exists)"


def _gke_kubeconfig(endpoint: str, ca: str, name: str) -> str:
    """A kubeconfig for a GKE cluster that authenticates through gcloud's plugin (no key in it)."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": name,
        "clusters": [{"name": name, "cluster": {"server": f"https://{endpoint}", "certificate-authority-data": ca}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "users": [{"name": name, "user": {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                   "command": GKE_AUTH_PLUGIN, "provideClusterInfo": True,
                                                   "installHint": "gcloud components install gke-gcloud-auth-plugin"}}}],
    })



def pool_labels(config: StackConfig, pool: str) -> dict[str, str]:
    """The Kubernetes labels of a node pool's nodes: the pool (the workloads' nodeSelector) and the stack's own,
    so ``down`` and the reaper can ask the API for gpuprov's nodes (:func:`.cluster.labelled`)."""
    return {wl.POOL_LABEL: pool, TAG_MANAGED: "true", TAG_STACK: config.stack}

class ClusterStack(pulumi.ComponentResource):
    """The cluster (when gpuprov makes one) and the stack's workloads on it; ``host`` is a GpuHost dict."""

    host: pulumi.Output[dict[str, Any]]

    def __init__(self, name: str, config: StackConfig, kind: str, gpu: dict[str, Any],
                 vllm_settings: dict[str, str], now: datetime | None = None,
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__(COMPONENT_TYPE, name, None, opts)
        import pulumi_kubernetes as k8s

        self.name, self.config, self.kind = name, config, kind
        self.tags = stack_tags(config, now or utcnow())
        self.child = pulumi.ResourceOptions(parent=self)
        k = config.kubernetes
        self.low, self.high = wl.gpu_nodes_for(config)
        endpoint: pulumi.Input[str]
        kubeconfig: pulumi.Input[str] | None
        addons: list[pulumi.Resource] = []
        if kind == "eks":
            kubeconfig, endpoint = self._eks(gpu["instance_type"])
        elif kind == "gke":
            kubeconfig, endpoint = self._gke(gpu["instance_type"], gpu["accelerator"])
        else:
            kubeconfig = str(k.kubeconfig) if k and k.kubeconfig else None
            endpoint = f"context {k.context}" if k and k.context else "the kubeconfig's current context"
        self.provider = k8s.Provider(f"{name}-k8s", kubeconfig=kubeconfig, context=k.context if k and kind == "kubernetes"
                                     else None, enable_server_side_apply=True, opts=self.child)
        on_cluster = pulumi.ResourceOptions(parent=self, provider=self.provider)
        if kind != "kubernetes":
            addons = self._addons(on_cluster)

        secrets = self._secrets()
        declared: dict[str, pulumi.Resource] = {}
        items = wl.manifests(config, self.tags, vllm_settings, storage_class=EKS_STORAGE_CLASS
                             if kind == "eks" and not (k and k.storage_class) else None)
        namespace_res: pulumi.Resource | None = None
        for manifest in items:
            after: list[pulumi.Resource] = [namespace_res] if namespace_res else []
            if manifest["kind"] == "ScaledObject":
                after += addons  # KEDA's CRD comes with its release
            res = declare(manifest, secrets, pulumi.ResourceOptions(parent=self, provider=self.provider,
                                                                    depends_on=after or None))
            declared[f"{manifest['kind']}/{manifest['metadata']['name']}"] = res
            if manifest["kind"] == "Namespace":
                namespace_res = res

        itype, gpu_name = gpu.get("instance_type"), gpu.get("name")

        def to_host(address: str) -> dict[str, Any]:
            return GpuHost(cloud=config.cloud, address=str(address), ssh_user="kubectl", ssh_port=443,
                           instance_id=wl.namespace(config), region=config.resolved_region if kind != "kubernetes"
                           else None, instance_type=itype, gpu=gpu_name, gpu_count=self.high,
                           usd_hour=float(gpu.get("usd_hour_at_min") or 0.0), launched_at=utcnow()).to_outputs()

        self.host = pulumi.Output.from_input(endpoint).apply(to_host)
        self.register_outputs({"host": self.host, "namespace": wl.namespace(config)})

    # --- clusters ---------------------------------------------------------------------------------

    def _eks(self, gpu_type: str) -> tuple[pulumi.Output[Any], pulumi.Output[str]]:
        import pulumi_aws as aws
        import pulumi_eks as eks

        config, name, tags = self.config, self.name, self.tags
        k = config.kubernetes
        role = aws.iam.Role(f"{name}-nodes", assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "ec2.amazonaws.com"}}]}),
            tags=tags, opts=self.child)
        attachments = [aws.iam.RolePolicyAttachment(f"{name}-nodes-{i}", role=role.name,
                                                    policy_arn=f"arn:aws:iam::aws:policy/{policy}", opts=self.child)
                       for i, policy in enumerate(NODE_POLICIES)]
        # The Cluster Autoscaler runs on the nodes and resizes the GPU group: its permissions, on the node role.
        aws.iam.RolePolicy(f"{name}-autoscaler", role=role.id, policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*", "Action": [
                "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
                "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeTags",
                "autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup",
                "ec2:DescribeLaunchTemplateVersions", "ec2:DescribeInstanceTypes", "eks:DescribeNodegroup"]}]}),
            opts=self.child)
        cluster_name = eks_cluster_name(config.stack)
        cluster = eks.Cluster(  # type: ignore[call-overload]  # dict inputs, as the provider takes them
            f"{name}-eks", name=cluster_name, version=k.version if k else None, skip_default_node_group=True,
            authentication_mode="API",  # EKS itself makes the managed node groups' access entries
            endpoint_public_access=True, endpoint_private_access=True,
            public_access_cidrs=list(config.allowed_cidrs),  # the driver refuses an EKS stack without them
            vpc_cni_options={"enable_network_policy": True}, create_oidc_provider=True,
            tags=tags, opts=pulumi.ResourceOptions(parent=self, depends_on=attachments))
        eks.ManagedNodeGroup(
            f"{name}-system", cluster=cluster.core, node_role_arn=role.arn, instance_types=["t3.medium"],
            scaling_config={"min_size": 1, "desired_size": 1, "max_size": 2},
            labels=pool_labels(config, "system"), tags=tags, opts=self.child)
        autoscaler_tags = {
            f"k8s.io/cluster-autoscaler/node-template/label/{wl.POOL_LABEL}": "gpu",
            "k8s.io/cluster-autoscaler/node-template/resources/nvidia.com/gpu": "1",
            "k8s.io/cluster-autoscaler/node-template/taint/nvidia.com/gpu": "true:NoSchedule",
        }
        eks.ManagedNodeGroup(
            f"{name}-gpu", cluster=cluster.core, node_role_arn=role.arn, ami_type=EKS_GPU_AMI, instance_types=[gpu_type],
            scaling_config={"min_size": self.low, "desired_size": self.low, "max_size": self.high},
            ignore_scaling_changes=True,  # the autoscaler moves desired_size; an `up` must not move it back
            labels=pool_labels(config, "gpu"),
            taints=[{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}],
            tags={**tags, **autoscaler_tags}, opts=self.child)
        aws.eks.Addon(f"{name}-ebs-csi", cluster_name=cluster_name, addon_name="aws-ebs-csi-driver",
                      tags=tags, opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster]))
        kubeconfig = cluster.kubeconfig_json
        return kubeconfig, kubeconfig.apply(_server)

    def _gke(self, gpu_type: str, accelerator: str) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        import pulumi_gcp as gcp

        config, name, tags = self.config, self.name, self.tags
        k = config.kubernetes
        zone, region = config.resolved_zone, config.resolved_region
        network = gcp.compute.Network(f"{name}-net", auto_create_subnetworks=False,
                                      description=f"gpuprov {config.stack}: the cluster's own network", opts=self.child)
        subnet = gcp.compute.Subnetwork(f"{name}-subnet", network=network.id, region=region,
                                        ip_cidr_range=GKE_SUBNET, private_ip_google_access=True, opts=self.child)
        router = gcp.compute.Router(f"{name}-router", network=network.id, region=region, opts=self.child)
        gcp.compute.RouterNat(f"{name}-nat", router=router.name, region=region,
                              nat_ip_allocate_option="AUTO_ONLY",
                              source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES", opts=self.child)
        cluster = gcp.container.Cluster(
            f"{name}-gke", location=zone, network=network.id, subnetwork=subnet.id,
            remove_default_node_pool=True, initial_node_count=1, min_master_version=k.version if k else None,
            datapath_provider="ADVANCED_DATAPATH",  # Dataplane V2: NetworkPolicies are enforced
            ip_allocation_policy={},  # VPC-native, which Dataplane V2 needs
            private_cluster_config={"enable_private_nodes": True, "enable_private_endpoint": False,
                                    "master_ipv4_cidr_block": GKE_MASTER_RANGE},
            master_authorized_networks_config={"cidr_blocks": [
                {"cidr_block": c, "display_name": "gpuprov allowed_cidrs"} for c in config.allowed_cidrs]},
            resource_labels=tags, deletion_protection=False, opts=self.child)
        node_base = {"resource_labels": tags, "oauth_scopes": ["https://www.googleapis.com/auth/cloud-platform"],
                     "shielded_instance_config": {"enable_secure_boot": True}}
        gcp.container.NodePool(  # type: ignore[call-overload]
            f"{name}-system", cluster=cluster.name, location=zone, node_count=1,
            node_config={**node_base, "machine_type": "e2-standard-2", "labels": pool_labels(config, "system")},
            opts=self.child)
        gcp.container.NodePool(  # type: ignore[call-overload]
            f"{name}-gpu", cluster=cluster.name, location=zone, initial_node_count=self.low,
            autoscaling={"min_node_count": self.low, "max_node_count": self.high},
            node_config={**node_base, "machine_type": gpu_type, "labels": pool_labels(config, "gpu"),
                         "guest_accelerators": [{"type": accelerator, "count": 1, "gpu_driver_installation_config": {
                             "gpu_driver_version": "LATEST"}}]},  # GKE installs the driver; it runs the plugin
            opts=self.child)
        kubeconfig = pulumi.Output.all(cluster.endpoint, cluster.master_auth).apply(
            lambda a: _gke_kubeconfig(str(a[0]), str((a[1] or {}).get("cluster_ca_certificate", "")), f"gpuprov-{config.stack}"))
        return kubeconfig, cluster.endpoint

    def _addons(self, on_cluster: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """What a cluster gpuprov makes needs besides the workloads: KEDA, Prometheus, and on EKS the
        device plugin, the Cluster Autoscaler and a gp3 StorageClass."""
        import pulumi_kubernetes as k8s

        def release(chart: str, namespace: str, values: dict[str, Any]) -> k8s.helm.v3.Release:
            repo, name, version = CHARTS[chart]
            return k8s.helm.v3.Release(f"{self.name}-{chart}", chart=name, version=version, namespace=namespace,
                                       create_namespace=True, repository_opts={"repo": repo}, values=values,
                                       opts=on_cluster)

        k = self.config.kubernetes
        out: list[pulumi.Resource] = [release("keda", "keda", {}),
               release("prometheus", k.prometheus_namespace if k else "monitoring", {
                   "alertmanager": {"enabled": False}, "prometheus-pushgateway": {"enabled": False},
                   "server": {"persistentVolume": {"enabled": False}, "retention": "1d",
                              "nodeSelector": {wl.POOL_LABEL: "system"}}})]
        if self.kind == "eks":
            out.append(release("nvidia-device-plugin", "kube-system", {
                "nodeSelector": {wl.POOL_LABEL: "gpu"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]}))
            out.append(release("cluster-autoscaler", "kube-system", {
                "autoDiscovery": {"clusterName": eks_cluster_name(self.config.stack)},
                "awsRegion": self.config.resolved_region,
                "extraArgs": {"scale-down-unneeded-time": f"{self.config.idle_minutes}m", "expander": "least-waste"},
                "nodeSelector": {wl.POOL_LABEL: "system"}}))
            out.append(declare(wl.ebs_storage_class(self.tags, EKS_STORAGE_CLASS), {}, on_cluster))
        return out

    def _secrets(self) -> dict[str, pulumi.Output[str]]:
        """The generated service secrets, as ``random`` passwords kept (encrypted) in the stack's state."""
        import pulumi_random as random

        out: dict[str, pulumi.Output[str]] = {}
        for key, length in (("VLLM_API_KEY", 40), ("WEBUI_SECRET_KEY", 48), ("WEBUI_ADMIN_PASSWORD", 24)):
            password = random.RandomPassword(f"{self.name}-{key.lower().replace('_', '-')}", length=length,
                                             special=False, opts=self.child)
            out[key] = password.result
        out["VLLM_API_KEY"] = out["VLLM_API_KEY"].apply(lambda v: f"sk-{v}")
        if self.config.hf_token_value:
            out["HF_TOKEN"] = pulumi.Output.secret(self.config.hf_token_value)
        return out


def declare(manifest: dict[str, Any], secrets: dict[str, pulumi.Output[str]],
            opts: pulumi.ResourceOptions) -> pulumi.Resource:
    """One manifest as the pulumi-kubernetes resource of its kind (a Secret's values from ``secrets``)."""
    import pulumi_kubernetes as k8s

    kind, meta = manifest["kind"], manifest["metadata"]
    name = f"{meta.get('namespace', 'cluster')}-{kind.lower()}-{meta['name']}"
    spec = manifest.get("spec")
    if kind == "Namespace":
        return k8s.core.v1.Namespace(name, metadata=meta, opts=opts)
    if kind == "Secret":
        data = {key: pulumi.Output.secret(secrets.get(key, value)) for key, value in manifest["stringData"].items()}
        # (the admin e-mail has no generated value: it stays the manifest's own)
        return k8s.core.v1.Secret(name, metadata=meta, type=manifest.get("type"), string_data=data, opts=opts)
    if kind == "StorageClass":
        return k8s.storage.v1.StorageClass(name, metadata=meta, provisioner=manifest["provisioner"],
                                           parameters=manifest.get("parameters"),
                                           volume_binding_mode=manifest.get("volumeBindingMode"),
                                           reclaim_policy=manifest.get("reclaimPolicy"),
                                           allow_volume_expansion=manifest.get("allowVolumeExpansion"), opts=opts)
    classes: dict[str, Any] = {
        "PersistentVolumeClaim": k8s.core.v1.PersistentVolumeClaim, "Service": k8s.core.v1.Service,
        "Deployment": k8s.apps.v1.Deployment, "NetworkPolicy": k8s.networking.v1.NetworkPolicy,
    }
    if kind in classes:
        return classes[kind](name, metadata=meta, spec=spec, opts=opts)  # type: ignore[no-any-return]
    return k8s.apiextensions.CustomResource(name, api_version=manifest["apiVersion"], kind=kind, metadata=meta,
                                            spec=spec, opts=opts)


def build_cluster_stack(config: StackConfig, kind: str, gpu: dict[str, Any],
                        vllm_settings: dict[str, str]) -> pulumi.Output[dict[str, Any]]:
    return ClusterStack(f"gpuprov-{config.stack}", config, kind, gpu, vllm_settings).host
