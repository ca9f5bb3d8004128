"""What a cluster target costs an hour, at its GPU pool's minimum and at its maximum.

GPU nodes are priced from the dated catalog (``gpuprov/cost/catalog.yaml``, the ``aws`` section for
EKS and ``gcp`` for GKE). The parts a cluster adds (its control plane, the small CPU system pool) are
not GPU offers, so they are not in that catalog; their dated prices are here, each with its source.
An existing cluster is not gpuprov's to bill: its nodes cost what its owner pays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# (usd per hour, as of, source)
CONTROL_PLANE: dict[str, tuple[float, str, str]] = {
    "eks": (0.10, "2026-06", "Amazon EKS pricing: cluster on standard Kubernetes version support"),
    "gke": (0.10, "2026-06", "GKE pricing: cluster management fee, Standard edition (free tier credit not counted)"),
}
SYSTEM_POOL: dict[str, tuple[str, float, str, str]] = {
    "eks": ("t3.medium", 0.0416, "2026-06", "AWS on-demand price list, us-east-1"),
    "gke": ("e2-standard-2", 0.067, "2026-06", "GCP on-demand price list, us-central1"),
}
SYSTEM_NODES = 1


@dataclass(frozen=True)
class PoolCost:
    """One node pool: its node type, node counts at min and max, and the hourly price of one node."""

    pool: str
    instance_type: str | None
    min_nodes: int
    max_nodes: int
    usd_hour_per_node: float
    source: str

    @property
    def at_min(self) -> float:
        return self.min_nodes * self.usd_hour_per_node

    @property
    def at_max(self) -> float:
        return self.max_nodes * self.usd_hour_per_node

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "usd_hour_at_min": round(self.at_min, 4), "usd_hour_at_max": round(self.at_max, 4)}


def gpu_nodes(min_replicas: int, max_replicas: int, monai_label: bool) -> tuple[int, int]:
    """GPU nodes at the pool's min and max: one a vLLM replica, and one for MONAI Label while it is deployed
    (its one replica does not scale to zero: nnInteractive's session lives in its process)."""
    extra = 1 if monai_label else 0
    return min_replicas + extra, max_replicas + extra


def pool_costs(kind: str, gpu_type: str | None, gpu_usd_hour: float | None, gpu_source: str,
               min_replicas: int, max_replicas: int, monai_label: bool) -> list[PoolCost]:
    """The pools of a cluster gpuprov creates (``kind``: eks or gke); [] for an existing cluster."""
    if kind not in CONTROL_PLANE:
        return []
    low, high = gpu_nodes(min_replicas, max_replicas, monai_label)
    plane_usd, plane_as_of, plane_source = CONTROL_PLANE[kind]
    sys_type, sys_usd, sys_as_of, sys_source = SYSTEM_POOL[kind]
    return [
        PoolCost("control-plane", None, 1, 1, plane_usd, f"{plane_source}, {plane_as_of}"),
        PoolCost("system", sys_type, SYSTEM_NODES, SYSTEM_NODES, sys_usd, f"{sys_source}, {sys_as_of}"),
        PoolCost("gpu", gpu_type, low, high, gpu_usd_hour or 0.0, gpu_source),
    ]


def totals(pools: list[PoolCost]) -> tuple[float, float]:
    """(usd per hour at every pool's minimum, at every pool's maximum)."""
    return round(sum(p.at_min for p in pools), 4), round(sum(p.at_max for p in pools), 4)


@dataclass(frozen=True)
class BudgetRule:
    """What stops a cluster's bill, as data: nothing runs an idle agent on a node, so ``budget_usd`` and
    ``max_lifetime_hours`` are not enforced there; this says how long the budget lasts at the pools' maximum."""

    usd_hour_at_min: float
    usd_hour_at_max: float
    budget_usd: float | None
    max_lifetime_hours: float

    @property
    def hours_at_max(self) -> float | None:
        """Hours of the pools at their maximum until ``budget_usd`` is spent (None: no budget, or nothing bills)."""
        if self.budget_usd is None or self.usd_hour_at_max <= 0:
            return None
        return self.budget_usd / self.usd_hour_at_max

    @property
    def worst_case_usd(self) -> float:
        """The pools at their maximum for the whole of ``max_lifetime_hours``."""
        return self.usd_hour_at_max * self.max_lifetime_hours

    @property
    def exceeds_budget(self) -> bool:
        return self.budget_usd is not None and self.worst_case_usd > self.budget_usd

    def warning(self) -> str:
        """One line for ``plan``: what protects the bill on a cluster, and what does not."""
        line = ("no idle agent runs on a cluster: KEDA scales vLLM to min_replicas after idle_minutes and the GPU pool's "
                f"autoscaler removes idle nodes (${self.usd_hour_at_min:.2f}/h at the minimum); max_lifetime_hours and "
                "budget_usd are not enforced here")
        if self.exceeds_budget and self.hours_at_max is not None:
            line += (f", and at the pools' maximum (${self.usd_hour_at_max:.2f}/h) budget_usd ${self.budget_usd:g} is "
                     f"spent in {self.hours_at_max:.1f} h: lower kubernetes.max_replicas")
        return line
