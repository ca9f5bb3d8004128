"""The Pulumi program: the stack's cloud driver declares the resources and returns the ``host`` output.

It ships in the package: the Automation API runs :func:`main` inline, and the checkout's
``__main__.py`` (for ``pulumi up`` from the repository) calls the same function.
Drivers import their Pulumi providers lazily, so a program for one cloud never loads another's SDK.
"""

from __future__ import annotations

import os
from typing import Any

from gpuprov.infra.clouds import driver_class
from gpuprov.infra.config import StackConfig
from gpuprov.infra.settings import Settings

SECRET_OUTPUTS = ("ssh_private_key",)  # outputs that are Pulumi secrets (sealed in the mock runtime's state too)


def build(config: StackConfig) -> dict[str, Any]:
    """Create the stack's resources for ``config.cloud`` and return its outputs: ``host``; with ``deploy``,
    the services deployed on it and ``tunnel``, the command that reaches them; and, when the host
    trusts the stack's generated key pair, that private key as a secret output, so anyone who may read the
    stack (a colleague on the same backend) can log in to its host."""
    import pulumi

    from gpuprov.infra.keys import key_dir

    outputs: dict[str, Any] = {"host": driver_class(config.cloud)(Settings()).build(config)}
    if config.deploy:  # `pulumi up` serves: the same deploy as `gpuprov deploy`, as a resource of the stack
        from gpuprov.provisioning.deployment import Deployment

        outputs["tunnel"] = Deployment("deployment", config, outputs["host"]).tunnel
    generated = key_dir(config.stack) / "id_ed25519"
    if config.ssh_public_key is None and generated.exists():
        outputs["ssh_private_key"] = pulumi.Output.secret(generated.read_text())
    return outputs


def main() -> None:
    """The whole program: read the running stack's ``gpuprov:*`` config, build, export the outputs."""
    import pulumi

    from gpuprov.apps import APP_PATH_ENV, use_app_path
    from gpuprov.infra.config import from_pulumi_config
    from gpuprov.infra.egress import resolve

    use_app_path(os.environ.get(APP_PATH_ENV))  # app folders of your own, besides the built-ins
    # `gpuprov up` passes the operator's egress address (gpuprov:egress_cidr); `pulumi up` from a checkout,
    # which has none, detects it here, so SSH opens to this machine only.
    for name, value in build(resolve(from_pulumi_config(), Settings.from_env())).items():
        pulumi.export(name, value)
