"""The stack's own SSH *host* key pair: made by gpuprov, installed on the host at launch, known before the
first connect.

A host that takes cloud-init user data (Lambda's ``user_data`` at launch) gets this pair through
cloud-init's ``ssh_keys`` (``ed25519_private`` / ``ed25519_public``): cloud-init deletes the image's host
keys (``ssh_deletekeys``), generates no others (``ssh_genkeytypes: []``) and installs ours before sshd
starts. The public half becomes the host's declared ``host_key`` (:class:`~gpuprov.infra.host.GpuHost`), so
the very first connection is checked against it (:mod:`gpuprov.provisioning.ssh`) and a host that presents
any other key is refused before anything is sent.

The private half is a secret: 0600 in the stack's 0700 key folder beside the login key (gone with it at
``down``), read by the launch only, never a Pulumi input, output or log line.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpuprov.infra.keys import key_dir

HOST_KEY = "ssh_host_ed25519_key"  # the name sshd and cloud-init give an ed25519 host key
TAG_HOST_KEY = "gpuprov-host-key"  # a cloud tag holding the public host key an instance was launched with


def stack_host_keypair(stack: str, root: Path | None = None) -> tuple[Path, str]:
    """The stack's ed25519 host key pair (made once, 0600): (private key path, public key "ssh-ed25519 BASE64")."""
    private = key_dir(stack, root) / HOST_KEY
    if not private.exists():
        private.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"gpuprov-host-{stack}",
                        "-f", str(private)], check=True, capture_output=True)
    return private, " ".join(private.with_suffix(".pub").read_text().split()[:2])


def cloud_config(private_key: str, public_key: str) -> str:
    """cloud-init user data that installs (only) this host key pair, as cloud-init's ``cc_ssh`` module reads it."""
    import yaml

    body = {"ssh_deletekeys": True, "ssh_genkeytypes": [],
            "ssh_keys": {"ed25519_private": private_key.strip() + "\n", "ed25519_public": public_key}}
    return "#cloud-config\n" + yaml.safe_dump(body, default_flow_style=False, sort_keys=False)


def user_data_for(private_path: Path, public_key: str) -> str:
    """The launch's user data, read from the private key file just before the launch request is sent."""
    return cloud_config(private_path.read_text(), public_key)
