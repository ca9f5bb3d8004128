"""What can go wrong with the local viewer stack; each message says what to do. Exit codes as the README lists."""

from __future__ import annotations

from gpuprov.infra.errors import GpuprovError


class ViewerError(GpuprovError):
    """The viewer stack failed: Docker, the viewer image, Orthanc, or a health check."""

    exit_code = 6


class DockerMissing(ViewerError):
    """No Docker engine with Compose v2 answers on this machine."""

    exit_code = 3


class TunnelFailed(ViewerError):
    """The viewer's SSH tunnel to MONAI Label could not be started or stopped."""

    exit_code = 4


class ViewerLeftovers(ViewerError):
    """``viewer down`` found something still running afterwards."""

    exit_code = 5
