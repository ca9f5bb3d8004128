"""``gpuprov viewer up | down | status | import``: OHIF-AI's viewer and Orthanc on this machine, wired to
the stack's MONAI Label through gpuprov's SSH tunnel."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from gpuprov.cli.app import CloudOpt, ConfigOpt, JsonOpt, StackOpt, app, err, fail, load, out, progress
from gpuprov.infra.config import viewer_config

viewer_app = typer.Typer(help="OHIF-AI's viewer and Orthanc on this machine, talking to the stack's MONAI Label "
                              "through an SSH tunnel (no public port).", no_args_is_help=True)
app.add_typer(viewer_app, name="viewer")

ImageOpt = Annotated[str | None, typer.Option("--image", help="Viewer image to run (yours, or one you pushed); "
                                                               "default: built here from OHIF-AI's Viewers/ recipe.")]
OrthancImageOpt = Annotated[str | None, typer.Option("--orthanc-image", help="Orthanc image with DICOMweb "
                                                                              "(default jodogne/orthanc-plugins:1.12.4).")]
PortOpt = Annotated[int | None, typer.Option("--port", help="Viewer port on 127.0.0.1 (default 1026).")]
OrthancPortOpt = Annotated[int | None, typer.Option("--orthanc-port", help="Orthanc port on 127.0.0.1 (default 8042).")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait for the viewer, Orthanc and MONAI Label.")]


@viewer_app.command("up")
def viewer_up(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None, image: ImageOpt = None,
              orthanc_image: OrthancImageOpt = None, port: PortOpt = None, orthanc_port: OrthancPortOpt = None,
              json_: JsonOpt = False, timeout: TimeoutOpt = 180.0) -> None:
    """Run the viewer and Orthanc here, wired to the stack's MONAI Label through the SSH tunnel."""
    from gpuprov.cli.commands.deploy import stack_host
    from gpuprov.viewer import stack as viewer_stack

    settings = viewer_config(image=image, orthanc_image=orthanc_image, port=port, orthanc_port=orthanc_port)
    viewer_stack.check_docker()  # before anything else: without Docker there is nothing to wire
    cfg, host = stack_host(cloud, config, stack)
    status = viewer_stack.up(cfg, settings, host, config_path=config, progress=progress, timeout_s=timeout)
    if json_:
        print(json.dumps(status.to_json()))
        return
    models = ", ".join(sorted((status.monai or {}).get("models", {}))) or "none listed"
    out.print(f"[bold]viewer[/bold]  {status.url}   (stack {cfg.stack})")
    out.print(f"orthanc {status.orthanc_url}   (REST and DICOMweb; studies in: gpuprov viewer import PATH | --sample)")
    out.print(f"monai   {status.url}/monai/ -> SSH tunnel {status.monai_via} -> {status.host}:8002 ({models})")


@viewer_app.command("down")
def viewer_down(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
                purge: Annotated[bool, typer.Option("--purge", help="Also delete Orthanc's studies and credentials.")] = False
                ) -> None:
    """Stop the viewer, Orthanc and the tunnel, then check nothing is left; Orthanc's studies stay unless --purge."""
    from gpuprov.viewer import stack as viewer_stack

    cfg = load(cloud, config, stack)
    viewer_stack.down(cfg.stack, purge=purge, progress=progress)
    kept = "" if purge else "; Orthanc's studies are kept (--purge removes them)"
    out.print(f"viewer of stack '{cfg.stack}' removed: no container or tunnel left{kept}")


@viewer_app.command("status")
def viewer_status(cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None,
                  json_: JsonOpt = False) -> None:
    """The viewer's URLs, containers and tunnel."""
    from gpuprov.viewer import stack as viewer_stack

    cfg = load(cloud, config, stack)
    st = viewer_stack.status(cfg.stack)
    if json_:
        print(json.dumps(st.to_json()))
        return
    if st.url is None:
        out.print(f"no viewer for stack '{cfg.stack}'; start one with `gpuprov viewer up --stack {cfg.stack}`")
        return
    out.print(f"[bold]viewer[/bold]  {st.url}   orthanc {st.orthanc_url}")
    for c in st.containers:
        out.print(f"  {c['name']}: {c['status'] or c['state']}")
    if not st.containers:
        out.print("  no containers running (`gpuprov viewer up` starts them)")
    if st.tunnel_pid:
        out.print(f"  tunnel: {st.monai_via} -> {st.host}:8002 (pid {st.tunnel_pid})")
    else:
        out.print("  tunnel: not running (`gpuprov viewer up` starts it)")


@viewer_app.command("import")
def viewer_import(path: Annotated[Path | None, typer.Argument(help="A DICOM folder, a .zip of one, or a file.")] = None,
                  sample: Annotated[bool, typer.Option("--sample", help="Import a generated sample CT series "
                                                                         "(synthetic, no patient data).")] = False,
                  cloud: CloudOpt = None, config: ConfigOpt = None, stack: StackOpt = None) -> None:
    """Send DICOM files to the viewer's Orthanc, so the viewer lists them."""
    from gpuprov.viewer import stack as viewer_stack
    from gpuprov.viewer.render import orthanc_credentials
    from gpuprov.viewer.studies import import_path, write_sample_series

    if (path is None) == (not sample):
        fail("name a DICOM folder or zip, or use --sample (one of the two)", 2)
    cfg = load(cloud, config, stack)
    settings = viewer_stack.saved_settings(cfg.stack)
    if settings is None:
        fail(f"no viewer for stack '{cfg.stack}'; start one first: gpuprov viewer up --stack {cfg.stack}")
    orthanc_url = f"http://127.0.0.1:{settings['orthanc_port']}"
    creds = orthanc_credentials(cfg.stack)
    with tempfile.TemporaryDirectory(prefix="gpuprov-sample-") as tmp:
        if sample:
            path = Path(tmp)
            progress("writing the sample series (synthetic CT, 24 slices)")
            write_sample_series(path)
        assert path is not None
        result = import_path(orthanc_url, creds, path)
    if result.skipped:
        err.print(f"[yellow]skipped {len(result.skipped)} file(s) that are not DICOM[/yellow] "
                  f"(first: {result.skipped[0]})")
    if not result.instances:
        fail(f"no DICOM file found in {path if not sample else 'the sample'}; nothing imported")
    out.print(f"imported {result.instances} instance(s) in {len(result.studies)} study(ies); the viewer lists them "
              f"at http://127.0.0.1:{settings['port']}")
