"""The volume stage of ``cavelab ingest``: labels -> graphene supervoxels and their graph.

:func:`build_supervoxel_graph` reads ``SOURCE/segmentation.zarr`` atomic chunk by atomic
chunk (never the whole volume), cuts every label at chunk borders into one supervoxel per
chunk, numbers the pieces of each chunk ``1..k`` in ascending label order and gives them
graphene layer-1 IDs (``meta.layout.node_ids(1, cx, cy, cz, seg)``), writes the relabelled
volume to ``DATASET_DIR/<meta.segmentation_path>`` (Zarr v3, uint64, x/y/z), and builds the
supervoxel graph from ``edges.parquet`` and ``components.parquet`` (or a threshold):

* pieces of one label are tied by edges of affinity ``inf`` (area = shared voxel faces);
  pieces that never touch are chained (a warning);
* a listed source edge becomes an edge between every touching pair of pieces of its two
  labels, its area shared in proportion to their contact; a listed pair that never
  touches is placed between the largest piece of each (a warning); unlisted contacts
  are dropped;
* an edge is active when both labels are in one initial segment; ties always are.

How it runs:

* **Workers** (a process pool of ``workers`` processes, started first so that they work
  while the tables are read) handle one atomic chunk each: one read of the block,
  ``fastremap.renumber`` (labels -> small integers) and a remap in place to segment
  numbers (ascending label order, so every per-value result is in supervoxel order), one
  cut into runs of one value along the fastest memory axis (:class:`_Runs`) from which
  sizes, bounding boxes, centroids and the shape statistics for the L2 features
  (coordinate moments, a central voxel; see :data:`SV_STAT_ARRAYS`) are closed-form sums,
  face contacts inside the block (between neighbouring runs along the fastest axis,
  vectorized on the flat buffer along the other two; counted with one sort, which also
  gives the exposed faces), voxels on the chunk faces, and one shard write (inner chunks
  cut on the small integers, then one lookup to uint64 IDs). They return the block's
  labels, statistics, inner contacts and its six boundary slabs (as segment numbers).
* **The main process** consumes the results in chunk order. It pairs each chunk's first
  slab along x/y/z with the last slab of the -x/-y/-z neighbour (the one-voxel halo,
  without reading any voxel twice), looks the contacts up among the listed edges, and
  keeps ties and listed contacts in per-chunk buckets that are sorted as soon as they are
  complete. After the last chunk it only concatenates, shares the areas out and adds the
  few chain ties and never-touching edges.

Results are merged in chunk order, so the output does not depend on ``workers``. A
script that calls this with ``workers > 1`` needs the usual ``if __name__ ==
"__main__":`` guard (worker processes are started with ``forkserver``/``spawn``).
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.errors import IngestError
from cavelab.server.ingest.ngff import NgffVolume, open_ngff
from cavelab.server.ingest.types import SupervoxelGraph

__all__ = [
    "COMPONENTS_FILE",
    "EDGES_FILE",
    "SEGMENTATION_DIR",
    "SUPERVOXEL_MAP_FILE",
    "SV_STAT_ARRAYS",
    "build_supervoxel_graph",
    "open_source_volume",
    "output_chunks",
]

SEGMENTATION_DIR = "segmentation.zarr"
EDGES_FILE = "edges.parquet"
COMPONENTS_FILE = "components.parquet"
SUPERVOXEL_MAP_FILE = "supervoxel_map.parquet"

#: The per-supervoxel shape statistics (``build_supervoxel_graph(sv_stats=...)``, saved as
#: ``graph/<name>.npy``). Coordinates are voxels, x, y, z; "local" ones count from the first
#: voxel of the supervoxel's atomic chunk. Faces are counted inside the atomic chunk only.
#:
#: * ``sv_moments`` float64 [S, 9]: sums of local x, y, z, xx, yy, zz, xy, xz, yz (exact);
#: * ``sv_faces`` int32 [S, 3]: voxel faces across x, y, z whose neighbour in the chunk is
#:   another supervoxel or background;
#: * ``sv_chunk_faces`` int32 [S, 2, 3]: voxels on the chunk's low (row 0) and high (row 1)
#:   x, y, z faces (the high face of a chunk clipped by the volume is the volume's last slab);
#: * ``sv_rep_voxel`` int32 [S, 3]: the supervoxel's voxel nearest (nm) to its centroid,
#:   including ``meta.voxel_offset`` like ``sv_bbox``;
#: * ``sv_contacts`` int64 [P, 2]: every pair of supervoxels touching inside a chunk
#:   (indices, ``a < b``, sorted), listed in edges.parquet or not;
#: * ``sv_contact_faces`` int32 [P, 3]: their shared voxel faces across x, y, z.
SV_STAT_ARRAYS = (
    "sv_moments",
    "sv_faces",
    "sv_chunk_faces",
    "sv_rep_voxel",
    "sv_contacts",
    "sv_contact_faces",
)

#: Preferred Zarr chunk (inner chunk) of the relabelled volume, x, y, z voxels.
TARGET_OUTPUT_CHUNK = (64, 64, 16)
_MAX_ROWS_NAMED = 10


# =============================================================================
# Inputs
# =============================================================================


def open_source_volume(source_dir: str | Path) -> NgffVolume:
    """Open ``SOURCE/segmentation.zarr`` (see :func:`~cavelab.server.ingest.ngff.open_ngff`)."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise IngestError(
            f"source {source_dir} is not a directory; it must hold segmentation.zarr, "
            "edges.parquet and components.parquet (docs/input_format.md)."
        )
    return open_ngff(source_dir / SEGMENTATION_DIR)


def _rows(mask: np.ndarray) -> str:
    rows = np.flatnonzero(mask)
    shown = ", ".join(str(int(r)) for r in rows[:_MAX_ROWS_NAMED])
    more = f" and {rows.size - _MAX_ROWS_NAMED} more" if rows.size > _MAX_ROWS_NAMED else ""
    return f"row{'s' if rows.size > 1 else ''} {shown}{more}"


class _Table:
    """A parquet file read one column at a time (to keep the peak memory low).

    Checks on opening that the ``required`` columns exist.
    """

    def __init__(self, path: Path, required: tuple[str, ...]) -> None:
        import pyarrow.parquet as pq

        self.path = path
        try:
            names = pq.ParquetFile(path).schema_arrow.names
        except Exception as e:  # pyarrow raises several types for unreadable files
            raise IngestError(f"{path} cannot be read as Parquet: {e}") from e
        missing = [c for c in required if c not in names]
        if missing:
            raise IngestError(
                f"{path.name} lacks the column{'s' if len(missing) > 1 else ''} {missing} "
                f"(has {names}); it needs {list(required)} (docs/input_format.md).",
                missing_columns=missing,
            )

    def __getitem__(self, name: str) -> Any:
        import pyarrow.parquet as pq

        try:
            return pq.read_table(self.path, columns=[name]).column(name)
        except Exception as e:
            raise IngestError(f"{self.path}: column '{name}' cannot be read: {e}") from e


