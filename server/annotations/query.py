"""Exact queries of annotation tables at any time: the query description and its execution.

A query at time ``T`` (a timestamp, or a materialized version's timestamp) is evaluated as:

1. candidate rows: when a filter names root IDs (``in``/``equal`` on ``<pt>_root_id``) the
   candidates are the rows indexed under those roots' supervoxels (a root's supervoxels never
   change, and a root that is not current at ``T`` owns no row at ``T``); likewise for supervoxel
   and ``id`` filters. Otherwise every row is a candidate;
2. rows alive at ``T`` (``created <= T < deleted``);
3. ``<pt>_root_id`` = the root of the row's supervoxel at ``T`` (from the graph, or from the
   version's frozen root columns);
4. every filter, vectorized; then joins, ordering by ``id`` (deterministic), offset and limit.

Nothing is truncated silently: a result larger than the row limit is refused with a message
that says how to page through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from cavelab.server.annotations.table import AnnotationTable
from cavelab.server.errors import InputError

OPS = ("in", "notin", "equal", "greater", "less", "greater_equal", "less_equal", "regex", "spatial")


@dataclass(frozen=True)
class Filter:
    """One filter: ``op`` applied to ``table.column`` with ``value``."""

    op: str
    table: str
    column: str
    value: Any


@dataclass
class QuerySpec:
    """A query over one table or a join of several.

    ``joins`` are ``(table_a, column_a, table_b, column_b)`` inner joins; ``select`` maps a
    table to the columns to keep (or is a list for a single table); ``suffixes`` maps a table to
    the suffix its colliding column names get in a join.
    """

    tables: list[str]
    filters: list[Filter] = field(default_factory=list)
    joins: list[tuple[str, str, str, str]] = field(default_factory=list)
    select: dict[str, list[str]] | list[str] | None = None
    suffixes: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    limit: int | None = None
    desired_resolution: tuple[float, float, float] | None = None
    count: bool = False
    split_positions: bool = True


@dataclass
class QueryResult:
    table: pa.Table
    resolution: tuple[float, float, float]
    warnings: list[str] = field(default_factory=list)


RootsAt = Callable[[AnnotationTable, str, np.ndarray], np.ndarray]
"""``(table, point, rows) -> roots`` of those rows' supervoxels at the query's time."""

LeavesOf = Callable[[np.ndarray], np.ndarray]
"""``root IDs -> supervoxel IDs`` of those that are roots at the query's time (others own none)."""


# ---------------------------------------------------------------------- columns
def output_columns(t: AnnotationTable) -> list[str]:
    """Unsplit output column names of a table, in order (``id``, ``created``, ``valid``, schema)."""
    return ["id", "created", "valid"] + [c.name for c in t.schema.columns()]


def _column_kind(t: AnnotationTable, column: str) -> str:
    if column == "id":
        return "int64"
    if column == "created":
        return "time"
    if column == "valid":
        return "bool"
    for c in t.schema.columns():
        if c.name == column:
            return c.dtype
    raise InputError(
        f"table {t.meta.table_name!r} has no column {column!r}; its columns are "
        f"{output_columns(t)}",
        table=t.meta.table_name,
        column=column,
    )


class _Rows:
    """Rows of one table being filtered, with lazily computed derived columns."""

    def __init__(self, t: AnnotationTable, rows: np.ndarray, roots_at: RootsAt) -> None:
        self.t = t
        self.rows = rows
        self._roots_at = roots_at
        self._roots: dict[str, np.ndarray] = {}

    def keep(self, mask: np.ndarray) -> None:
        self.rows = self.rows[mask]
        self._roots = {k: v[mask] for k, v in self._roots.items()}

    def values(self, column: str) -> np.ndarray:
        t, rows = self.t, self.rows
        if column == "id":
            return rows + 1
        if column == "created":
            return t.created.a[rows]
        if column == "valid":
            return np.ones(rows.size, dtype=bool)
        if column.endswith("_root_id"):
            pt = column[: -len("_root_id")]
            if pt not in self._roots:
                self._roots[pt] = self._roots_at(t, pt, rows).astype(np.uint64)
            return self._roots[pt]
        return t.columns[column].a[rows]


def _as_array(values: Any, kind: str, what: str) -> np.ndarray:
    vals = values if isinstance(values, (list, tuple, np.ndarray)) else [values]
    try:
        if kind in ("uint64", "int64"):
            arr = np.array([int(v) for v in vals], dtype=object)
            if any(v < 0 or v >= 2**64 for v in arr):
                raise ValueError
            return arr.astype(np.uint64) if kind == "uint64" else arr.astype(np.int64)
        if kind in ("float64", "time"):
            return np.array([float(v) for v in vals], dtype=np.float64)
        if kind == "bool":
            if not all(isinstance(v, (bool, np.bool_)) for v in vals):
                raise ValueError
            return np.array(vals, dtype=bool)
        if kind == "string":
            if not all(isinstance(v, str) for v in vals):
                raise ValueError
            return np.array(vals, dtype=object)
    except (TypeError, ValueError, OverflowError) as e:
        raise InputError(f"{what}: values must be {kind}, got {values!r}"[:300]) from e
    raise InputError(f"{what}: cannot compare a {kind} column with values")


