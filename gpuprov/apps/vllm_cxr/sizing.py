"""vLLM's settings for the GPU it lands on, and the GPU memory it takes.

The figures are for the default model, NV-Reason-CXR-3B, which is Qwen2.5-VL-3B underneath
(https://huggingface.co/nvidia/NV-Reason-CXR-3B): 3.75 B parameters
(https://huggingface.co/Qwen/Qwen2.5-VL-3B-Instruct), 36 layers, 2 key-value heads of 128
(its config.json). Another ``model_id`` is sized as if it were this one; set
``gpu_memory_utilization`` yourself for a bigger model.

- dtype: bfloat16 needs compute capability 8.0 or later; older cards get ``half``
  (https://github.com/vllm-project/vllm/issues/1157).
- Turing (T4, 7.5) is refused: the Qwen2.5-VL vision encoder finds no attention backend there
  (https://github.com/vllm-project/vllm/issues/29743, open).
- Images per prompt and their size are bounded, or vLLM reserves about 16k tokens per image at
  start-up (https://github.com/vllm-project/vllm/issues/20123): one image, no video, at most
  1280 visual tokens (``max_pixels`` = 1280 x 28 x 28, Qwen2.5-VL's patch merge size).
- ``vllm/vllm-openai`` is published for linux/amd64 only
  (https://github.com/vllm-project/vllm/issues/22206); arm64 hosts (GH200, DGX Spark) need NVIDIA's
  build, ``nvcr.io/nvidia/vllm:<yy.mm>-py3`` (https://catalog.ngc.nvidia.com/orgs/nvidia/containers/vllm).
- The pinned ``vllm/vllm-openai:v0.30.0`` is built for CUDA 13 (that release's wheel links
  ``libcudart.so.13``; vLLM publishes ``-cu129`` tags for CUDA 12), and CUDA 13 needs NVIDIA driver 580
  or newer (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/, table 3). Tags from v0.30 on are
  taken to be CUDA 13 unless they say ``-cuNNN``; older tags are not judged.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from gpuprov.apps.base import GpuNeed, GpuTarget, Sizing

GIB = 1024**3
PARAMS = 3.75e9
KV_BYTES_PER_TOKEN = 2 * 36 * 2 * 128 * 2  # K and V, layers, kv heads, head dim, 2-byte dtype
RUNTIME_GIB = 2.0  # CUDA context, activations of vLLM's start-up profile run (eager mode: no CUDA graphs); estimate
RESERVE_GIB = 0.5  # left free on the card for the driver and fragmentation
MAX_UTILIZATION = 0.9  # vLLM's own default when it has the card to itself
MAX_PIXELS = 1280 * 28 * 28
LIMIT_MM = {"image": 1, "video": 0}
AMD64_ONLY = ("vllm/vllm-openai", "docker.io/vllm/vllm-openai")
ARM64_IMAGE = "nvcr.io/nvidia/vllm:<yy.mm>-py3"
CUDA13_DRIVER = 580
_VLLM_TAG = re.compile(r"v(?P<major>[0-9]+)\.(?P<minor>[0-9]+)\.[0-9]+(?:-cu(?P<cuda>[0-9]{3}))?(?:-[a-z0-9.]+)?")
SETTINGS = ("VLLM_DTYPE", "MAX_MODEL_LEN", "LIMIT_MM_PER_PROMPT", "MM_PROCESSOR_KWARGS", "GPU_MEMORY_UTILIZATION")


def _gib(n: float) -> float:
    return round(n, 1)


def _repository(image: str) -> str:
    return image.split("@")[0].rsplit(":", 1)[0] if ":" in image.split("/")[-1] else image.split("@")[0]


def cuda_major(image: str) -> int | None:
    """The CUDA major version a ``vllm/vllm-openai`` tag is built for, where gpuprov knows it."""
    if _repository(image) not in AMD64_ONLY:
        return None
    name = image.split("@")[0]
    m = _VLLM_TAG.fullmatch(name.rsplit(":", 1)[1]) if ":" in name.split("/")[-1] else None
    if m is None:
        return None
    if m["cuda"]:
        return int(m["cuda"][:2])
    return 13 if (int(m["major"]), int(m["minor"])) >= (0, 30) else None


def _driver_problem(image: str, driver: str | None) -> str | None:
    if not driver or cuda_major(image) != 13 or not driver.split(".")[0].isdigit():
        return None
    if int(driver.split(".")[0]) >= CUDA13_DRIVER:
        return None
    older = image.split("@")[0] + "-cu129"
    return (f"vllm_image {image} is built for CUDA 13, which needs NVIDIA driver {CUDA13_DRIVER} or newer, and this "
            f"host's driver is {driver}: set vllm_image to {older} (vLLM's CUDA 12.9 build of the same release) "
            "or upgrade the host's driver")


def sizing(config: Any, target: GpuTarget) -> Sizing:
    """What vLLM runs with on ``target``, what it takes there, and why it cannot run there."""
    gpu, problems = target.gpu, []
    if driver := _driver_problem(config.vllm_image, target.driver):
        problems.append(driver)
    if target.arch == "aarch64" and _repository(config.vllm_image) in AMD64_ONLY:
        problems.append(f"vllm_image {config.vllm_image} has no arm64 build (vllm-project/vllm#22206) and this host is "
                        f"aarch64; set vllm_image to NVIDIA's arm64 build, {ARM64_IMAGE} (NGC catalog)")
    dtype = "bfloat16" if gpu is None or gpu.compute_capability >= (8, 0) else "half"
    if gpu is not None and gpu.compute_capability < (8, 0):
        problems.append(f"vLLM cannot serve {config.model_id} on a {gpu.name} ({gpu.generation}, compute capability "
                        f"{gpu.cc}): the Qwen2.5-VL vision encoder finds no attention backend there "
                        "(vllm-project/vllm#29743)")
    settings = {
        "VLLM_DTYPE": dtype,
        "MAX_MODEL_LEN": str(config.max_model_len),
        "LIMIT_MM_PER_PROMPT": json.dumps(LIMIT_MM, separators=(",", ":")),
        "MM_PROCESSOR_KWARGS": json.dumps({"max_pixels": MAX_PIXELS}, separators=(",", ":")),
    }
    weights = PARAMS * 2 / GIB
    sequence = KV_BYTES_PER_TOKEN * config.max_model_len / GIB
    least = weights + RUNTIME_GIB + sequence  # vLLM refuses to start without room for one whole sequence
    if gpu is None:
        util = config.gpu_memory_utilization or 0.5
        settings["GPU_MEMORY_UTILIZATION"] = f"{util:g}"
        return Sizing(settings, (), tuple(problems))
    card = gpu.memory_gib
    if config.gpu_memory_utilization is not None:
        util = config.gpu_memory_utilization
        how = "gpu_memory_utilization from config"
    else:
        util = math.floor(min(MAX_UTILIZATION, (card - target.others_gib - RESERVE_GIB) / card) * 100) / 100
        how = (f"gpu_memory_utilization {util:g}: the card less the other apps' {target.others_gib:.1f} GiB "
               f"and {RESERVE_GIB} GiB kept free" if target.others_gib else
               f"gpu_memory_utilization {util:g}: vLLM's default share of a card of its own")
    takes = max(util, 0.0) * card
    sequences = (takes - weights - RUNTIME_GIB) / sequence
    settings["GPU_MEMORY_UTILIZATION"] = f"{util:g}"
    if takes < least:
        problems.append(
            f"vLLM needs {least:.1f} GiB on the {gpu.name} (weights {weights:.1f}, runtime {RUNTIME_GIB}, one "
            f"{config.max_model_len}-token sequence {sequence:.2f}) and would get {takes:.1f} GiB "
            f"(gpu_memory_utilization {util:g} of {card:.1f}); lower max_model_len, deploy one app only, "
            "or pick a type with more GPU memory")
    basis = (f"{how}; weights {weights:.1f} GiB ({PARAMS / 1e9:.2f} B params, {dtype}), runtime {RUNTIME_GIB} GiB, "
             f"KV cache for {max(sequences, 0):.1f} sequences of {config.max_model_len} tokens")
    return Sizing(settings, (GpuNeed("vllm", _gib(takes), basis),), tuple(problems))
