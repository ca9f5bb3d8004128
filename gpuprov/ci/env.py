"""The environment ``gpuprov ci --on local`` gives CMD: the ordinary one, less every secret gpuprov knows of.

CMD is often someone else's code (a pull request's ``pytest``): it gets ``GPUPROV_URL_*``,
``GPUPROV_HOST``, ``GPUPROV_STACK`` and the caller's environment without cloud credentials
(each driver names its own, :attr:`CloudDriver.secret_env`), Hugging Face tokens and Pulumi
secrets. ``--pass-env NAME`` hands one of them through on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from gpuprov.infra.clouds import all_drivers

#: Secrets that belong to no one cloud: Hugging Face, Pulumi, and the GitHub Actions OIDC request token
#: (with it a job can mint cloud credentials; https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect).
COMMON_SECRETS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "PULUMI_ACCESS_TOKEN", "PULUMI_CONFIG_PASSPHRASE",
                  "PULUMI_CONFIG_PASSPHRASE_FILE", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_URL")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def withheld() -> list[str]:
    """Every variable CMD does not get unless passed by name, in one list."""
    names = set(COMMON_SECRETS)
    for driver in all_drivers():
        names.update(driver.secret_env)
    return sorted(names)


def check_names(names: Iterable[str]) -> list[str]:
    """``--pass-env`` values, each a full environment variable name; raises ValueError naming a bad one."""
    out = []
    for name in names:
        if not ENV_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not an environment variable name")
        out.append(name)
    return out


def command_env(environ: Mapping[str, str], pass_env: Iterable[str] = ()) -> dict[str, str]:
    """``environ`` without the withheld secrets, except those named in ``pass_env``."""
    drop = set(withheld()) - set(pass_env)
    return {k: v for k, v in environ.items() if k not in drop}
