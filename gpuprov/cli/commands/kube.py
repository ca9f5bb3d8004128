"""``gpuprov wake``, and ``gpuprov tunnel`` on a cluster: reaching a Kubernetes stack's workloads through the
Kubernetes API (port-forward, KEDA's pause), never over SSH."""

from __future__ import annotations

import os
import signal
from typing import Annotated, Any

import typer

from gpuprov.cli.app import CloudOpt, ConfigOpt, StackOpt, app, load_existing, out, progress, settings
from gpuprov.infra import records
from gpuprov.infra.config import StackConfig

WAKE_HELP = "Seconds to wait for vLLM's pod when it is woken from 0 replicas (a GPU node joining, the model loading)."
WakeTimeoutOpt = Annotated[float, typer.Option("--wake-timeout", help=f"On a Kubernetes stack: {WAKE_HELP}")]


def is_cluster(cfg: StackConfig) -> bool:
    from gpuprov.infra.clouds import driver_class

    return bool(getattr(driver_class(cfg.cloud), "cluster", False))


def term_as_interrupt() -> None:
    """SIGTERM (``kill PID``, a closing terminal's session manager) ends it as Ctrl-C does: the pause gpuprov set
    on KEDA is removed on the way out, not left holding a GPU that bills."""
    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def cluster_api(cfg: StackConfig) -> Any:
    """A ``kubernetes`` ApiClient for the stack's cluster (its kubeconfig and context)."""
    from gpuprov.infra.clouds import driver_for
    from gpuprov.infra.clouds.kubernetes.driver import ClusterDriver

    driver = driver_for(cfg.cloud, settings())
    assert isinstance(driver, ClusterDriver)
    where = driver.kubeconfig(cfg)
    get = driver.kubeconfig_command(cfg)
    if get and not where.is_file():  # a cluster gpuprov made: how to get its kubeconfig
        from gpuprov.infra.clouds.kubernetes.driver import KubernetesError

        raise KubernetesError(f"kubernetes: no kubeconfig at {where} for the {cfg.cloud} cluster of stack "
                              f"'{cfg.stack}'; get one with {get}, or set kubernetes.kubeconfig / KUBECONFIG")
    return driver.api(cfg)


def cluster_tunnel(cfg: StackConfig, ports: dict[str, int], wake_timeout: float = 1800.0) -> None:
    """``gpuprov tunnel`` on a cluster stack: the same ports and lines as over SSH, through the API's port-forward."""
    from gpuprov.cli.commands.deploy import hold_tunnel
    from gpuprov.infra.clouds.kubernetes.portforward import KubeTunnel
    from gpuprov.provisioning.deploy import deployed_services

    term_as_interrupt()
    record = records.load(cfg.stack)
    services = (record.deployed if record else None) or deployed_services(cfg)
    client = cluster_api(cfg)
    with KubeTunnel(cfg, client, services=services, same_ports=True, progress=progress, local_ports=ports,
                    wake_timeout_s=wake_timeout) as t:
        hold_tunnel(cfg.stack, t, ports, f"through the Kubernetes API's port-forward (namespace {t.namespace})")


@app.command()
def wake(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
         release: Annotated[bool, typer.Option("--release", help="Hand vLLM's replica count back to KEDA (remove "
                                                                 "the pause `wake` or a killed tunnel left).")] = False,
         timeout: Annotated[float, typer.Option("--timeout", help=WAKE_HELP)] = 1800.0) -> None:
    """On a cluster stack: wake vLLM from 0 replicas and hold it at 1 (KEDA's pause) until `wake --release`."""
    from gpuprov.infra.clouds.kubernetes.driver import NotOverSsh
    from gpuprov.infra.clouds.kubernetes.portforward import KubeTunnel
    from gpuprov.infra.clouds.kubernetes.wake import release as release_pause
    from gpuprov.infra.clouds.kubernetes.wake import wake as run_wake
    from gpuprov.infra.clouds.kubernetes.workloads import namespace

    cfg = load_existing(cloud, config, stack)
    if not is_cluster(cfg):
        raise NotOverSsh(f"stack '{cfg.stack}' runs on a host ({cfg.cloud}), not a Kubernetes cluster: nothing "
                         f"scales it to zero; `gpuprov tunnel --stack {cfg.stack}` reaches it")
    client = cluster_api(cfg)
    ns = namespace(cfg)
    if release:
        removed = release_pause(client, ns, progress)
        out.print(f"{cfg.stack}: " + ("vLLM handed back to KEDA" if removed else "no pause of gpuprov's to remove"))
        return
    term_as_interrupt()
    probe = KubeTunnel(cfg, client, services=["vllm"])
    paused = run_wake(client, ns, lambda: probe.ready_count("vllm"), timeout_s=timeout,
                      by=f"gpuprov wake (pid {os.getpid()})", progress=progress)
    held = (f"; held at 1 replica until `gpuprov wake --stack {cfg.stack} --release` (it bills meanwhile)"
            if paused else "")
    out.print(f"{cfg.stack}: vLLM has a ready pod{held}")
