"""Whether a stack's apps run on the GPU they land on, and fit on it together: the GPU memory budget.

Each app that uses the GPU declares its settings and needs for a target (:attr:`App.sizing`);
this module adds them up against the card. ``plan`` and ``up`` size the stack for the catalog's
GPU of the configured instance type, before anything is created (:func:`require_fit`); deploy
sizes it again for the GPU and CPU architecture the host itself reports, and writes the settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from gpuprov.apps import registry
from gpuprov.apps.base import GpuNeed, GpuTarget, Sizing
from gpuprov.cost.catalog import find_offer, offers
from gpuprov.infra.config import StackConfig
from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.gpus import lookup


class DoesNotFit(GpuprovError):
    """The stack's apps cannot run on the GPU they would get; nothing was created or changed."""

    exit_code = 2


@dataclass
class Fit:
    """The stack's apps sized for one target: settings per app, GPU memory per service, what stops it."""

    target: GpuTarget
    apps: dict[str, Sizing] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def needs(self) -> list[tuple[str, GpuNeed]]:
        return [(app, need) for app, s in self.apps.items() for need in s.needs]

    @property
    def total_gib(self) -> float:
        return round(sum(n.gib for _a, n in self.needs), 1)

    @property
    def headroom_gib(self) -> float | None:
        gpu = self.target.gpu
        return round(gpu.memory_gib - self.total_gib, 1) if gpu else None

    def to_json(self) -> dict[str, Any]:
        gpu = self.target.gpu
        return {
            "gpu": None if gpu is None else {"name": gpu.name, "compute_capability": gpu.cc, "generation": gpu.generation,
                                             "memory_gib": gpu.memory_gib, "source": gpu.source},
            "arch": self.target.arch,
            "settings": {app: dict(s.settings) for app, s in self.apps.items() if s.settings},
            "budget": [{"app": app, "service": n.service, "gib": n.gib, "basis": n.basis} for app, n in self.needs],
            "total_gib": self.total_gib, "headroom_gib": self.headroom_gib, "problems": self.problems,
            **({"note": "no NVIDIA GPU gpuprov may use on this host: nothing to budget"} if gpu is None else {}),
        }


def fit(config: StackConfig, target: GpuTarget) -> Fit:
    """Size ``config``'s apps for ``target``: each app sees what the others take on the same card."""
    sized = [a for a in registry().selected(config.apps) if a.sizing is not None]
    first = {a.name: a.sizing(config, target) for a in sized if a.sizing}
    from gpuprov.infra.clouds import driver_class

    # On a cluster each app's pod gets a GPU of its own (nvidia.com/gpu: 1): nothing else shares its card.
    shared = not driver_class(config.cloud).cluster
    result = Fit(target)
    for app in sized:
        assert app.sizing is not None
        others = sum(n.gib for name, s in first.items() if name != app.name for n in s.needs) if shared else 0.0
        result.apps[app.name] = app.sizing(config, replace(target, others_gib=round(others, 1)))
    result.problems = [p for s in result.apps.values() for p in s.problems]
    gpu = target.gpu
    if shared and gpu is not None and result.total_gib > gpu.memory_gib:
        parts = ", ".join(f"{n.service} {n.gib:g}" for _a, n in result.needs)
        result.problems.append(
            f"the apps need {result.total_gib:g} GiB of GPU memory ({parts}) and the {gpu.name} has "
            f"{gpu.memory_gib:g}; lower gpu_memory_utilization or max_model_len, deploy one app only (apps:), "
            "or pick a type with more GPU memory")
    return result


def catalog_target(config: StackConfig) -> GpuTarget | None:
    """The GPU and CPU architecture the configured instance type comes with (the price catalog), or None
    where the instance type does not say (an existing machine, the sandbox): those are sized at deploy."""
    from gpuprov.infra.clouds import driver_class
    from gpuprov.infra.clouds.base import catalog_name

    kind = config.resolved_instance_type
    offer = find_offer(catalog_name(driver_class(config.cloud)), kind) if kind else None
    gpu = lookup(offer.gpu) if offer else None
    if gpu is None:
        return None
    return GpuTarget(gpu=gpu, arch=gpu.host_arch or "x86_64")


def planned(config: StackConfig) -> Fit | None:
    """The stack sized for its configured instance type, or None when that is known only at deploy."""
    target = catalog_target(config)
    return fit(config, target) if target else None


def nearest_fitting(config: StackConfig) -> str | None:
    """The cheapest instance type of the stack's cloud on which the stack fits, as a phrase for a message."""
    from gpuprov.infra.clouds import driver_class
    from gpuprov.infra.clouds.base import catalog_name

    for offer in offers(catalog_name(driver_class(config.cloud))):
        other = config.model_copy(update={"instance_type": offer.type})
        result = planned(other)
        if result is not None and not result.problems:
            return f"{offer.type} ({offer.gpu}, ${offer.usd_hour:.2f}/h)"
    return None


def require_fit(config: StackConfig) -> Fit | None:
    """Stop before anything is created when the configured type cannot serve the stack; say why and what fits."""
    result = planned(config)
    if result is None or not result.problems:
        return result
    gpu = result.target.gpu
    assert gpu is not None
    alternative = nearest_fitting(config)
    hint = (f"; the cheapest {config.cloud} type that fits is {alternative}: set instance_type to it"
            if alternative else f"; no {config.cloud} type gpuprov knows fits: deploy one app only (apps:)")
    raise DoesNotFit(f"{config.cloud} {config.resolved_instance_type} ({gpu.name}) cannot serve this stack: "
                     f"{result.problems[0]}{hint}")


def require_fit_on_host(config: StackConfig, target: GpuTarget) -> Fit:
    """The stack sized for the host's own GPU and architecture; stops (nothing changed) when it cannot run there."""
    result = fit(config, target)
    if result.problems:
        raise DoesNotFit(f"the host cannot serve this stack: {result.problems[0]}")
    return result
