"""rportd and the agent keep uvloop's 256 KiB TLS read buffers on the heap (core/logs.py): with
glibc's initial mmap threshold each one was an mmap, a page fault, an mremap and a munmap, once
per message through the agent link."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys
from rport.core import logs

def heap() -> int:
    for line in open("/proc/self/maps"):
        if line.rstrip().endswith("[heap]"):
            start, end = line.split()[0].split("-")
            return int(end, 16) - int(start, 16)
    return 0

if sys.argv[1] == "raised":
    logs._raise_mmap_threshold()
before = heap()
buffers = [bytearray(260 * 1024) for _ in range(12)]  # what uvloop asks for at each read
print(heap() - before)
"""


@pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                    reason="glibc's allocator")
def test_tls_read_buffers_come_from_the_heap() -> None:
    def heap_growth(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        return int(out)

    assert heap_growth("default") < 12 * 260 * 1024  # each one a mapping of its own
    assert heap_growth("raised") >= 12 * 260 * 1024  # from the heap, reusable
