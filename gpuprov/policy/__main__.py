"""The gpuprov CrossGuard policy pack: ``pulumi up --policy-pack gpuprov/policy`` (installed: the folder of ``gpuprov.policy``).

The only place the pack is built: constructing a ``PolicyPack`` starts the
analyzer server and blocks, so tests call the policies in :mod:`rules` directly.
"""

import sys
from pathlib import Path

from pulumi_policy import PolicyPack

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the engine may start us from elsewhere

from rules import POLICIES  # noqa: E402

PolicyPack(name="gpuprov", policies=POLICIES)
