"""``cloud: existing`` never trusts a host key on first use: the first connect is verified against the config's
``host_key`` / ``host_key_fingerprint`` or the operator's own ~/.ssh/known_hosts (hashed entries too); a machine
known from nowhere is refused with one line that shows the fingerprint it presented and how to accept it.

The machine is a real local sandbox box (OpenSSH's sshd); its own host key file plays the owner's knowledge.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from gpuprov.infra.clouds.existing.host import existing_host, known_host_key
from gpuprov.infra.clouds.local.sandbox import LocalSandbox
from gpuprov.infra.config import build_config
from gpuprov.provisioning.errors import HostKeyChanged, HostKeyUnknown
from gpuprov.provisioning.ssh import Remote, target_for
from tests.conftest import need_sandbox, run_cli

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICN+lJwsONkwrdsSnQsu1ydUkIuIg5oOC+Eslvmtt60T"  # not the box's


@pytest.mark.parametrize(("key", "value"), [
    ("host_key", f"{KEY} root@box"),  # a comment: not part of the key
    ("host_key", f"{KEY}\n"),
    ("host_key", "ssh-dss AAAAB3NzaC1kc3MAAACBAP"),
    ("host_key_fingerprint", "SHA256:abc"),
    ("host_key_fingerprint", "MD5:16:27:ac:a5:76:28:2d:36:63:1b:56:4d:eb:df:a6:48"),
])
def test_host_key_values_follow_their_grammar(tmp_path: Path, key: str, value: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"cloud: existing\nhost: me@192.0.2.10\n{key}: {value!r}\n".replace("'", '"'))
    result = run_cli("plan", "--config", str(config))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"config key '{key}'" in result.stderr and "Traceback" not in result.stderr


def _known_hosts(tmp_path: Path, line: str, hashed: bool) -> Path:
    path = tmp_path / "known_hosts"
    path.write_text(line + "\n")
    if hashed:
        subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(path)], check=True, capture_output=True)
        assert line.split()[0] not in path.read_text()  # only the hash of the name is left
    return path


@pytest.mark.parametrize("hashed", [False, True])
def test_the_operators_known_hosts_names_the_key_hashed_or_not(tmp_path: Path, hashed: bool) -> None:
    path = _known_hosts(tmp_path, f"[192.0.2.10]:2222 {KEY}", hashed)
    assert known_host_key("192.0.2.10", 2222, path) == KEY
    assert known_host_key("192.0.2.10", 22, path) is None  # another port is another entry
    assert known_host_key("192.0.2.11", 2222, path) is None


@pytest.fixture
def box(tmp_path: Path):  # type: ignore[no-untyped-def]
    need_sandbox()
    made = LocalSandbox(f"hk-{uuid.uuid4().hex[:6]}", root=tmp_path / "machine")
    made.create()
    try:
        yield made
    finally:
        made.destroy()


def _config_text(box: LocalSandbox, *extra: str) -> str:
    host = box.host()
    assert host is not None
    return "".join(f"{line}\n" for line in ("cloud: existing", f"host: {host.ssh_user}@{host.address}:{host.ssh_port}",
                                            f"ssh_private_key_path: {box.client_key}", *extra))


def _fingerprint(box: LocalSandbox) -> str:
    shown = subprocess.run(["ssh-keygen", "-lf", str(box.dir / "host_ed25519.pub")], check=True,
                           capture_output=True, text=True).stdout
    return shown.split()[1]


def _remote(box: LocalSandbox, stack: str, **values: str) -> Remote:
    host = box.host()
    assert host is not None
    cfg = build_config({"stack": stack, "cloud": "existing", "host": f"{host.ssh_user}@{host.address}:{host.ssh_port}",
                        "ssh_private_key_path": str(box.client_key), **values})
    return Remote(target_for(cfg, existing_host(cfg), box.client_key))


@pytest.mark.sandbox
@pytest.mark.timeout(300)
def test_a_machine_known_from_nowhere_is_refused_with_its_fingerprint_before_anything_is_sent(
        box: LocalSandbox, tmp_path: Path, gpuprov_home: Path) -> None:
    config = tmp_path / "existing.yaml"
    config.write_text(_config_text(box))
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)  # the operator's OpenSSH has never met this machine
    log_before = (box.dir / "sshd.log").read_text()
    up = run_cli("up", "--config", str(config), "--stack", "exu", env={"HOME": str(home), "GPUPROV_PULUMI": "mock"})
    assert up.returncode == 5, up.stdout + up.stderr  # README: a host key not known or not the expected one
    [line] = up.stderr.strip().splitlines()[-1:]
    assert f"it presented ssh-ed25519 {_fingerprint(box)}" in line, line
    assert f'host_key_fingerprint: "{_fingerprint(box)}"' in line and "without sending anything" in line
    assert "Traceback" not in up.stderr
    new_log = (box.dir / "sshd.log").read_text()[len(log_before):]
    assert "Accepted" not in new_log  # never authenticated: no channel, no file, no secret
    assert not (box.dir / "host" / "opt" / "gpuprov").exists()


@pytest.mark.sandbox
@pytest.mark.timeout(300)
def test_the_first_connect_is_verified_by_fingerprint_key_or_known_hosts_and_a_wrong_one_is_refused(
        box: LocalSandbox, tmp_path: Path, gpuprov_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUPROV_PULUMI", "mock")  # pins travel with the stack: the mock engine's state here
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    presented = " ".join((box.dir / "host_ed25519.pub").read_text().split()[:2])
    with _remote(box, "exf", host_key_fingerprint=_fingerprint(box)) as remote:
        assert remote.script("echo by-fingerprint")[1].strip() == "by-fingerprint"
    with _remote(box, "exk", host_key=presented) as remote:
        assert remote.script("echo by-key")[1].strip() == "by-key"
    host = box.host()
    assert host is not None
    entry = host.address if host.ssh_port == 22 else f"[{host.address}]:{host.ssh_port}"  # as OpenSSH writes it
    (home / ".ssh" / "known_hosts").write_text(_known_hosts(tmp_path, f"{entry} {presented}", hashed=True).read_text())
    with _remote(box, "exh") as remote:  # no config key: the operator's own (hashed) known_hosts knows it
        assert remote.script("echo by-known-hosts")[1].strip() == "by-known-hosts"

    with pytest.raises(HostKeyChanged):
        _remote(box, "exw", host_key_fingerprint="SHA256:" + "A" * 43).open()
    with pytest.raises(HostKeyChanged):
        _remote(box, "exw2", host_key=KEY).open()
    (home / ".ssh" / "known_hosts").write_text("")
    with pytest.raises(HostKeyUnknown):
        _remote(box, "exn").open()
