"""bertlite/memory.py: with the CLIs' allocator setting, freeing and re-allocating a large tensor takes no new
page faults once warmed up; with glibc's defaults (BERTLITE_CPU_ALLOCATOR=system) every allocation faults its
pages in again.
Each case runs in a fresh interpreter, since the setting is for the whole process."""

import os
import subprocess
import sys

import pytest

PROBE = """
import resource, torch
from bertlite.memory import retain_freed_memory
applied = retain_freed_memory()
def step():
    x = torch.ones(16 * 2**20 // 4 * 4)  # 64 MiB: above glibc's largest mmap threshold (32 MiB)
    return float(x[-1])
for _ in range(10):  # glibc's aligned allocations settle into reused blocks within a few steps
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(allocator: str) -> tuple[bool, int]:
    env = {**os.environ, "BERTLITE_CPU_ALLOCATOR": allocator, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_without_page_faults():
    applied, retained = page_faults("retain")
    assert applied
    system_applied, system = page_faults("system")
    assert not system_applied
    pages = 10 * 64 * 2**20 // 4096  # what ten fresh 64 MiB tensors fault in (163,840 pages)
    assert system > pages // 2  # glibc mmaps each one afresh
    assert retained < pages // 50  # the same memory is reused
