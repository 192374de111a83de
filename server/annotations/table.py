"""One annotation table in memory: append-only columns, row lifetimes and a supervoxel index.

Rows are never changed except for their ``deleted`` time and ``superceded_id`` (CAVE's CRUD
columns). Row ``i`` has annotation ID ``i + 1``: IDs are assigned in insertion order, so an ID is
its own row index. A row is *alive at T* when ``created <= T < deleted`` (milliseconds).

Every bound point keeps its supervoxel column indexed (:class:`SupervoxelIndex`), so "rows whose
``pre_pt`` lies in these supervoxels" costs ``O(k log n)`` for ``k`` supervoxels, not a scan.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from cavelab.server.annotations.schemas import Schema, get_schema
from cavelab.server.engine.arrays import GrowArray
from cavelab.server.engine.timestamps import FOREVER_MS

PERMISSIONS = ("PRIVATE", "GROUP", "PUBLIC")


@dataclass
class TableMeta:
    """A table's metadata (CAVE's ``annotation_table_metadata`` fields)."""

    table_name: str
    schema_type: str
    description: str
    voxel_resolution: tuple[float, float, float]
    user_id: str
    owner_groups: list[str] = field(default_factory=list)
    read_permission: str = "PUBLIC"
    write_permission: str = "PRIVATE"
    reference_table: str | None = None
    track_target_id_updates: bool = False
    notice_text: str | None = None
    flat_segmentation_source: str | None = None
    created: int = 0  # ms
    deleted: int = FOREVER_MS  # ms; a deleted table keeps its rows (versions may still use them)
    last_modified: int = 0  # ms

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["voxel_resolution"] = list(self.voxel_resolution)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TableMeta:
        d = dict(d)
        d["voxel_resolution"] = tuple(float(v) for v in d["voxel_resolution"])
        return cls(**d)

    def alive_at(self, ts: int) -> bool:
        return self.created <= ts < self.deleted

    def may_read(self, user: str, groups: list[str] | tuple[str, ...]) -> bool:
        return _allowed(self.read_permission, self, user, groups)

    def may_write(self, user: str, groups: list[str] | tuple[str, ...]) -> bool:
        return _allowed(self.write_permission, self, user, groups)


def _allowed(level: str, meta: TableMeta, user: str, groups) -> bool:
    if level == "PUBLIC" or user == meta.user_id:
        return True
    if level == "GROUP":
        return bool(set(groups) & set(meta.owner_groups))
    return False


class SupervoxelIndex:
    """Rows by supervoxel ID: a sorted base plus a short unsorted tail of recent rows."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, dtype=np.uint64)  # sorted supervoxel IDs
        self.rows = np.zeros(0, dtype=np.int64)  # row of each key
        self.indexed = 0  # rows [0, indexed) are in the sorted base

    def rows_for(self, svids: np.ndarray, column: np.ndarray) -> np.ndarray:
        """Rows whose supervoxel (``column``, the full column) is in ``svids`` (sorted, unique)."""
        svids = np.unique(np.asarray(svids, dtype=np.uint64))
        lo = np.searchsorted(self.keys, svids, side="left")
        hi = np.searchsorted(self.keys, svids, side="right")
        lens = hi - lo
        total = int(lens.sum())
        if total:
            offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
            base = self.rows[np.repeat(lo, lens) + offs]
        else:
            base = np.zeros(0, dtype=np.int64)
        tail = column[self.indexed :]
        if tail.size:
            hit = np.flatnonzero(np.isin(tail, svids))
            if hit.size:
                base = np.concatenate([base, hit + self.indexed])
        return base

    def maybe_rebuild(self, column: np.ndarray) -> None:
        """Fold the tail into the sorted base once it is long enough (amortised O(n))."""
        n = column.shape[0]
        tail = n - self.indexed
        if tail == 0 or tail < max(4096, self.indexed // 16):
            return
        new_rows = np.arange(self.indexed, n, dtype=np.int64)
        new_keys = column[self.indexed :]
        order = np.argsort(new_keys, kind="stable")
        keys = np.concatenate([self.keys, new_keys[order]])
        rows = np.concatenate([self.rows, new_rows[order]])
        merge = np.argsort(keys, kind="stable")  # two sorted runs: timsort merges in O(n)
        self.keys, self.rows, self.indexed = keys[merge], rows[merge], n


class AnnotationTable:
    """Columns of one table (see the module docstring)."""

    def __init__(self, meta: TableMeta) -> None:
        self.meta = meta
        self.schema: Schema = get_schema(meta.schema_type)
        self.created = GrowArray(np.zeros(0, dtype=np.int64))
        self.deleted = GrowArray(np.zeros(0, dtype=np.int64))
        self.superceded = GrowArray(np.zeros(0, dtype=np.int64))
        self.columns: dict[str, GrowArray] = {}
        for col in self.schema.columns():
            if col.name.endswith("_root_id"):
                continue  # derived at query time
            self.columns[col.name] = GrowArray(np.zeros((0, 3) if col.dtype == "point" else 0, dtype=_NP[col.dtype]))
        self.sv_index = {pt: SupervoxelIndex() for pt in self.schema.bound_points}

    # ------------------------------------------------------------------ shape
    @property
    def n_rows(self) -> int:
        return len(self.created)

    def sv_column(self, pt: str) -> np.ndarray:
        return self.columns[f"{pt}_supervoxel_id"].a

    # ----------------------------------------------------------------- writes
    def append(self, columns: dict[str, np.ndarray], ts: int) -> np.ndarray:
        """Append rows (full, validated columns incl. supervoxels); returns their new IDs."""
        n = next(iter(columns.values())).shape[0] if columns else 0
        start = self.n_rows
        self.created.append(np.full(n, ts, dtype=np.int64))
        self.deleted.append(np.full(n, FOREVER_MS, dtype=np.int64))
        self.superceded.append(np.zeros(n, dtype=np.int64))
        for name, arr in self.columns.items():
            if name in columns:
                arr.append(columns[name])
            else:  # optional field left out: NaN / None / 0
                arr.append(_missing(arr.a.dtype, n, arr.a.shape[1:]))
        for pt, idx in self.sv_index.items():
            idx.maybe_rebuild(self.sv_column(pt))
        self.meta.last_modified = max(self.meta.last_modified, ts)
        return np.arange(start + 1, start + n + 1, dtype=np.int64)

    def mark_deleted(self, ids: np.ndarray, ts: int, superceded: np.ndarray | None = None) -> None:
        rows = np.asarray(ids, dtype=np.int64) - 1
        self.deleted.a[rows] = ts
        if superceded is not None:
            self.superceded.a[rows] = superceded
        self.meta.last_modified = max(self.meta.last_modified, ts)

    # ------------------------------------------------------------------ reads
    def alive(self, ts: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Boolean mask of rows alive at ``ts`` (all rows, or the given ones)."""
        c, d = self.created.a, self.deleted.a
        if rows is None:
            return (c <= ts) & (d > ts)
        return (c[rows] <= ts) & (d[rows] > ts)

    def current_rows(self, ids: np.ndarray) -> np.ndarray:
        """Which of these IDs exist and are not deleted (now)."""
        ids = np.asarray(ids, dtype=np.int64)
        ok = (ids >= 1) & (ids <= self.n_rows)
        out = np.zeros(ids.size, dtype=bool)
        out[ok] = self.deleted.a[ids[ok] - 1] == FOREVER_MS
        return out

    def rows_in_supervoxels(self, pt: str, svids: np.ndarray) -> np.ndarray:
        return self.sv_index[pt].rows_for(svids, self.sv_column(pt))


_NP = {
    "point": np.float64,
    "uint64": np.uint64,
    "float64": np.float64,
    "int64": np.int64,
    "bool": np.bool_,
    "string": object,
}


def _missing(dtype: np.dtype, n: int, tail: tuple[int, ...]) -> np.ndarray:
    if dtype.kind == "f":
        return np.full((n,) + tail, np.nan, dtype=dtype)
    if dtype.kind == "O":
        return np.full((n,) + tail, None, dtype=object)
    return np.zeros((n,) + tail, dtype=dtype)
