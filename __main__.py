"""gpuprov's Pulumi program: read the stack config, build the host, export it."""

import pulumi

import gpuprov.infra
from gpuprov.infra.config import from_pulumi_config

for name, value in gpuprov.infra.build(from_pulumi_config()).items():
    pulumi.export(name, value)
