"""The one SSH layer (Fabric): a connection to a stack's host with its host key pinned, and a
counter of round trips (exec channels plus sftp requests) so deploys can say what they cost.

Host key pinning: one known_hosts file per stack under the state root. A host whose key is known
before the first connect (``GpuHost.host_key``: the key gpuprov installed at launch, or the one the
target told us, e.g. the local sandbox's) is checked against it during the key exchange, before
authentication, and pinned only once it matched; any other key stops with :class:`HostKeyChanged`
and nothing is sent. A host that declares only a fingerprint (``host_key_fingerprint`` of an existing
machine) is checked against it. A host known from nowhere (no declared key or fingerprint, no pin) is
never trusted on first use: :class:`HostKeyUnknown` shows the fingerprint it presented and how to accept
it. A later mismatch with a pin stops too; nothing is ever added to a user file.
Pins travel with the stack (:func:`gpuprov.provisioning.secrets.add_host_key_pin`): a colleague's
first connect to the same host checks the key the first operator pinned.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import paramiko
from fabric import Config, Connection

from gpuprov.infra import keys
from gpuprov.infra.config import StackConfig
from gpuprov.infra.host import GpuHost, wait_for_ssh_banner
from gpuprov.infra.paths import state_root
from gpuprov.provisioning.errors import HostKeyChanged, HostKeyUnknown, HostUnreachable, ProvisioningError
from gpuprov.provisioning.secrets import add_host_key_pin, host_key_pins

Output = Callable[[str], None]


def known_hosts_path(stack: str) -> Path:
    """The stack's own known_hosts file (0600) under the state root."""
    d = state_root() / "known_hosts"
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    return d / stack


def _host_entry(host: GpuHost) -> str:
    return host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"


def sha256_fingerprint(key: paramiko.PKey) -> str:
    """``SHA256:...`` as ``ssh-keygen -lf`` prints it."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class PinOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Pin a host's key in the stack's file once it matched what the target declared (its key, or its
    fingerprint); refuse one that differs, and one that nothing declared (no trust on first use)."""

    def __init__(self, stack: str, path: Path, declared: str | None, on_pinned: Callable[[str], None] | None = None,
                 fingerprint: str | None = None):
        self.stack, self.path, self.declared, self.fingerprint = stack, path, declared, fingerprint
        self.on_pinned = on_pinned or (lambda _line: None)

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        offered = f"{key.get_name()} {key.get_base64()}"
        if self.declared and " ".join(self.declared.split()[:2]) != offered:
            raise HostKeyChanged(self.stack, hostname, " ".join(self.declared.split()[:2]), offered, str(self.path),
                                 declared=True)
        if not self.declared:
            presented = sha256_fingerprint(key)
            if self.fingerprint is None:
                raise HostKeyUnknown(self.stack, hostname, key.get_name(), presented)
            if presented != self.fingerprint:
                raise HostKeyChanged(self.stack, hostname, self.fingerprint, f"{key.get_name()} {presented}",
                                     str(self.path), declared=True)
        client.get_host_keys().add(hostname, key.get_name(), key)
        with self.path.open("a") as fh:
            fh.write(f"{hostname} {offered}\n")
        self.path.chmod(0o600)
        self.on_pinned(f"{hostname} {offered}")


@dataclass
class Target:
    """How to reach one stack's host. (Where its files live, the host itself says: its facts.)"""

    config: StackConfig
    host: GpuHost
    key_path: Path


def target_for(config: StackConfig, host: GpuHost, key_path: Path | None = None) -> Target:
    """The Target of ``config``'s host, logging in with the stack's key unless ``key_path`` is given."""
    return Target(config, host, key_path or keys.private_key_path(config))


