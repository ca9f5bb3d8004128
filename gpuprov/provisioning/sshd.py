"""The host's sshd, hardened by a drop-in: keys only, no root, only the stack's user.

``/etc/ssh/sshd_config.d/00-gpuprov.conf``: sshd keeps the first value it reads for a keyword and
Ubuntu's and Debian's ``sshd_config`` include this folder first, in name order, so ``00-`` wins
over cloud-init's ``50-cloud-init.conf`` (which may say ``PasswordAuthentication yes``). The step
runs only when the file changed: it checks the whole config with ``sshd -t`` first (a bad one is
removed again and the deploy stops, sshd untouched), reloads sshd (SIGHUP: the open session, this
one included, stays), and reads the effective settings back with ``sshd -T``.

A host whose sshd runs with a config of its own says so (``GPUPROV_SSHD_CONFIG``, with its pid file in
``GPUPROV_SSHD_PID_FILE``: the local sandbox box made with ``image_sshd``): the checks read that config and
the reload signals that sshd, never the machine's.
"""

from __future__ import annotations

import re
import shlex

from gpuprov.provisioning.desired import RemoteFile
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.hostpaths import on_host
from gpuprov.provisioning.steps import Action

DROP_IN = "/etc/ssh/sshd_config.d/00-gpuprov.conf"
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}", re.ASCII)  # what sshd's AllowUsers and useradd take
EFFECTIVE = ("passwordauthentication no", "kbdinteractiveauthentication no", "permitrootlogin no")


def drop_in(user: str) -> RemoteFile:
    """The drop-in for a host gpuprov reaches as ``user``."""
    if not _USER.fullmatch(user):
        raise ProvisioningError(f"the host's SSH user {user!r} is not a user name sshd's AllowUsers can take")
    text = ("# Written by gpuprov deploy: key-only SSH, for the stack's user only.\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
            f"AllowUsers {user}\n")
    return RemoteFile(DROP_IN, text.encode(), 0o644)


def apply() -> Action:
    """Check, reload and verify sshd after the drop-in was written (run only when it changed)."""
    path = on_host(DROP_IN)
    checks = " && ".join(f"grep -qx {shlex.quote(line)} \"$effective\"" for line in EFFECTIVE)
    own = '${GPUPROV_SSHD_CONFIG:+-f "$GPUPROV_SSHD_CONFIG"}'  # the host's own sshd config, when it has one
    return Action("sshd", "\n".join([
        f"if ! $SUDO /usr/sbin/sshd -t {own}; then $SUDO rm -f {path}; echo 'sshd -t refused the config with "
        "gpuprov'\"'\"'s drop-in; removed it' >&2; exit 1; fi",
        'if [ -n "${GPUPROV_SSHD_CONFIG:-}" ] && [ -n "${GPUPROV_SSHD_PID_FILE:-}" ]; then '
        '$SUDO kill -HUP "$(cat "$GPUPROV_SSHD_PID_FILE")"; else '
        "$SUDO systemctl reload ssh 2>/dev/null || $SUDO systemctl reload sshd 2>/dev/null || "
        "$SUDO systemctl is-active --quiet ssh.socket || $SUDO kill -HUP \"$(cat /run/sshd.pid)\"; fi",
        'effective="$(mktemp)"',
        f'$SUDO /usr/sbin/sshd -T {own} | tr "A-Z" "a-z" > "$effective"',
        f"if ! ({checks}); then rm -f \"$effective\"; echo 'sshd does not read /etc/ssh/sshd_config.d: "
        "add Include /etc/ssh/sshd_config.d/*.conf at the top of /etc/ssh/sshd_config' >&2; exit 1; fi",
        'rm -f "$effective"',
    ]), ["sshd"])
