"""Kubernetes as gpuprov targets: a cluster you have (``kubernetes``), or one gpuprov creates (``eks``, ``gke``).

One folder, three registered clouds: the same workloads (:mod:`.workloads`), the same exposure rules and
the same plan, on a cluster that comes from a kubeconfig or from pulumi-eks / the GCP provider. Going from
one host to a cluster is one config change: ``cloud: aws`` to ``cloud: eks`` (or ``gcp`` to ``gke``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gpuprov.infra.clouds.base import (
    CatalogCloud,
    CloudDriver,
    CloudError,
    ExposureRow,
    Finding,
    IdleAction,
    Leftover,
    Progress,
    ReapPolicy,
    catalog_defaults,
    catalog_name,
)
from gpuprov.infra.errors import GpuprovError

if TYPE_CHECKING:
    import pulumi
    from pulumi.runtime import MockResourceArgs

    from gpuprov.infra.config import StackConfig
    from gpuprov.infra.host import GpuHost
    from gpuprov.infra.stacks import StackBackend

DEPLOYMENT, SERVICE = "kubernetes:apps/v1:Deployment", "kubernetes:core/v1:Service"
NETWORK_POLICY, CUSTOM = "kubernetes:networking.k8s.io/v1:NetworkPolicy", "kubernetes:keda.sh/v1alpha1:ScaledObject"
EKS_CLUSTER, EKS_GROUP = "eks:index:Cluster", "eks:index:ManagedNodeGroup"
GKE_CLUSTER, GKE_POOL = "gcp:container/cluster:Cluster", "gcp:container/nodePool:NodePool"
PORT_FORWARD = "kubectl port-forward only (the Kubernetes API; gpuprov tunnel)"
SERVICE_PORTS = (3000, 8002)  # what open_ports may open on a cluster: Open WebUI and MONAI Label, never vLLM


class KubernetesError(CloudError):
    """The Kubernetes API could not be asked, or the cluster lacks what the stack needs."""


class NotOverSsh(GpuprovError):
    """A command that reaches a host over SSH (deploy, tunnel, smoke, fab) was asked of a cluster stack."""

    exit_code = 2


class ClusterBackend:
    """The Pulumi backend of a cluster stack, less ``running_host``: a cluster's apps are workloads reached
    through the Kubernetes API, never a host over SSH, so the SSH commands stop with a line saying so."""

    def __init__(self, inner: Any):
        self.inner = inner

    def up(self, config: StackConfig) -> GpuHost:
        return self.inner.up(config)  # type: ignore[no-any-return]

    def destroy(self, config: StackConfig) -> None:
        self.inner.destroy(config)

    def outputs(self, config: StackConfig) -> GpuHost | None:
        return self.inner.outputs(config)  # type: ignore[no-any-return]

    def running_host(self, config: StackConfig) -> GpuHost:
        from gpuprov.infra.clouds.kubernetes.workloads import namespace

        raise NotOverSsh(f"stack '{config.stack}' runs on a Kubernetes cluster: its apps are workloads there, not a "
                         f"host over SSH; `gpuprov up` applies them, and `gpuprov tunnel --stack {config.stack}` "
                         f"reaches them (through the Kubernetes API's port-forward, namespace {namespace(config)})")


class ClusterDriver(CloudDriver):
    """What the three cluster targets share."""

    cluster = True
    kind: ClassVar[str]  # kubernetes | eks | gke
    credential_hint = "KUBECONFIG (or kubernetes.kubeconfig in the config)"
    secret_env: ClassVar[tuple[str, ...]] = ("KUBECONFIG",)  # a kubeconfig holds the cluster's credentials
    KEY_SETTINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        DEPLOYMENT: ("spec.replicas", "spec.strategy.type"),
        SERVICE: ("spec.type", "spec.loadBalancerSourceRanges"),
        CUSTOM: ("spec.minReplicaCount", "spec.maxReplicaCount", "spec.cooldownPeriod"),
        EKS_CLUSTER: ("version", "publicAccessCidrs", "endpointPublicAccess", "vpcCniOptions.enableNetworkPolicy"),
        EKS_GROUP: ("instanceTypes", "amiType", "scalingConfig", "taints"),
        GKE_CLUSTER: ("minMasterVersion", "masterAuthorizedNetworksConfig", "datapathProvider",
                      "privateClusterConfig.enablePrivateNodes"),
        GKE_POOL: ("nodeConfig.machineType", "nodeConfig.guestAccelerators", "autoscaling", "nodeCount"),
    }

    # --- config ------------------------------------------------------------------------------------

    def check_config(self, config: StackConfig) -> None:
        from gpuprov.infra.config import ConfigError

        others = [p for p in config.open_ports if p not in SERVICE_PORTS]
        if others:
            raise ConfigError("open_ports", list(config.open_ports), "on a cluster only 3000 (Open WebUI) and 8002 "
                              "(MONAI Label) can be opened; vLLM is reached by Open WebUI inside the cluster only")
        if config.host is not None:
            raise ConfigError("host", config.host, f"host applies to cloud: existing, not to {self.name}")

    # --- the program and plan ----------------------------------------------------------------------

    def gpu(self, config: StackConfig) -> dict[str, Any]:
        """The GPU pool's node: its instance type, GPU model, accelerator and price (for sizing, plan, host)."""
        return {"instance_type": None, "name": config.kubernetes.gpu if config.kubernetes else None,
                "accelerator": None, "usd_hour": None, "source": "an existing cluster: its owner's bill"}

    def vllm_settings(self, config: StackConfig) -> dict[str, str]:
        """vLLM's settings for one GPU of the pool's model (a card of its own: nothing else shares it)."""
        from gpuprov.apps import registry
        from gpuprov.apps.base import GpuTarget
        from gpuprov.infra.gpus import lookup

        spec = lookup(self.gpu(config)["name"])
        app = next(a for a in registry().selected(("vllm_cxr",)))
        assert app.sizing is not None
        return dict(app.sizing(config, GpuTarget(gpu=spec, arch=(spec.host_arch if spec else None) or "x86_64")).settings)

    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
        from gpuprov.infra.clouds.kubernetes.program import build_cluster_stack

        require_images(config)
        gpu = {**self.gpu(config), "usd_hour_at_min": self.hourly(config)[0]}
        return build_cluster_stack(config, self.kind, gpu, self.vllm_settings(config))

    def plan_outputs(self, args: MockResourceArgs) -> dict[str, Any]:
        from gpuprov.infra.plan import ASSIGNED_AT_UP

        if args.typ == EKS_CLUSTER:
            return {"kubeconfigJson": f'{{"clusters": [{{"cluster": {{"server": "{ASSIGNED_AT_UP} EKS API endpoint"}}}}]}}'}
        if args.typ == GKE_CLUSTER:
            return {"endpoint": f"{ASSIGNED_AT_UP} GKE API endpoint",
                    "masterAuth": {"clusterCaCertificate": f"{ASSIGNED_AT_UP} cluster CA"}}
        if args.typ == "random:index/randomPassword:RandomPassword":
            return {"result": f"{ASSIGNED_AT_UP} random password"}
        return {}

    def node_pools(self, config: StackConfig) -> list[dict[str, Any]]:
        """Each node pool gpuprov creates, with its node counts and price at min and max ([] for a cluster
        gpuprov does not create)."""
        return [p.to_json() for p in self._pools(config)]

    def _pools(self, config: StackConfig) -> list[Any]:
        from gpuprov.infra.clouds.kubernetes.prices import pool_costs
        from gpuprov.infra.clouds.kubernetes.workloads import scale_rule

        rule, gpu = scale_rule(config), self.gpu(config)
        return pool_costs(self.kind, gpu["instance_type"], gpu["usd_hour"], gpu["source"], rule.min_replicas,
                          rule.max_replicas, "monai_label" in config.apps)

    def hourly(self, config: StackConfig) -> tuple[float, float]:
        """USD an hour with every pool at its minimum, and at its maximum."""
        from gpuprov.infra.clouds.kubernetes.prices import totals

        return totals(self._pools(config))

    def budget_rule(self, config: StackConfig) -> Any:
        from gpuprov.infra.clouds.kubernetes.prices import BudgetRule

        low, high = self.hourly(config)
        return BudgetRule(low, high, config.budget_usd, config.max_lifetime_hours)

    def idle_protection(self, config: StackConfig) -> str | None:
        return str(self.budget_rule(config).warning())

    def api_exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> ExposureRow:
        """Who reaches the Kubernetes API: the cluster's own rule for an existing cluster."""
        return ExposureRow(443, "kubernetes-api", (), "the existing cluster's own access rules (not gpuprov's)")

    def exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> list[ExposureRow]:
        """From the Services and NetworkPolicies the program declares: a LoadBalancer Service is reached from
        its source ranges, a ClusterIP one by port-forward only; vLLM from the pods its NetworkPolicy admits."""
        from gpuprov.infra.exposure import _direct

        rows = [self.api_exposure(config, resources)]
        policies = [r["inputs"] for r in resources if r["type"] == NETWORK_POLICY]
        for r in (r for r in resources if r["type"] == SERVICE):
            spec, name = r["inputs"].get("spec", {}), r["inputs"]["metadata"]["name"]
            port = spec["ports"][0]["port"]
            if spec.get("type") == "LoadBalancer":
                sources = list(spec.get("loadBalancerSourceRanges") or [])
                via = f"LoadBalancer, {_direct(sources)}" if sources else "LoadBalancer from anywhere"
                rows.append(ExposureRow(port, name, tuple(sources), via))
                continue
            admitted = [peer for p in policies
                        if p["spec"].get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == name
                        for rule in p["spec"].get("ingress", []) for peer in rule.get("from", [])]
            inside = sorted({f"pods {peer['podSelector']['matchLabels']['app.kubernetes.io/name']}" if "podSelector" in peer
                             else f"namespace {peer['namespaceSelector']['matchLabels']['kubernetes.io/metadata.name']}"
                             for peer in admitted if "ipBlock" not in peer})
            via = f"in-cluster only, from {' and '.join(inside)} (NetworkPolicy); {PORT_FORWARD}" if inside else PORT_FORWARD
            rows.append(ExposureRow(port, name, (), via))
        return rows

    # --- before up; what a stack left ---------------------------------------------------------------

    def backend(self, progress: Progress | None = None) -> StackBackend:
        from gpuprov.infra.stacks import pulumi_backend

        return ClusterBackend(pulumi_backend(self.settings, progress))

    def kubeconfig(self, config: StackConfig | None) -> Path:
        k = config.kubernetes if config else None
        if k and k.kubeconfig:
            return Path(k.kubeconfig).expanduser()
        first = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0]
        return Path(first).expanduser() if first else Path.home() / ".kube" / "config"

    def kubeconfig_command(self, config: StackConfig) -> str | None:
        """The command that writes a kubeconfig for a cluster gpuprov made (None: the cluster is the user's own)."""
        return None

    def api(self, config: StackConfig | None) -> Any:
        """A ``kubernetes`` client ApiClient for the config's kubeconfig and context."""
        from gpuprov.infra.clouds.kubernetes.cluster import api_client

        return api_client(self.kubeconfig(config), config.kubernetes.context if config and config.kubernetes else None)

    def idle_action(self, config: StackConfig, host: GpuHost) -> IdleAction:
        return IdleAction("stop-apps", "on a cluster KEDA scales vLLM to min_replicas after idle_minutes and the GPU "
                                       "pool's autoscaler removes the idle nodes; no agent runs on a node")

    def host_state(self, stack: str, host: GpuHost) -> str:
        return "cluster"


