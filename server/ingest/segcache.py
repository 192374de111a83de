"""A scratch copy of each atomic chunk as segment numbers, kept by ``cavelab ingest`` between its
chunk pass and its L2-feature pass so the second pass neither reads nor renumbers the written
uint64 segmentation again.

A block is stored as its memory buffer (C or Fortran order kept) compressed with blosc lz4 after
a 24-byte header: the three extents (uint32 little-endian), the item size, the order and the
label count. Segment number ``s`` of the chunk at ``(x, y, z)`` is supervoxel
``chunk_id(1, x, y, z) | s``; 0 is background.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> b = np.arange(24, dtype=np.uint16).reshape(2, 3, 4) % 5
>>> save_block(d, (0, 1, 2), b, 4)
>>> got, k = load_block(d, (0, 1, 2))
>>> bool(np.array_equal(got, b)), k
(True, 4)
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["block_path", "load_block", "save_block"]

_HEADER = struct.Struct("<3IBBxxQ")


def block_path(cache_dir: str | Path, coord: tuple[int, int, int]) -> Path:
    return Path(cache_dir) / f"{coord[0]}_{coord[1]}_{coord[2]}.seg"


def _codec() -> Any:
    import numcodecs

    return numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE)


def save_block(cache_dir: str | Path, coord: tuple[int, int, int], block: np.ndarray, k: int) -> None:
    """Store a chunk's segment-number block (``uint16``/``uint32``, ``k`` segments)."""
    fortran = not block.flags.c_contiguous and block.flags.f_contiguous
    buf = block.T if fortran else np.ascontiguousarray(block)
    head = _HEADER.pack(*block.shape, block.dtype.itemsize, int(fortran), int(k))
    block_path(cache_dir, coord).write_bytes(head + bytes(_codec().encode(buf)))


def load_block(cache_dir: str | Path, coord: tuple[int, int, int]) -> tuple[np.ndarray, int]:
    """``(block, k)`` as saved by :func:`save_block` (same shape, values and memory order)."""
    data = block_path(cache_dir, coord).read_bytes()
    nx, ny, nz, size, fortran, k = _HEADER.unpack_from(data)
    dtype = {2: np.uint16, 4: np.uint32}[size]
    flat = np.frombuffer(_codec().decode(data[_HEADER.size :]), dtype=dtype)
    if fortran:
        return flat.reshape(nz, ny, nx).T, int(k)
    return flat.reshape(nx, ny, nz), int(k)
