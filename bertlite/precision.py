"""Which numeric precision is fast on this machine.

bf16 autocast halves the work only where the hardware multiplies bf16 natively: CUDA GPUs from Ampere on, and
CPUs with AVX-512 BF16 or AMX. Elsewhere (an AVX2-only CPU, for one) PyTorch emulates it and a bert-mini step runs
several times slower than in fp32. Configs say ``trainer.precision: ${fast_precision:}`` to get the right one.
"""

from __future__ import annotations

from pathlib import Path

import torch

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.exists() else set()
    if flags:
        return any(flag in flags for flag in CPU_BF16_FLAGS)
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """True where bf16 matrix multiplication runs in hardware on ``device`` ("cpu" or "cuda")."""
    if torch.device(device).type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_native_bf16()


def fast_precision(accelerator: str = "auto") -> str:
    """A Lightning precision for ``accelerator``: "bf16-mixed" where bf16 is native, else "32-true"."""
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if bf16_is_fast("cuda" if use_cuda else "cpu") else "32-true"
