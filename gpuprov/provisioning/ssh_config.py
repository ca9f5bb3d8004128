"""``Host gpuprov-<stack>`` entries for plain ``ssh``, ``scp`` and editors' remote modes.

The entries live in a file of gpuprov's own (``<state root>/ssh/config``, 0600), one block per
stack, each with the stack's pinned host keys (its own known_hosts file, the one
:class:`gpuprov.provisioning.ssh.Remote` pins into), the stack's key, ``IdentitiesOnly yes`` and
``StrictHostKeyChecking yes``: OpenSSH then trusts exactly what gpuprov trusts, and nothing is ever
added to the user's own known_hosts.

``~/.ssh/config`` gets one ``Include`` line of that file, only with the user's consent
(:func:`add_include`: ``gpuprov up --ssh-config``, or a yes at the prompt on a terminal).
``down`` removes the stack's block (:func:`remove_entry`), and the file with its last block; the
Include line stays, harmless (OpenSSH skips an Include that matches no file).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost
from gpuprov.infra.paths import state_root
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.ssh import known_hosts_path, target_for

_BEGIN, _END = "# gpuprov:begin ", "# gpuprov:end "
# What an ssh_config value may hold inside double quotes (no quote, no control character).
_QUOTABLE = re.compile(r'[^"\x00-\x1f\x7f]+')
_WORD = re.compile(r"[A-Za-z0-9._@:\[\]-]+", re.ASCII)


def config_path() -> Path:
    """gpuprov's own ssh_config file (created 0600 in a 0700 folder by :func:`write_entry`)."""
    return state_root() / "ssh" / "config"


def alias(stack: str) -> str:
    """The ``Host`` name of a stack's entry."""
    return f"gpuprov-{stack}"


def user_config() -> Path:
    """The user's own ssh_config (``~/.ssh/config``, ``~`` as ``HOME`` says)."""
    return Path.home() / ".ssh" / "config"


def _quoted(path: Path | str) -> str:
    text = str(path)
    if not _QUOTABLE.fullmatch(text):
        raise ProvisioningError(f"{text!r} cannot be written into an ssh_config file (a quote or control character); "
                                "move the state folder (GPUPROV_HOME) to a plain path")
    return f'"{text}"'


def _word(value: str, what: str) -> str:
    if not _WORD.fullmatch(value):
        raise ProvisioningError(f"the host's {what} {value!r} cannot be written into an ssh_config file")
    return value


def entry(stack: str, host: GpuHost, key_path: Path, known_hosts: Path) -> str:
    """The ``Host gpuprov-<stack>`` block, between its begin and end markers."""
    return "\n".join([
        f"{_BEGIN}{stack}",
        f"Host {alias(stack)}",
        f"  HostName {_word(host.address, 'address')}",
        f"  User {_word(host.ssh_user, 'user')}",
        f"  Port {int(host.ssh_port)}",
        f"  IdentityFile {_quoted(key_path)}",
        "  IdentitiesOnly yes",
        f"  UserKnownHostsFile {_quoted(known_hosts)}",
        "  GlobalKnownHostsFile /dev/null",
        "  StrictHostKeyChecking yes",
        "  UpdateHostKeys no",
        f"{_END}{stack}",
        "",
    ])


def _blocks(text: str) -> dict[str, str]:
    """stack -> its block, in file order."""
    out: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith(_BEGIN):
            current, lines = line[len(_BEGIN):].strip(), [line]
        elif current is not None:
            lines.append(line)
            if line.startswith(_END):
                out[current] = "\n".join(lines) + "\n"
                current = None
    return out


def _write(blocks: dict[str, str]) -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    head = "# Written by gpuprov (one block per stack; `gpuprov down` removes its block). Do not edit.\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config.")  # 0600; unique: two `up`s may write at once
    with os.fdopen(fd, "w") as fh:
        fh.write(head + "".join(blocks.values()))
    os.replace(tmp, path)
    return path


def write_entry(config: StackConfig, host: GpuHost) -> Path:
    """Write (or refresh) the stack's block; returns gpuprov's ssh_config file. Idempotent."""
    path = config_path()
    blocks = _blocks(path.read_text()) if path.exists() else {}
    block = entry(config.stack, host, target_for(config, host).key_path, known_hosts_path(config.stack))
    if blocks.get(config.stack) == block and path.exists():
        return path
    blocks[config.stack] = block
    return _write(blocks)


def remove_entry(stack: str) -> bool:
    """Drop the stack's block (``down``); True when there was one."""
    path = config_path()
    if not path.exists():
        return False
    blocks = _blocks(path.read_text())
    if blocks.pop(stack, None) is None:
        return False
    if blocks:
        _write(blocks)
    else:  # nothing of gpuprov's is left behind; an Include of a missing file is no error to OpenSSH
        path.unlink()
        if not any(path.parent.iterdir()):
            path.parent.rmdir()
    return True


def include_line() -> str:
    return f"Include {_quoted(config_path())}"


def is_included(user_file: Path | None = None) -> bool:
    """True when the user's ssh_config already includes gpuprov's file."""
    user_file = user_file or user_config()
    if not user_file.exists():
        return False
    want = str(config_path())
    for line in user_file.read_text(errors="replace").splitlines():
        words = line.strip().split(None, 1)
        if len(words) == 2 and words[0].lower() == "include" and words[1].strip().strip('"') == want:
            return True
    return False


def add_include(user_file: Path | None = None) -> bool:
    """Put the Include line at the top of the user's ssh_config (before any ``Host`` block, where it
    applies to every host); call only with the user's consent. True when the file changed."""
    user_file = (user_file or user_config()).resolve()  # a dotfiles symlink stays a symlink: its target changes
    if is_included(user_file):
        return False
    user_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    old = user_file.read_text() if user_file.exists() else ""
    mode = user_file.stat().st_mode & 0o777 if user_file.exists() else 0o600
    tmp = user_file.with_name(f".{user_file.name}.gpuprov-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"# Added by gpuprov (`Host gpuprov-<stack>` entries)\n{include_line()}\n\n{old}")
    os.replace(tmp, user_file)
    return True


def is_pinned(stack: str, host: GpuHost) -> bool:
    """True when the stack's known_hosts file holds a key for the host's address and port."""
    path = known_hosts_path(stack)
    name = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"
    return path.exists() and any(line.split(None, 1)[0] == name for line in path.read_text().splitlines() if line.strip())
