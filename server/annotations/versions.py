"""Materialized versions: frozen root IDs of every table at a timestamp, stored as deltas.

Rows are append-only, so *which* rows a version holds (alive at its timestamp) and their
positions never need copying. What a version freezes is each row's root IDs at its timestamp.
Version ``N`` stores, per table, one Parquet file with only the rows that differ from the
previous version (new rows, rows whose roots changed, and rows that left, ``present=False``):
``<dataset>/versions/v<N>/<table>.parquet``. The full frozen columns of a version are rebuilt
from the chain and cached in memory (the newest few versions).

:func:`export_version_table` writes a complete, self-contained Parquet table of one version
(positions, supervoxels, roots) for publication.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cavelab.server.engine.timestamps import now_ms

DAY_MS = 86_400_000


@dataclass
class Version:
    """One materialized version (CAVE's ``analysisversion`` row)."""

    version: int
    time_stamp: int  # ms
    expires_on: int | None  # ms; None = kept forever
    created: int  # ms
    status: str = "AVAILABLE"
    bytes: int = 0  # on-disk size of this version's delta files

    def to_json(self) -> dict:
        return asdict(self)

    def expired(self, at: int | None = None) -> bool:
        return self.expires_on is not None and self.expires_on <= (now_ms() if at is None else at)

    def wire(self, datastack: str) -> dict:
        """The document caveclient reads (``time_stamp`` naive ISO with microseconds)."""
        return {
            "id": self.version,
            "datastack": datastack,
            "version": self.version,
            "time_stamp": iso_naive(self.time_stamp),
            "valid": True,
            "expires_on": None if self.expires_on is None else iso_naive(self.expires_on),
            "parent_version": None,
            "status": "EXPIRED" if self.expired() else self.status,
            "is_merged": True,
        }


def iso_naive(ms: int) -> str:
    """``2024-06-05T10:10:01.203000``: UTC, no zone suffix, always with microseconds."""
    d = dt.datetime.fromtimestamp(ms / 1000.0, tz=dt.timezone.utc).replace(tzinfo=None)
    return d.strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass
class Frozen:
    """The frozen rows of one table at one version: sorted IDs and their roots per bound point."""

    ids: np.ndarray
    roots: dict[str, np.ndarray]

    def lookup(self, pt: str, ids: np.ndarray) -> np.ndarray:
        """Roots of these IDs at the version (0 for IDs not in the version)."""
        i = np.searchsorted(self.ids, ids)
        i = np.minimum(i, max(self.ids.size - 1, 0))
        ok = (self.ids.size > 0) & (self.ids[i] == ids) if self.ids.size else np.zeros(ids.size, bool)
        out = np.zeros(ids.size, dtype=np.uint64)
        if self.ids.size:
            out[ok] = self.roots[pt][i[ok]]
        return out


def empty_frozen(points: tuple[str, ...]) -> Frozen:
    return Frozen(np.zeros(0, dtype=np.int64), {p: np.zeros(0, dtype=np.uint64) for p in points})


def diff(prev: Frozen, cur: Frozen) -> pa.Table:
    """Rows of ``cur`` that are new or changed against ``prev``, plus ``present=False`` rows that left."""
    pts = list(cur.roots)
    i = np.searchsorted(prev.ids, cur.ids)
    i = np.minimum(i, max(prev.ids.size - 1, 0))
    same = (prev.ids[i] == cur.ids) if prev.ids.size else np.zeros(cur.ids.size, bool)
    for p in pts:
        if prev.ids.size:
            same &= prev.roots[p][i] == cur.roots[p]
    gone = prev.ids[~np.isin(prev.ids, cur.ids, assume_unique=True)]
    ids = np.concatenate([cur.ids[~same], gone])
    cols = {"id": ids, "present": np.r_[np.ones((~same).sum(), bool), np.zeros(gone.size, bool)]}
    for p in pts:
        cols[f"{p}_root_id"] = np.concatenate([cur.roots[p][~same], np.zeros(gone.size, np.uint64)])
    return pa.table(cols)


def patch(prev: Frozen, delta: pa.Table, points: tuple[str, ...]) -> Frozen:
    ids = delta.column("id").to_numpy()
    present = delta.column("present").to_numpy(zero_copy_only=False)
    keep = ~np.isin(prev.ids, ids)
    new_ids = np.concatenate([prev.ids[keep], ids[present]])
    order = np.argsort(new_ids, kind="stable")
    roots = {}
    for p in points:
        col = delta.column(f"{p}_root_id").to_numpy() if f"{p}_root_id" in delta.column_names else np.zeros(ids.size, np.uint64)
        roots[p] = np.concatenate([prev.roots[p][keep], col[present]])[order]
    return Frozen(new_ids[order].astype(np.int64), roots)


class VersionFiles:
    """The on-disk delta files of versions and a small cache of rebuilt frozen tables."""

    def __init__(self, root: Path | None, cache_size: int = 3) -> None:
        self.root = root
        self.cache: OrderedDict[tuple[int, str], Frozen] = OrderedDict()
        self.cache_size = cache_size
        self.memory: dict[tuple[int, str], pa.Table] = {}  # when there is no directory (tests)

    def path(self, version: int, table: str) -> Path:
        assert self.root is not None
        return self.root / f"v{version}" / f"{table}.parquet"

    def write(self, version: int, table: str, delta: pa.Table) -> int:
        """Write one delta durably; returns its size in bytes."""
        if self.root is None:
            self.memory[(version, table)] = delta
            return int(delta.nbytes)
        p = self.path(version, table)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_suffix(".tmp")
        pq.write_table(delta, tmp, compression="zstd")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        tmp.replace(p)
        return p.stat().st_size

    def read(self, version: int, table: str) -> pa.Table | None:
        if self.root is None:
            return self.memory.get((version, table))
        p = self.path(version, table)
        return pq.read_table(p) if p.exists() else None

    def remove(self, version: int) -> None:
        self.cache = OrderedDict((k, v) for k, v in self.cache.items() if k[0] != version)
        if self.root is None:
            self.memory = {k: v for k, v in self.memory.items() if k[0] != version}
            return
        shutil.rmtree(self.root / f"v{version}", ignore_errors=True)

    def remember(self, version: int, table: str, frozen: Frozen) -> None:
        self.cache[(version, table)] = frozen
        self.cache.move_to_end((version, table))
        while len(self.cache) > self.cache_size * 4:
            self.cache.popitem(last=False)
