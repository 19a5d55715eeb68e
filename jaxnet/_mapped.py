"""The pages of a memory map that reading rows of it maps into this process, and their release.

Rows read through a ``numpy.memmap`` stay in the process's resident memory until released:
one gather of 10,240 random rows of a 1 GB file mapped all of it here (the kernel maps whole
folios around each row read). :class:`MappedRows` counts what may have been mapped and hands
it back (``MADV_DONTNEED``; the pages stay in the page cache), so that streaming a file of any
size keeps the process's memory flat (:class:`jaxnet.streaming.ArraySource`).
"""

from __future__ import annotations

import mmap

import numpy as np

RELEASE_BYTES = 64 << 20
"""A memory map larger than this releases the pages it read after every this many bytes of
it were read (:class:`jaxnet.streaming.ArraySource`): about what one source adds to the
process's memory."""


FOLIO_BYTES = 2 << 20
"""The most a page-cache folio holds (a huge page): what one row read may map at most."""


class MappedRows:
    """Where an array's rows lie in the ``mmap`` behind it (a ``numpy.memmap`` or a view of
    one), and which of its pages were read since they were last released."""

    def __init__(self, mapping: mmap.mmap, start: int, stride: int):
        self.mapping, self.start, self.stride = mapping, start, stride
        self.pending, self.lo, self.hi = 0, len(mapping), 0

    @classmethod
    def of(cls, a: np.ndarray) -> MappedRows | None:
        root = a
        while isinstance(root, np.ndarray) and not isinstance(root.base, mmap.mmap):
            root = root.base
        if (not isinstance(root, np.memmap) or a.strides[0] <= 0
                or len(root.base) <= RELEASE_BYTES):
            return None
        # numpy maps from the offset rounded down to the allocation granularity
        in_map = root.offset % mmap.ALLOCATIONGRANULARITY
        start = a.__array_interface__["data"][0] - root.__array_interface__["data"][0] + in_map
        return cls(root.base, start, a.strides[0])

    def read(self, first: int, last: int, count: int) -> None:
        """``count`` rows from ``first`` to ``last`` were read: release what was read once it
        may hold RELEASE_BYTES. A row read maps up to a whole folio around it (at most
        :data:`FOLIO_BYTES`), so sparse rows map more than the bytes between them."""
        lo, hi = self.start + first * self.stride, self.start + (last + 1) * self.stride
        self.pending += min(hi - lo + 2 * FOLIO_BYTES, count * FOLIO_BYTES)
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.pending >= RELEASE_BYTES:
            start = max(0, self.lo - FOLIO_BYTES) // mmap.PAGESIZE * mmap.PAGESIZE
            end = min(len(self.mapping), self.hi + FOLIO_BYTES)
            self.mapping.madvise(mmap.MADV_DONTNEED, start, end - start)
            self.pending, self.lo, self.hi = 0, len(self.mapping), 0