class KubernetesDriver(ClusterDriver):
    name = "kubernetes"
    title = "an existing Kubernetes cluster"
    kind = "kubernetes"
    creates_cloud_resources = False

    def has_credentials(self) -> bool:
        """Always asked: the kubeconfig is the credential, and the preflight says so when there is none."""
        return True

    def preflight(self, config: StackConfig, progress: Progress | None = None) -> None:
        from gpuprov.infra.clouds.kubernetes.cluster import cluster_facts, missing

        if progress:
            progress("kubernetes: checking the cluster for GPU nodes, the device plugin, KEDA and a storage class")
        lacks = missing(cluster_facts(self.api(config)), config)
        if lacks:
            raise KubernetesError(f"kubernetes: the cluster lacks {'; '.join(lacks)}")

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        from gpuprov.infra.clouds.kubernetes.cluster import labelled

        if config is None and not self.kubeconfig(None).is_file():
            return []  # asked for no stack's config and no kubeconfig here: no cluster to look at
        return labelled(self.api(config), stack)

    # --- the reaper's label sweep ---------------------------------------------------------------------

    def sweeps(self) -> bool:
        """gpuprov creates no paid resource on a cluster it is given, but its namespaces hold what bills (PVCs,
        LoadBalancers, the GPU nodes their pods keep up). Swept when asked (``gpuprov reap --cloud kubernetes``),
        not by default: a kubeconfig here may name clusters that are not gpuprov's, or that no longer answer."""
        return False

    def reap_findings(self, policy: ReapPolicy, only_stack: str | None = None,
                      config: StackConfig | None = None) -> list[Finding]:
        """gpuprov's namespaces the policy says go (expired, or the caller's own abandoned run's; never a live
        one of someone else's). A namespace is the unit: its PVCs and LoadBalancer Services go with it."""
        items = self.inventory(only_stack, config)
        found = []
        for ns in (i for i in items if i.kind == "namespace"):
            why = policy.instance_reason(ns.stack, ns.tags)
            if why is not None:
                found.append(Finding(ns, why))
        return found

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        """Delete each namespace, then wait until the API lists none of them (they terminate asynchronously)."""
        from gpuprov.infra.clouds.kubernetes.cluster import delete_namespaces

        names = [f.item.id for f in items if f.item.kind == "namespace"]
        return delete_namespaces(self.api(None), names, timeout_s, progress) if names else []