def _release_arrow_memory() -> None:
    """Hand the memory Arrow's pool keeps after reading a big table back to the system."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _int_labels(col: Any, name: str, fname: str) -> np.ndarray:
    """An integer label column as uint64, refusing other types, nulls, 0 and negatives."""
    import pyarrow as pa

    if not pa.types.is_integer(col.type):
        raise IngestError(
            f"{fname}: column '{name}' has type {col.type}; labels must be integers "
            f"(cast it, e.g. df['{name}'] = df['{name}'].astype('uint64')).",
            column=name,
        )
    if col.null_count:
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False))
        raise IngestError(f"{fname}: column '{name}' is empty (null) in {_rows(nulls)}.")
    v = np.asarray(col.to_numpy(zero_copy_only=False))
    if v.dtype.kind == "i":
        bad = v <= 0
    else:
        bad = v == 0
    if np.any(bad):
        raise IngestError(
            f"{fname}: column '{name}' holds label {int(v[np.argmax(bad)])} in {_rows(bad)}; "
            "labels are >= 1 (0 is background) and must exist in the volume.",
            column=name,
        )
    return v.astype(np.uint64, copy=False)


def _float_column(col: Any, name: str, fname: str) -> np.ndarray:
    """A numeric column as float32 (nulls become NaN, refused by the callers)."""
    import pyarrow as pa

    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise IngestError(f"{fname}: column '{name}' has type {col.type}; it must be numeric.")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32)


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique`` by sorting (much faster than NumPy's hash path for 64-bit labels)."""
    if a.size == 0:
        return a.copy()
    s = np.sort(a)
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def _index_labels(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(u, idx)``: the sorted distinct values of ``a`` and the index of each in ``u``.

    Like ``np.unique(a, return_inverse=True)``, via Arrow's hash-based dictionary
    encoding and a sort of the distinct values only: several times faster for big arrays.

    >>> [v.tolist() for v in _index_labels(np.array([9, 2, 9, 5], dtype=np.uint64))]
    [[2, 5, 9], [2, 0, 2, 1]]
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if a.size == 0:
        return a.copy(), np.zeros(0, dtype=np.int64)
    enc = pc.dictionary_encode(pa.array(a))
    codes = enc.indices.to_numpy(zero_copy_only=False)
    dic = enc.dictionary.to_numpy(zero_copy_only=False)
    order = np.argsort(dic)
    rank = np.empty(dic.size, dtype=np.int64)
    rank[order] = np.arange(dic.size, dtype=np.int64)
    return dic[order], rank[codes]


@dataclass
class _Edges:
    """Listed source edges, merged: one row per unordered label pair, sorted by pair.

    Labels are referred to by their index in ``labels`` (the sorted labels the edges
    name). Row ``i`` joins ``labels[ilo[i]] < hi[i]``; rows are sorted by ``(ilo, hi)``,
    so the rows of lower label ``j`` are ``indptr[j]:indptr[j + 1]``, sorted by ``hi``.
    The index of the upper label is computed only where needed (:meth:`ihi`).
    """

    labels: np.ndarray  # uint64 [L] sorted unique
    ilo: np.ndarray  # int32/int64 [P] index of the lower label
    hi: np.ndarray  # uint64 [P] the upper label
    indptr: np.ndarray  # int64 [L + 1]
    affinity: np.ndarray  # float32 [P], mean of the duplicate rows
    area: np.ndarray  # float32 [P], sum of the duplicate rows
    n_rows: int  # rows in the file
    n_duplicate_rows: int

    @property
    def n_pairs(self) -> int:
        return int(self.hi.size)

    def ihi(self, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
        """Index (in ``labels``) of the upper label of ``rows``."""
        hi = self.hi[rows]
        if hi.size > 100_000:  # a hash join beats binary searches with random queries
            import pyarrow as pa
            import pyarrow.compute as pc

            idx = pc.index_in(pa.array(hi), value_set=pa.array(self.labels))
            return idx.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        return np.searchsorted(self.labels, hi).astype(np.int64)


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


def _load_edges(source_dir: Path) -> _Edges:
    path = source_dir / EDGES_FILE
    if not path.exists():
        raise IngestError(
            f"no {EDGES_FILE} in {source_dir}; the source must list the supervoxel contact "
            "graph (columns sv1, sv2, affinity, area), see docs/input_format.md."
        )
    table = _Table(path, ("sv1", "sv2", "affinity", "area"))
    sv1 = _int_labels(table["sv1"], "sv1", EDGES_FILE)
    sv2 = _int_labels(table["sv2"], "sv2", EDGES_FILE)
    aff = _float_column(table["affinity"], "affinity", EDGES_FILE)
    area = _float_column(table["area"], "area", EDGES_FILE)
    _release_arrow_memory()
    bad = sv1 == sv2
    if np.any(bad):
        raise IngestError(
            f"{EDGES_FILE}: self-edges (sv1 == sv2) in {_rows(bad)}, e.g. label "
            f"{int(sv1[np.argmax(bad)])}; remove these rows.",
            rows=np.flatnonzero(bad)[:_MAX_ROWS_NAMED].tolist(),
        )
    bad = ~((aff >= 0) & (aff <= 1))  # NaN fails both comparisons
    if np.any(bad):
        raise IngestError(
            f"{EDGES_FILE}: affinity outside [0, 1] (or NaN/null) in {_rows(bad)}, e.g. "
            f"{aff[np.argmax(bad)]!r}; affinities must be probabilities in [0, 1].",
            rows=np.flatnonzero(bad)[:_MAX_ROWS_NAMED].tolist(),
        )
    bad = ~(np.isfinite(area) & (area >= 0))
    if np.any(bad):
        raise IngestError(
            f"{EDGES_FILE}: area negative, infinite or NaN/null in {_rows(bad)}, e.g. "
            f"{area[np.argmax(bad)]!r}; areas must be numbers >= 0.",
            rows=np.flatnonzero(bad)[:_MAX_ROWS_NAMED].tolist(),
        )
    del bad
    n_rows = int(sv1.size)
    swap = sv1 > sv2  # lo, hi in place
    lo = sv1 if sv1.flags.writeable else sv1.copy()
    hi = sv2 if sv2.flags.writeable else sv2.copy()
    lo[swap], hi[swap] = sv2[swap], sv1[swap]
    del swap, sv1, sv2
    if n_rows > 1:
        same = lo[1:] == lo[:-1]
        ordered = bool(np.all((lo[1:] > lo[:-1]) | (same & (hi[1:] > hi[:-1]))))
        del same
    else:
        ordered = True
    if ordered:  # sorted by (lo, hi), no duplicates (the usual layout): no sort, no hash
        starts = np.flatnonzero(np.concatenate([[n_rows > 0], lo[1:] != lo[:-1]]))
        run_lo = lo[starts]
        labels = _sorted_unique(np.concatenate([run_lo, hi]))
        ilo_runs = np.searchsorted(labels, run_lo)
        lengths = np.diff(np.append(starts, n_rows))
        ilo = np.repeat(ilo_runs, lengths).astype(_index_dtype(labels.size))
        del lo, starts, run_lo, ilo_runs, lengths
    else:  # general: index both ends, sort by pair, merge duplicates
        labels, idx = _index_labels(np.concatenate([lo, hi]))
        del lo, hi
        n = np.int64(labels.size)
        i1, i2 = idx[:n_rows], idx[n_rows:]
        keys = np.minimum(i1, i2) * n + np.maximum(i1, i2)
        del idx, i1, i2
        order = np.argsort(keys)
        keys, aff, area = keys[order], aff[order], area[order]
        del order
        starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
        if starts.size < keys.size:  # merge duplicates: mean affinity, summed area
            counts = np.diff(np.append(starts, keys.size))
            aff = np.add.reduceat(aff, starts, dtype=np.float64) / counts
            area = np.add.reduceat(area, starts, dtype=np.float64)
            keys = keys[starts]
        ilo = (keys // n).astype(_index_dtype(labels.size))
        hi = labels[keys % n]
        del keys
    indptr = np.zeros(labels.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(ilo, minlength=labels.size), out=indptr[1:])
    return _Edges(
        labels=labels,
        ilo=ilo,
        hi=hi,
        indptr=indptr,
        affinity=aff.astype(np.float32, copy=False),
        area=area.astype(np.float32, copy=False),
        n_rows=n_rows,
        n_duplicate_rows=n_rows - int(hi.size),
    )


def _source_dir_of(vol: NgffVolume) -> Path:
    """The source directory of a volume opened by :func:`open_source_volume`."""
    return vol.path.parent


def _rows_naming(source_dir: Path, fname: str, cols: tuple[str, ...], labels: np.ndarray) -> str:
    """The rows of a table naming any of ``labels`` in ``cols`` (re-read: error path only)."""
    import pyarrow.parquet as pq

    table = pq.read_table(source_dir / fname, columns=list(cols))
    mask = np.zeros(table.num_rows, dtype=bool)
    for c in cols:
        v = np.asarray(table.column(c).to_numpy(zero_copy_only=False)).astype(np.uint64)
        mask |= np.isin(v, labels)
    return _rows(mask)


def _load_components(source_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(labels, segments)`` from components.parquet (unique labels), or None if absent."""
    path = source_dir / COMPONENTS_FILE
    if not path.exists():
        return None
    table = _Table(path, ("sv", "segment"))
    sv = _int_labels(table["sv"], "sv", COMPONENTS_FILE)
    seg_col = table["segment"]
    import pyarrow as pa

    if not pa.types.is_integer(seg_col.type):
        raise IngestError(
            f"{COMPONENTS_FILE}: column 'segment' has type {seg_col.type}; segment IDs must "
            "be integers."
        )
    if seg_col.null_count:
        nulls = np.asarray(seg_col.is_null().to_numpy(zero_copy_only=False))
        raise IngestError(f"{COMPONENTS_FILE}: column 'segment' is null in {_rows(nulls)}.")
    seg = np.array(seg_col.to_numpy(zero_copy_only=False))
    del seg_col, table
    _release_arrow_memory()
    # a label listed twice must name one segment
    order = np.lexsort((seg, sv))
    sv_s, seg_s = sv[order], seg[order]
    same_sv = sv_s[1:] == sv_s[:-1]
    conflict = same_sv & (seg_s[1:] != seg_s[:-1])
    if np.any(conflict):
        i = int(np.argmax(conflict))
        rows = np.zeros(sv.size, dtype=bool)
        rows[order[i]] = rows[order[i + 1]] = True
        raise IngestError(
            f"{COMPONENTS_FILE}: label {int(sv_s[i])} is listed in two segments "
            f"({int(seg_s[i])} and {int(seg_s[i + 1])}, {_rows(rows)}); each label belongs "
            "to one segment.",
            label=int(sv_s[i]),
        )
    keep = np.concatenate([[True], ~same_sv])
    return sv_s[keep], seg_s[keep]


# =============================================================================
# Output volume
# =============================================================================


def _divisor_at_most(n: int, target: int) -> int:
    best = 1
    for d in range(1, min(n, target) + 1):
        if n % d == 0:
            best = d
    # a tiny divisor would make millions of files: then take the whole extent
    return best if best * 4 >= min(n, target) else n


def output_chunks(chunk_size: tuple[int, int, int]) -> tuple[int, int, int]:
    """Zarr chunk of the relabelled volume: divides the atomic chunk, near (64, 64, 16).

    >>> output_chunks((256, 256, 32)), output_chunks((100, 100, 20)), output_chunks((8, 8, 4))
    ((64, 64, 16), (50, 50, 10), (8, 8, 4))
    """
    return tuple(  # type: ignore[return-value]
        _divisor_at_most(int(c), t) for c, t in zip(chunk_size, TARGET_OUTPUT_CHUNK)
    )


_OUTPUT_BLOSC = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}


def _create_output(dataset_dir: Path, meta: DatasetMeta, source: NgffVolume) -> Path:
    """Create the relabelled volume: Zarr v3, uint64, one shard per atomic chunk.

    Inner chunks (:func:`output_chunks`, near 64 x 64 x 16) keep point lookups small;
    blosc lz4 on byte-shuffled uint64 is ~10x smaller and the fastest to write and read.
    """
    import zarr
    from zarr.codecs import BloscCodec

    path = dataset_dir / meta.segmentation_path
    zarr.create_array(
        store=str(path),
        shape=tuple(int(s) for s in meta.size),
        chunks=output_chunks(meta.chunk_size),
        shards=tuple(int(c) for c in meta.chunk_size),
        dtype="uint64",
        fill_value=0,
        compressors=[BloscCodec(**_OUTPUT_BLOSC)],  # type: ignore[arg-type]
        dimension_names=("x", "y", "z"),
        attributes={
            "resolution": [float(r) for r in meta.resolution],
            "voxel_offset": [int(v) for v in meta.voxel_offset],
            "chunk_size": [int(c) for c in meta.chunk_size],
            "axes": ["x", "y", "z"],
            "description": "graphene layer-1 supervoxel IDs (uint64), indexed [x, y, z]",
            "source": str(source.path),
        },
        zarr_format=3,
        overwrite=True,
    )
    return path


_MAX_U64 = np.uint64(2**64 - 1)


class _ShardWriter:
    """Writes whole shards of the relabelled volume, encoding them directly.

    Exactly what zarr's ``sharding_indexed`` codec stores (inner chunks through bytes
    (little endian) + blosc, then the index of ``(offset, nbytes)`` uint64 pairs in C
    order of the inner chunks, bytes + crc32c, at the end; all-zero inner chunks omitted),
    at about half of zarr-python's per-call cost. Used only when the array's metadata is
    exactly the layout written by :func:`_create_output`; otherwise zarr writes.
    """

    def __init__(self, path: str) -> None:
        import zarr

        self.path = Path(path)
        self.array = zarr.open_array(store=path, mode="r+")
        meta = json.loads((self.path / "zarr.json").read_text())
        self.direct = self._layout_ok(meta)
        self._buffers: dict[str, np.ndarray] = {}
        if self.direct:
            import numcodecs

            cfg = meta["codecs"][0]["configuration"]
            self.shard = tuple(meta["chunk_grid"]["configuration"]["chunk_shape"])
            self.inner = tuple(cfg["chunk_shape"])
            self.blosc = numcodecs.Blosc(
                cname=_OUTPUT_BLOSC["cname"],
                clevel=_OUTPUT_BLOSC["clevel"],
                shuffle=numcodecs.Blosc.SHUFFLE,
                blocksize=0,
            )

    @staticmethod
    def _layout_ok(meta: dict[str, Any]) -> bool:
        try:
            codecs = meta["codecs"]
            cfg = codecs[0]["configuration"]
            inner = cfg["codecs"]
            blosc = inner[1]["configuration"]
            return (
                len(codecs) == 1
                and codecs[0]["name"] == "sharding_indexed"
                and meta["data_type"] == "uint64"
                and meta["fill_value"] == 0
                and meta["chunk_key_encoding"]
                == {"name": "default", "configuration": {"separator": "/"}}
                and cfg["index_location"] == "end"
                and [c["name"] for c in inner] == ["bytes", "blosc"]
                and inner[0]["configuration"]["endian"] == "little"
                and {k: blosc.get(k) for k in _OUTPUT_BLOSC} == _OUTPUT_BLOSC
                and blosc.get("typesize") == 8
                and blosc.get("blocksize") == 0
                and [c["name"] for c in cfg["index_codecs"]] == ["bytes", "crc32c"]
                and cfg["index_codecs"][0]["configuration"]["endian"] == "little"
            )
        except (KeyError, IndexError, TypeError):
            return False

    def write(
        self, coord: tuple[int, int, int], lo: list[int], hi: list[int], ids: np.ndarray
    ) -> None:
        """Write the atomic chunk ``coord`` (voxels ``[lo, hi)``, data ``ids``)."""
        if not self.direct:
            self.array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = ids
            return
        ids = np.ascontiguousarray(ids)
        inner = self.inner
        n = [-(-self.shard[d] // inner[d]) for d in range(3)]
        chunks: list[tuple[tuple[int, int, int], np.ndarray]] = []
        for i, j, k in np.ndindex(*n):
            sub = ids[
                i * inner[0] : (i + 1) * inner[0],
                j * inner[1] : (j + 1) * inner[1],
                k * inner[2] : (k + 1) * inner[2],
            ]
            if sub.size == 0 or not sub.any():
                continue  # outside the array, or all fill value: not stored
            if sub.shape != inner:  # an edge chunk is stored whole, padded with 0
                full = np.zeros(inner, dtype=np.uint64)
                full[: sub.shape[0], : sub.shape[1], : sub.shape[2]] = sub
                sub = full
            chunks.append(((i, j, k), sub))
        self._store(coord, n, chunks)

    def write_segments(
        self,
        coord: tuple[int, int, int],
        lo: list[int],
        hi: list[int],
        seg: np.ndarray,
        lut: np.ndarray,
    ) -> None:
        """Write the atomic chunk ``coord`` given as small integers: ``lut[seg]`` (uint64).

        Same bytes as :meth:`write`. A whole shard is cut into its inner chunks on the
        small integers (one transposing copy, a quarter of the uint64 bytes), which are
        then mapped to IDs in one pass, each inner chunk a contiguous block; clipped
        shards (and zarr's own writes) go through :meth:`write`.
        """
        inner = self.inner if self.direct else ()
        if (
            not self.direct
            or seg.shape != self.shard
            or any(s % i for s, i in zip(seg.shape, inner))
        ):
            self.write(coord, lo, hi, lut[np.ascontiguousarray(seg)])
            return
        import fastremap

        n = [s // i for s, i in zip(seg.shape, inner)]
        # [i, j, k] is inner chunk (i, j, k), C-contiguous x, y, z (buffers reused: a shard
        # is written in one call, so no page faults for fresh arrays on every chunk)
        view = seg.reshape(n[0], inner[0], n[1], inner[1], n[2], inner[2])
        view = view.transpose(0, 2, 4, 1, 3, 5)
        blocks = self._buffer("blocks", view.shape, seg.dtype)
        np.copyto(blocks, view)
        ids = self._buffer("ids", view.shape, np.dtype(np.uint64))
        np.copyto(ids, blocks)
        fastremap.remap_from_array(ids.reshape(-1), lut)
        self._store(
            coord,
            n,
            [(ijk, ids[ijk]) for ijk in np.ndindex(*n) if blocks[ijk].any()],  # 0: not stored
        )

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A scratch array kept between calls (reallocated when the shape or dtype changes)."""
        buf = self._buffers.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buf

    def _store(
        self,
        coord: tuple[int, int, int],
        n: list[int],
        chunks: list[tuple[tuple[int, int, int], np.ndarray]],
    ) -> None:
        """Encode the non-empty inner chunks (given in C order) and write the shard file."""
        import google_crc32c

        index = np.full((*n, 2), _MAX_U64, dtype="<u8")
        parts: list[bytes] = []
        offset = 0
        for ijk, sub in chunks:
            enc = self.blosc.encode(np.ascontiguousarray(sub, dtype="<u8"))
            index[ijk] = (offset, len(enc))
            offset += len(enc)
            parts.append(enc)
        key = self.path.joinpath("c", *(str(c) for c in coord))
        if not parts:
            key.unlink(missing_ok=True)
            return
        raw = index.tobytes()
        key.parent.mkdir(parents=True, exist_ok=True)
        with open(key, "wb") as f:
            for part in parts:
                f.write(part)
            f.write(raw)
            f.write(google_crc32c.value(raw).to_bytes(4, "little"))


# =============================================================================
# Per-chunk work (runs in worker processes)
# =============================================================================


@dataclass
class _Context:
    """Everything a worker needs; pickled once per worker process."""

    volume: NgffVolume
    out_path: str
    size: tuple[int, int, int]
    chunk_size: tuple[int, int, int]
    voxel_offset: tuple[int, int, int]
    n_layers: int
    spatial_bits: int
    resolution: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seg_cache: str | None = None  # where each chunk's segment-number block is kept (segcache)
    _out: Any = field(default=None, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_out"] = None
        return state

    @property
    def out(self) -> _ShardWriter:
        if self._out is None:
            self._out = _ShardWriter(self.out_path)
        return self._out


_WORKER_CTX: _Context | None = None
_WORKER_MODULES = [
    "numpy",
    "zarr",
    "numcodecs",
    "fastremap",
    "google_crc32c",
    "cavelab.server.ingest.volume",
]


def _keep_freed_memory() -> None:
    """Make this (worker) process reuse the memory it frees rather than return it.

    Every chunk allocates and frees the same few dozen arrays of 0.1-4 MiB; with glibc's
    defaults the big ones are fresh ``mmap`` regions each time, whose pages are faulted in
    and zeroed again for every chunk (a few % of the chunk time). Blocks below 32 MiB come
    from the heap instead, which keeps up to 128 MiB free. A no-op without glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library of this process
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
    mallopt(-1, 128 << 20)  # M_TRIM_THRESHOLD


def _init_worker(ctx: _Context) -> None:
    global _WORKER_CTX
    _WORKER_CTX = ctx
    try:  # one core per worker process: no nested thread pools
        import numcodecs.blosc

        numcodecs.blosc.set_nthreads(1)
    except Exception:  # pragma: no cover - numcodecs without blosc
        pass
    _keep_freed_memory()


def _run_in_worker(coord: tuple[int, int, int]) -> dict[str, Any]:
    assert _WORKER_CTX is not None
    return _process_chunk(_WORKER_CTX, coord)


def _listed_index(listed_labels: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Index of each label in the sorted ``listed_labels``, or -1 where it is not listed."""
    n = listed_labels.size
    if n == 0:
        return np.full(labels.size, -1, dtype=np.int64)
    li = np.minimum(np.searchsorted(listed_labels, labels), n - 1)
    return np.where(listed_labels[li] == labels, li, -1).astype(np.int64)


def _listed_rows(edges: _Edges, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Row of edges.parquet (merged, see :class:`_Edges`) listing each pair, or -1.

    ``ia``/``ib`` index the sorted labels named by the edges (-1: not named, see
    :func:`_listed_index`), in either order. The rows of one lower label are contiguous
    (``edges.indptr``) and sorted by the upper label, so each query is a binary search
    over a few rows: a handful of vectorized steps touching little memory.
    """
    out = np.full(ia.size, -1, dtype=np.int64)
    lo = np.minimum(ia, ib)
    q = np.flatnonzero(lo >= 0)
    if q.size == 0 or edges.n_pairs == 0:
        return out
    lo = lo[q]
    hi = edges.labels[np.maximum(ia, ib)[q]]  # the upper label (value order = index order)
    first, stop = edges.indptr[lo], edges.indptr[lo + 1]
    b, t = first.copy(), stop.copy()
    last = edges.hi.size - 1
    for _ in range(int((stop - first).max()).bit_length()):
        m = (b + t) >> 1
        right = (b < t) & (edges.hi[np.minimum(m, last)] < hi)
        np.add(m, 1, out=b, where=right)
        np.copyto(t, m, where=~right & (b < t))
    hit = (b < stop) & (edges.hi[np.minimum(b, last)] == hi)
    out[q[hit]] = b[hit]
    return out


def _count_keys(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values of a 1-D integer array and their counts (sort-based)."""
    if keys.size == 0:
        return keys, np.zeros(0, dtype=np.int64)
    ks = np.sort(keys)
    new = np.empty(ks.size, dtype=bool)
    new[0] = True
    np.not_equal(ks[1:], ks[:-1], out=new[1:])
    starts = np.flatnonzero(new)
    counts = np.empty(starts.size, dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=counts[:-1])
    counts[-1] = ks.size - starts[-1]
    return ks[starts], counts


def _divmod(i: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.divmod(i, n)`` for ``i >= 0``, by shift and mask when ``n`` is a power of two.

    >>> [v.tolist() for v in _divmod(np.array([0, 5, 17]), 8)]
    [[0, 0, 2], [0, 5, 1]]
    """
    if n & (n - 1) == 0:
        return i >> (n.bit_length() - 1), i & (n - 1)
    return np.divmod(i, n)


class _Runs:
    """A block cut into runs of one value along its fastest memory axis.

    ``mem`` is the block as a C-contiguous array in memory order: ``r`` itself, or ``r.T``
    when ``r`` is Fortran-ordered (then ``rev`` is True and the memory axes ``(a, b, c)``
    are ``(z, y, x)``). A run starts at every change of value and at every line start
    (``c == 0``) and ends where the next one starts. Per run, in memory order: ``start``
    (flat index in ``mem``), ``length``, ``value`` (background runs included) and the memory
    coordinates ``a``, ``b``, ``c`` of its first voxel (int64).

    One pass over the voxels; the per-value statistics (:func:`_value_stats`,
    :func:`_rep_voxels`) and the contacts along the fastest axis (:func:`_inner_contacts`)
    are computed from the runs.

    >>> runs = _Runs(np.array([[[1, 1, 0], [2, 2, 2]]], dtype=np.uint8))
    >>> runs.value.tolist(), runs.length.tolist(), runs.b.tolist(), runs.c.tolist()
    ([1, 0, 2], [2, 1, 3], [0, 0, 1], [0, 2, 0])
    """

    def __init__(self, r: np.ndarray) -> None:
        self.rev = not r.flags.c_contiguous
        mem = r if r.flags.c_contiguous else r.T
        if not mem.flags.c_contiguous:
            mem = np.ascontiguousarray(mem)
        self.mem = mem
        flat = mem.reshape(-1)
        n = flat.size
        nb, nc = max(mem.shape[1], 1), max(mem.shape[2], 1)
        first = np.empty(n, dtype=bool)
        if n:
            np.not_equal(flat[1:], flat[:-1], out=first[1:])
            first[::nc] = True
        self.start = np.flatnonzero(first)
        self.length = np.empty_like(self.start)
        if n:
            np.subtract(self.start[1:], self.start[:-1], out=self.length[:-1])
            self.length[-1] = n - self.start[-1]
        self.value = flat[self.start]
        line, self.c = _divmod(self.start, nc)
        self.a, self.b = _divmod(line, nb)

    def xyz_axes(self) -> tuple[int, int, int]:
        """The memory axis (0 = a, 1 = b, 2 = c) of x, y and z."""
        return (2, 1, 0) if self.rev else (0, 1, 2)


def _value_stats(runs: _Runs, k: int) -> dict[str, np.ndarray]:
    """Per-value sums of a block (values ``0..k``) from its runs; row ``v`` is value ``v``
    (0, the background, included); coordinates are voxels from the block's first voxel.

    * ``sizes`` (int64, ``(k + 1,)``): voxels;
    * ``bbox`` (int64, ``(k + 1, 6)``): lowest x, y, z, then highest x, y, z (inclusive);
    * ``moments`` (float64, ``(k + 1, 9)``): sums of x, y, z, xx, yy, zz, xy, xz, yz over
      the value's voxels (integers, exact in float64).

    Everything is closed-form per run (sums of consecutive integers and of their squares),
    summed per value with ``bincount`` (and ``minimum.at``/``maximum.at`` for the boxes).

    >>> r = np.zeros((3, 2, 2), dtype=np.uint8); r[:, 0, 0] = 1; r[2, 1, 1] = 2
    >>> st = _value_stats(_Runs(r), 2)
    >>> st["sizes"].tolist(), st["bbox"][1:].tolist()
    ([8, 3, 1], [[0, 0, 0, 2, 0, 0], [2, 1, 1, 2, 1, 1]])
    >>> st["moments"][1:].tolist()
    [[3.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0], [2.0, 1.0, 1.0, 4.0, 1.0, 1.0, 2.0, 2.0, 1.0]]
    """
    n_v = k + 1
    v = runs.value.astype(np.intp)
    ln = runs.length.astype(np.float64)
    c0, a, b = (runs.c.astype(np.float64), runs.a.astype(np.float64), runs.b.astype(np.float64))
    # the run's middle cm: sum c = ln cm, sum c^2 = ln cm^2 + (ln^3 - ln) / 12
    cm = c0 + (ln - 1) * 0.5
    sc = ln * cm
    scc = sc * cm + (ln * ln - 1) * ln / 12
    sa, sb = a * ln, b * ln
    # per run: x, y, z, xx, yy, zz, xy, xz, yz as (f, g), the sum being f * g (or f)
    if runs.rev:  # (a, b, c) = (z, y, x)
        per_run = ((sc,), (sb,), (sa,), (scc,), (b, sb), (a, sa), (b, sc), (a, sc), (a, sb))
    else:
        per_run = ((sa,), (sb,), (sc,), (a, sa), (b, sb), (scc,), (a, sb), (a, sc), (b, sc))
    moments = np.empty((n_v, 9), dtype=np.float64)
    tmp = np.empty_like(ln)  # one product at a time: a small working set
    for j, fg in enumerate(per_run):
        w = np.multiply(*fg, out=tmp) if len(fg) == 2 else fg[0]
        moments[:, j] = np.bincount(v, weights=w, minlength=n_v)
    sizes = np.bincount(v, weights=ln, minlength=n_v).astype(np.int64)
    # bounding boxes, per memory axis: the run's first voxel, and its last one along c
    low = np.full((3, n_v), np.iinfo(np.int64).max, dtype=np.int64)
    high = np.full((3, n_v), -1, dtype=np.int64)
    for m, (first, last) in enumerate(
        ((runs.a, runs.a), (runs.b, runs.b), (runs.c, runs.c + runs.length - 1))
    ):
        np.minimum.at(low[m], v, first)
        np.maximum.at(high[m], v, last)
    ax = list(runs.xyz_axes())
    bbox = np.concatenate([low[ax].T, high[ax].T], axis=1)
    return {"sizes": sizes, "bbox": bbox, "moments": moments}


def _rep_voxels(
    r: np.ndarray,
    runs: _Runs,
    moments: np.ndarray,
    sizes: np.ndarray,
    resolution: tuple[float, float, float],
) -> np.ndarray:
    """Per value (row ``v``, row 0 left 0) the voxel nearest (in nm) to its centroid.

    ``moments``/``sizes`` are from :func:`_value_stats`; the result (int64, ``(k + 1, 3)``)
    is in voxels from the block's first voxel, x, y, z. Ties go to the lowest x, then y,
    then z, so the voxel is inside the value (and central unless it is strongly curved).
    It is the voxel rounded from the centroid when that holds the value (the nearest voxel
    of all; ties to the lower coordinate), else the nearest point of each of the value's
    runs, then the best run.

    >>> r = np.zeros((3, 2, 2), dtype=np.uint8); r[:, 0, 0] = 1; r[2, 1, 1] = 2
    >>> runs = _Runs(r); st = _value_stats(runs, 2)
    >>> _rep_voxels(r, runs, st["moments"], st["sizes"], (4.0, 4.0, 40.0))[1:].tolist()
    [[1, 0, 0], [2, 1, 1]]
    """
    n_v = sizes.size
    mu = moments[:, :3] / np.maximum(sizes, 1)[:, None]
    near = np.ceil(mu - 0.5).astype(np.int64)
    rep = near.copy()
    rest = np.flatnonzero(r[near[:, 0], near[:, 1], near[:, 2]] != np.arange(n_v))
    rest = rest[rest > 0]
    if rest.size:
        todo = np.zeros(n_v, dtype=bool)
        todo[rest] = True
        j = np.flatnonzero(todo[runs.value])
        lab = runs.value[j].astype(np.intp)
        ai, bi = runs.a[j], runs.b[j]
        a, b = ai.astype(np.float64), bi.astype(np.float64)
        c0, ln = runs.c[j].astype(np.float64), runs.length[j].astype(np.float64)
        res = np.asarray(resolution, dtype=np.float64)
        ia, ic = (2, 0) if runs.rev else (0, 2)
        mc = mu[:, ic][lab]
        c = np.clip(np.ceil(mc - 0.5), c0, c0 + ln - 1)  # ties: the lower c
        da = (a - mu[:, ia][lab]) * res[ia]
        db = (b - mu[:, 1][lab]) * res[1]
        dc = (c - mc) * res[ic]
        dx, dz = (dc, da) if runs.rev else (da, dc)
        d2 = dx * dx + db * db + dz * dz  # summed in x, y, z order whatever the memory order
        best = np.full(n_v, np.inf)
        np.minimum.at(best, lab, d2)
        cand = np.flatnonzero(d2 == best[lab])
        xyz = np.empty((cand.size, 3), dtype=np.int64)
        xyz[:, ia], xyz[:, 1], xyz[:, ic] = ai[cand], bi[cand], c[cand]
        o = np.lexsort((xyz[:, 2], xyz[:, 1], xyz[:, 0], lab[cand]))
        lc = lab[cand[o]]
        top = np.ones(o.size, dtype=bool)
        top[1:] = lc[1:] != lc[:-1]
        rep[lc[top]] = xyz[o[top]]
    rep[0] = 0
    return rep


def _chunk_faces(r: np.ndarray, k: int) -> np.ndarray:
    """Per value (int64, ``(k + 1, 2, 3)``): its voxels on the block's first (row 0) and
    last (row 1) slab along x, y and z.

    >>> r = np.zeros((3, 2, 2), dtype=np.uint8); r[:, 0, 0] = 1; r[2, 1, 1] = 2
    >>> _chunk_faces(r, 2)[2].tolist()
    [[0, 0, 0], [1, 1, 1]]
    """
    faces = np.zeros((k + 1, 2, 3), dtype=np.int64)
    if r.size == 0:
        return faces
    for d in range(3):
        for side, at in enumerate((0, -1)):
            sl: list[Any] = [slice(None)] * 3
            sl[d] = at
            faces[:, side, d] = np.bincount(r[tuple(sl)].ravel(), minlength=k + 1)[: k + 1]
    return faces


def _inner_contacts(
    r: np.ndarray, k: int, exposed: np.ndarray | None = None, runs: _Runs | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-face contacts inside a block of values ``0..k`` (0 = background).

    Works on the memory buffer (C or Fortran order, see :class:`_Runs`): along the fastest
    axis the faces are where one run meets the next on its line; along the other two every
    voxel is compared with its neighbour one stride on (the comparisons that wrap around
    to the next plane masked out) and the differing ones gathered. Every face between
    different values, the background included, becomes one key ``((lo * (k + 1) + hi) * 4
    + axis)`` and a single sort counts them. Returns ``(lo, hi, faces)`` for the pairs of
    nonzero values, ``lo < hi`` (int64) sorted by ``(lo, hi)``, and ``faces`` (int64,
    ``(n, 3)``) their shared faces across x, y and z.

    ``exposed`` (int64, ``(k + 1, 3)``), if given, receives for every value (row 0, the
    background, included) its faces across x, y and z whose neighbour inside the block
    holds another value (0 included; faces on the block's border are not counted).
    ``runs`` (of ``r``) is computed if not given.

    >>> r = np.array([[[1, 2], [1, 0]], [[3, 3], [1, 2]]], dtype=np.uint8)
    >>> ex = np.zeros((4, 3), dtype=np.int64)
    >>> [v.tolist() for v in _inner_contacts(r, 3, exposed=ex)]
    [[1, 1, 2], [2, 3, 3], [[0, 0, 2], [1, 1, 0], [1, 1, 0]]]
    >>> ex[1:].tolist()
    [[1, 1, 3], [2, 2, 2], [2, 2, 0]]
    """
    empty = np.zeros(0, dtype=np.int64)
    if r.size < 2 or k < 1:
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    if runs is None:
        runs = _Runs(r)
    mem = runs.mem
    flat = mem.reshape(-1)
    n_all = flat.size
    n_v = k + 1
    kd = np.uint32 if 4 * n_v * n_v <= 2**32 else np.uint64  # the keys' dtype
    touching: list[tuple[int, np.ndarray, np.ndarray]] = []  # (axis, values a, values b)
    for d in range(3):
        if mem.shape[d] < 2:
            continue
        if d == 2:  # the fastest axis: each run meets the previous one, unless it starts a line
            meets = np.flatnonzero(runs.c[1:])
            av, bv = runs.value[meets], runs.value[meets + 1]
        else:
            s = mem.strides[d] // mem.itemsize
            neq = np.empty(n_all, dtype=bool)
            np.not_equal(flat[: n_all - s], flat[s:], out=neq[: n_all - s])
            if d == 1:  # the last line of every plane has no neighbour (its +s wraps)
                neq[n_all - s :] = False
                neq.reshape(mem.shape)[:, -1, :] = False
            idx = np.flatnonzero(neq[: n_all - s])
            av, bv = flat[idx], flat[s:][idx]
        touching.append((2 - d if runs.rev else d, av, bv))
    keys = np.empty(sum(t[1].size for t in touching), dtype=kd)
    start = 0
    for ax, av, bv in touching:  # written in place, one axis after the other
        key = keys[start : start + av.size]
        start += av.size
        np.minimum(av, bv, out=key)
        key *= kd(n_v)
        key += np.maximum(av, bv)
        key *= kd(4)
        key += kd(ax)
    del touching
    u, cnt = _count_keys(keys)
    if u.size == 0:
        return empty, empty, np.zeros((0, 3), dtype=np.int64)
    axis = (u & kd(3)).astype(np.intp)
    pair = u >> kd(2)
    lo = (pair // kd(n_v)).astype(np.intp)
    hi = pair.astype(np.intp) - lo * n_v
    if exposed is not None:  # both sides of every face between two values
        flat_exposed = exposed.reshape(-1)  # (a view: exposed is C-contiguous)
        np.add.at(flat_exposed, lo * 3 + axis, cnt)
        np.add.at(flat_exposed, hi * 3 + axis, cnt)
    new = np.empty(pair.size, dtype=bool)
    new[0] = True
    np.not_equal(pair[1:], pair[:-1], out=new[1:])
    row = np.cumsum(new)
    row -= 1
    faces = np.zeros((int(row[-1]) + 1, 3), dtype=np.int64)
    faces.reshape(-1)[row * 3 + axis] = cnt
    lo, hi = lo[new], hi[new]
    fg = int(np.searchsorted(lo, 1))  # the pairs with the background (lo = 0) come first
    return lo[fg:].astype(np.int64), hi[fg:].astype(np.int64), faces[fg:]


def _slab_contacts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Contacts between two facing one-voxel slabs of segment numbers (0 = background).

    Returns ``(sa, sb, faces)``: distinct nonzero pairs ``(a[i], b[i])`` and their counts.
    Pairs with equal numbers are kept (they are different chunks' pieces).
    """
    a = a.ravel()
    b = b.ravel()
    m = (a != 0) & (b != 0)
    av = a[m].astype(np.uint64)
    bv = b[m].astype(np.uint64)
    if av.size == 0:
        z = np.zeros(0, dtype=np.int64)
        return z, z, z
    nb = np.uint64(int(bv.max()) + 1)
    u, c = _count_keys(av * nb + bv)
    return (u // nb).astype(np.int64), (u % nb).astype(np.int64), c


def _process_chunk(ctx: _Context, coord: tuple[int, int, int]) -> dict[str, Any]:
    """Relabel one atomic chunk, write it, and return its supervoxels and contacts.

    Contacts across the chunk's faces are not computed here: the chunk returns its six
    boundary slabs as segment numbers (``low[d]``: first slab along axis ``d``,
    ``high[d]``: last slab), and :func:`build_supervoxel_graph` pairs the ``high`` slab
    of a chunk with the ``low`` slab of its +d neighbour. This is the same as reading a
    one-voxel halo, without decoding the neighbour's stored chunks a second time.

    The block is renumbered to segment numbers (``1..k`` in ascending label order, 0 =
    background) in place, so every per-value result is already in supervoxel order; it is
    then cut once into runs along its fastest memory axis (:class:`_Runs`), from which the
    sizes, boxes, centroids, moments, representative voxels and the contacts along that
    axis are computed.
    """
    import fastremap

    from cavelab.server.engine.ids import GrapheneLayout

    t0 = time.perf_counter()
    cs = ctx.chunk_size
    lo = [coord[d] * cs[d] for d in range(3)]
    hi = [min(lo[d] + cs[d], ctx.size[d]) for d in range(3)]
    core = ctx.volume.read(lo[0], hi[0], lo[1], hi[1], lo[2], hi[2])
    t1 = time.perf_counter()

    if not (core.flags.c_contiguous or core.flags.f_contiguous) or not core.flags.writeable:
        core = np.ascontiguousarray(core)
    r, mapping = fastremap.renumber(core, preserve_zero=True, in_place=True)
    mapping.pop(0, None)  # (renumber always maps 0 -> 0)
    k = len(mapping)
    layout = GrapheneLayout(ctx.n_layers, ctx.spatial_bits)
    if k > layout.max_segment(1):
        raise IngestError(
            f"atomic chunk {tuple(coord)} holds {k} labels, more than the "
            f"{layout.max_segment(1)} supervoxels a chunk can number; use a smaller chunk size."
        )
    keys = np.fromiter(mapping.keys(), dtype=np.uint64, count=k)
    vals = np.fromiter(mapping.values(), dtype=np.int64, count=k)
    order = np.argsort(keys)
    labels = keys[order]
    small = np.uint16 if k < 2**16 else np.uint32
    seg_of = np.zeros(k + 1, dtype=small)  # renumbered value -> segment number
    seg_of[vals[order]] = np.arange(1, k + 1)
    # the block as segment numbers, in place (one pass over its memory buffer)
    r = r.astype(small, copy=False)
    if not (r.flags.c_contiguous or r.flags.f_contiguous):
        r = np.ascontiguousarray(r)
    fastremap.remap_from_array((r if r.flags.c_contiguous else r.T).reshape(-1), seg_of)
    lut = np.zeros(k + 1, dtype=np.uint64)  # segment number -> supervoxel ID
    lut[1:] = layout.chunk_ids(1, coord[0], coord[1], coord[2]) | np.arange(
        1, k + 1, dtype=np.uint64
    )
    t2 = time.perf_counter()

    # sizes, bounding boxes, centroids (and the moments) from the runs along the fastest axis
    runs = _Runs(r)
    st = _value_stats(runs, k)
    sizes = st["sizes"][1:]
    org = np.asarray(lo, dtype=np.int64) + np.asarray(ctx.voxel_offset, dtype=np.int64)
    bbox = np.empty((k, 6), dtype=np.int32)
    bbox[:, 0:3] = st["bbox"][1:, 0:3] + org
    bbox[:, 3:6] = st["bbox"][1:, 3:6] + 1 + org
    centroid = (st["moments"][1:, :3] / sizes[:, None] + org).astype(np.float32)
    t3 = time.perf_counter()

    # contacts inside the chunk (filtered against edges.parquet by the caller), per axis,
    # and every value's faces towards another value or the background
    exposed = np.zeros((k + 1, 3), dtype=np.int64)
    ca, cb, fxyz = _inner_contacts(r, k, exposed, runs)  # sorted by (lo, hi) segment
    total = fxyz[:, 0] + fxyz[:, 1] + fxyz[:, 2]
    inner = ((ca - 1).astype(small), (cb - 1).astype(small), total.astype(np.uint32))
    inner_xyz = fxyz.astype(np.int32)
    # boundary slabs (segment numbers) for the contacts across faces
    low: list[np.ndarray | None] = []
    high: list[np.ndarray | None] = []
    for d in range(3):
        first: list[Any] = [slice(None)] * 3
        last: list[Any] = [slice(None)] * 3
        first[d], last[d] = 0, -1
        low.append(r[tuple(first)].copy() if coord[d] > 0 else None)
        high.append(r[tuple(last)].copy() if hi[d] < ctx.size[d] else None)
    t4 = time.perf_counter()

    # shape statistics per supervoxel (for the L2 features, cavelab.server.morphology)
    rep_voxel = _rep_voxels(r, runs, st["moments"], st["sizes"], ctx.resolution)[1:] + org
    chunk_faces = _chunk_faces(r, k)[1:].astype(np.int32)
    t5 = time.perf_counter()

    if ctx.seg_cache is not None:  # for the L2-feature pass (cavelab.server.ingest.segcache)
        from cavelab.server.ingest.segcache import save_block

        save_block(ctx.seg_cache, coord, r, k)
    ctx.out.write_segments(coord, lo, hi, r, lut)
    t6 = time.perf_counter()
    return {
        "labels": labels,
        "sizes": sizes,
        "bbox": bbox,
        "centroid": centroid,
        "inner": inner,
        "inner_xyz": inner_xyz,
        "low": low,
        "high": high,
        "moments": st["moments"][1:],
        "faces": exposed[1:].astype(np.int32),
        "chunk_faces": chunk_faces,
        "rep": rep_voxel.astype(np.int32),
        "voxels": int(r.size),
        "t": np.array([t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5]),
    }


#: The timed parts of :func:`_process_chunk` (``chunk_<stage>`` in the report's timings):
#: the block's read; renumbering to segment numbers; the runs and the per-value sums (sizes,
#: boxes, centroids, moments); contacts, exposed faces and boundary slabs; representative
#: voxels and chunk-face voxels; the shard write.
_STAGES = ("read", "relabel", "statistics", "contacts", "shape", "write")


class _ChunkRunner:
    """Runs the per-chunk work in chunk order: in this process, or in a process pool.

    A pool starts (and is handed every chunk) on construction, so the workers import and
    begin relabelling while the caller reads the edge and component tables; results are
    consumed in chunk order by iterating. Use as a context manager (the pool is shut
    down, and pending chunks cancelled on error, on exit).
    """

    def __init__(self, ctx: _Context, coords: list[tuple[int, int, int]], workers: int) -> None:
        self.ctx = ctx
        self.coords = coords
        self.pool: ProcessPoolExecutor | None = None
        self.results: Iterator[dict[str, Any]] | None = None
        if workers > 1 and len(coords) > 1:
            methods = multiprocessing.get_all_start_methods()
            if "forkserver" in methods:
                mp = multiprocessing.get_context("forkserver")
                # the fork server imports the heavy modules once; workers fork ready to run
                mp.set_forkserver_preload(_WORKER_MODULES)
            else:  # pragma: no cover - platforms without fork
                mp = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(
                max_workers=min(workers, len(coords)),
                mp_context=mp,
                initializer=_init_worker,
                initargs=(ctx,),
            )
            self.results = self.pool.map(_run_in_worker, coords, chunksize=1)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if self.results is not None:
            return self.results
        return (_process_chunk(self.ctx, c) for c in self.coords)

    def __enter__(self) -> _ChunkRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


# =============================================================================
# The stage
# =============================================================================


class _EdgeCollector:
    """Kept contacts, bucketed by the chunk of their lower piece, emitted sorted.

    Every part handed to :meth:`add` has all its lower pieces in one chunk. A chunk's
    bucket is sorted by ``(lo, hi)`` as soon as all its parts are in (its inner contacts
    and one part per +x/+y/+z neighbour), so sorting overlaps the chunk pass; buckets are
    emitted in chunk order, which makes their concatenation globally sorted.
    """

    def __init__(self, expected: np.ndarray, n_rows: int) -> None:
        self.remaining = np.asarray(expected, dtype=np.int64).copy()
        self.parts: dict[int, list[tuple[np.ndarray, ...]]] = {}
        self.done: dict[int, tuple[np.ndarray, ...] | None] = {}
        self.out: list[list[np.ndarray]] = [[], [], [], [], []]  # lo, hi, faces, row, active
        self.next = 0
        self.n_rows = n_rows
        self.row_dtype = np.int32 if n_rows < 2**31 - 1 else np.int64
        self.size = 0

    def add(
        self,
        chunk: int,
        offset: int,
        lo: np.ndarray,
        hi: np.ndarray,
        faces: np.ndarray,
        row: np.ndarray,
        active: np.ndarray,
    ) -> None:
        if lo.size:
            self.parts.setdefault(chunk, []).append((lo, hi, faces, row, active))
        self.remaining[chunk] -= 1
        if self.remaining[chunk] == 0:
            self._finish(chunk, int(offset))

    def _finish(self, chunk: int, offset: int) -> None:
        parts = self.parts.pop(chunk, [])
        if parts:
            lo, hi, faces, row, act = (np.concatenate([p[i] for p in parts]) for i in range(5))
            span = np.int64(int(hi.max()) - offset + 1)
            order = np.argsort((lo - offset) * span + (hi - offset))
            self.done[chunk] = (
                lo[order],
                hi[order],
                faces[order].astype(np.int32),
                row[order].astype(self.row_dtype),
                act[order],
            )
            self.size += lo.size
        else:
            self.done[chunk] = None
        while self.next in self.done:
            d = self.done.pop(self.next)
            if d is not None:
                for lst, v in zip(self.out, d):
                    lst.append(v)
            self.next += 1

    def take(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Column ``i`` (lo, hi, faces, row, active) of all kept contacts, in order; frees it."""
        parts, self.out[i] = self.out[i], []
        assert not self.parts and not self.done and np.all(self.remaining == 0)
        dtype = (np.int64, np.int64, np.int32, self.row_dtype, bool)[i]
        if not parts:
            return out if out is not None else np.zeros(0, dtype)
        return np.concatenate(parts, out=out)


def _interleave(main: np.ndarray, extra: np.ndarray, at: np.ndarray, out: np.ndarray) -> None:
    """Write ``main`` with ``extra[k]`` inserted before ``main[at[k]]`` (``at`` sorted).

    >>> out = np.zeros(5, dtype=int)
    >>> _interleave(np.array([1, 2, 3]), np.array([8, 9]), np.array([0, 2]), out)
    >>> out.tolist()
    [8, 1, 2, 9, 3]
    """
    if at.size > 10_000:  # many: one masked pass
        pos = at + np.arange(at.size)
        keep = np.ones(out.size, dtype=bool)
        keep[pos] = False
        out[keep] = main
        out[pos] = extra
        return
    start = 0
    for k, a in enumerate(at.tolist()):  # few: contiguous copies between the insertions
        out[start + k : a + k] = main[start:a]
        out[a + k] = extra[k]
        start = a
    out[start + at.size :] = main[start:]


def _insertion_points(
    lo: np.ndarray, hi: np.ndarray, x_lo: np.ndarray, x_hi: np.ndarray
) -> np.ndarray:
    """Where pairs ``(x_lo, x_hi)`` go in the ``(lo, hi)``-sorted pairs (lexicographic).

    >>> _insertion_points(np.array([0, 0, 2]), np.array([1, 5, 3]), np.array([0, 1]),
    ...                   np.array([3, 9])).tolist()
    [1, 2]
    """
    pos = np.searchsorted(lo, x_lo, side="left")
    end = np.searchsorted(lo, x_lo, side="right")
    todo = np.flatnonzero(pos < end)
    while todo.size:  # step over the pairs with the same lo and a smaller hi
        adv = todo[hi[pos[todo]] < x_hi[todo]]
        pos[adv] += 1
        todo = adv[pos[adv] < end[adv]]
    return pos


def _chain_disconnected(
    labels: np.ndarray, n_labels: int, tie_a: np.ndarray, tie_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, int]:
    """Extra ties joining the pieces of each label that the face ties leave apart.

    ``labels`` is the label of every piece. Returns ``(a, b, n_labels_chained)``: for each
    label whose pieces form several tie-connected groups, the groups (ordered by their
    lowest piece) are chained lowest piece to lowest piece.

    >>> labels = np.array([4, 4, 4, 7, 7], dtype=np.uint64)
    >>> [v.tolist() if hasattr(v, "tolist") else v
    ...  for v in _chain_disconnected(labels, 2, np.array([1]), np.array([2]))]
    [[0, 3], [1, 4], 2]
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_sv = labels.size
    empty = np.zeros(0, dtype=np.int64)
    # connected components of the tied pieces only; every other piece is its own group
    nodes = _sorted_unique(np.concatenate([tie_a, tie_b]))
    ia, ib = np.searchsorted(nodes, tie_a), np.searchsorted(nodes, tie_b)
    g = coo_matrix((np.ones(ia.size, dtype=np.int8), (ia, ib)), shape=(nodes.size,) * 2)
    n_comp, comp = connected_components(g, directed=False) if nodes.size else (0, empty)
    if n_comp + (n_sv - nodes.size) == n_labels:  # every label is one group: nothing to do
        return empty, empty, 0
    group = np.arange(n_sv, dtype=np.int64)  # group id: the piece itself, or n_sv + comp
    group[nodes] = n_sv + comp
    rep = np.full(n_sv + n_comp, -1, dtype=np.int64)
    rep[group[::-1]] = np.arange(n_sv - 1, -1, -1)  # the lowest piece of every group
    rep = rep[rep >= 0]
    rep_label = labels[rep]
    o = np.lexsort((rep, rep_label))
    rep, rep_label = rep[o], rep_label[o]
    link = rep_label[1:] == rep_label[:-1]
    a, b = rep[:-1][link], rep[1:][link]
    return a, b, int(_sorted_unique(rep_label[1:][link]).size)


def _face_contacts(
    edges: _Edges,
    high: np.ndarray,
    low: np.ndarray,
    chunk_a: dict[str, Any],
    chunk_b: dict[str, Any],
) -> tuple[np.ndarray, ...]:
    """Contacts across one chunk face.

    ``high`` is the last slab of chunk A (segment numbers), ``low`` the first slab of its
    neighbour B; ``chunk_a``/``chunk_b`` are the chunks' results (``labels``, ``listed``).
    Returns ``(a, b, faces, row, tie)``: pieces as 0-based indices within their chunk, the
    listed edge row (-1: not listed; ``edges.n_pairs`` for ties) and the tie mask.
    """
    sa, sb, fc = _slab_contacts(high, low)
    sa -= 1
    sb -= 1
    tie = chunk_a["labels"][sa] == chunk_b["labels"][sb]
    row = _listed_rows(edges, chunk_a["listed"][sa], chunk_b["listed"][sb])
    row[tie] = edges.n_pairs
    return sa, sb, fc, row, tie


def _segments_of_listed(
    edges: _Edges, components: tuple[np.ndarray, np.ndarray] | None, threshold: float | None
) -> np.ndarray:
    """Initial segment of every label named by the edges (int64 per ``edges.labels``).

    From components.parquet (labels it does not list: their own segment) or, with a
    threshold, connected components of the listed edges with ``affinity >= threshold``.
    Only these labels matter for the active flags; labels without edges have only ties.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = edges.labels.size
    if threshold is not None:
        m = edges.affinity >= threshold
        g = coo_matrix(
            (np.ones(int(m.sum()), dtype=np.int8), (edges.ilo[m], edges.ihi(m))), shape=(n, n)
        )
        return connected_components(g, directed=False)[1].astype(np.int64)
    assert components is not None
    sv, seg = components
    out = -1 - np.arange(n, dtype=np.int64)  # unlisted labels: their own segment
    if n == 0:
        return out
    idx = np.minimum(np.searchsorted(edges.labels, sv), n - 1)
    named = edges.labels[idx] == sv
    _, seg_dense = np.unique(seg[named], return_inverse=True)
    out[idx[named]] = seg_dense.ravel()
    return out


def build_supervoxel_graph(
    source_dir: str | Path,
    dataset_dir: str | Path,
    meta: DatasetMeta,
    *,
    threshold: float | None = None,
    progress: bool = True,
    workers: int = 2,
    sv_stats: dict[str, np.ndarray] | None = None,
    seg_cache: str | Path | None = None,
) -> tuple[SupervoxelGraph, dict[str, Any]]:
    """Cut the source labels into graphene supervoxels and build their graph.

    Parameters
    ----------
    source_dir : str or Path
        The source directory (``segmentation.zarr``, ``edges.parquet`` and optionally
        ``components.parquet``; docs/input_format.md).
    dataset_dir : str or Path
        The dataset being created; receives ``meta.segmentation_path`` (the relabelled
        volume, Zarr v3 uint64 indexed ``[x, y, z]``, sharded by atomic chunk) and
        ``supervoxel_map.parquet`` (``label``, ``sv_id``).
    meta : DatasetMeta
        Geometry of the dataset: ``size`` must equal the source volume's shape (x, y, z);
        ``chunk_size`` is the atomic chunk; ``n_layers``/``spatial_bits`` fix the ID layout.
    threshold : float, optional
        Agglomerate by connected components of the listed edges with ``affinity >=
        threshold`` instead of components.parquet (which is then ignored).
    progress : bool
        Show a tqdm progress bar over the atomic chunks.
    workers : int
        Worker processes for the per-chunk work (1 = in this process).
    sv_stats : dict, optional
        Receives the per-supervoxel shape statistics (:data:`SV_STAT_ARRAYS`; rows in
        supervoxel order), which the L2 features (:mod:`cavelab.server.morphology`) are
        computed from.
    seg_cache : str or Path, optional
        A directory that receives each chunk's block as segment numbers
        (:mod:`cavelab.server.ingest.segcache`), for the L2-feature pass.

    Returns
    -------
    graph : SupervoxelGraph
        Supervoxels sorted by ID; bounding boxes and centroids in voxels including
        ``meta.voxel_offset``; edges unique with ``edges[:, 0] < edges[:, 1]``.
    report : dict
        ``n_chunks``, ``n_labels``, ``n_supervoxels``, ``n_edges``, ``n_ties``,
        ``n_source_edges``, ``n_listed_pairs``, ``n_active_edges``, ``n_segments``,
        ``n_duplicate_edge_rows``, ``n_voxels``, ``warnings`` (messages),
        ``warning_counts`` (``labels_chained``, ``edges_not_touching``,
        ``unlisted_contacts_dropped``), ``workers``, ``timings`` (seconds: ``inputs``,
        ``chunks``, ``graph``, and ``chunk_read`` ... ``chunk_write`` summed over all
        chunks and workers), ``seconds``, ``supervoxels_per_second``, ``voxels_per_second``.

    Raises
    ------
    IngestError
        For every input problem listed in docs/input_format.md, with the rows, labels or
        keys at fault and how to fix them.
    """
    t_start = time.perf_counter()
    source_dir = Path(source_dir)
    dataset_dir = Path(dataset_dir)
    warnings: list[str] = []
    counts: dict[str, int] = {}

    vol = open_source_volume(source_dir)
    if tuple(int(s) for s in meta.size) != vol.shape:
        raise IngestError(
            f"dataset size {tuple(meta.size)} differs from the source volume's shape "
            f"{vol.shape} (x, y, z); build the DatasetMeta from the volume.",
        )
    if not np.allclose(meta.resolution, vol.resolution, rtol=1e-6):
        warnings.append(
            f"dataset resolution {tuple(meta.resolution)} nm differs from the source's "
            f"{vol.resolution} nm; the dataset's is used"
        )
    if any(int(c) < 1 for c in meta.chunk_size):
        raise IngestError(f"chunk size {tuple(meta.chunk_size)} must be >= 1 along every axis")
    grid = meta.grid_shape
    try:
        layout = meta.layout
    except ValueError:  # more layers than the spatial bits can encode
        layout = None
    if layout is None or max(grid) - 1 > layout.max_chunk_coord(1):
        bits = meta.spatial_bits if layout is None else layout.bits[1]
        raise IngestError(
            f"the atomic chunk grid {grid} is too large for the ID layout ({bits} bits per "
            f"axis, at most {2**bits} chunks per axis, {meta.n_layers} layers); use a larger "
            f"chunk size than {tuple(meta.chunk_size)} or more spatial bits.",
            grid=list(grid),
        )
    if threshold is not None:
        threshold = float(threshold)
        if np.isnan(threshold):
            raise IngestError("threshold is NaN; give a number in [0, 1]")

    if not (source_dir / EDGES_FILE).exists():
        raise IngestError(
            f"no {EDGES_FILE} in {source_dir}; the source must list the supervoxel contact "
            "graph (columns sv1, sv2, affinity, area), see docs/input_format.md."
        )
    if threshold is None and not (source_dir / COMPONENTS_FILE).exists():
        raise IngestError(
            f"no {COMPONENTS_FILE} in {source_dir} and no threshold; give the initial "
            "agglomeration as components.parquet (columns sv, segment) or pass --threshold T."
        )

    dataset_dir.mkdir(parents=True, exist_ok=True)
    out_path = _create_output(dataset_dir, meta, vol)
    ctx = _Context(
        volume=vol,
        out_path=str(out_path),
        size=tuple(int(s) for s in meta.size),  # type: ignore[arg-type]
        chunk_size=tuple(int(c) for c in meta.chunk_size),  # type: ignore[arg-type]
        voxel_offset=tuple(int(v) for v in meta.voxel_offset),  # type: ignore[arg-type]
        n_layers=int(meta.n_layers),
        spatial_bits=int(meta.spatial_bits),
        resolution=tuple(float(v) for v in meta.resolution),  # type: ignore[arg-type]
        seg_cache=None if seg_cache is None else str(seg_cache),
    )
    coords = [(x, y, z) for x in range(grid[0]) for y in range(grid[1]) for z in range(grid[2])]
    with _ChunkRunner(ctx, coords, workers) as runner:
        # the workers start on the volume while the tables are read and checked
        edges = _load_edges(source_dir)
        components = _load_components(source_dir) if threshold is None else None
        if threshold is not None and (source_dir / COMPONENTS_FILE).exists():
            warnings.append(f"{COMPONENTS_FILE} ignored: agglomerating by threshold {threshold}")
        t_inputs = time.perf_counter()
        graph, report = _assemble(
            runner,
            vol,
            meta,
            grid,
            coords,
            edges,
            components,
            threshold,
            progress,
            dataset_dir,
            warnings,
            counts,
            t_start,
            t_inputs,
            sv_stats,
        )
    report["workers"] = int(workers)
    return graph, report


def _assemble(
    runner: _ChunkRunner,
    vol: NgffVolume,
    meta: DatasetMeta,
    grid: tuple[int, int, int],
    coords: list[tuple[int, int, int]],
    edges: _Edges,
    components: tuple[np.ndarray, np.ndarray] | None,
    threshold: float | None,
    progress: bool,
    dataset_dir: Path,
    warnings: list[str],
    counts: dict[str, int],
    t_start: float,
    t_inputs: float,
    sv_stats: dict[str, np.ndarray] | None = None,
) -> tuple[SupervoxelGraph, dict[str, Any]]:
    """Consume the chunk results in order and build the graph (see build_supervoxel_graph)."""
    layout = meta.layout
    stage_t = np.zeros(len(_STAGES))
    from tqdm.auto import tqdm

    n_chunks = len(coords)
    strides = (grid[1] * grid[2], grid[2], 1)  # linear chunk index step along x, y, z
    gc = np.array(coords, dtype=np.int64).reshape(-1, 3)
    # parts each chunk's bucket awaits: its inner contacts + one per existing +d neighbour
    expected = 1 + np.sum(gc + 1 < np.asarray(grid), axis=1)
    collector = _EdgeCollector(expected, edges.n_pairs)
    offsets = np.zeros(n_chunks + 1, dtype=np.int64)
    chunks: list[dict[str, Any]] = []  # per chunk: labels, listed, sizes, bbox, centroid
    pending: dict[tuple[int, int], np.ndarray] = {}  # (chunk, axis) -> its high slab
    ties: list[list[np.ndarray]] = [[], []]  # the face ties again (piece a, piece b)
    contacts: list[list[np.ndarray]] = [[], [], []]  # all inner contacts: a, b, faces x/y/z
    seg_of: np.ndarray | None = None
    n_voxels = 0
    n_touching = 0
    with tqdm(total=n_chunks, unit="chunk", disable=not progress, desc="supervoxels") as bar:
        for ci, res in enumerate(runner):
            if seg_of is None:  # while the workers run: the initial segments
                seg_of = _segments_of_listed(edges, components, threshold)
                # index -1 (a label without edges: it only has ties) -> a sentinel
                seg_ext = np.append(seg_of, np.iinfo(np.int64).min)
            stage_t += res.pop("t")
            n_voxels += res["voxels"]
            off = offsets[ci]
            offsets[ci + 1] = off + res["labels"].size
            res["listed"] = li = _listed_index(edges.labels, res["labels"])
            sa, sb, fc = (v.astype(np.int64) for v in res.pop("inner"))
            n_touching += sa.size
            inner_xyz = res.pop("inner_xyz")
            if sv_stats is not None:
                contacts[0].append(sa + off)
                contacts[1].append(sb + off)
                contacts[2].append(inner_xyz)
            la, lb = li[sa], li[sb]
            row = _listed_rows(edges, la, lb)
            keep = row >= 0
            la, lb = la[keep], lb[keep]
            act = seg_ext[la] == seg_ext[lb]
            collector.add(ci, off, sa[keep] + off, sb[keep] + off, fc[keep], row[keep], act)
            low, high = res.pop("low"), res.pop("high")
            for d in range(3):
                if low[d] is not None:  # pair with the high slab of the -d neighbour
                    prev = ci - strides[d]
                    fa, fb, fc, row, tie = _face_contacts(
                        edges, pending.pop((prev, d)), low[d], chunks[prev], res
                    )
                    n_touching += fa.size
                    fa += offsets[prev]
                    fb += off
                    ties[0].append(fa[tie])
                    ties[1].append(fb[tie])
                    keep = row >= 0
                    la, lb = chunks[prev]["listed"][fa[keep] - offsets[prev]], li[fb[keep] - off]
                    act = tie[keep] | (seg_ext[la] == seg_ext[lb])
                    collector.add(prev, offsets[prev], fa[keep], fb[keep], fc[keep], row[keep], act)
                if high[d] is not None:
                    pending[(ci, d)] = high[d]
            chunks.append(res)
            bar.update(1)
            bar.set_postfix(sv=int(offsets[ci + 1]), refresh=False)
    assert not pending
    if seg_of is None:
        seg_of = _segments_of_listed(edges, components, threshold)
    t_chunks = time.perf_counter()

    # -- supervoxels ---------------------------------------------------------------
    n_per = np.diff(offsets)
    n_sv = int(offsets[-1])
    if n_sv == 0:
        raise IngestError(
            f"the volume {vol.path} holds no labels (every voxel is 0 = background); "
            "nothing to ingest."
        )
    cc = np.repeat(gc, n_per, axis=0)
    seg = np.arange(n_sv, dtype=np.int64) - np.repeat(offsets[:-1], n_per) + 1
    sv_ids = layout.node_ids(1, cc[:, 0], cc[:, 1], cc[:, 2], seg)
    del cc, seg
    sv_labels = np.concatenate([c["labels"] for c in chunks])
    sv_listed = np.concatenate([c["listed"] for c in chunks]).astype(np.int64)
    sv_sizes = np.concatenate([c["sizes"] for c in chunks])
    sv_bbox = np.concatenate([c["bbox"] for c in chunks])
    sv_centroid = np.concatenate([c["centroid"] for c in chunks])
    if sv_stats is not None:
        for name, key in zip(SV_STAT_ARRAYS[:4], ("moments", "faces", "chunk_faces", "rep")):
            sv_stats[name] = np.concatenate([c[key] for c in chunks])
        sv_stats["sv_contacts"] = np.stack(
            [np.concatenate(contacts[0]), np.concatenate(contacts[1])], axis=1
        )
        sv_stats["sv_contact_faces"] = np.concatenate(contacts[2]).reshape(-1, 3)
    del chunks, contacts
    assert n_sv < 2 or bool(np.all(sv_ids[1:] > sv_ids[:-1]))
    u = _sorted_unique(sv_labels)  # the labels of the volume
    n_lab = int(u.size)

    # -- every label named by the inputs must exist -----------------------------------
    for what, cols, named in (
        (EDGES_FILE, ("sv1", "sv2"), edges.labels),
        (COMPONENTS_FILE, ("sv",), components[0] if components else None),
    ):
        if named is None or named.size == 0:
            continue
        absent = u[np.minimum(np.searchsorted(u, named), n_lab - 1)] != named
        if np.any(absent):
            bad = named[absent]
            raise IngestError(
                f"{what} names {bad.size} label(s) absent from the volume, e.g. "
                f"{bad[:_MAX_ROWS_NAMED].tolist()}, in "
                f"{_rows_naming(_source_dir_of(vol), what, cols, bad)}; remove those rows "
                "or fix the labels.",
                labels=bad[:_MAX_ROWS_NAMED].tolist(),
            )

    # -- ties: chain the pieces of a label that face ties leave apart -------------------
    tie_a = np.concatenate(ties[0]) if ties[0] else np.zeros(0, np.int64)
    tie_b = np.concatenate(ties[1]) if ties[1] else np.zeros(0, np.int64)
    del ties
    ch_a, ch_b, n_chained = _chain_disconnected(sv_labels, n_lab, tie_a, tie_b)
    n_ties = int(tie_a.size + ch_a.size)
    if n_chained:
        counts["labels_chained"] = n_chained
        warnings.append(
            f"{n_chained} label(s) have pieces that do not touch across a chunk face "
            "(the label is not face-connected); their pieces were chained by zero-area ties"
        )

    # -- kept contacts (sorted by (lo, hi)); listed pairs that never touch -------------
    n_rows = edges.n_pairs
    n_kept = collector.size
    n_dropped = n_touching - n_kept
    if n_dropped:  # contacts of label pairs edges.parquet does not list
        counts["unlisted_contacts_dropped"] = n_dropped
    faces = collector.take(2)
    row = collector.take(3)  # n_rows for the ties: an extra last entry of the row tables
    total = np.bincount(row, weights=faces, minlength=n_rows + 1)[:n_rows]
    lonely = np.flatnonzero(total == 0)
    if lonely.size:  # placed between the largest piece of each label
        counts["edges_not_touching"] = int(lonely.size)
        warnings.append(
            f"{lonely.size} listed edge(s) join labels that touch nowhere in the volume; "
            "each was placed between the largest pieces of its two labels"
        )
        has = np.flatnonzero(sv_listed >= 0)
        o = has[np.lexsort((has, -sv_sizes[has], sv_listed[has]))]
        first = np.ones(o.size, dtype=bool)
        first[1:] = sv_listed[o][1:] != sv_listed[o][:-1]
        largest = np.full(edges.labels.size, -1, dtype=np.int64)
        largest[sv_listed[o][first]] = o[first]
        na, nb = largest[edges.ilo[lonely]], largest[edges.ihi(lonely)]
    else:
        na = nb = np.zeros(0, dtype=np.int64)

    # -- the edge arrays: kept contacts, with the few extra edges merged in ---------------
    # per-row tables with an extra last entry for the ties
    aff_t = np.append(edges.affinity.astype(np.float32), np.float32(np.inf))
    share_t = np.append(
        np.divide(edges.area, total, out=np.zeros(n_rows), where=total > 0), 1.0
    ).astype(np.float32)
    x_lo = np.concatenate([ch_a, np.minimum(na, nb)])
    x_hi = np.concatenate([ch_b, np.maximum(na, nb)])
    n_x = int(x_lo.size)
    n_e = n_kept + n_x
    edges_arr = np.empty((n_e, 2), dtype=np.int64)
    aff = np.empty(n_e, dtype=np.float32)
    area = np.empty(n_e, dtype=np.float32)
    if n_x == 0:  # the common case: straight into the outputs, no temporaries
        collector.take(0, out=edges_arr[:, 0])
        collector.take(1, out=edges_arr[:, 1])
        active = collector.take(4)
        np.take(aff_t, row, out=aff)
        np.take(share_t, row, out=area)
        area *= faces
        del faces, row
    else:
        x_aff = np.concatenate([np.full(ch_a.size, np.inf), edges.affinity[lonely]])
        x_area = np.concatenate([np.zeros(ch_a.size), edges.area[lonely]])
        x_act = np.concatenate(
            [np.ones(ch_a.size, dtype=bool), seg_of[edges.ilo[lonely]] == seg_of[edges.ihi(lonely)]]
        )
        o = np.argsort(x_lo * np.int64(n_sv) + x_hi)
        x_lo, x_hi, x_aff, x_area, x_act = (v[o] for v in (x_lo, x_hi, x_aff, x_area, x_act))
        lo_, hi_ = collector.take(0), collector.take(1)
        at = _insertion_points(lo_, hi_, x_lo, x_hi)  # in the kept contacts
        _interleave(lo_, x_lo, at, edges_arr[:, 0])
        _interleave(hi_, x_hi, at, edges_arr[:, 1])
        del lo_, hi_
        _interleave(aff_t[row], x_aff.astype(np.float32), at, aff)
        _interleave(share_t[row] * faces, x_area.astype(np.float32), at, area)
        active = np.empty(n_e, dtype=bool)
        _interleave(collector.take(4), x_act, at, active)
        del faces, row
    graph = SupervoxelGraph(
        sv_ids=sv_ids,
        sv_labels=sv_labels,
        sv_sizes=sv_sizes,
        sv_bbox=sv_bbox.astype(np.int32, copy=False),
        sv_centroid=sv_centroid.astype(np.float32, copy=False),
        edges=edges_arr,
        affinity=aff,
        area=area,
        active=active,
    )

    # -- segments ----------------------------------------------------------------------
    n_named = int(edges.labels.size)  # labels with edges; the others are singletons
    if components is not None:
        # the segments of components.parquet, plus every label it does not list
        n_segments = int(_sorted_unique(components[1]).size) + (n_lab - int(components[0].size))
    else:
        n_segments = int(_sorted_unique(seg_of).size) + (n_lab - n_named)

    # -- supervoxel map -------------------------------------------------------------------
    import pyarrow as pa_
    import pyarrow.parquet as pq

    pq.write_table(
        pa_.table({"label": graph.sv_labels, "sv_id": graph.sv_ids}),
        dataset_dir / SUPERVOXEL_MAP_FILE,
        compression="zstd",
    )
    _release_arrow_memory()
    t_end = time.perf_counter()
    seconds = t_end - t_start
    report: dict[str, Any] = {
        "n_chunks": n_chunks,
        "n_labels": int(n_lab),
        "n_supervoxels": n_sv,
        "n_edges": graph.n_edges,
        "n_ties": n_ties,
        "n_source_edges": edges.n_rows,
        "n_listed_pairs": edges.n_pairs,
        "n_duplicate_edge_rows": edges.n_duplicate_rows,
        "n_active_edges": int(graph.active.sum()),
        "n_segments": n_segments,
        "n_voxels": n_voxels,
        "warnings": warnings,
        "warning_counts": counts,
        "timings": {
            "inputs": t_inputs - t_start,
            "chunks": t_chunks - t_inputs,
            **{f"chunk_{s}": float(v) for s, v in zip(_STAGES, stage_t)},
            "graph": t_end - t_chunks,
        },
        "seconds": seconds,
        "supervoxels_per_second": n_sv / seconds if seconds > 0 else float("inf"),
        "voxels_per_second": n_voxels / seconds if seconds > 0 else float("inf"),
    }
    return graph, report
