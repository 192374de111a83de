"""Writing a source directory in the input format of ``docs/input_format.md``.

* ``segmentation.zarr``: OME-Zarr NGFF 0.4 on Zarr v2, one scale ``0``, axes z, y, x (nm),
  uint64 labels, chunks = the suggested atomic chunk size, ``/`` chunk key separator.
* ``edges.parquet`` (sv1, sv2, affinity, area), ``components.parquet`` (sv, segment),
  ``ground_truth.parquet`` (sv, neuron), ``errors.parquet``: written with pyarrow, labels as uint64.
* ``source.json``.

>>> sorted(OUTPUTS)[:2]
['components.parquet', 'edges.parquet']
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cavelab.server.errors import InputError
from cavelab.server.synth.presets import SynthConfig

SEGMENTATION = "segmentation.zarr"
OUTPUTS = (
    SEGMENTATION,
    "edges.parquet",
    "components.parquet",
    "ground_truth.parquet",
    "errors.parquet",
    "source.json",
)


def prepare_dir(source_dir: Path, overwrite: bool) -> None:
    """Create ``source_dir``; refuse a non-empty one unless ``overwrite`` (then clear our outputs)."""
    if source_dir.exists() and not source_dir.is_dir():
        raise InputError(f"{source_dir} exists and is not a directory")
    if source_dir.exists() and any(source_dir.iterdir()):
        if not overwrite:
            raise InputError(
                f"{source_dir} is not empty; pass overwrite=True (--overwrite) to replace it"
            )
        for name in OUTPUTS:
            p = source_dir / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    source_dir.mkdir(parents=True, exist_ok=True)


def create_segmentation(source_dir: Path, cfg: SynthConfig) -> str:
    """Create the empty OME-Zarr label array; returns the path of scale ``0``."""
    import numcodecs
    import zarr

    path = source_dir / SEGMENTATION
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    rx, ry, rz = cfg.resolution_nm
    group.create_array(
        "0",
        shape=tuple(cfg.size[::-1]),
        chunks=tuple(cfg.chunk_size[::-1]),
        dtype="uint64",
        compressors=numcodecs.Blosc(cname="zstd", clevel=1, shuffle=numcodecs.Blosc.SHUFFLE),
        chunk_key_encoding={"name": "v2", "separator": "/"},
        fill_value=0,
    )
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "name": "segmentation",
            "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in ("z", "y", "x")],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [rz, ry, rx]}],
                }
            ],
            "metadata": {"generator": "cavelab.server.synth", "preset": cfg.name},
        }
    ]
    return str(path / "0")


def _write(table: pa.Table, path: Path) -> None:
    pq.write_table(table, str(path), compression="zstd")


def write_tables(
    source_dir: Path,
    labels: np.ndarray,
    edges: np.ndarray,
    affinity: np.ndarray,
    area: np.ndarray,
    segment: np.ndarray,
    neuron: np.ndarray,
    errors: list[dict[str, Any]],
) -> None:
    """Write the four parquet files (``edges`` are label indices)."""
    u64 = pa.uint64()
    _write(
        pa.table(
            {
                "sv1": pa.array(labels[edges[:, 0]], u64),
                "sv2": pa.array(labels[edges[:, 1]], u64),
                "affinity": pa.array(affinity.astype(np.float32), pa.float32()),
                "area": pa.array(area.astype(np.uint32), pa.uint32()),
            }
        ),
        source_dir / "edges.parquet",
    )
    _write(
        pa.table({"sv": pa.array(labels, u64), "segment": pa.array(segment, u64)}),
        source_dir / "components.parquet",
    )
    _write(
        pa.table({"sv": pa.array(labels, u64), "neuron": pa.array(neuron, u64)}),
        source_dir / "ground_truth.parquet",
    )
    _write(
        pa.table(
            {
                "error_id": pa.array([e["error_id"] for e in errors], pa.int32()),
                "kind": pa.array([e["kind"] for e in errors], pa.string()),
                "neurons": pa.array([e["neurons"] for e in errors], pa.list_(u64)),
                "segments": pa.array([e["segments"] for e in errors], pa.list_(u64)),
                "sv1": pa.array([e["sv1"] for e in errors], u64),
                "sv2": pa.array([e["sv2"] for e in errors], u64),
                "area": pa.array([e["area"] for e in errors], pa.int64()),
                "n_supervoxels": pa.array([e["n_supervoxels"] for e in errors], pa.int64()),
            }
        ),
        source_dir / "errors.parquet",
    )


def write_source_json(source_dir: Path, info: dict[str, Any]) -> None:
    (source_dir / "source.json").write_text(json.dumps(info, indent=2) + "\n")