class ManagedClusterDriver(ClusterDriver, CatalogCloud):
    """A cluster gpuprov creates (EKS, GKE): its API's ranges are required, its GPU comes from the catalog."""

    def build(self, config: StackConfig) -> pulumi.Output[dict[str, Any]]:
        _need_api_ranges(self, config)  # at plan and up; down needs no range to remove the cluster
        return super().build(config)

    def gpu(self, config: StackConfig) -> dict[str, Any]:
        return _catalog_gpu(self, config)

    def reap_findings(self, policy: ReapPolicy, only_stack: str | None = None,
                      config: StackConfig | None = None) -> list[Finding]:
        """The sweep (``only_stack`` None: :meth:`inventory` lists gpuprov's clusters and their node groups or
        pools): a cluster goes, with its groups or pools, when the policy says its tags go (expired, or the
        caller's own abandoned run's); a group or pool alone when its own tags say so; another owner's live
        one never.

        A stack's own teardown (``only_stack``): what the cloud lists of the stack; what the cluster's API
        lists inside it (:meth:`inside`) is for ``down`` to report and goes with the cluster, never removed on
        its own by tag."""
        if only_stack is not None:
            return [f for f in super().reap_findings(policy, only_stack, config) if f.item.cloud != "kubernetes"]
        items = self.inventory(None, config)
        doomed = {i.id for i in items if i.kind == "cluster" and policy.instance_reason(i.stack, i.tags)}
        found = []
        for item in items:
            why = policy.instance_reason(item.stack, item.tags)
            if why is None and item.id.split("/", 1)[0] in doomed:
                why = "with-cluster"
            if why is not None:
                found.append(Finding(item, why))
        return found

    def inside(self, config: StackConfig | None, stack: str, cloud_lists: list[Leftover]) -> list[Leftover]:
        """Where the cloud still lists the stack's cluster (or its nodes) and the config names the cluster's
        kubeconfig or context: what the Kubernetes API lists of the stack in it too (its PVCs and
        LoadBalancers bill as disks and load balancers; its labelled nodes as machines). [] otherwise: a
        cluster that is gone has no API to ask."""
        from gpuprov.infra.clouds.kubernetes.cluster import labelled

        k = config.kubernetes if config else None
        if not cloud_lists or k is None or not (k.kubeconfig or k.context):
            return []
        return labelled(self.api(config), stack)


