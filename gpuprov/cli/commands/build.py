"""``build``: build the images a stack builds here (off the GPU meter) and push them to a registry."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, load, out, progress
from gpuprov.cli.commands.deploy import BuildInputOpt, build_inputs
from gpuprov.infra.config import ConfigError
from gpuprov.infra.grammar import IMAGE_REGISTRY

RegistryOpt = Annotated[str | None, typer.Option(
    "--registry", metavar="REGISTRY",
    help="Where to push (host[:port][/path]); default: the stack's image_registry. The same registry reached "
         "at another address works: names inside a registry do not include its address.")]


@app.command()
def build(json_: JsonOpt = False, cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
          registry: RegistryOpt = None, build_input: BuildInputOpt = None) -> None:
    """Build the images the stack would build on its host (MONAI Label at its pinned commit; stand-ins on a
    local stack) where Docker runs here, and push them to a registry; deploy then pulls instead of building."""
    from gpuprov.apps import registry as app_registry
    from gpuprov.provisioning.build import build_and_push
    from gpuprov.provisioning.deploy import build_inputs_of

    cfg = load(cloud, config, stack)
    target = registry or cfg.image_registry
    if target is None:
        raise ConfigError("--registry", "(unset)", "name the registry to push to (--registry HOST[:PORT][/PATH]) or "
                                                   "set image_registry in the stack's config")
    if not IMAGE_REGISTRY.fullmatch(target):
        raise ConfigError("--registry", target, "expected a registry host[:port][/path] such as ghcr.io/ORG")
    inputs = build_inputs_of(app_registry().selected(cfg.apps), build_inputs(build_input))
    built = build_and_push(cfg, target, inputs, progress)
    if json_:
        print(json.dumps({"images": [{"service": b.service, "image": b.image, "pushed": b.target, "label": b.label,
                                      "seconds": round(b.seconds, 3)} for b in built]}))
        return
    for b in built:
        out.print(f"{b.service}: pushed {b.target} ({b.seconds:.1f}s)", markup=False)
    if built and cfg.image_registry is None:
        out.print(f"set image_registry: {target} in the stack's config (as the host reaches it) so deploy pulls "
                  "these instead of building", markup=False)
