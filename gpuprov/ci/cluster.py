"""``gpuprov ci`` on a cluster target (``kubernetes``, ``eks``, ``gke``): what differs from a host, and only that.

The run is the same run (:func:`gpuprov.ci.run.run_ci`: the lease, the signals, the exit codes, the one
teardown, verified). On a cluster:

- the run's workloads live in a **namespace of its own**, ``gpuprov-<stack>`` (the stack is the run's:
  ``ci-<GITHUB_RUN_ID>-<attempt>`` or ``ci-<random>``), labelled with the owner reference, ``gpuprov-origin:
  ci`` and an expiry of the time limit plus a margin (:mod:`gpuprov.infra.tags`), so ``gpuprov reap`` removes
  a ``kill -9``'d run's namespace; a ``kubernetes.namespace`` in the config is for ``up`` and is not used;
- ``up`` applies the workloads, so there is no deploy over SSH; "healthy" is every Deployment of the stack
  available, vLLM's at 0 replicas counting as ready (KEDA scaled it to zero; its first request wakes it);
- CMD runs here (``--on local``): there is no host to run it on. It gets ``GPUPROV_URL_<SERVICE>`` as on a
  host, through the Kubernetes API's port-forward (:class:`gpuprov.infra.clouds.kubernetes.portforward.KubeTunnel`;
  vLLM at 0 replicas is woken before CMD starts, and handed back to KEDA when CMD ends), ``GPUPROV_STACK`` and
  ``GPUPROV_NAMESPACE``, and the cluster's kubeconfig only when passed by name (``--pass-env KUBECONFIG``);
- teardown removes the namespace with the stack (Pulumi's destroy) and verifies through the Kubernetes API
  that no namespace, PVC or LoadBalancer Service labelled with the stack is left.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from gpuprov.ci.env import command_env
from gpuprov.infra.clouds import driver_class
from gpuprov.infra.config import StackConfig

Progress = Callable[[str], None]


def is_cluster(config: StackConfig) -> bool:
    return bool(driver_class(config.cloud).cluster)


def for_run(config: StackConfig, on: str, progress: Progress) -> StackConfig:
    """The run's config on a cluster: refused (before anything bills) when CMD is to run on a host, and with
    the namespace named from the run."""
    if on != "local":
        from gpuprov.infra.clouds.kubernetes.driver import NotOverSsh

        raise NotOverSsh(f"stack '{config.stack}' is on a {config.cloud} cluster, which has no host to run CMD on: "
                         "use --on local (CMD runs here with GPUPROV_NAMESPACE; --pass-env KUBECONFIG gives it the "
                         "cluster)")
    k = config.kubernetes
    if k is not None and k.namespace:
        progress(f"gpuprov ci: namespace gpuprov-{config.stack} of this run's own, not kubernetes.namespace "
                 f"{k.namespace} (that one is for up)")
        config = config.model_copy(update={"kubernetes": k.model_copy(update={"namespace": None})})
    return config


def wait_ready(config: StackConfig, timeout_s: float, progress: Progress) -> None:
    """Every Deployment of the stack available in its namespace (module docstring)."""
    from gpuprov.infra.clouds import driver_for
    from gpuprov.infra.clouds.kubernetes.cluster import expected_deployments, wait_rollout
    from gpuprov.infra.clouds.kubernetes.workloads import namespace

    driver = driver_for(config.cloud)
    ready = wait_rollout(driver.api(config), namespace(config), expected_deployments(config), timeout_s,  # type: ignore[attr-defined]
                         progress)
    progress(f"healthy in namespace {namespace(config)}: {', '.join(ready)}")


def run_command(config: StackConfig, run: Callable[[dict[str, str]], int], deadline: float, progress: Progress,
                pass_env: tuple[str, ...] = ()) -> int:
    """``run(env)``: CMD here, its environment the least one (:mod:`gpuprov.ci.env`) plus the run's stack and
    namespace and a ``GPUPROV_URL_<SERVICE>`` per Service of the stack, open while CMD runs (module docstring)."""
    from gpuprov.infra.clouds import driver_for
    from gpuprov.infra.clouds.kubernetes.portforward import KubeTunnel
    from gpuprov.infra.clouds.kubernetes.workloads import namespace
    from gpuprov.provisioning.deploy import deployed_services

    client = driver_for(config.cloud).api(config)  # type: ignore[attr-defined]
    with KubeTunnel(config, client, services=deployed_services(config), progress=progress,
                    wake_timeout_s=max(deadline - time.monotonic(), 1.0)) as tunnel:
        env = {**command_env(os.environ, pass_env), "GPUPROV_STACK": config.stack, "GPUPROV_NAMESPACE": namespace(config)}
        env |= {f"GPUPROV_URL_{service.upper()}": url for service, url in tunnel.urls.items()}
        return run(env)