def wait_for_ssh(host: GpuHost, timeout_s: float = 300.0) -> None:
    """Return once the host's sshd answers with its banner; a freshly booted cloud host takes a while."""
    last = wait_for_ssh_banner(host.address, host.ssh_port, timeout_s, interval_s=1.0)
    if last is None:
        return
    raise HostUnreachable(
        f"SSH on {host.address}:{host.ssh_port} did not answer within {timeout_s:.0f}s ({last}); "
        "check that the host is running and that your address may reach port 22"
    )


def host_identity(host: GpuHost) -> str:
    """Which machine the pins belong to: its instance id and launch time (an id alone may be reused,
    as the local sandbox's is; a launch time alone may be unknown)."""
    ident = host.instance_id or f"{host.address}:{host.ssh_port}"
    if host.launched_at:
        ident += f"@{host.launched_at.isoformat()}"
    return ident


def _forget_pins_of_a_replaced_host(known_hosts: Path, host: GpuHost) -> None:
    """A new instance (after down + up) legitimately has a new key: start its pins afresh.
    The same instance presenting another key is still refused."""
    owner = known_hosts.with_name(f"{known_hosts.name}.host")
    ident = host_identity(host)
    if owner.exists() and owner.read_text().strip() != ident and known_hosts.exists():
        known_hosts.replace(known_hosts.with_name(f"{known_hosts.name}.replaced"))
    owner.write_text(ident + "\n")


def _adopt_stack_pins(known_hosts: Path, pins: list[str]) -> None:
    """Add the pins the stack carries (made by whoever connected first) that this machine lacks."""
    have = set(known_hosts.read_text().splitlines())
    missing = [p for p in pins if p not in have]
    if missing:
        with known_hosts.open("a") as fh:
            fh.write("".join(f"{p}\n" for p in missing))


def _expect_declared_key(client: paramiko.SSHClient, entry: str, declared: str | None) -> str | None:
    """Make the host's declared key the one the key exchange must see (when no pin exists for ``entry`` yet);
    returns the known_hosts line to pin once the connection is verified, or None."""
    if not declared or client.get_host_keys().lookup(entry):
        return None
    line = f"{entry} {' '.join(declared.split()[:2])}"
    parsed = paramiko.hostkeys.HostKeyEntry.from_line(line)
    if parsed is None or parsed.key is None:
        raise ProvisioningError(f"the host's declared SSH host key is not an OpenSSH public key: {declared[:40]!r}")
    client.get_host_keys().add(entry, parsed.key.get_name(), parsed.key)
    return line


