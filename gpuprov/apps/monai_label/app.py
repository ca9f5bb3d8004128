"""monai_label: the OHIF-AI MONAI Label server (SAM2 / SAM3 / nnInteractive) on 8002.

From anandpreshob/OHIF-AI at the pinned commit (monai-label/, docker-compose.server.yml): the image
is built on the host from ``monai_label_repo``@``monai_label_ref`` unless ``monai_label_image``
names a prebuilt one; the gated ``sam3.pt`` is the user's own, copied in before the build.
``GET /info/`` is the health check (``GET /`` is the Swagger page); ``POST /infer/segmentation``
takes a volume and a JSON ``params`` form field and answers multipart ``params`` + ``image``.
"""

from __future__ import annotations

import gzip
import json
import struct
from email.message import Message
from email.parser import BytesParser
from typing import Any

import requests

from gpuprov.apps.base import App, AppCheck, BuildInput, Service, ServiceCheck, SmokeFailed, SourceBuild


def image(config: Any) -> str:
    """The image the user named, else the one gpuprov builds on the host."""
    return str(config.monai_label_image or f"gpuprov/ohif-ai-monai-label:{config.monai_label_ref}")


def _health(check: ServiceCheck) -> str | None:
    r = requests.get(f"{check.url}/info/", timeout=check.timeout_s)
    if r.status_code != 200:
        return f"/info/ answered {r.status_code}"
    if not r.json().get("models"):
        return "/info/ lists no models"
    return None


def tiny_nifti(shape: tuple[int, int, int] = (8, 8, 4)) -> bytes:
    """A small gzipped NIfTI-1 uint8 volume: a valid input for MONAI Label's /infer endpoints."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, 3, *shape, 1, 1, 1, 1)
    struct.pack_into("<hh", hdr, 70, 2, 8)  # datatype uint8, 8 bits
    struct.pack_into("<8f", hdr, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<ff", hdr, 108, 352.0, 1.0)  # vox_offset, scl_slope
    hdr[344:348] = b"n+1\0"
    voxels = bytes((x * 16) % 256 for x in range(shape[0] * shape[1] * shape[2]))
    return gzip.compress(bytes(hdr) + b"\0" * 4 + voxels, mtime=0)


def _multipart(content_type: str, body: bytes) -> dict[str, Message]:
    msg = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not msg.is_multipart():
        raise ValueError(f"expected a multipart answer, got {content_type}")
    parts = {}
    for part in msg.get_payload():  # type: ignore[union-attr]
        assert isinstance(part, Message)
        parts[str(part.get_param("name", header="content-disposition"))] = part
    return parts


def _smoke(check: AppCheck) -> dict[str, Any]:
    """``nninter: init``, then an nnInteractive point prompt; the mask must come back as NIfTI."""
    url, volume = check.urls["monai_label"], tiny_nifti()

    def infer(params: dict[str, Any]) -> requests.Response:
        return requests.post(f"{url}/infer/segmentation", timeout=300,
                             files={"file": ("volume.nii.gz", volume, "application/gzip")},
                             data={"params": json.dumps(params)})

    r = infer({"nninter": "init"})
    if r.status_code != 200 or r.json() != {}:
        raise SmokeFailed("monai_label", f"nninter init answered {r.status_code}: {r.text[:200]}")
    r = infer({"nninter": True, "pos_points": [[4, 4, 2]], "neg_points": []})
    if r.status_code != 200:
        raise SmokeFailed("monai_label", f"the point prompt answered {r.status_code}: {r.text[:200]}")
    try:
        parts = _multipart(r.headers.get("Content-Type", ""), r.content)
        params = json.loads(parts["params"].get_payload(decode=True))  # type: ignore[arg-type]
        payload = parts["image"].get_payload(decode=True)
        assert isinstance(payload, bytes)
        mask = gzip.decompress(payload)
        assert struct.unpack_from("<i", mask, 0)[0] == 348, "the image part is not a NIfTI-1 volume"
        for key in ("prompt_info", "label_name"):
            assert key in params, f"params lacks {key}"
    except (KeyError, ValueError, OSError, AssertionError) as err:
        raise SmokeFailed("monai_label", f"the segmentation answer has the wrong shape ({err})") from None
    return {"monai_label": {"label_name": params["label_name"], "mask_bytes": len(mask), "params_keys": sorted(params)}}


APP = App(
    name="monai_label",
    summary="the OHIF-AI MONAI Label server (SAM2 / SAM3 / nnInteractive) on 8002",
    services=(
        Service(name="monai_label", container="monai_sam2", port=8002, image=image, health=_health,
                log_activity=True, log_ignore=("/info/",)),
    ),
    directories=("data/predictions", "data/studies"),
    build=SourceBuild(
        service="monai_label", repo=lambda c: c.monai_label_repo, ref=lambda c: c.monai_label_ref,
        when=lambda c: not c.monai_label_image, checkout="ohif-ai", context="monai-label",
        inputs=(BuildInput("sam3.pt", "monai-label/checkpoints/sam3.pt",
                           "your copy of the gated SAM3 checkpoint; without it SAM3 requests answer sam3_not_found"),),
        note="building the OHIF-AI MONAI Label image (15 to 20 minutes the first time)",
    ),
    smoke=_smoke,
    backup=("data/predictions", "data/studies"),
)
