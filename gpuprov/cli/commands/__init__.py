"""Each module registers its commands on :data:`gpuprov.app.app` when imported.

Listed in the order ``gpuprov --help`` shows them: the everyday flow first.
"""
# ruff: noqa: I001, F401

from gpuprov.cli.commands import stack
from gpuprov.cli.commands import deploy
from gpuprov.cli.commands import build
from gpuprov.cli.commands import diagnose
from gpuprov.cli.commands import update
from gpuprov.cli.commands import secrets
from gpuprov.cli.commands import apps
from gpuprov.cli.commands import viewer
from gpuprov.cli.commands import extend
from gpuprov.cli.commands import cost
from gpuprov.cli.commands import ci
from gpuprov.cli.commands import reap
from gpuprov.cli.commands import sandbox
from gpuprov.cli.commands import kube
