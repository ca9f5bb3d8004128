"""What gpuprov knows about each NVIDIA GPU it may land on: one row a model, each with its sources.

A row gives what serving decisions depend on: the compute capability (from it the dtype and
which kernels exist), the memory the driver reports, the generation, and the CPU architecture
of the machines that carry it where that is fixed (a GH200 or a GB10 is always on an arm64 host).

Sources, for every row: compute capabilities from NVIDIA's table
(https://developer.nvidia.com/cuda-gpus); memory as ``nvidia-smi --query-gpu=memory.total``
reports it (MiB) where the card's figure is well known, else the datasheet's size. The host's
own report wins at deploy time (:func:`from_host`); this table serves ``plan``, before any host exists.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CUDA_GPUS = "https://developer.nvidia.com/cuda-gpus"


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model (or the host's own report of its card)."""

    name: str  # the catalog's short name: T4, A10G, L4 ...
    compute_capability: tuple[int, int]
    memory_gib: float  # what the driver lets programs use
    generation: str  # turing | ampere | ada | hopper | blackwell
    host_arch: str | None = None  # aarch64 where every machine with this GPU is arm64; None: it varies
    source: str = CUDA_GPUS

    @property
    def cc(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def _mib(n: int) -> float:
    return round(n / 1024, 1)


# name patterns: the catalog's name and what nvidia-smi prints (`Tesla T4`, `NVIDIA A10G`, ...)
GPUS: tuple[tuple[str, GpuSpec], ...] = (
    (r"(tesla )?t4", GpuSpec("T4", (7, 5), _mib(15360), "turing")),
    (r"(nvidia )?a10g", GpuSpec("A10G", (8, 6), _mib(23028), "ampere")),
    (r"(nvidia )?a10", GpuSpec("A10", (8, 6), _mib(23028), "ampere")),
    (r"(nvidia )?l4", GpuSpec("L4", (8, 9), _mib(23034), "ada")),
    (r"(nvidia )?rtx a6000", GpuSpec("RTX A6000", (8, 6), _mib(49140), "ampere")),
    (r"(nvidia )?a100([- ](sxm4|pcie))?([- ]40gb)?", GpuSpec("A100", (8, 0), _mib(40960), "ampere")),
    (r"(nvidia )?h100( pcie)?", GpuSpec("H100", (9, 0), _mib(81559), "hopper")),
    (r"(nvidia )?gh200( 480gb)?", GpuSpec("GH200", (9, 0), 96.0, "hopper", host_arch="aarch64",
                                          source=f"{CUDA_GPUS}; 96 GB HBM3 (NVIDIA GH200 datasheet)")),
    # DGX Spark: memory is unified with the CPU (nvidia-smi reports none); 128 GB shared.
    (r"(nvidia )?gb10", GpuSpec("GB10", (12, 1), 128.0, "blackwell", host_arch="aarch64",
                                source=f"{CUDA_GPUS}; 128 GB unified memory (NVIDIA DGX Spark datasheet)")),
)


def lookup(name: str | None) -> GpuSpec | None:
    """The row for a GPU named as the catalog or ``nvidia-smi`` names it; None when gpuprov has none."""
    if not name:
        return None
    text = " ".join(name.lower().split())
    return next((spec for pattern, spec in GPUS if re.fullmatch(pattern, text)), None)


def from_host(name: str, compute_cap: str, memory_mib: str) -> GpuSpec | None:
    """The host's own report of its first GPU (``nvidia-smi --query-gpu=name,compute_cap,memory.total``),
    completed from the table; None when the report says nothing usable."""
    known = lookup(name)
    m = re.fullmatch(r"(\d+)\.(\d+)", compute_cap.strip())
    cc = (int(m.group(1)), int(m.group(2))) if m else known.compute_capability if known else None
    if cc is None:
        return None
    mem = re.fullmatch(r"(\d+)(?: MiB)?", memory_mib.strip())
    memory = _mib(int(mem.group(1))) if mem else known.memory_gib if known else None
    if memory is None:
        return None
    generation = known.generation if known else generation_of(cc)
    return GpuSpec(known.name if known else name.strip(), cc, memory, generation,
                   known.host_arch if known else None, source="the host's nvidia-smi")


def generation_of(cc: tuple[int, int]) -> str:
    """The architecture generation of a compute capability (NVIDIA's table)."""
    major, minor = cc
    if major >= 10:
        return "blackwell"
    if major == 9:
        return "hopper"
    if (major, minor) == (8, 9):
        return "ada"
    if major == 8:
        return "ampere"
    return "turing" if (major, minor) == (7, 5) else "older"
