"""Data passed between the ingest stages."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SupervoxelGraph:
    """The supervoxel graph produced from a source volume (before the hierarchy is built).

    Supervoxels are indexed ``0..S-1`` in ascending ID order; edges refer to those indices.
    """

    sv_ids: np.ndarray  # uint64 [S], sorted ascending, graphene layer-1 IDs
    sv_labels: np.ndarray  # uint64 [S], the source label each supervoxel was cut from
    sv_sizes: np.ndarray  # int64 [S], voxel count
    sv_bbox: np.ndarray  # int32 [S, 6]: xmin, ymin, zmin, xmax, ymax, zmax (max exclusive), voxels
    sv_centroid: np.ndarray  # float32 [S, 3] mean voxel coordinate (x, y, z), voxels
    edges: np.ndarray  # int64 [E, 2] supervoxel indices, edges[:, 0] < edges[:, 1], unique pairs
    affinity: np.ndarray  # float32 [E]; np.inf for the ties between pieces of one label
    area: np.ndarray  # float32 [E], contact area (voxel faces)
    active: np.ndarray  # bool [E]: both ends in one initial segment (ties: always True)

    @property
    def n_supervoxels(self) -> int:
        return int(self.sv_ids.size)

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])
