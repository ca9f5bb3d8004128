"""monai_label: the OHIF-AI MONAI Label server (SAM2 / SAM3 / nnInteractive) on 8002.

From anandpreshob/OHIF-AI at the pinned commit (monai-label/, docker-compose.server.yml): the image
is built on the host from ``monai_label_repo``@``monai_label_ref`` unless ``monai_label_image``
names a prebuilt one; the gated ``sam3.pt`` is the user's own, copied in before the build.
``GET /info/`` is the health check (``GET /`` is the Swagger page); ``POST /infer/segmentation``
takes a volume and a JSON ``params`` form field and answers multipart ``params`` + ``image``.
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import tempfile
import zipfile
from email.message import Message
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import requests

from gpuprov.apps.base import (
    App,
    AppCheck,
    BuildInput,
    GpuNeed,
    GpuTarget,
    HostContext,
    Service,
    ServiceCheck,
    Sizing,
    SmokeFailed,
    SourceBuild,
)
from gpuprov.infra.cache import CHECKPOINTS_DIR


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


def _multipart(content_type: str, body: bytes) -> dict[str, Message]:
    msg = BytesParser().parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    if not msg.is_multipart():
        raise ValueError(f"expected a multipart answer, got {content_type}")
    parts = {}
    for part in msg.get_payload():  # type: ignore[union-attr]
        assert isinstance(part, Message)
        parts[str(part.get_param("name", header="content-disposition"))] = part
    return parts


SMOKE_SERIES = (8, 16)  # slices, rows and columns of the generated series the smoke test sends


def series_zip(slices: int, size: int) -> bytes:
    """A synthetic CT series (pydicom, no patient data) as the DICOM zip OHIF-AI's viewer uploads."""
    from gpuprov.viewer.studies import write_sample_series

    with tempfile.TemporaryDirectory() as tmp:
        paths = write_sample_series(Path(tmp), slices=slices, size=size)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for path in paths:
                archive.write(path, path.name)
    return buffer.getvalue()


