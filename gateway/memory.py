"""Giving the memory of large request bodies back to the system (glibc's malloc).

A body of several MiB, and each copy made of it while it is transcoded (the
JSON text, the base64 string, the image bytes, the serialized message), is one
large allocation. glibc serves those with ``mmap`` and unmaps them when they
are freed, but only until the first of them is freed: it then raises its mmap
threshold to that size (up to 32 MiB), and from then on such buffers come from
the heap arenas, which keep what is freed. After a burst of uploads the
process stays at its peak.

Setting the thresholds once, at start-up, turns that adjustment off: buffers
of 128 KiB or more are always mapped and unmapped, and the heap is trimmed
when 1 MiB or more is free at its top. Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024
TRIM_THRESHOLD = 1024 * 1024


def return_large_buffers() -> bool:
    """True when glibc took the thresholds."""
    name = ctypes.util.find_library("c")
    if name is None:  # pragma: no cover - every Linux has a libc
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):  # pragma: no cover
        return False  # not glibc (musl, macOS): its allocator decides
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    if not ok:  # pragma: no cover - glibc accepts both values
        log.warning("mallopt refused the thresholds: large buffers may stay allocated")
    return ok
