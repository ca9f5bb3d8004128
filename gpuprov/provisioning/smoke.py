"""Smoke requests a user would send: a chat completion to vLLM, a segmentation to MONAI Label
(``nninter: init``, then a point prompt), each answer checked for its shape."""

from __future__ import annotations

import gzip
import json
import struct
from email.message import Message
from email.parser import BytesParser
from typing import Any

import requests

from gpuprov.infra.config import StackConfig
from gpuprov.provisioning.errors import SmokeFailed
from gpuprov.provisioning.secrets import stack_secrets


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
        name = part.get_param("name", header="content-disposition")
        parts[str(name)] = part
    return parts


def smoke_vllm(config: StackConfig, url: str, api_key: str) -> dict[str, Any]:
    r = requests.post(f"{url}/v1/chat/completions", timeout=300, headers={"Authorization": f"Bearer {api_key}"},
                      json={"model": config.served_model_name, "max_tokens": 64,
                            "messages": [{"role": "user", "content": "Is a chest X-ray with clear lungs normal?"}]})
    if r.status_code != 200:
        raise SmokeFailed("vllm", f"chat completion answered {r.status_code}: {r.text[:200]}")
    body = r.json()
    try:
        message = body["choices"][0]["message"]
        assert message["role"] == "assistant" and isinstance(message["content"], str) and message["content"]
        assert body["object"] == "chat.completion" and body["model"] == config.served_model_name
        usage = body["usage"]["total_tokens"]
    except (KeyError, IndexError, TypeError, AssertionError):
        raise SmokeFailed("vllm", f"the chat completion has the wrong shape: {json.dumps(body)[:300]}") from None
    return {"model": body["model"], "answer_chars": len(message["content"]), "total_tokens": usage}


def smoke_monai_label(url: str) -> dict[str, Any]:
    volume = tiny_nifti()

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
        image = parts["image"].get_payload(decode=True)
        assert isinstance(image, bytes)
        mask = gzip.decompress(image)
        assert struct.unpack_from("<i", mask, 0)[0] == 348, "the image part is not a NIfTI-1 volume"
        for key in ("prompt_info", "label_name"):
            assert key in params, f"params lacks {key}"
    except (KeyError, ValueError, OSError, AssertionError) as err:
        raise SmokeFailed("monai_label", f"the segmentation answer has the wrong shape ({err})") from None
    return {"label_name": params["label_name"], "mask_bytes": len(mask), "params_keys": sorted(params)}


def smoke(config: StackConfig, urls: dict[str, str]) -> dict[str, Any]:
    """Send one real request to each deployed model server; raise SmokeFailed on a wrong answer."""
    result: dict[str, Any] = {}
    if "vllm" in urls:
        result["vllm"] = smoke_vllm(config, urls["vllm"], stack_secrets(config.stack)[0].vllm_api_key)
    if "monai_label" in urls:
        result["monai_label"] = smoke_monai_label(urls["monai_label"])
    return result
