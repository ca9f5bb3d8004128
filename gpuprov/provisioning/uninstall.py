"""Removing what deploy installed on a machine gpuprov did not create (``cloud: existing``): ``down``'s step there.

The apps' Compose projects (containers, networks, volumes), the idle agent (its systemd timer and
service, or its background process) and its files, and gpuprov's folders (``/opt/gpuprov``,
``/etc/gpuprov``) go, in one SSH round trip; pulled images stay (``docker image prune`` removes
them). Compose project names are per app, not per stack: one machine holds one stack's apps, and
the stack marker (:mod:`gpuprov.provisioning.marker`) says whose; a machine whose marker names
another stack is left untouched.
"""

from __future__ import annotations

import shlex

from gpuprov.apps import registry
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.owner import owner_reference
from gpuprov.provisioning import marker
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.hostpaths import HOST_ROOT, ROOT, on_host
from gpuprov.provisioning.idle_agent import agent_files, agent_in_pid_file

SUDO = 'if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi\n'
NOT_OURS = 3  # the script's exit status when the marker names another stack (it printed the marker)


def uninstall_script(stack: str, owner: str) -> str:
    """The script (idempotent) that leaves the machine as it was before ``stack``'s first deploy;
    it changes nothing (exit :data:`NOT_OURS`) when the host's marker names another stack or owner."""
    projects = " ".join(shlex.quote(a.project) for a in registry().apps.values())
    units = "gpuprov-idle.timer gpuprov-idle.service"
    agent = " ".join(on_host(path) for path in agent_files())
    pid = f"{HOST_ROOT}/run/gpuprov-idle.pid"
    mark = on_host(marker.MARKER)
    ours = shlex.quote(marker.marker_file(stack, owner).content.decode())
    return (
        SUDO
        + f"if $SUDO test -f {mark} && ! printf '%s' {ours} | $SUDO cmp -s - {mark}; then $SUDO cat {mark}; "
        + f"exit {NOT_OURS}; fi\n"
        + f"if [ -d {HOST_ROOT}/run/systemd/system ]; then $SUDO systemctl disable --now {units} >/dev/null 2>&1; fi\n"
        + f'if {agent_in_pid_file(pid)}; then $SUDO kill "$_p" 2>/dev/null; fi; $SUDO rm -f {pid}\n'
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
        code, out, err = remote.script(uninstall_script(config.stack, owner_reference()), timeout_s=300)
    if code == NOT_OURS:
        raise marker.HostServesAnotherStack(
            f"{host.address} now serves another stack (its marker: {out.strip()[-300:]}); gpuprov changed nothing "
            f"there and keeps stack '{config.stack}': remove that stack from where it was made")
    if code != 0:
        raise ProvisioningError(f"could not remove what gpuprov installed on {host.address} (exit {code}: "
                                f"{err.strip()[-300:]}); the stack is kept: run `gpuprov down --stack {config.stack}` again")