class Remote:
    """A pinned SSH connection (Fabric) that counts its round trips."""

    def __init__(self, target: Target, connect_timeout: float = 20.0):
        self.target = target
        self.round_trips = 0
        host = target.host
        self.known_hosts = known_hosts_path(target.config.stack)
        _forget_pins_of_a_replaced_host(self.known_hosts, host)
        self.known_hosts.touch(mode=0o600, exist_ok=True)
        ident = host_identity(host)
        _adopt_stack_pins(self.known_hosts, host_key_pins(target.config, ident))
        self.conn = Connection(
            host.address, user=host.ssh_user, port=host.ssh_port,
            config=Config(overrides={"run": {"in_stream": False}, "load_ssh_configs": False}),
            connect_timeout=connect_timeout,
            connect_kwargs={"key_filename": str(target.key_path), "look_for_keys": False, "allow_agent": False},
        )
        # Replace Fabric's client (AutoAddPolicy + the user's known_hosts) with a pinned one.
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(self.known_hosts))
        except (paramiko.hostkeys.InvalidHostKey, UnicodeDecodeError) as err:
            raise ProvisioningError(f"{self.known_hosts} is damaged ({err}); remove the bad line and run again") from None
        self._pin = lambda line: add_host_key_pin(target.config, ident, line)
        # A declared key is expected at the key exchange: a host with another key of its type is refused
        # there (BadHostKeyException), one with only other types by the policy (it checks the declared key).
        self._verified_line = _expect_declared_key(client, _host_entry(host), host.host_key)
        client.set_missing_host_key_policy(PinOnFirstUse(
            target.config.stack, self.known_hosts, host.host_key, on_pinned=self._pin,
            fingerprint=host.host_key_fingerprint))
        self.conn.client = client

    def open(self) -> Remote:
        if self.conn.is_connected:
            return self
        host = self.target.host
        try:
            self.conn.open()
        except paramiko.BadHostKeyException as err:
            raise HostKeyChanged(
                self.target.config.stack, _host_entry(host),
                f"{err.expected_key.get_name()} {err.expected_key.get_base64()}",
                f"{err.key.get_name()} {err.key.get_base64()}", str(self.known_hosts),
                declared=self._verified_line is not None,  # expected the declared key, not a pin
            ) from None
        except paramiko.AuthenticationException as err:
            raise HostUnreachable(
                f"{host.ssh_user}@{host.address}:{host.ssh_port} refused the key {self.target.key_path} ({err})"
            ) from None
        except (OSError, paramiko.SSHException) as err:
            raise HostUnreachable(f"cannot open SSH to {host.address}:{host.ssh_port}: {err}") from None
        if self._verified_line is not None:  # the declared key matched: it is the pin from now on
            with self.known_hosts.open("a") as fh:
                fh.write(self._verified_line + "\n")
            self.known_hosts.chmod(0o600)
            self._pin(self._verified_line)
            self._verified_line = None
        return self

    @property
    def transport(self) -> paramiko.Transport:
        self.open()
        transport = self.conn.client.get_transport()
        if transport is None:  # closed by another thread between the two lines above
            raise HostUnreachable(f"the SSH connection to {self.target.host.address} was closed")
        return transport

    def script(self, text: str, on_line: Output | None = None, timeout_s: float = 3600.0) -> tuple[int, str, str]:
        """Run a shell script on the host in ONE exec channel (one round trip).

        The script travels on the channel's stdin to ``sh -s``: file contents and secrets in it
        never appear on a command line (``ps``) or in a log.
        """
        chan = self.transport.open_session()
        self.round_trips += 1
        try:
            chan.settimeout(timeout_s)
            chan.exec_command("/bin/sh -s")
            chan.sendall(text.encode())
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            pending = b""
            while True:
                if chan.recv_ready():
                    chunk = chan.recv(65536)
                    out += chunk
                    if on_line:
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            on_line(line.decode(errors="replace"))
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif (chan.exit_status_ready() and (chan.eof_received or chan.closed)
                      and not chan.recv_ready() and not chan.recv_stderr_ready()):
                    # The exit status can come before the last of the output (sshd sends it when the
                    # process ends): done only once the host has also closed its end of the output.
                    break
                else:
                    time.sleep(0.005)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(65536)
            if on_line and pending:  # a last line without its newline is still a line of output
                on_line(pending.decode(errors="replace"))
            return chan.recv_exit_status(), out.decode(errors="replace"), err.decode(errors="replace")
        except TimeoutError:
            raise ProvisioningError(f"a command on {self.target.host.address} ran past {timeout_s:.0f}s") from None
        finally:
            chan.close()

    def stream_to(self, command_script: str, sink: BinaryIO) -> int:
        """Run a script in one exec channel and write its raw stdout into ``sink``; returns the exit code."""
        chan = self.transport.open_session()
        self.round_trips += 1
        try:
            chan.exec_command("/bin/sh -s")
            chan.sendall(command_script.encode())
            chan.shutdown_write()
            while (chunk := chan.recv(1 << 16)):
                sink.write(chunk)
            return chan.recv_exit_status()
        finally:
            chan.close()

    def get(self, remote_path: str, local_path: Path) -> None:
        """Download one file over sftp (counted as its sftp requests: open, stat, reads, close)."""
        sftp = self.conn.sftp()
        size = sftp.stat(remote_path).st_size or 0
        sftp.get(remote_path, str(local_path))
        self.round_trips += 3 + max(1, size // 32768)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Remote:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