def _scalar(f: Filter, kind: str) -> Any:
    if isinstance(f.value, (list, tuple, dict)):
        raise InputError(f"filter_{f.op}_dict on {f.table}.{f.column} takes one value, got {f.value!r}"[:300])
    return _as_array([f.value], kind, f"filter_{f.op}_dict on {f.table}.{f.column}")[0]


def _apply_filter(r: _Rows, f: Filter) -> None:
    kind = _column_kind(r.t, f.column)
    what = f"filter on {f.table}.{f.column}"
    if f.op == "spatial":
        if kind != "point":
            raise InputError(f"filter_spatial_dict needs a position column; {f.column!r} is {kind}")
        box = np.asarray(f.value, dtype=np.float64) if _is_box(f.value) else None
        if box is None:
            raise InputError(
                f"filter_spatial_dict on {f.column!r} needs [[xmin, ymin, zmin], [xmax, ymax, zmax]], got {f.value!r}"[:300]
            )
        if np.any(box[0] >= box[1]):
            raise InputError(f"filter_spatial_dict on {f.column!r}: every min must be < max, got {box.tolist()}")
        p = r.values(f.column)
        r.keep(np.all((p >= box[0]) & (p <= box[1]), axis=1))
        return
    if kind == "point":
        raise InputError(f"{what}: position columns only take filter_spatial_dict")
    col = r.values(f.column)
    if f.op == "regex":
        if kind != "string":
            raise InputError(f"filter_regex_dict needs a string column; {f.column!r} is {kind}")
        if not isinstance(f.value, str):
            raise InputError(f"filter_regex_dict on {f.column!r} needs a regex string, got {f.value!r}"[:300])
        try:
            re.compile(f.value)
            mask = pc.match_substring_regex(pa.array(col.tolist(), type=pa.string()), f.value)
        except (re.error, pa.ArrowInvalid) as e:
            raise InputError(f"filter_regex_dict on {f.column!r}: invalid regex {f.value!r}: {e}") from e
        r.keep(np.asarray(mask.fill_null(False)))
        return
    if kind == "time":
        col = col.astype(np.float64) / 1000.0
    if f.op in ("in", "notin"):
        vals = _as_array(f.value, kind, what)
        mask = np.isin(col, vals)
        r.keep(mask if f.op == "in" else ~mask)
        return
    v = _scalar(f, kind)
    if f.op == "equal":
        r.keep(col == v)
    elif kind in ("bool", "string") and f.op != "equal":
        raise InputError(f"filter_{f.op}_dict needs a numeric column; {f.column!r} is {kind}")
    elif f.op == "greater":
        r.keep(col > v)
    elif f.op == "less":
        r.keep(col < v)
    elif f.op == "greater_equal":
        r.keep(col >= v)
    elif f.op == "less_equal":
        r.keep(col <= v)
    else:
        raise InputError(f"unknown filter kind {f.op!r}; use one of {list(OPS)}")


def _is_box(v: Any) -> bool:
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.shape == (2, 3) and bool(np.all(np.isfinite(a)))


def select_rows(
    t: AnnotationTable,
    filters: Sequence[Filter],
    ts: int,
    roots_at: RootsAt,
    leaves_of: LeavesOf,
) -> _Rows:
    """Rows of ``t`` alive at ``ts`` that pass ``filters`` (all naming ``t``), in ID order."""
    cands: np.ndarray | None = None
    rest: list[Filter] = []
    for f in filters:
        _column_kind(t, f.column)  # unknown columns fail before any work
        found = None
        if f.op in ("in", "equal"):
            vals = f.value if f.op == "in" else [f.value]
            if f.column.endswith("_root_id") and f.column[: -len("_root_id")] in t.schema.bound_points:
                pt = f.column[: -len("_root_id")]
                ids = _as_array(vals, "uint64", f"filter on {f.table}.{f.column}")
                found = t.rows_in_supervoxels(pt, leaves_of(ids))
            elif f.column.endswith("_supervoxel_id") and f.column[: -len("_supervoxel_id")] in t.schema.bound_points:
                pt = f.column[: -len("_supervoxel_id")]
                found = t.rows_in_supervoxels(pt, _as_array(vals, "uint64", f"filter on {f.column}"))
            elif f.column == "id":
                ids = _as_array(vals, "int64", "filter on id")
                found = ids[(ids >= 1) & (ids <= t.n_rows)] - 1
        if found is not None:
            found = np.unique(found)
            cands = found if cands is None else np.intersect1d(cands, found, assume_unique=True)
        rest.append(f)  # re-applied: exact on the derived values (e.g. roots at T)
    rows = np.arange(t.n_rows, dtype=np.int64) if cands is None else np.sort(cands)
    rows = rows[t.alive(ts, rows)]
    r = _Rows(t, rows, roots_at)
    for f in rest:
        _apply_filter(r, f)
    return r


