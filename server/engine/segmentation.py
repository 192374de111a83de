"""Read the rewritten supervoxel segmentation (``segmentation.zarr``) by position."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.errors import StorageError


class Segmentation:
    """Supervoxel IDs by voxel position (x, y, z order, base resolution)."""

    def __init__(self, dataset_dir: str | Path, meta: DatasetMeta) -> None:
        import zarr

        self.meta = meta
        path = Path(dataset_dir) / meta.segmentation_path
        try:
            self.array = zarr.open_array(str(path), mode="r")
        except Exception as e:  # zarr raises several types for a missing/corrupt store
            raise StorageError(f"cannot open the segmentation {path}: {e}") from e
        self.offset = np.asarray(meta.voxel_offset, dtype=np.int64)

    def read_box(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Supervoxel IDs in the voxel box ``[lo, hi)`` (clipped to the volume)."""
        size = np.asarray(self.array.shape, dtype=np.int64)
        a = np.clip(np.asarray(lo, dtype=np.int64) - self.offset, 0, size)
        b = np.clip(np.asarray(hi, dtype=np.int64) - self.offset, 0, size)
        return np.asarray(self.array[a[0] : b[0], a[1] : b[1], a[2] : b[2]])

    def supervoxel_at(self, voxel: np.ndarray) -> int:
        """Supervoxel ID at one voxel (0 = background). The voxel must be inside the volume."""
        self.meta.check_voxels_inside(voxel)
        v = np.asarray(voxel, dtype=np.int64)
        return int(self.read_box(v, v + 1).ravel()[0])

    def supervoxels_at(self, voxels: np.ndarray) -> np.ndarray:
        """Supervoxel IDs at many voxels (``(n, 3)``, inside the volume), one read per storage chunk.

        >>> seg.supervoxels_at(np.array([[10, 20, 3], [11, 20, 3]]))   # doctest: +SKIP
        array([73183493944770561, 73183493944770561], dtype=uint64)
        """
        v = np.asarray(voxels, dtype=np.int64).reshape(-1, 3)
        out = np.zeros(v.shape[0], dtype=np.uint64)
        if not v.shape[0]:
            return out
        self.meta.check_voxels_inside(v)
        local = v - self.offset
        chunk = np.asarray(self.array.chunks, dtype=np.int64)
        cidx = local // chunk
        grid = np.asarray(self.array.shape, dtype=np.int64) // chunk + 1
        key = (cidx[:, 0] * grid[1] + cidx[:, 1]) * grid[2] + cidx[:, 2]
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.flatnonzero(np.r_[True, ks[1:] != ks[:-1]])
        ends = np.r_[starts[1:], ks.size]
        for s, e in zip(starts, ends):
            rows = order[s:e]
            lo = cidx[rows[0]] * chunk
            block = np.asarray(self.array[tuple(slice(a, b) for a, b in zip(lo, lo + chunk))])
            p = local[rows] - lo
            out[rows] = block[p[:, 0], p[:, 1], p[:, 2]]
        return out
