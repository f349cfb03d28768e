"""Give memory back to the system after large image work (glibc only).

Deriving a 100-megapixel image takes hundreds of megabytes for a second.
Pillow frees them, but glibc's allocator keeps freed blocks for reuse: its
mmap threshold grows each time a large block is freed (so later large blocks
come from the heap, which rarely shrinks), and every thread gets an arena of
its own.  Without help, a burst of large derivations leaves the process tens
of megabytes above its baseline for good.

:func:`tune` fixes the mmap threshold, so every block of a megabyte or more
is its own mapping and goes back to the system when freed, and caps the
arenas; :func:`trim` returns the free parts of the heaps once a derivation is
done.  Both do nothing where the C library is not glibc.

Memory handed back costs page faults when it is taken again: mapping fresh
pages for a 12-megapixel derivation's buffers took about a fifth of its CPU
time (7 000 faults, 12-15 ms of system time).  So :func:`tune` also has Pillow
keep a bounded stock of image buffers for reuse: images are allocated in
blocks of :data:`PILLOW_BLOCK_SIZE`, and up to :data:`PILLOW_BLOCKS_MAX` freed
blocks are kept (at most 48 MiB, about what two 12-megapixel derivations hold
at once), which cuts the faults to a quarter.  A burst of larger images leaves
no more than that behind.

:func:`freeze_startup_objects` is about time, not memory: the objects a process
makes while it starts (modules, the component graph, templates) live as long as
it does, and Python's cyclic collector would scan every one of them at each full
collection, holding the reactor for tens of milliseconds.  Frozen once the
server listens, they are never scanned again (``bench/purge.py``: the longest
reactor stall during a purge of 10 000 images fell from 81 ms to 10 ms).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Any

from PIL import Image

#: mallopt parameters (malloc.h).
_M_ARENA_MAX = -8
_M_MMAP_THRESHOLD = -3
#: Blocks at least this large are mapped on their own and unmapped when freed.
MMAP_THRESHOLD = 1024 * 1024
#: Arenas per process (glibc's default is 8 per core).
ARENA_MAX = 4
#: Pillow allocates image memory in blocks of this size (its default is 16 MiB,
#: which makes every image of less than that one block of its own size, and a
#: kept block rarely fits the next image without being reallocated) ...
PILLOW_BLOCK_SIZE = 1024 * 1024
#: ... and keeps this many freed blocks for the next image (its default: none).
PILLOW_BLOCKS_MAX = 48


def _libc() -> Any | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


_LIBC = _libc()


def tune() -> bool:
    """Set the allocator up for large, short-lived image buffers; False if not glibc
    (Pillow's stock of buffers is set up either way)."""
    Image.core.set_blocks_max(0)  # the block size can only change with no block kept
    Image.core.set_block_size(PILLOW_BLOCK_SIZE)
    Image.core.set_blocks_max(PILLOW_BLOCKS_MAX)
    if _LIBC is None:
        return False
    ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    ok &= _LIBC.mallopt(_M_ARENA_MAX, ARENA_MAX)
    return bool(ok)


def trim() -> None:
    """Return the free memory at the top and inside of every heap to the system."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def freeze_startup_objects() -> int:
    """Collect once, then move every object alive now out of the cyclic collector's
    reach (``gc.freeze``); how many objects are frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
