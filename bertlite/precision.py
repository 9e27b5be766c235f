"""Which numeric precision is fast on this machine, and whether to compile.

bf16 autocast halves the work only where the hardware multiplies bf16 natively: CUDA GPUs from Ampere on, and
CPUs with AVX-512 BF16 or AMX. Elsewhere (an AVX2-only CPU, for one) PyTorch emulates it and a bert-mini step runs
several times slower than in fp32. Configs say ``trainer.precision: ${fast_precision:}`` to get the right one.
"""

from __future__ import annotations

from pathlib import Path

import torch

from bertlite.errors import ConfigError

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
        return torch.cuda.is_available() and cuda_bf16_is_native()
    return cpu_has_native_bf16()


def fast_precision(accelerator: str = "auto") -> str:
    """A Lightning precision for ``accelerator``: "bf16-mixed" where bf16 is native, else "32-true"."""
    use_cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if bf16_is_fast("cuda" if use_cuda else "cpu") else "32-true"


DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def cuda_bf16_is_native() -> bool:
    """bf16 in hardware (Ampere on): older cards emulate it, slower than fp32."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch has no such flag
        return torch.cuda.is_bf16_supported()


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None: bf16 on a GPU that has it natively (its exponent range is fp32's, so unlike fp16 nothing overflows,
    and it halves the memory traffic), fp32 elsewhere (bf16 on a CPU is slow unless native, and less accurate)."""
    if dtype is None or dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and cuda_bf16_is_native() else torch.float32
    resolved = DTYPES.get(dtype.lower() if isinstance(dtype, str) else None, dtype)
    if resolved not in DTYPES.values():
        raise ConfigError(f"dtype={dtype!r}: choose bf16, fp32 or fp16 (or None: bf16 on a GPU that supports it, "
                          "fp32 elsewhere)")
    return resolved


def check_compile(setting: bool | str, name: str = "compile") -> bool | str:
    """true, false or "auto" (YAML and the command line give booleans or strings)."""
    normal = setting
    if isinstance(setting, str):
        normal = {"auto": "auto", "true": True, "false": False}.get(setting.lower())
    if not isinstance(normal, bool) and normal != "auto":
        raise ConfigError(f"{name}={setting!r}: choose auto (torch.compile on a GPU only), true or false")
    return normal


def resolve_compile(setting: bool | str, device: str | torch.device, name: str = "compile") -> bool:
    """Whether to torch.compile on ``device``. "auto": on CUDA only; on a CPU compiling measured slower for GPT
    and takes more memory. Triton, which writes the GPU kernels, needs compute capability 7.0 (Volta) on."""
    setting, device = check_compile(setting, name), torch.device(device)
    if setting != "auto":
        return setting
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (7, 0)


def compile_model(model: torch.nn.Module, **options) -> torch.nn.Module:
    """torch.compile ``model`` in place, so that its parameter names (and checkpoint keys) get no ``_orig_mod.``.

    Shapes: pretraining feeds fixed blocks, but fine-tuning and inference batches are padded to a multiple of 8
    (16 lengths up to 128 tokens) and masked-LM batches mask a varying number of positions. dynamic=False would
    compile every length, in training and again in evaluation (32 graphs), and pass Dynamo's recompile limit,
    after which it runs eagerly. The default, dynamic=None, compiles the first shape static and, when a dimension
    changes, once more with that dimension symbolic: fixed pretraining blocks keep fully specialised kernels and
    varying lengths cost two compiles, not one per length."""
    # train/eval mode, grad/inference mode and autocast each need their own graph (static, then dynamic): more
    # than the default 8 per function, after which Dynamo would quietly run the rest eagerly
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 32)
    model.compile(**options)
    return model
