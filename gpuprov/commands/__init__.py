"""Each module registers its commands on :data:`gpuprov.app.app` when imported.

Listed in the order ``gpuprov --help`` shows them: the everyday flow first.
"""
# ruff: noqa: I001, F401

from gpuprov.commands import stack
from gpuprov.commands import deploy
from gpuprov.commands import cost
from gpuprov.commands import ci
from gpuprov.commands import reap
from gpuprov.commands import sandbox
