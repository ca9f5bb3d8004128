"""Which stack a host serves: the marker deploy writes first (``/opt/gpuprov/stack.json``), read by the fact probe.

One machine serves one stack: the apps' Compose projects, container names and host ports are fixed
per app, so a second stack deployed to the same host would take over the first one's services
(issue #11). Deploy therefore stops, before anything on the host changes, when the marker names
another stack or another owner; ``down`` of the stack that wrote it removes it with ``/opt/gpuprov``.
A host with gpuprov containers and no marker was deployed by an older gpuprov: it is adopted.
"""

from __future__ import annotations

import json
import re

from gpuprov.infra.errors import GpuprovError
from gpuprov.infra.owner import REFERENCE
from gpuprov.provisioning.desired import RemoteFile
from gpuprov.provisioning.facts import HostFacts
from gpuprov.provisioning.hostpaths import ROOT

MARKER = f"{ROOT}/stack.json"
STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]{0,240}")  # a stack name, qualified or not (what the host may say)


class HostServesAnotherStack(GpuprovError):
    """The host's marker names another stack (or another owner's): deploying would take over its services."""

    exit_code = 2


def marker_file(stack: str, owner: str) -> RemoteFile:
    """The marker for ``stack`` made by ``owner`` (an owner reference, :mod:`gpuprov.infra.owner`)."""
    return RemoteFile(MARKER, (json.dumps({"stack": stack, "owner": owner}, sort_keys=True) + "\n").encode(), 0o644)


def claim(facts: HostFacts, stack: str, owner: str, address: str) -> str | None:
    """Raise :class:`HostServesAnotherStack` when the host serves another stack; else a progress note
    when an unmarked host with gpuprov's containers is adopted (None when there is nothing to say)."""
    if facts.stack_marker:
        try:
            found = json.loads(facts.stack_marker)
            theirs, their_owner = str(found["stack"]), str(found["owner"])
            if not (STACK.fullmatch(theirs) and REFERENCE.fullmatch(their_owner)):
                raise ValueError(theirs)  # the host's text reaches the terminal only in the grammar we wrote
        except (ValueError, KeyError, TypeError):
            raise HostServesAnotherStack(
                f"{address} holds an unreadable stack marker ({MARKER}): gpuprov cannot tell which stack it serves; "
                "look at it on the host, or deploy to another machine") from None
        if (theirs, their_owner) != (stack, owner):
            raise HostServesAnotherStack(
                f"{address} already serves stack '{theirs}' (owner {their_owner}); remove it with "
                f"`gpuprov down --stack {theirs}` from where it was made, or deploy to another machine")
        return None
    if any(c.project.startswith("gpuprov-") for c in facts.containers):
        return (f"adopting {address}: it runs gpuprov containers but has no stack marker (an older gpuprov "
                f"deployed them); marking it as stack '{stack}'")
    return None
