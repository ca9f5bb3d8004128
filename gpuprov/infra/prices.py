"""What hosts cost: every cloud's offers at today's price (each driver asks its own price API), and the
estimate for one stack's configured offer."""

from __future__ import annotations

from collections.abc import Callable

from gpuprov.cost import catalog, live
from gpuprov.cost.estimate import Estimate, estimate
from gpuprov.infra.clouds import all_drivers, driver_for
from gpuprov.infra.config import StackConfig
from gpuprov.infra.settings import Settings


def all_offers(settings: Settings, offline: bool = False,
               region_of: Callable[[str], str | None] | None = None) -> list[live.PricedOffer]:
    """Every offer gpuprov knows, at live prices where reachable, cheapest first.

    ``region_of(cloud)``: the region to price a cloud in (the configured stack's region for its cloud).
    """
    if offline:
        found = live.offline()
    else:
        found = [o for d in all_drivers(settings) if d.creates_cloud_resources
                 for o in d.live_offers(region_of(d.name) if region_of else None)]
    return sorted(found, key=lambda o: (o.usd_hour, o.cloud, o.type))


def estimate_for(config: StackConfig) -> Estimate:
    """The catalog estimate for ``config`` (a host gpuprov does not rent costs gpuprov nothing)."""
    driver = driver_for(config.cloud, Settings())
    if not driver.creates_cloud_resources:
        return estimate(0.0, f"{config.cloud} host: no cloud bill")
    pools = driver.node_pools(config)
    if pools:  # a cluster: what every pool costs at its maximum (plan shows the minimum beside it)
        return estimate(sum(p["usd_hour_at_max"] for p in pools),
                        "node pools at their maximum: " + "; ".join(f"{p['pool']} {p['source']}" for p in pools))
    itype = config.resolved_instance_type
    from gpuprov.infra.clouds.base import catalog_name

    offer = catalog.find_offer(catalog_name(type(driver)), itype) if itype else None
    if offer is None:
        return estimate(0.0, f"{config.cloud} {itype}: not in the catalog; price unknown until launch")
    return estimate(offer.usd_hour, f"catalog: {offer.source}, {offer.as_of}")
