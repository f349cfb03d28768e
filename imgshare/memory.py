"""Give memory back to the system after large image work (glibc only).

Deriving a 100-megapixel image takes hundreds of megabytes for a second.
Pillow frees them, but glibc's allocator keeps freed blocks for reuse, and
every thread gets an arena of its own.  Without help, a burst of large
derivations leaves the process tens of megabytes above its baseline for good.

Memory handed back costs page faults when it is taken again, and unmapping it
in a process whose threads run on several cores costs each core a TLB flush:
with two derivations at once, mapping and unmapping their buffers took 24-33 ms
of system time per 12-megapixel image (against 7 ms for one alone), and capped
two threads at 1.4 times one.  So the memory is kept while derivations follow
one another and given back once they pause:

- :func:`tune` raises the mmap threshold to :data:`MMAP_THRESHOLD` (a block below
  it comes from a heap and is reused when freed, libjpeg's and Pillow's working
  buffers included) and the trim threshold likewise (freeing never shrinks a
  heap by itself), caps the arenas, and has Pillow allocate images in blocks of
  :data:`PILLOW_BLOCK_SIZE` and keep up to :data:`PILLOW_BLOCKS_MAX` freed blocks
  for the next image;
- :func:`trim` returns the free parts of every heap; ``jobs.Derivations`` calls it
  once no derivation has run for a second (``jobs.TRIM_AFTER``), so a burst
  leaves no lasting growth.

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
_M_TRIM_THRESHOLD = -1
#: Blocks at least this large are mapped on their own and unmapped when freed
#: (glibc's largest on 64-bit systems); below it, blocks come from the heaps.
MMAP_THRESHOLD = 32 * 1024 * 1024
#: Free memory at the top of a heap past this is given back by ``free`` itself.
TRIM_THRESHOLD = 256 * 1024 * 1024
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
    ok &= _LIBC.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
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