class EksDriver(ManagedClusterDriver):
    def kubeconfig_command(self, config: StackConfig) -> str | None:
        from gpuprov.infra.clouds.kubernetes.program import eks_cluster_name

        return f"aws eks update-kubeconfig --name {eks_cluster_name(config.stack)} --region {config.resolved_region}"

    name = "eks"
    title = "Amazon EKS"
    kind = "eks"
    price_catalog = "aws"
    credential_hint = "AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    secret_env = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "KUBECONFIG")

    def api_exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> ExposureRow:
        cluster: dict[str, Any] = next((r["inputs"] for r in resources if r["type"] == EKS_CLUSTER), {})
        sources = tuple(cluster.get("publicAccessCidrs") or ())
        return ExposureRow(443, "kubernetes-api", sources, "EKS public endpoint limited to these ranges; "
                                                            "IAM-authenticated" if sources else "private endpoint only")

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        from gpuprov.infra.clouds.kubernetes.cluster import eks_leftovers

        region = str(config.resolved_region if config else self.default_region())
        if stack is None:
            from gpuprov.infra.clouds.kubernetes.cluster import eks_tagged

            return eks_tagged(region)  # the reaper's sweep: gpuprov's tagged clusters and their node groups
        found = eks_leftovers(region, stack)
        return found + self.inside(config, stack, [i for i in found if i.kind in ("cluster", "instance")])

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        """Node groups first, then their clusters (:func:`gpuprov.infra.clouds.kubernetes.cluster.eks_remove`)."""
        from gpuprov.infra.clouds.kubernetes.cluster import eks_remove

        by_region: dict[str, list[str]] = {}
        errors: list[str] = []
        for f in items:
            if f.item.kind == "cluster":
                by_region.setdefault(str(f.item.region), []).append(f.item.id)
            elif f.item.kind == "nodegroup" and not any(o.item.id == f.item.id.split("/", 1)[0] for o in items):
                errors += self._remove_group(f.item, progress)
            elif f.item.kind != "nodegroup":
                errors.append(f"eks: gpuprov does not remove {f.item} by tag; `gpuprov down` of its stack does")
        for region, names in by_region.items():
            errors += eks_remove(region, names, timeout_s, progress)
        return errors

    def _remove_group(self, item: Leftover, progress: Progress) -> list[str]:
        from gpuprov.infra.clouds.aws.sdk import boundary as aws_boundary
        from gpuprov.infra.clouds.aws.sdk import client

        cluster, group = item.id.split("/", 1)
        try:
            with aws_boundary(f"deleting EKS node group {item.id}"):
                progress(f"eks: deleting node group {item.id}")
                client("eks", str(item.region)).delete_nodegroup(clusterName=cluster, nodegroupName=group)
        except GpuprovError as err:
            return [str(err)]
        return []