# ---------------------------------------------------------------------- output
def frame_of(r: _Rows, scale: np.ndarray, split: bool = True) -> dict[str, np.ndarray]:
    """The output columns of the selected rows (positions scaled by ``scale`` and split)."""
    out: dict[str, np.ndarray] = {}
    for name in output_columns(r.t):
        v = r.values(name)
        if name == "created":
            out[name] = v.astype("datetime64[ms]").astype("datetime64[us]")
        elif name.endswith(("_root_id", "_supervoxel_id")):
            out[name] = v.astype(np.int64)
        elif v.ndim == 2:
            p = v * scale
            if split:
                for k, ax in enumerate("xyz"):
                    out[f"{name}_{ax}"] = p[:, k]
            else:
                out[name] = p
        else:
            out[name] = v
    return out


def to_arrow_table(frame: dict[str, Any]) -> pa.Table:
    cols, names = [], []
    for name, v in frame.items():
        v = np.asarray(v)
        if v.dtype == object:
            cols.append(pa.array(v.tolist(), type=_object_type(v)))
        elif v.ndim == 2:
            cols.append(pa.array(list(v), type=pa.list_(pa.float64(), 3)))
        else:
            cols.append(pa.array(v))
        names.append(name)
    return pa.table(cols, names=names)


def _object_type(v: np.ndarray) -> pa.DataType:
    for x in v:
        if x is not None:
            return pa.int64() if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else pa.string()
    return pa.string()


def join_frames(
    frames: dict[str, pd.DataFrame],
    tables: list[str],
    joins: list[tuple[str, str, str, str]],
    suffixes: dict[str, str],
) -> pd.DataFrame:
    """Inner joins of per-table frames; colliding names get the table's suffix."""
    df = frames[tables[0]]
    joined = {tables[0]}
    names = {tables[0]: {c: c for c in df.columns}}
    for a, ca, b, cb in joins:
        if a not in joined and b in joined:
            a, ca, b, cb = b, cb, a, ca
        if a not in joined or b in joined:
            raise InputError(f"join {[a, ca, b, cb]} must connect one joined table to a new one")
        right = frames[b]
        taken = set(df.columns)
        rename = {}
        for c in right.columns:
            new = c
            if c in taken:
                new = f"{c}{suffixes.get(b, '_' + b)}"
                if new in taken:
                    raise InputError(f"joined column name {new!r} collides; give the tables distinct suffixes")
            rename[c] = new
        right = right.rename(columns=rename)
        names[b] = rename
        left_key = names[a].get(ca)
        df = df.merge(right, left_on=left_key, right_on=rename[cb], how="inner", sort=False)
        joined.add(b)
    return df


def check_join_columns(t: AnnotationTable, column: str) -> None:
    kind = _column_kind(t, column)
    if kind == "point":
        raise InputError(f"cannot join on the position column {column!r}")


def scale_for(t: AnnotationTable, desired: Sequence[float] | None) -> np.ndarray:
    res = np.asarray(t.meta.voxel_resolution, dtype=np.float64)
    if desired is None:
        return np.ones(3)
    d = np.asarray(desired, dtype=np.float64)
    if d.shape != (3,) or np.any(d <= 0) or not np.all(np.isfinite(d)):
        raise InputError(f"desired_resolution must be three positive numbers, got {list(desired)}")
    return res / d


def select_and_page(df: pd.DataFrame, spec: QuerySpec, row_limit: int, order: list[str]) -> pd.DataFrame:
    """Deterministic order, then offset/limit within the row limit."""
    if order:
        df = df.sort_values(order, kind="stable").reset_index(drop=True)
    start, end = page_bounds(len(df), spec, row_limit)
    return df.iloc[start:end].reset_index(drop=True)


def page_bounds(n: int, spec: QuerySpec, row_limit: int) -> tuple[int, int]:
    """``[start, end)`` of the page of ``n`` ordered rows; refuses pages above the row limit."""
    offset = int(spec.offset or 0)
    if offset < 0:
        raise InputError(f"offset must be >= 0, got {offset}")
    limit = spec.limit
    if limit is not None and int(limit) <= 0:
        raise InputError(f"limit must be > 0, got {limit}")
    if limit is not None and int(limit) > row_limit:
        raise InputError(
            f"limit {limit} is above this server's row limit {row_limit}; page with limit <= "
            f"{row_limit} and increasing offset (rows are ordered by id)"
        )
    end = n if limit is None else min(n, offset + int(limit))
    if end - offset > row_limit:
        raise InputError(
            f"the query matches {n - offset} rows, above this server's row limit {row_limit}; "
            f"add filters or page with limit={row_limit} and offset=0, {row_limit}, ... "
            "(rows are ordered by id, so pages are deterministic)",
            rows=n,
            row_limit=row_limit,
        )
    return min(offset, n), max(min(offset, n), end)
