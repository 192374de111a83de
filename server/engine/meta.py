"""Dataset metadata (``dataset.json``) and chunk geometry."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cavelab.server.engine.ids import GrapheneLayout, n_layers_for_grid
from cavelab.server.errors import InputError, OutOfBoundsError

FORMAT_VERSION = 1
META_FILE = "dataset.json"


@dataclass
class DatasetMeta:
    """Everything fixed at ingest about one dataset (one datastack, one graph).

    Coordinates are voxels at the base resolution, axis order x, y, z.
    """

    name: str
    resolution: tuple[float, float, float]  # nm per voxel
    size: tuple[int, int, int]  # voxels
    chunk_size: tuple[int, int, int]  # atomic chunk, voxels
    n_layers: int
    created_ms: int  # ingest time: the oldest timestamp
    voxel_offset: tuple[int, int, int] = (0, 0, 0)
    spatial_bits: int = 10
    segmentation_path: str = "segmentation.zarr"
    format_version: int = FORMAT_VERSION
    source: dict[str, Any] = field(default_factory=dict)

    # -- derived -------------------------------------------------------------
    @property
    def layout(self) -> GrapheneLayout:
        return GrapheneLayout(self.n_layers, self.spatial_bits)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Number of atomic chunks along x, y, z."""
        return tuple(int(-(-s // c)) for s, c in zip(self.size, self.chunk_size))  # type: ignore[return-value]

    @staticmethod
    def layers_for(size: tuple[int, int, int], chunk_size: tuple[int, int, int]) -> int:
        grid = tuple(int(-(-s // c)) for s, c in zip(size, chunk_size))
        return n_layers_for_grid(grid)  # type: ignore[arg-type]

    def voxel_to_chunk(self, voxels: np.ndarray) -> np.ndarray:
        """Atomic chunk coordinates of ``(N, 3)`` voxel coordinates."""
        v = np.asarray(voxels, dtype=np.int64) - np.asarray(self.voxel_offset, dtype=np.int64)
        return v // np.asarray(self.chunk_size, dtype=np.int64)

    def nm_to_voxel(self, nm: np.ndarray) -> np.ndarray:
        """Voxel coordinates (floored) of points given in nm."""
        return np.floor(np.asarray(nm, dtype=np.float64) / np.asarray(self.resolution)).astype(
            np.int64
        )

    def check_voxels_inside(self, voxels: np.ndarray) -> None:
        v = np.atleast_2d(np.asarray(voxels, dtype=np.int64))
        lo = np.asarray(self.voxel_offset)
        hi = lo + np.asarray(self.size)
        bad = np.any((v < lo) | (v >= hi), axis=1)
        if np.any(bad):
            p = v[np.argmax(bad)].tolist()
            raise OutOfBoundsError(
                f"coordinate {p} (voxels) is outside the volume "
                f"[{lo.tolist()}, {hi.tolist()}) at resolution {list(self.resolution)} nm",
                coordinate=p,
            )

    def bounds_to_chunk_box(self, bounds: np.ndarray | None) -> np.ndarray | None:
        """``[[xmin,ymin,zmin],[xmax,ymax,zmax]]`` voxels -> inclusive atomic chunk box."""
        if bounds is None:
            return None
        b = np.asarray(bounds, dtype=np.int64)
        if b.shape != (2, 3) or np.any(b[1] < b[0]):
            raise InputError(f"bounds must be [[xmin,ymin,zmin],[xmax,ymax,zmax]] with min <= max, got {b.tolist()}")
        lo = self.voxel_to_chunk(b[0:1])[0]
        hi = self.voxel_to_chunk(np.maximum(b[1:2] - 1, b[0:1]))[0]
        return np.stack([lo, hi])

    # -- persistence ---------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("resolution", "size", "chunk_size", "voxel_offset"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DatasetMeta:
        d = dict(d)
        if d.get("format_version", 1) > FORMAT_VERSION:
            raise InputError(
                f"dataset format {d['format_version']} is newer than this cavelab "
                f"understands ({FORMAT_VERSION}); upgrade cavelab"
            )
        for k in ("resolution", "size", "chunk_size", "voxel_offset"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def save(self, dataset_dir: str | Path) -> None:
        p = Path(dataset_dir) / META_FILE
        tmp = p.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        tmp.replace(p)

    @classmethod
    def load(cls, dataset_dir: str | Path) -> DatasetMeta:
        p = Path(dataset_dir) / META_FILE
        if not p.exists():
            raise InputError(
                f"{dataset_dir} is not a cavelab dataset (no {META_FILE}); "
                "create one with `cavelab ingest SOURCE DATASET_DIR`"
            )
        return cls.from_json(json.loads(p.read_text()))
