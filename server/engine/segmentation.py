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