class GkeDriver(ManagedClusterDriver):
    def kubeconfig_command(self, config: StackConfig) -> str | None:
        return (f"gcloud container clusters get-credentials CLUSTER --zone {config.resolved_zone} (CLUSTER: "
                f"`gcloud container clusters list --filter=resourceLabels.gpuprov-stack={config.stack}`)")

    name = "gke"
    title = "Google Kubernetes Engine"
    kind = "gke"
    price_catalog = "gcp"
    credential_hint = "GOOGLE_CLOUD_PROJECT (and Application Default Credentials)"
    secret_env = ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_OAUTH_ACCESS_TOKEN", "CLOUDSDK_AUTH_ACCESS_TOKEN",
                  "KUBECONFIG")

    def default_zone(self, region: str | None) -> str | None:
        _type, default_region, default_zone = catalog_defaults("gcp")
        return default_zone if region in (None, default_region) else f"{region}-a"

    def api_exposure(self, config: StackConfig, resources: list[dict[str, Any]]) -> ExposureRow:
        cluster: dict[str, Any] = next((r["inputs"] for r in resources if r["type"] == GKE_CLUSTER), {})
        blocks = (cluster.get("masterAuthorizedNetworksConfig") or {}).get("cidrBlocks") or []
        sources = tuple(b["cidrBlock"] for b in blocks)
        return ExposureRow(443, "kubernetes-api", sources, "GKE endpoint, master authorised networks only; "
                                                            "IAM-authenticated")

    def inventory(self, stack: str | None = None, config: StackConfig | None = None) -> list[Leftover]:
        """The sweep (``stack`` None): gpuprov's GKE clusters and their node pools, by their resource labels. A
        stack's: its cluster, its pools' node VMs, and what its claims and LoadBalancer Services left in Compute
        Engine (:func:`~gpuprov.infra.clouds.kubernetes.gke.gke_leftovers`); and, while the cluster or a node
        remains, what the Kubernetes API lists of the stack inside it (:meth:`inside`). The GCP driver leaves
        GKE's node VMs to this one (a node pool's instance group recreates a VM deleted alone)."""
        from gpuprov.infra.clouds.gcp.driver import GcpDriver
        from gpuprov.infra.clouds.kubernetes.gke import GkeApi, gke_leftovers, gke_tagged
        from gpuprov.infra.clouds.kubernetes.workloads import namespace

        gcp = GcpDriver(self.settings)
        project, api = gcp.project(), GkeApi(self.settings.gke_api_endpoint)
        if stack is None:
            return gke_tagged(api, project)
        ns = namespace(config) if config is not None else f"gpuprov-{stack}"
        found = gke_leftovers(api, gcp.api(), project, stack, ns)
        return found + self.inside(config, stack, [i for i in found if i.kind in ("cluster", "instance")])

    def remove(self, items: list[Finding], progress: Progress, timeout_s: float = 600.0) -> list[str]:
        """Clusters with their pools, pools of clusters that stay (:func:`~gpuprov.infra.clouds.kubernetes.gke.gke_remove`)."""
        from gpuprov.infra.clouds.gcp.driver import GcpDriver
        from gpuprov.infra.clouds.kubernetes.gke import GkeApi, gke_remove

        project = GcpDriver(self.settings).project()
        return gke_remove(GkeApi(self.settings.gke_api_endpoint), project, [f.item for f in items], timeout_s, progress)