def _smoke(check: AppCheck) -> dict[str, Any]:
    """``nninter: init`` with a DICOM series, then an nnInteractive point prompt inside it; the mask must
    come back as a NIfTI volume of the series' shape."""
    slices, size = SMOKE_SERIES
    url, volume = check.urls["monai_label"], series_zip(slices, size)

    def infer(params: dict[str, Any]) -> requests.Response:
        return requests.post(f"{url}/infer/segmentation", timeout=300,
                             files={"file": ("series.zip", volume, "application/zip")},
                             data={"params": json.dumps(params)})

    r = infer({"nninter": "init"})
    if r.status_code != 200 or r.json() != {}:
        raise SmokeFailed("monai_label", f"nninter init answered {r.status_code}: {r.text[:200]}")
    r = infer({"nninter": True, "pos_points": [[size // 2, size // 2, slices // 2]], "neg_points": []})
    if r.status_code != 200:
        raise SmokeFailed("monai_label", f"the point prompt answered {r.status_code}: {r.text[:200]}")
    try:
        parts = _multipart(r.headers.get("Content-Type", ""), r.content)
        params = json.loads(parts["params"].get_payload(decode=True))  # type: ignore[arg-type]
        payload = parts["image"].get_payload(decode=True)
        assert isinstance(payload, bytes)
        mask = gzip.decompress(payload)
        assert struct.unpack_from("<i", mask, 0)[0] == 348, "the image part is not a NIfTI-1 volume"
        dims = struct.unpack_from("<4h", mask, 40)
        assert dims[0] == 3 and sorted(dims[1:]) == sorted((size, size, slices)), \
            f"the mask is {dims[1:]}, the series {size}x{size}x{slices}"
        for key in ("prompt_info", "label_name"):
            assert key in params, f"params lacks {key}"
    except (KeyError, ValueError, OSError, AssertionError) as err:
        raise SmokeFailed("monai_label", f"the segmentation answer has the wrong shape ({err})") from None
    return {"monai_label": {"label_name": params["label_name"], "mask_shape": list(dims[1:]),
                            "mask_bytes": len(mask), "params_keys": sorted(params)}}


# GPU memory of the server's models, all resident in its one process; sources beside each.
MODELS_GIB = (
    ("nnInteractive", 10.0, "10 GB VRAM recommended (https://github.com/MIC-DKFZ/nnInteractive#prerequisites)"),
    ("SAM2.1 tiny", 1.0, "38.9 M params (https://github.com/facebookresearch/sam2), with working memory; estimate"),
    ("MedSAM2", 1.0, "SAM2.1 tiny-based (https://github.com/bowang-lab/MedSAM2), with working memory; estimate"),
)
SAM3_GIB = (4.2, "848 M params in float32 (https://github.com/facebookresearch/sam3) and working memory; estimate")
CUDA_CONTEXT_GIB = 0.5
BLACKWELL_TORCH = ("the OHIF-AI Dockerfile builds on torch 2.6 with CUDA 12.1, which has no Blackwell kernels "
                   "(PyTorch supports Blackwell from 2.7 with CUDA 12.8: https://pytorch.org/blog/pytorch-2-7/)")


def sizing(config: Any, target: GpuTarget) -> Sizing:
    """What the MONAI Label server takes on the card (its figures are fixed), and where its build cannot run."""
    problems = []
    gpu = target.gpu
    if gpu is not None and gpu.generation == "blackwell" and not config.monai_label_image:
        problems.append(f"MONAI Label cannot run on a {gpu.name} (Blackwell) when built from "
                        f"{config.monai_label_ref[:7]}: {BLACKWELL_TORCH}; build an image on torch 2.7+ with "
                        "CUDA 12.8 and set monai_label_image, or deploy apps: [vllm_cxr]")
    if gpu is None:
        return Sizing({}, (), tuple(problems))
    models = list(MODELS_GIB) + ([("SAM3", *SAM3_GIB)] if "sam3.pt" in target.inputs else [])
    gib = sum(m[1] for m in models) + CUDA_CONTEXT_GIB
    basis = "; ".join(f"{name} {size:g} GiB ({src})" for name, size, src in models)
    if "sam3.pt" not in target.inputs:
        basis += f"; SAM3 adds {SAM3_GIB[0]:g} GiB when sam3.pt is supplied"
    return Sizing({}, (GpuNeed("monai_label", round(gib, 1), f"CUDA context {CUDA_CONTEXT_GIB} GiB; {basis}"),),
                  tuple(problems))


def _env(ctx: HostContext) -> dict[str, str]:
    """nnInteractive's weights and huggingface_hub's metadata: on the stack's cache when mounted, else volumes."""
    return {"NNINTERACTIVE_WEIGHTS": ctx.cache_source(f"{CHECKPOINTS_DIR}/nnInteractive_v1.0", "nninteractive-weights"),
            "CHECKPOINT_META": ctx.cache_source(f"{CHECKPOINTS_DIR}/.cache", "checkpoint-meta")}


APP = App(
    name="monai_label",
    summary="the OHIF-AI MONAI Label server (SAM2 / SAM3 / nnInteractive) on 8002",
    services=(
        Service(name="monai_label", container="monai_sam2", port=8002, image=image, health=_health,
                log_activity=True, log_ignore=("/info/",), hash_env=("NNINTERACTIVE_WEIGHTS", "CHECKPOINT_META")),
    ),
    env=_env,
    directories=("data/predictions", "data/studies"),
    build=SourceBuild(
        service="monai_label", repo=lambda c: c.monai_label_repo, ref=lambda c: c.monai_label_ref,
        when=lambda c: not c.monai_label_image, checkout="ohif-ai", context="monai-label",
        inputs=(BuildInput("sam3.pt", "monai-label/checkpoints/sam3.pt",
                           "your copy of the gated SAM3 checkpoint; without it SAM3 requests answer sam3_not_found"),),
        note="building the OHIF-AI MONAI Label image (15 to 20 minutes the first time)",
        minutes=(15.0, 20.0),  # the seed guide's figure
    ),
    smoke=_smoke,
    backup=("data/predictions", "data/studies"),
    sizing=sizing,
)
