"""The Pulumi program: one function per target, each returning the ``host`` output as a GpuHost dict.

Targets are imported lazily so a program for one cloud never loads another's SDK.
"""

from __future__ import annotations

from typing import Any

import pulumi

from gpuprov.infra.config import StackConfig


def build(config: StackConfig) -> dict[str, Any]:
    """Create the stack's resources for ``config.cloud`` and return its outputs."""
    if config.cloud == "lambda":
        from gpuprov.infra.lambda_cloud.program import build_lambda_host as build_host
    elif config.cloud == "aws":
        from gpuprov.infra.aws.program import build_aws_host as build_host
    elif config.cloud == "gcp":
        from gpuprov.infra.gcp.program import build_gcp_host as build_host
    elif config.cloud == "local":
        from gpuprov.infra.local.resource import build_local_host as build_host
    else:
        from gpuprov.infra.existing import existing_host

        return {"host": existing_host(config).to_outputs()}
    host: pulumi.Output[dict[str, Any]] = build_host(config)
    return {"host": host}