def require_images(config: StackConfig) -> None:
    """What ``plan`` and ``up`` need before declaring anything (``down`` needs no image: it is not checked there)."""
    from gpuprov.infra.config import ConfigError

    if "monai_label" in config.apps and config.monai_label_image is None:
        raise ConfigError("monai_label_image", None, "a cluster has no host to build MONAI Label on: set "
                          "monai_label_image to an image built from monai_label_repo (or drop monai_label from apps)")


def _need_api_ranges(driver: CloudDriver, config: StackConfig) -> None:
    from gpuprov.infra.config import ConfigError

    if not config.allowed_cidrs:
        raise ConfigError("allowed_cidrs", [], f"{driver.title}'s API endpoint admits allowed_cidrs only: list your "
                          "own range, such as 203.0.113.7/32 (nothing else is opened by it)")


def _catalog_gpu(driver: CloudDriver, config: StackConfig) -> dict[str, Any]:
    from gpuprov.cost import catalog

    itype = str(config.resolved_instance_type)
    offer = catalog.find_offer(catalog_name(type(driver)), itype)
    assert offer is not None  # the config accepts catalogued types only
    return {"instance_type": itype, "name": offer.gpu, "accelerator": offer.accelerator, "usd_hour": offer.usd_hour,
            "source": f"catalog: {offer.source}, {offer.as_of}"}
