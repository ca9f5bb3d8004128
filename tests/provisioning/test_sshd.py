"""The sshd drop-in deploy writes on a host gpuprov made, read by the real OpenSSH sshd."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gpuprov.provisioning import sshd
from gpuprov.provisioning.errors import ProvisioningError
from gpuprov.provisioning.hostpaths import HOST_ROOT
from tests.conftest import need

SSHD = Path("/usr/sbin/sshd")


def _effective(tmp_path: Path, drop_ins: dict[str, str]) -> dict[str, str]:
    """``sshd -T`` of a config laid out as Ubuntu's: the drop-in folder included first, then the main file."""
    need(SSHD.exists(), "OpenSSH's sshd is not installed (make setup)")
    folder = tmp_path / "sshd_config.d"
    folder.mkdir()
    for name, text in drop_ins.items():
        (folder / name).write_text(text)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "hostkey")], check=True)
    config = tmp_path / "sshd_config"
    config.write_text(f"Include {folder}/*.conf\nHostKey {tmp_path / 'hostkey'}\nPasswordAuthentication yes\n")
    subprocess.run([str(SSHD), "-t", "-f", str(config)], check=True)
    text = subprocess.run([str(SSHD), "-T", "-f", str(config)], check=True, capture_output=True, text=True).stdout
    return dict(line.split(" ", 1) for line in text.splitlines() if " " in line)


def test_the_drop_in_wins_over_cloud_init_and_the_main_file(tmp_path: Path):
    """cloud-init may write PasswordAuthentication yes in 50-cloud-init.conf: sshd keeps the first value,
    and 00-gpuprov.conf is read first."""
    ours = sshd.drop_in("ubuntu")
    effective = _effective(tmp_path, {Path(ours.path).name: ours.content.decode(),
                                      "50-cloud-init.conf": "PasswordAuthentication yes\nPermitRootLogin yes\n"})
    assert (effective["passwordauthentication"], effective["kbdinteractiveauthentication"],
            effective["permitrootlogin"], effective["allowusers"]) == ("no", "no", "no", "ubuntu")


def test_the_step_checks_the_config_before_reloading_and_reads_the_effective_settings_back():
    script = sshd.apply().script.replace(HOST_ROOT, "")
    check, reload = script.index("sshd -t"), script.index("systemctl reload ssh")
    assert check < reload < script.index("sshd -T")  # never reload a config sshd refuses
    assert f"rm -f {sshd.DROP_IN}" in script[:reload]  # a refused drop-in is taken out again
    for line in sshd.EFFECTIVE:
        assert line in script


@pytest.mark.parametrize("user", ["root x", "ubuntu\nPermitRootLogin yes", "-oX", ""])
def test_a_user_name_sshd_cannot_take_is_refused(user):
    with pytest.raises(ProvisioningError, match="AllowUsers"):
        sshd.drop_in(user)
