"""``AnnotationEngine``: annotation tables, their history-keeping CRUD, queries and versions.

Every change is a record in an append-only operation log (the same
:class:`~cavelab.server.storage.base.OperationLog` interface the graph uses: SQLite
``annotations.sqlite`` by default, or PostgreSQL): table creation, metadata updates, inserts
(the rows as Arrow IPC, supervoxels included), updates (= delete + new row with
``superceded_id``), deletes (a deletion time) and versions. A change is validated completely,
written durably, then applied in memory, so it is either acknowledged and durable or not
made at all; reopening replays the log.

>>> ann = AnnotationEngine.open(cg, dataset_dir)                       # doctest: +SKIP
>>> ann.create_table("synapses", "synapse", "auto synapses", (4, 4, 40), user="ana")
>>> ids = ann.insert("synapses", records=[{"pre_pt": {"position": [1, 2, 3]}, ...}], user="ana")
>>> ann.query(QuerySpec(["synapses"], [Filter("equal", "synapses", "pre_pt_root_id", root)]),
...           timestamp=None).table.to_pandas()
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from cavelab.server.annotations import codec
from cavelab.server.annotations.query import (
    Filter,
    QueryResult,
    QuerySpec,
    check_join_columns,
    frame_of,
    join_frames,
    output_columns,
    page_bounds,
    scale_for,
    select_and_page,
    select_rows,
    to_arrow_table,
)
from cavelab.server.annotations.schemas import get_schema
from cavelab.server.annotations.table import PERMISSIONS, AnnotationTable, TableMeta
from cavelab.server.annotations.versions import (
    DAY_MS,
    Frozen,
    Version,
    VersionFiles,
    diff,
    empty_frozen,
    patch,
)
from cavelab.server.engine.rwlock import RWLock
from cavelab.server.engine.timestamps import FOREVER_MS, Timestamp, ms_to_seconds, now_ms, to_ms
from cavelab.server.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    OutOfBoundsError,
    PermissionDeniedError,
)
from cavelab.server.storage.base import OperationLog, OperationRecord

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph

log = logging.getLogger(__name__)

TABLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
ANNOTATIONS_LOG = "annotations.sqlite"
VERSIONS_DIR = "versions"
SETTLE_MAX_MS = 50  # a read this close to now waits for the changes stamped before it
META_KEYS = {
    "description", "notice_text", "read_permission", "write_permission", "voxel_resolution_x",
    "voxel_resolution_y", "voxel_resolution_z", "flat_segmentation_source", "user_id",
}


class AnnotationEngine:
    """Annotation tables of one dataset, bound to its :class:`ChunkedGraph`."""

    def __init__(
        self,
        cg: ChunkedGraph,
        oplog: OperationLog,
        versions_dir: Path | None = None,
        *,
        row_limit: int = 1_000_000,
        version_lifetime_days: float = 7.0,
    ) -> None:
        self.cg = cg
        self.oplog = oplog
        self.files = VersionFiles(versions_dir)
        self.row_limit = int(row_limit)
        self.version_lifetime_days = float(version_lifetime_days)
        self.tables: dict[str, AnnotationTable] = {}  # every table ever created (deleted ones too)
        self.versions: dict[int, Version] = {}
        self._rw = RWLock()
        self._commit = threading.RLock()  # re-entrant: create_version commits while holding it
        self._next_op = 1
        self._last_ts = 0

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        cg: ChunkedGraph,
        dataset_dir: str | Path,
        storage_url: str | None = None,
        **kwargs: Any,
    ) -> AnnotationEngine:
        """Open (or start) the annotation store of a dataset and replay its log."""
        d = Path(dataset_dir)
        if storage_url is None or storage_url.startswith("sqlite"):
            from cavelab.server.storage.sqlite import SQLiteOperationLog

            path = d / ANNOTATIONS_LOG
            if storage_url is not None:  # beside the graph's log
                path = Path(storage_url.split("://", 1)[1]).with_name(ANNOTATIONS_LOG)
            oplog: OperationLog = SQLiteOperationLog(path)
        else:
            from cavelab.server.storage.postgres import PostgresOperationLog

            oplog = PostgresOperationLog(storage_url, dataset=f"{d.name}#annotations")
        eng = cls(cg, oplog, d / VERSIONS_DIR, **kwargs)
        eng.replay()
        eng.ensure_first_version()
        return eng

    def replay(self) -> None:
        t0 = time.perf_counter()
        n = 0
        for rec in self.oplog:
            self._apply(rec, codec.decode(rec.delta))
            self._next_op = rec.operation_id + 1
            self._last_ts = max(self._last_ts, rec.ts)
            n += 1
        log.info("annotations: %d operations replayed in %.2fs", n, time.perf_counter() - t0)

    def close(self) -> None:
        self.oplog.close()

    # ------------------------------------------------------------ the commit
    def _commit_record(self, kind: str, user: str, details: dict, columns: dict[str, np.ndarray] | None = None, validate=None) -> OperationRecord:
        """Validate (under the commit lock), write durably, apply. Returns the record."""
        with self._commit:
            if validate is not None:
                validate()
            ts = max(now_ms(), self._last_ts)
            rec = OperationRecord(self._next_op, ts, user, kind, details, codec.encode(columns) if columns else b"")
            self.oplog.append(rec)
            with self._rw.write():
                self._apply(rec, columns or {})
            self._next_op += 1
            self._last_ts = ts
            return rec

    def _apply(self, rec: OperationRecord, columns: dict[str, np.ndarray]) -> None:
        d, ts = rec.details, rec.ts
        if rec.kind == "create_table":
            meta = TableMeta.from_json(d["meta"])
            meta.created = meta.last_modified = ts
            self.tables[meta.table_name] = AnnotationTable(meta)
        elif rec.kind == "update_table":
            meta = self.tables[d["table"]].meta
            for k, v in d["changes"].items():
                setattr(meta, k, tuple(v) if k == "voxel_resolution" else v)
            meta.last_modified = ts
        elif rec.kind == "delete_table":
            self.tables[d["table"]].meta.deleted = ts
        elif rec.kind == "insert":
            self.tables[d["table"]].append(columns, ts)
        elif rec.kind == "update":
            t = self.tables[d["table"]]
            new = t.append(columns, ts)
            t.mark_deleted(np.asarray(d["old_ids"], dtype=np.int64), ts, superceded=new)
        elif rec.kind == "delete":
            self.tables[d["table"]].mark_deleted(np.asarray(d["ids"], dtype=np.int64), ts)
        elif rec.kind == "version":
            v = Version(**d["version"])
            self.versions[v.version] = v
        elif rec.kind == "version_update":
            self.versions[d["version"]].expires_on = d["expires_on"]
        elif rec.kind == "version_remove":
            self.versions.pop(d["version"], None)
            if d.get("next") in self.versions and "next_bytes" in d:  # its delta now holds the removed one's
                self.versions[d["next"]].bytes = d["next_bytes"]
        else:  # pragma: no cover - a newer log format
            raise ConflictError(f"unknown annotation log record kind {rec.kind!r}")

    # ------------------------------------------------------------------ tables
    def _table(self, name: str, *, at: int | None = None) -> AnnotationTable:
        """A table that exists now, or (``at``: a version's time) that was not deleted by ``at``.

        At a version older than the table it reads as empty; a deleted table still answers at the
        versions made while it existed.
        """
        t = self.tables.get(name)
        if t is None or (at is None and t.meta.deleted != FOREVER_MS) or (at is not None and t.meta.deleted <= at):
            raise NotFoundError(
                f"no annotation table {name!r}; tables: {self.table_names()}", table=name
            )
        return t

    def _readable(self, name: str, user: str | None, groups: Sequence[str], at: int | None = None) -> AnnotationTable:
        t = self._table(name, at=at)
        if user is not None and not t.meta.may_read(user, groups):
            raise PermissionDeniedError(
                f"user {user!r} may not read table {name!r} (read permission {t.meta.read_permission}, owner {t.meta.user_id!r})"
            )
        return t

    def _writable(self, name: str, user: str, groups: Sequence[str]) -> AnnotationTable:
        t = self._table(name)
        if not t.meta.may_write(user, groups):
            raise PermissionDeniedError(
                f"user {user!r} may not write to table {name!r} (write permission {t.meta.write_permission}, owner {t.meta.user_id!r})"
            )
        return t

    def table_names(self, at: int | None = None) -> list[str]:
        """Tables that exist now (or at ``at`` ms), sorted."""
        if at is None:
            return sorted(n for n, t in self.tables.items() if t.meta.deleted == FOREVER_MS)
        return sorted(n for n, t in self.tables.items() if t.meta.alive_at(at))

    def table_metadata(self, name: str, user: str | None = None, groups: Sequence[str] = ()) -> dict[str, Any]:
        """CAVE's table metadata document."""
        t = self._readable(name, user, groups)
        return self._metadata_doc(t)

    def _metadata_doc(self, t: AnnotationTable) -> dict[str, Any]:
        from cavelab.server.annotations.versions import iso_naive

        m = t.meta
        rx, ry, rz = m.voxel_resolution
        return {
            "id": sorted(self.tables).index(m.table_name) + 1,
            "table_name": m.table_name,
            "annotation_table": m.table_name,
            "schema": m.schema_type,
            "schema_type": m.schema_type,
            "valid": m.deleted == FOREVER_MS,
            "created": iso_naive(m.created),
            "deleted": None if m.deleted == FOREVER_MS else iso_naive(m.deleted),
            "last_modified": iso_naive(m.last_modified),
            "user_id": m.user_id,
            "description": m.description,
            "notice_text": m.notice_text,
            "reference_table": m.reference_table,
            "track_target_id_updates": m.track_target_id_updates,
            "flat_segmentation_source": m.flat_segmentation_source,
            "voxel_resolution_x": rx,
            "voxel_resolution_y": ry,
            "voxel_resolution_z": rz,
            "read_permission": m.read_permission,
            "write_permission": m.write_permission,
            "segmentation_source": self.cg.meta.name,
            "pcg_table_name": self.cg.meta.name,
            "aligned_volume": self.cg.meta.name,
        }

    def create_table(
        self,
        table_name: str,
        schema_type: str,
        description: str,
        voxel_resolution: Sequence[float],
        *,
        user: str,
        groups: Sequence[str] = (),
        read_permission: str = "PUBLIC",
        write_permission: str = "PRIVATE",
        reference_table: str | None = None,
        track_target_id_updates: bool = False,
        notice_text: str | None = None,
        flat_segmentation_source: str | None = None,
    ) -> dict[str, Any]:
        """Create a table of a schema; returns its metadata.

        >>> ann.create_table("cell_types", "cell_type_local", "types", (4, 4, 40), user="ana")  # doctest: +SKIP
        """
        if not isinstance(table_name, str) or not TABLE_NAME.match(table_name) or len(table_name) > 63:
            raise InputError(
                f"invalid table name {table_name!r}: use lowercase letters, digits and '_', starting "
                "with a letter or '_' (at most 63 characters)", table_name=str(table_name)
            )
        schema = get_schema(schema_type)
        if not isinstance(description, str) or not description.strip():
            raise InputError("a table needs a non-empty description")
        res = _resolution(voxel_resolution)
        for key, val in (("read_permission", read_permission), ("write_permission", write_permission)):
            if val not in PERMISSIONS:
                raise InputError(f"{key} must be one of {list(PERMISSIONS)}, got {val!r}")
        if schema.is_reference:
            if not reference_table:
                raise InputError(f"schema {schema_type!r} is a reference schema: give reference_table")
            self._table(reference_table)
        elif reference_table:
            raise InputError(f"schema {schema_type!r} is not a reference schema; reference_table must be empty")
        meta = TableMeta(
            table_name=table_name, schema_type=schema_type, description=description,
            voxel_resolution=res, user_id=user, owner_groups=list(groups),
            read_permission=read_permission, write_permission=write_permission,
            reference_table=reference_table or None, track_target_id_updates=bool(track_target_id_updates),
            notice_text=notice_text, flat_segmentation_source=flat_segmentation_source,
        )

        def validate() -> None:
            if table_name in self.tables:
                raise ConflictError(f"table {table_name!r} already exists (tables are never re-created under the same name)")

        self._commit_record("create_table", user, {"meta": meta.to_json()}, validate=validate)
        return self.table_metadata(table_name)

    def update_table_metadata(self, table_name: str, changes: Mapping[str, Any], *, user: str, groups: Sequence[str] = ()) -> dict[str, Any]:
        """Change description, notice, permissions or resolution (the owner only)."""
        t = self._table(table_name)
        if user != t.meta.user_id:
            raise PermissionDeniedError(f"only the owner {t.meta.user_id!r} may change table {table_name!r}")
        unknown = set(changes) - META_KEYS
        if unknown:
            raise InputError(f"cannot update {sorted(unknown)}; updatable metadata: {sorted(META_KEYS)}")
        out: dict[str, Any] = {}
        res = list(t.meta.voxel_resolution)
        for k, v in changes.items():
            if k.startswith("voxel_resolution_"):
                res["xyz".index(k[-1])] = v
                out["voxel_resolution"] = list(_resolution(res))
            elif k in ("read_permission", "write_permission"):
                if v not in PERMISSIONS:
                    raise InputError(f"{k} must be one of {list(PERMISSIONS)}, got {v!r}")
                out[k] = v
            elif k == "user_id":
                if not isinstance(v, str) or not v:
                    raise InputError("user_id must be a non-empty string")
                out[k] = v
            else:
                if v is not None and not isinstance(v, str):
                    raise InputError(f"{k} must be a string, got {v!r}")
                out[k] = v
        self._commit_record("update_table", user, {"table": table_name, "changes": out})
        return self.table_metadata(table_name)

    def delete_table(self, table_name: str, *, user: str, groups: Sequence[str] = ()) -> None:
        """Hide a table (its rows stay, so older versions still answer). Owner only."""
        t = self._table(table_name)
        if user != t.meta.user_id:
            raise PermissionDeniedError(f"only the owner {t.meta.user_id!r} may delete table {table_name!r}")
        refs = [n for n in self.table_names() if self.tables[n].meta.reference_table == table_name]
        if refs:
            raise ConflictError(f"table {table_name!r} is referenced by {refs}; delete those first")
        self._commit_record("delete_table", user, {"table": table_name})

    # ------------------------------------------------------------- annotations
    def _supervoxels(self, t: AnnotationTable, columns: dict[str, np.ndarray], row0: int = 0) -> None:
        """Look up each bound point's supervoxel in the segmentation (adds ``*_supervoxel_id``)."""
        meta = self.cg.meta
        scale = np.asarray(t.meta.voxel_resolution, dtype=np.float64) / np.asarray(meta.resolution, dtype=np.float64)
        for pt in t.schema.bound_points:
            pos = columns[f"{pt}_position"]
            vox = np.floor(pos * scale).astype(np.int64)
            lo = np.asarray(meta.voxel_offset)
            hi = lo + np.asarray(meta.size)
            bad = np.any((vox < lo) | (vox >= hi), axis=1)
            if np.any(bad):
                i = int(np.argmax(bad))
                raise OutOfBoundsError(
                    f"row {row0 + i}: {pt}.position {pos[i].tolist()} (at {list(t.meta.voxel_resolution)} nm/voxel) "
                    f"is outside the volume [{(lo / scale).tolist()}, {(hi / scale).tolist()})",
                    field=pt, row=row0 + i,
                )
            columns[f"{pt}_supervoxel_id"] = self.cg.segmentation.supervoxels_at(vox)

    def _check_targets(self, t: AnnotationTable, columns: dict[str, np.ndarray]) -> None:
        if not t.schema.is_reference:
            return
        target = self._table(t.meta.reference_table)
        ids = np.asarray(columns["target_id"], dtype=np.int64)
        ok = target.current_rows(ids)
        if not np.all(ok):
            missing = np.unique(ids[~ok])[:10].tolist()
            raise InputError(
                f"target_id {missing} do not exist (or are deleted) in the target table {target.meta.table_name!r}",
                field="target_id", missing=missing,
            )

    def _prepare(self, t: AnnotationTable, records, frame, user: str) -> dict[str, np.ndarray]:
        if (records is None) == (frame is None):
            raise InputError("give either annotation records or a column frame")
        if records is not None:
            if not isinstance(records, (list, tuple)) or not records:
                raise InputError("annotations must be a non-empty list of objects")
            cols = t.schema.records_to_columns(records, user=user)
        else:
            cols = t.schema.frame_to_columns(frame, user=user)
        n = {len(v) for v in cols.values()}
        if not cols or n == {0}:
            raise InputError("no annotations given")
        self._supervoxels(t, cols)
        return cols

    def insert(self, table_name: str, records: Sequence[Mapping[str, Any]] | None = None, frame: Any = None, *, user: str, groups: Sequence[str] = ()) -> np.ndarray:
        """Insert annotations (records as caveclient posts them, or a DataFrame/Arrow table); returns new IDs.

        The supervoxel of each bound point is looked up in the segmentation. Either every row is
        inserted or none.
        """
        t = self._writable(table_name, user, groups)
        cols = self._prepare(t, records, frame, user)
        n = len(next(iter(cols.values())))
        details: dict[str, Any] = {"table": table_name, "n": n}

        def validate() -> None:
            self._check_targets(t, cols)
            details["first_id"] = t.n_rows + 1

        self._commit_record("insert", user, details, cols, validate=validate)
        first = details["first_id"]
        return np.arange(first, first + n, dtype=np.int64)

    def update(self, table_name: str, records: Sequence[Mapping[str, Any]], *, user: str, groups: Sequence[str] = ()) -> dict[int, int]:
        """Update annotations: each old row is deleted and a new row (new ID) replaces it.

        Each record needs its ``id`` and the complete new annotation. Returns ``{old: new}``.
        """
        t = self._writable(table_name, user, groups)
        if not isinstance(records, (list, tuple)) or not records:
            raise InputError("annotations must be a non-empty list of objects")
        old = []
        for i, r in enumerate(records):
            if not isinstance(r, Mapping) or "id" not in r:
                raise InputError(f"row {i}: an update needs the annotation's 'id'", row=i)
            try:
                old.append(int(r["id"]))
            except (TypeError, ValueError) as e:
                raise InputError(f"row {i}: 'id' must be an integer, got {r['id']!r}", row=i) from e
        old_ids = np.asarray(old, dtype=np.int64)
        if np.unique(old_ids).size != old_ids.size:
            raise InputError("an update names the same id twice")
        cols = self._prepare(t, [{k: v for k, v in r.items() if k != "id"} for r in records], None, user)

        details: dict[str, Any] = {"table": table_name, "old_ids": old}

        def validate() -> None:
            details["first_id"] = t.n_rows + 1
            ok = t.current_rows(old_ids)
            if not np.all(ok):
                bad = old_ids[~ok][:10].tolist()
                raise NotFoundError(
                    f"annotations {bad} of table {table_name!r} do not exist or were already deleted/superseded",
                    ids=bad,
                )
            self._check_targets(t, cols)

        self._commit_record("update", user, details, cols, validate=validate)
        first = details["first_id"]
        return {o: first + k for k, o in enumerate(old)}

    def delete(self, table_name: str, ids: Sequence[int], *, user: str, groups: Sequence[str] = ()) -> list[int]:
        """Delete annotations (virtually: they get a deletion time). Returns the deleted IDs."""
        t = self._writable(table_name, user, groups)
        try:
            arr = np.asarray([int(i) for i in ids], dtype=np.int64)
        except (TypeError, ValueError) as e:
            raise InputError(f"annotation_ids must be integers, got {ids!r}"[:300]) from e
        if arr.size == 0:
            raise InputError("annotation_ids is empty")
        arr = np.unique(arr)

        def validate() -> None:
            ok = t.current_rows(arr)
            if not np.all(ok):
                bad = arr[~ok][:10].tolist()
                raise NotFoundError(f"annotations {bad} of table {table_name!r} do not exist or are already deleted", ids=bad)

        self._commit_record("delete", user, {"table": table_name, "ids": arr.tolist()}, validate=validate)
        return arr.tolist()

    def get_annotations(self, table_name: str, ids: Sequence[int], *, user: str | None = None, groups: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Annotations by ID in CAVE's nested form (deleted ones included, with their CRUD fields)."""
        from cavelab.server.annotations.versions import iso_naive

        t = self._readable(table_name, user, groups)
        arr = np.asarray([int(i) for i in ids], dtype=np.int64)
        missing = arr[(arr < 1) | (arr > t.n_rows)]
        if missing.size:
            raise NotFoundError(f"no annotations {missing[:10].tolist()} in table {table_name!r}")
        rows = arr - 1
        now = self._now()
        roots = {pt: self.cg.get_roots(t.sv_column(pt)[rows], ms_to_seconds(now)) for pt in t.schema.bound_points}
        out = []
        for k, r in enumerate(rows):
            d: dict[str, Any] = {
                "id": int(r + 1),
                "created": iso_naive(int(t.created.a[r])),
                "deleted": None if t.deleted.a[r] == FOREVER_MS else iso_naive(int(t.deleted.a[r])),
                "superceded_id": int(t.superceded.a[r]) or None,
                "valid": bool(t.deleted.a[r] == FOREVER_MS),
            }
            for f in t.schema.fields:
                if f.kind in ("bound_point", "spatial_point"):
                    p = {"position": t.columns[f"{f.name}_position"].a[r].tolist()}
                    if f.kind == "bound_point":
                        p["supervoxel_id"] = int(t.sv_column(f.name)[r])
                        p["root_id"] = int(roots[f.name][k])
                    d[f.name] = p
                else:
                    v = t.columns[f.name].a[r]
                    d[f.name] = v.item() if isinstance(v, np.generic) else v
            out.append(d)
        return out

    def count(self, table_name: str, timestamp: Timestamp = None, *, version: int | None = None, user: str | None = None, groups: Sequence[str] = ()) -> int:
        ts = self._version(version).time_stamp if version is not None else self._ts(timestamp)
        t = self._readable(table_name, user, groups, at=None if version is None else ts)
        if version is None and timestamp is not None:
            self._settle(ts)
        with self._rw.read():
            return int(t.alive(ts).sum())

    # ------------------------------------------------------------------ queries
    def _settle(self, ts: int) -> None:
        """Make a read at ``ts`` final: every change with a timestamp ``<= ts`` is applied, none can follow.

        Annotation commits and graph edits take their timestamp *before* they are written
        durably and applied, so without this a read at a timestamp that was "now" a moment ago
        could miss a change stamped ``<= ts`` that is still being written, and the same read
        repeated later would answer differently. Waits (at most ~``SETTLE_MAX_MS``) until the
        clock has passed ``ts`` (later changes get later timestamps), then for the commits in
        flight.
        """
        ahead = ts - now_ms()
        if ahead > SETTLE_MAX_MS:
            return  # far in the future: such a read cannot be final
        while now_ms() <= ts:
            time.sleep(0.0002)
        if ts >= self._last_ts:  # an annotation commit stamped <= ts may be in flight
            with self._commit:
                pass
        if ts > self.cg.state.last_ts:  # likewise a graph edit (it holds its commit lock until applied)
            self.cg.wait_for_commit()

    def _now(self) -> int:
        return max(now_ms(), self._last_ts, self.cg.state.last_ts)

    def _ts(self, timestamp: Timestamp) -> int:
        if timestamp is None:
            return self._now()
        ts = to_ms(timestamp)
        if ts < self.cg.meta.created_ms:
            raise InputError(
                f"timestamp {ms_to_seconds(ts)} is before this dataset existed "
                f"(oldest {ms_to_seconds(self.cg.meta.created_ms)})"
            )
        return ts

    def query(
        self,
        spec: QuerySpec,
        timestamp: Timestamp = None,
        *,
        version: int | None = None,
        user: str | None = None,
        groups: Sequence[str] = (),
        strict_roots: bool = False,
        row_limit: int | None = None,
    ) -> QueryResult:
        """Run a query at a timestamp (default now) or at a materialized version.

        ``strict_roots`` (the live query's rule) refuses root IDs that are not current at the
        query time instead of matching nothing. ``row_limit`` overrides the engine's limit
        (exports write files, so they take no cap).
        """
        if version is not None:
            ver = self._version(version)
            ts = ver.time_stamp
        else:
            ver, ts = None, self._ts(timestamp)
        if not spec.tables:
            raise InputError("a query needs a table")
        limit_rows = self.row_limit if row_limit is None else int(row_limit)
        tabs = {}
        for name in spec.tables:
            tabs[name] = self._readable(name, user, groups, at=None if ver is None else ts)
        for f in spec.filters:
            if f.table not in tabs:
                raise InputError(f"a filter names table {f.table!r}, which is not in this query {list(tabs)}")
        for a, ca, b, cb in spec.joins:
            for tn, c in ((a, ca), (b, cb)):
                if tn not in tabs:
                    raise InputError(f"a join names table {tn!r}, which is not in this query {list(tabs)}")
                check_join_columns(tabs[tn], c)
        if len(tabs) > 1 and len(spec.joins) != len(tabs) - 1:
            raise InputError(f"{len(tabs)} tables need {len(tabs) - 1} joins, got {len(spec.joins)}")
        if strict_roots:
            self._check_roots_current(spec.filters, ts)
        if ver is None and timestamp is not None:
            self._settle(ts)

        def roots_at(t: AnnotationTable, pt: str, rows: np.ndarray) -> np.ndarray:
            if ver is not None:
                return self._frozen(ver.version, t).lookup(pt, rows + 1)
            return self.cg.get_roots(t.sv_column(pt)[rows], ms_to_seconds(ts))

        def leaves_of(roots: np.ndarray) -> np.ndarray:
            roots = np.unique(roots)
            zero = roots[roots == 0]  # root 0 = a point on background, whose supervoxel is 0
            roots = roots[roots != 0]
            if not roots.size:
                return zero
            cur = roots[self.cg.is_latest_roots(roots, ms_to_seconds(ts))]
            parts = [zero] + [self.cg.get_leaves(int(r)) for r in cur]
            return np.concatenate(parts).astype(np.uint64)

        main = tabs[spec.tables[0]]
        res = tuple(spec.desired_resolution) if spec.desired_resolution is not None else main.meta.voxel_resolution
        res = tuple(float(x) for x in res)
        if len(tabs) == 1:  # rows come out in id order: page before building any column
            with self._rw.read():
                r = select_rows(main, spec.filters, ts, roots_at, leaves_of)
                if spec.count:
                    return QueryResult(to_arrow_table({"count": np.array([r.rows.size], dtype=np.int64)}), res)
                start, end = page_bounds(r.rows.size, spec, limit_rows)
                r.keep(np.arange(r.rows.size)[start:end])
                frame = frame_of(r, scale_for(main, spec.desired_resolution))
            return QueryResult(to_arrow_table(_select_frame(frame, spec, tabs)), res, _notices(tabs))
        frames: dict[str, pd.DataFrame] = {}
        for name, t in tabs.items():
            with self._rw.read():
                r = select_rows(t, [f for f in spec.filters if f.table == name], ts, roots_at, leaves_of)
                frame = frame_of(r, scale_for(t, spec.desired_resolution))
            frames[name] = pd.DataFrame(frame)
        df = join_frames(frames, spec.tables, spec.joins, spec.suffixes)
        order = [c for c in df.columns if c == "id" or any(c == f"id{s}" for s in spec.suffixes.values())]
        order = order or [df.columns[0]]
        if spec.count:
            return QueryResult(to_arrow_table({"count": np.array([len(df)], dtype=np.int64)}), res)
        df = select_and_page(df, spec, limit_rows, order)
        frame = _select_frame({c: df[c].to_numpy() for c in df.columns}, spec, tabs)
        return QueryResult(to_arrow_table(frame), res, _notices(tabs))

    def _check_roots_current(self, filters: Sequence[Filter], ts: int) -> None:
        for f in filters:
            if f.column.endswith("_root_id") and f.op in ("in", "equal", "notin"):
                vals = f.value if isinstance(f.value, (list, tuple)) else [f.value]
                try:
                    ids = np.asarray([int(v) for v in vals], dtype=np.uint64)
                except (TypeError, ValueError, OverflowError) as e:
                    raise InputError(f"filter on {f.column}: root IDs must be integers, got {f.value!r}"[:300]) from e
                ids = ids[ids != 0]
                if ids.size:
                    ok = self.cg.is_latest_roots(ids, ms_to_seconds(ts))
                    if not np.all(ok):
                        bad = ids[~ok][:10].tolist()
                        raise InputError(
                            f"root IDs {bad} in the filter on {f.column} are not current at "
                            f"{ms_to_seconds(ts)}; pass allow_invalid_root_ids=True to query anyway, or map "
                            "them with get_latest_roots", root_ids=bad,
                        )

    # ----------------------------------------------------------------- versions
    def _version(self, version: int) -> Version:
        v = self.versions.get(int(version))
        if v is None:
            raise NotFoundError(f"no materialized version {version}; versions: {sorted(self.versions)}")
        if v.expired():
            raise NotFoundError(f"version {version} has expired; versions: {self.version_numbers()}")
        return v

    def version_numbers(self, expired: bool = False) -> list[int]:
        return sorted(n for n, v in self.versions.items() if expired or not v.expired())

    def ensure_first_version(self) -> None:
        """Version 1 is the dataset at ingest time (caveclient needs at least one version)."""
        if not self.versions:
            self.create_version(timestamp=ms_to_seconds(self.cg.meta.created_ms), keep_forever=True, user="cavelab")

    def create_version(
        self,
        timestamp: Timestamp = None,
        *,
        lifetime_days: float | None = None,
        keep_forever: bool = False,
        user: str = "cavelab",
    ) -> Version:
        """Freeze every table's root IDs at ``timestamp`` (default now) as a new version.

        Only rows that changed since the previous version are written. Returns the version.
        """
        ts = None if timestamp is None else self._ts(timestamp)
        if ts is not None and ts > self._now():
            raise InputError(
                f"a version cannot be in the future ({ms_to_seconds(ts)} > now {ms_to_seconds(self._now())}): "
                "rows added before that time would be missing from it"
            )
        with self._commit:  # one version at a time, from choosing its time and number to its log record
            if ts is None:
                ts = self._now()
            self._settle(ts)  # the frozen state is final: nothing stamped <= ts can still arrive
            prev = max(self.versions) if self.versions else None
            if prev is not None and ts < self.versions[prev].time_stamp:
                raise InputError("a new version cannot be older than the newest version")
            number = (max(self.versions) + 1) if self.versions else 1
            total = 0
            frozen_now: dict[str, Frozen] = {}
            for name in self.table_names(at=ts):
                t = self.tables[name]
                if prev is not None:
                    base = self._frozen(prev, t)
                    cur = self._freeze_from(t, ts, base, self.versions[prev].time_stamp)
                else:
                    base = empty_frozen(t.schema.bound_points)
                    cur = self._freeze(t, ts)
                total += self.files.write(number, name, diff(base, cur))
                frozen_now[name] = cur
            days = self.version_lifetime_days if lifetime_days is None else float(lifetime_days)
            v = Version(
                version=number, time_stamp=ts, created=now_ms(), bytes=total,
                expires_on=None if keep_forever else now_ms() + int(days * DAY_MS),
            )
            self._commit_record("version", user, {"version": v.to_json()})
        for name, fr in frozen_now.items():
            self.files.remember(number, name, fr)
        log.info("annotations: version %d at %s, %d bytes", number, ms_to_seconds(ts), total)
        return v

    def _freeze(self, t: AnnotationTable, ts: int) -> Frozen:
        with self._rw.read():
            rows = np.flatnonzero(t.alive(ts))
            roots = {pt: self.cg.get_roots(t.sv_column(pt)[rows], ms_to_seconds(ts)) for pt in t.schema.bound_points}
        return Frozen(rows + 1, roots)

    def _freeze_from(self, t: AnnotationTable, ts: int, base: Frozen, base_ts: int) -> Frozen:
        """:meth:`_freeze` starting from the frozen state at ``base_ts``: roots are looked up again
        only for new rows and rows under a root that stopped being current since ``base_ts``."""
        expired, _ = self.cg.history().delta_roots(ms_to_seconds(base_ts), ms_to_seconds(ts))
        with self._rw.read():
            ids = np.flatnonzero(t.alive(ts)) + 1
            same_rows = ids.size == base.ids.size and np.array_equal(ids, base.ids)
            if same_rows:
                roots = {pt: base.roots[pt].copy() for pt in t.schema.bound_points}
                need = np.zeros(ids.size, dtype=bool)
            else:
                i = np.minimum(np.searchsorted(base.ids, ids), max(base.ids.size - 1, 0))
                known = (base.ids[i] == ids) if base.ids.size else np.zeros(ids.size, dtype=bool)
                roots = {}
                for pt in t.schema.bound_points:
                    r = np.zeros(ids.size, dtype=np.uint64)
                    if base.ids.size:
                        r[known] = base.roots[pt][i[known]]
                    roots[pt] = r
                need = ~known
            if expired.size:
                svs = np.concatenate([self.cg.get_leaves(int(r)) for r in expired])
                for pt in t.schema.bound_points:
                    hit = t.rows_in_supervoxels(pt, svs) + 1
                    pos = np.minimum(np.searchsorted(ids, hit), max(ids.size - 1, 0))
                    if ids.size:
                        need[pos[ids[pos] == hit]] = True
            rows = ids[need] - 1
            for pt in t.schema.bound_points:
                roots[pt][need] = self.cg.get_roots(t.sv_column(pt)[rows], ms_to_seconds(ts))
        return Frozen(ids, roots)

    def _frozen(self, version: int, t: AnnotationTable) -> Frozen:
        """The full frozen columns of a table at a version (rebuilt from the delta chain)."""
        name = t.meta.table_name
        hit = self.files.cache.get((version, name))
        if hit is not None:
            return hit
        chain = [n for n in sorted(self.versions) if n <= version]
        fr = empty_frozen(t.schema.bound_points)
        for n in chain:
            if (n, name) in self.files.cache:
                fr = self.files.cache[(n, name)]
                continue
            delta = self.files.read(n, name)
            if delta is not None:
                fr = patch(fr, delta, t.schema.bound_points)
        self.files.remember(version, name, fr)
        return fr

    def keep_version(self, version: int, lifetime_days: float | None = None, *, user: str = "cavelab") -> Version:
        """Keep a version forever (``lifetime_days=None``, e.g. for a publication) or extend it."""
        v = self._version(version)
        expires = None if lifetime_days is None else now_ms() + int(float(lifetime_days) * DAY_MS)
        self._commit_record("version_update", user, {"version": v.version, "expires_on": expires})
        return self.versions[v.version]

    def remove_expired_versions(self, *, user: str = "cavelab") -> list[int]:
        """Drop expired versions (never the newest); their deltas are folded into the next one."""
        removed = []
        for n in sorted(self.versions):
            v = self.versions[n]
            if not v.expired() or n == max(self.versions):
                continue
            later = [m for m in sorted(self.versions) if m > n]
            nxt = later[0]
            with self._commit:
                prev = [m for m in sorted(self.versions) if m < n]
                size = 0
                for name, t in self.tables.items():
                    full_next = self._frozen(nxt, t)
                    base = self._frozen(prev[-1], t) if prev else empty_frozen(t.schema.bound_points)
                    size += self.files.write(nxt, name, diff(base, full_next))
                self._commit_record("version_remove", user, {"version": n, "next": nxt, "next_bytes": size})
            self.files.remove(n)
            removed.append(n)
        return removed

    def export_version_table(self, version: int, table_name: str, path: str | Path, page_rows: int = 1_000_000) -> Path:
        """Write one table at one version as a self-contained Parquet file (for publication).

        Written page by page (``page_rows`` rows per row group, in ID order), so a table of any
        size is exported without the query row limit and without holding it all in memory.
        """
        import pyarrow.parquet as pq

        path = Path(path)
        tmp = path.with_name(path.name + ".partial")
        writer = None
        offset = 0
        try:
            while True:
                spec = QuerySpec([table_name], offset=offset, limit=page_rows)
                page = self.query(spec, version=version, row_limit=page_rows).table
                if writer is None:
                    writer = pq.ParquetWriter(tmp, page.schema, compression="zstd")
                if page.num_rows:
                    writer.write_table(page)
                offset += page.num_rows
                if page.num_rows < page_rows:
                    break
        finally:
            if writer is not None:
                writer.close()
        tmp.replace(path)
        return path


# -------------------------------------------------------------------- helpers
def _resolution(values: Sequence[float]) -> tuple[float, float, float]:
    try:
        res = tuple(float(v) for v in values)
    except (TypeError, ValueError) as e:
        raise InputError(f"voxel_resolution must be three positive numbers, got {values!r}") from e
    if len(res) != 3 or not all(np.isfinite(res)) or min(res) <= 0:
        raise InputError(f"voxel_resolution must be three positive numbers, got {list(values)!r}")
    return res  # type: ignore[return-value]


def _notices(tabs: dict[str, AnnotationTable]) -> list[str]:
    """The tables' notice texts (sent as ``Warning`` headers, which caveclient logs)."""
    return [f"{n}: {t.meta.notice_text}" for n, t in tabs.items() if t.meta.notice_text]


def _select_frame(frame: dict[str, np.ndarray], spec: QuerySpec, tabs: dict[str, AnnotationTable]) -> dict[str, np.ndarray]:
    """Keep the selected columns (a position name selects its split ``_x/_y/_z`` columns)."""
    sel = spec.select
    if not sel:
        return frame
    if isinstance(sel, dict):
        wanted = [c for name in spec.tables for c in sel.get(name, [])] if len(tabs) > 1 else sel.get(spec.tables[0], [])
        if len(tabs) > 1 and not wanted:
            return frame
    else:
        wanted = list(sel)
    keep: list[str] = []
    for c in wanted:
        cols = [c] if c in frame else [f"{c}_{ax}" for ax in "xyz" if f"{c}_{ax}" in frame]
        if not cols:
            known = sorted({x for t in tabs.values() for x in output_columns(t)})
            raise InputError(f"select_columns names unknown column {c!r}; columns: {known}")
        keep += [x for x in cols if x not in keep]
    return {c: frame[c] for c in keep}
