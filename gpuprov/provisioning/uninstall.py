"""Removing what deploy installed on a machine gpuprov did not create (``cloud: existing``): ``down``'s step there.

The apps' Compose projects (containers, networks, volumes), the idle agent (its systemd timer and
service, or its background process) and its files, and gpuprov's folders (``/opt/gpuprov``,
``/etc/gpuprov``) go, in one SSH round trip; pulled images stay (``docker image prune`` removes
them). Compose project names are per app, not per stack: one machine holds one stack's apps.
"""

from __future__ import annotations

import shlex

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.hostpaths import HOST_ROOT, ROOT, on_host
from gpuprov.provisioning.idle_agent import agent_files

SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'


def uninstall_script() -> str:
    """The script (idempotent) that leaves the machine as it was before gpuprov's first deploy."""
    projects = " ".join(shlex.quote(a.project) for a in registry().apps.values())
    units = "gpuprov-idle.timer gpuprov-idle.service"
    agent = " ".join(on_host(path) for path in agent_files())
    pid = f"{HOST_ROOT}/run/gpuprov-idle.pid"
    return (
        SUDO
        + f"if [ -d {HOST_ROOT}/run/systemd/system ]; then $SUDO systemctl disable --now {units} >/dev/null 2>&1; fi\n"
        + f'if [ -f {pid} ]; then $SUDO kill "$(cat {pid})" 2>/dev/null; $SUDO rm -f {pid}; fi\n'
        + "if command -v docker >/dev/null 2>&1; then\n"
        + f"  for p in {projects}; do $SUDO docker compose -p \"$p\" down --volumes --remove-orphans -t 10 || exit 1; done\n"
        + "fi\n"
        + f"$SUDO rm -f {agent}\n"
        + f"if [ -d {HOST_ROOT}/run/systemd/system ]; then $SUDO systemctl daemon-reload; fi\n"
        + f"$SUDO rm -rf {on_host(ROOT)} {on_host('/etc/gpuprov')}\n"
    )


def uninstall(config: StackConfig, host: GpuHost) -> None:
    """Run :func:`uninstall_script` on the stack's host, or :class:`ProvisioningError` saying what is left."""
    from gpuprov.provisioning.ssh import Remote, target_for

    with Remote(target_for(config, host)) as remote:
        code, _out, err = remote.script(uninstall_script(), timeout_s=300)
    if code != 0:
        raise ProvisioningError(f"could not remove what gpuprov installed on {host.address} (exit {code}: "
                                f"{err.strip()[-300:]}); the stack is kept: run `gpuprov down --stack {config.stack}` again")
