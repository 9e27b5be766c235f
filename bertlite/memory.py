"""Keep freed CPU memory in the process instead of handing it back to the kernel after every step.

glibc's malloc serves every allocation above its mmap threshold (at most 32 MiB, and a training step makes many:
activations, logits, gradients) with a fresh ``mmap`` and returns it with ``munmap`` when the tensor is freed. The
next step asks again, and the kernel hands over new zeroed pages, one page fault per 4 KiB. On the 2-core KVM
machine of docs/performance.md the benchmark's bert-mini MLM steps (bertlite's and transformers') took 9.5 million
page faults in 52 seconds this way, a fifth of their CPU time in the kernel. PyTorch's CPU tuning guide
recommends a caching allocator (jemalloc, tcmalloc) for this reason; here the same effect comes from glibc
itself, with no package: ``mallopt`` so that large blocks come from the heap (``M_MMAP_MAX=0``) and the heap is
never trimmed (``M_TRIM_THRESHOLD``), as PyTorch's CUDA caching allocator keeps GPU memory. The process's
memory then stays at its peak instead of falling between steps.

bertlite's training and prediction commands call :func:`retain_freed_memory` at start;
``BERTLITE_CPU_ALLOCATOR=system`` leaves glibc's defaults alone. Elsewhere (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)
ENV = "BERTLITE_CPU_ALLOCATOR"
_applied: bool | None = None


def retain_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse. Returns whether it applies (once per process)."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    choice = os.environ.get(ENV, "retain").strip().lower()
    if choice == "system":
        return False
    if choice != "retain":
        log.warning("%s=%r is not one of retain, system; using retain", ENV, choice)
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
