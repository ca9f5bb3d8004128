"""gpuprov's Pulumi program: read the stack config, build the host, export it."""

import os

import pulumi

import gpuprov.infra
from gpuprov.apps import APP_PATH_ENV, use_app_path
from gpuprov.infra.config import from_pulumi_config

use_app_path(os.environ.get(APP_PATH_ENV))  # app folders of your own, besides the built-ins
for name, value in gpuprov.infra.build(from_pulumi_config()).items():
    pulumi.export(name, value)
