"""Releases on the host: the previous one kept beside the current one, per app, and the swap between them.

A *release* of an app is what its folder holds besides its data and secrets: the compose files and
``.env`` (image references, settings, config hashes), plus the image IDs its references pointed at.
The root-only secret env files are not part of it: a rollback keeps the stack's current secrets
(``gpuprov secrets rotate`` may have changed them since), and Compose recreates what they change. ``gpuprov update`` keeps the running release in ``<app>/previous/`` (in the
same batch, just before the new files are written); :func:`rollback_script` swaps the two, so a
second rollback returns to the newer one. Data (named volumes, ``data/``) is never touched here.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable

from gpuprov.apps import registry
from gpuprov.provisioning.hostpaths import ROOT, on_host
from gpuprov.provisioning.steps import Action

PREVIOUS = "previous"
COMPOSE_ORDER = ("compose.yaml", "compose.gpu.yaml", "compose.sandbox.yaml")
_RELEASE_FILES = '"$d"/*.yaml "$d"/.env'
# The image ID each *_IMAGE reference of a release's .env points at (a tag may later point elsewhere).
_IMAGES = ("sed -n 's/^[A-Z0-9_]*_IMAGE=//p' \"$1/.env\" | while read -r ref; do "
           "echo \"$ref $($SUDO docker image inspect -f '{{.Id}}' \"$ref\" 2>/dev/null || true)\"; done")


def _folder(app: str) -> str:
    return on_host(f"{ROOT}/{app}")


def snapshot(app: str, token: str) -> Action:
    """Keep ``app``'s running release in ``previous/`` (nothing when the app was never deployed)."""
    return Action(f"keep_previous:{app}", "\n".join([
        f"d={_folder(app)}",
        "images() { " + _IMAGES + "; }",
        'if [ -f "$d/.env" ]; then',
        '  $SUDO rm -rf "$d/previous.new" && $SUDO install -d -m 0700 "$d/previous.new"',
        f'  for f in {_RELEASE_FILES}; do if [ -f "$f" ]; then $SUDO cp -p "$f" "$d/previous.new/"; fi; done',
        '  images "$d" | $SUDO tee "$d/previous.new/images" >/dev/null',
        f'  echo {shlex.quote(token)} | $SUDO tee "$d/previous.new/release" >/dev/null',
        '  $SUDO rm -rf "$d/previous" && $SUDO mv "$d/previous.new" "$d/previous"',
        "fi",
    ]))


def with_snapshots(actions: list[Action], token: str) -> list[Action]:
    """``actions`` with a snapshot of each app whose files they rewrite, before the first file is written."""
    apps = [a.step.removeprefix("files:") for a in actions if a.step.startswith("files:")]
    apps = [a for a in apps if a in registry().apps]
    if not apps:
        return actions
    first = next(i for i, a in enumerate(actions) if a.step == "directories" or a.step.startswith("files:"))
    return actions[:first] + [snapshot(a, token) for a in apps] + actions[first:]


def rollback_script(apps: Iterable[str], token: str | None = None) -> str:
    """Swap each app's current and previous release and bring its containers in line (only those that
    differ are recreated). ``token``: only apps whose previous release that update kept (an automatic
    rollback). Prints ``@@gpuprov-rolled APP`` per app rolled back, ``@@gpuprov-image REF`` per image
    reference it now runs, ``@@gpuprov-noprevious APP`` where there was nothing to return to."""
    lines = ['if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO="sudo -n"; fi', "set -e", "umask 077",
             "images() { " + _IMAGES + "; }",
             'pull=missing; if [ -n "${GPUPROV_SANDBOX:-}" ]; then pull=never; fi']
    for name in apps:
        app = registry().app(name)
        files = " ".join(f"$([ -f {n} ] && printf -- '-f %s ' {n})" for n in COMPOSE_ORDER)
        only = f' && [ "$($SUDO cat "$d/previous/release" 2>/dev/null)" = {shlex.quote(token)} ]' if token else ""
        lines += [
            f"d={_folder(app.name)}",
            f'if [ -f "$d/previous/.env" ]{only}; then',
            '  $SUDO rm -rf "$d/swap.new" && $SUDO install -d -m 0700 "$d/swap.new"',
            '  images "$d" | $SUDO tee "$d/swap.new/images" >/dev/null',
            '  echo rolled-back | $SUDO tee "$d/swap.new/release" >/dev/null',
            # The previous release's tags back on the images it ran (when a tag was moved since).
            '  while read -r ref id; do if [ -n "$id" ] && $SUDO docker image inspect "$id" >/dev/null 2>&1; then '
            '$SUDO docker tag "$id" "$ref"; fi; done < "$d/previous/images"',
            f'  for f in {_RELEASE_FILES}; do if [ -f "$f" ]; then $SUDO mv "$f" "$d/swap.new/"; fi; done',
            '  for f in "$d"/previous/*.yaml "$d"/previous/.env; do '
            'if [ -f "$f" ]; then $SUDO mv "$f" "$d/"; fi; done',
            '  $SUDO rm -rf "$d/previous" && $SUDO mv "$d/swap.new" "$d/previous"',
            f'  cd "$d" && $SUDO docker compose -p {shlex.quote(app.project)} {files}up -d --pull "$pull" '
            "--remove-orphans 2>&1",
            f"  echo '@@gpuprov-rolled {app.name}'",
            "  sed -n 's/^[A-Z0-9_]*_IMAGE=/@@gpuprov-image /p' \"$d/.env\"",
            f"else echo '@@gpuprov-noprevious {app.name}'; fi",
        ]
    return "\n".join(lines) + "\n"
