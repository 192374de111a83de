"""Engine-level tests of the annotation engine (tables, CRUD, queries, versions, durability).

Truth is independent of the annotation engine: the tests keep their own model of every row
(positions they chose, the supervoxel under each point read straight from
``segmentation.zarr``, creation/deletion times from the engine's ``get_annotations`` records),
and the cell of a supervoxel at time T is its connected component in a networkx model of the
active supervoxel edges at T (the dataset files ``graph/*.npy`` plus the tests' own merges and
splits, :class:`api.cave_truth.Ledger`). A root ID seen as the root of supervoxel ``s`` at time
``t0`` is current at T exactly when the cell of ``s`` is the same in every state between
``t0`` and T; a root filter therefore matches the rows in those cells, nothing else. Each query
answer must equal the brute-force answer: rows alive at T, filtered, ordered by id, paged; its
root columns must group rows exactly like the components at T; its supervoxel and position
columns must equal the model's.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import zarr
from api.cave_truth import GraphTruth, Ledger, iso_ms

from cavelab.server.annotations.engine import AnnotationEngine
from cavelab.server.annotations.query import Filter, QuerySpec
from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    OutOfBoundsError,
    PermissionDeniedError,
    PreconditionError,
)

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
OWNER = "ana"
SYN_RES = (8.0, 8.0, 40.0)  # = the dataset's resolution: a position is a voxel coordinate
CELL_RES = (4.0, 4.0, 40.0)  # half the voxel size in x/y: positions are scaled on the way in
Pred = Callable[["Row"], bool]


# ------------------------------------------------------------------------------ dataset
@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One dataset built the real way (generate -> ingest); never opened by these tests."""
    from cavelab.server.ingest.pipeline import ingest
    from cavelab.server.synth import generate

    root = tmp_path_factory.mktemp("ann_engine")
    generate(root / "src", preset="tiny", seed=7, progress=False)
    ingest(root / "src", root / "ds", progress=False, workers=1)
    return root / "ds"


@pytest.fixture(scope="module")
def volume(base: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(base / "segmentation.zarr"), mode="r")[:])


@pytest.fixture(scope="module")
def fg(volume: np.ndarray) -> np.ndarray:
    return np.argwhere(volume > 0)


@pytest.fixture(scope="module")
def bg(volume: np.ndarray) -> np.ndarray:
    return np.argwhere(volume == 0)


def fresh(base: Path, tmp_path: Path, name: str = "ds", **kw: Any) -> tuple[Path, ChunkedGraph, AnnotationEngine]:
    d = tmp_path / name
    shutil.copytree(base, d)
    cg = ChunkedGraph.open(d)
    return d, cg, AnnotationEngine.open(cg, d, **kw)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def rec_ms(text: str | None) -> int | None:
    return None if text is None else iso_ms(text + "+00:00")


# -------------------------------------------------------------------------------- model
@dataclass
class Row:
    id: int
    pos: dict[str, np.ndarray]  # point field -> position as given (table units)
    svs: dict[str, int]  # bound point -> supervoxel read from the zarr volume
    vals: dict[str, Any]  # scalar fields
    created: int
    deleted: int | None = None
    superceded: int | None = None

    def alive(self, t: int) -> bool:
        return self.created <= t and (self.deleted is None or t < self.deleted)


@dataclass
class TableModel:
    name: str
    res: np.ndarray
    bound: tuple[str, ...]
    spatial: tuple[str, ...]
    rows: dict[int, Row] = field(default_factory=dict)


class Model:
    """The tests' own record of every annotation row."""

    def __init__(self, volume: np.ndarray, base_res: tuple[float, float, float]) -> None:
        self.volume = volume
        self.base_res = np.asarray(base_res, dtype=float)
        self.tables: dict[str, TableModel] = {}

    def table(self, name: str, res, bound=(), spatial=()) -> TableModel:
        self.tables[name] = TableModel(name, np.asarray(res, dtype=float), tuple(bound), tuple(spatial))
        return self.tables[name]

    def sv(self, table: str, pos: np.ndarray) -> int:
        vox = np.floor(np.asarray(pos) * self.tables[table].res / self.base_res).astype(int)
        return int(self.volume[tuple(vox)])

    def add(self, ann: AnnotationEngine, table: str, ids, pos: dict[str, np.ndarray], vals: dict[str, list], *, just_inserted: bool = True) -> list[Row]:
        """Rows inserted: creation times from the engine's records, supervoxels from zarr."""
        tm = self.tables[table]
        ids = [int(i) for i in ids]
        recs = {int(r["id"]): r for r in ann.get_annotations(table, ids)}
        out = []
        for k, i in enumerate(ids):
            rec = recs[i]
            assert not just_inserted or (rec["valid"] and rec["deleted"] is None)
            p = {f: np.asarray(v[k], dtype=float) for f, v in pos.items()}
            row = Row(i, p, {b: self.sv(table, p[b]) for b in tm.bound}, {n: v[k] for n, v in vals.items()}, rec_ms(rec["created"]))
            for b in tm.bound:  # the engine's own record agrees with the volume
                assert rec[b]["supervoxel_id"] == row.svs[b], (table, i, b)
            tm.rows[i] = row
            out.append(row)
        return out

    def deleted(self, ann: AnnotationEngine, table: str, ids) -> None:
        recs = {int(r["id"]): r for r in ann.get_annotations(table, [int(i) for i in ids])}
        for i, rec in recs.items():
            row = self.tables[table].rows[i]
            assert rec["deleted"] is not None and not rec["valid"]
            row.deleted = rec_ms(rec["deleted"])
            row.superceded = rec["superceded_id"]

    def alive(self, table: str, t: int) -> list[Row]:
        return sorted((r for r in self.tables[table].rows.values() if r.alive(t)), key=lambda r: r.id)

    def alive_ids(self, table: str) -> list[int]:
        return [r.id for r in self.tables[table].rows.values() if r.deleted is None]


class Cells:
    """Cells (connected components) at any time, and root observations, from a :class:`Ledger`."""

    def __init__(self, truth: GraphTruth, cg: ChunkedGraph) -> None:
        self.truth = truth
        self.cg = cg  # the engine graph: used only to pick root IDs as filter values
        self.ledger = Ledger(truth)
        self._comps: dict[int, dict[int, frozenset]] = {}
        self.observed: list[tuple[int, int, int]] = []  # (root, supervoxel, t_ms)
        self._lock = threading.Lock()
        self.edges = {tuple(sorted(e)) for e in truth.edges.tolist()}  # every edge, active or not

    def merge_edges(self, a: int, b: int) -> set[tuple[int, int]]:
        """CAVE's merge: every existing edge between the two cells (also ones an earlier merge
        added and a split removed), else a new edge between the two supervoxels."""
        ca, cb = self.ledger.component_of(a), self.ledger.component_of(b)
        found = {e for e in self.edges if (e[0] in ca and e[1] in cb) or (e[0] in cb and e[1] in ca)}
        return found or {tuple(sorted((a, b)))}

    def index(self, t: int) -> int:
        k = bisect.bisect_right([s.t_ms for s in self.ledger.snapshots], t) - 1
        assert k >= 0
        return k

    def comp_map(self, k: int) -> dict[int, frozenset]:
        hit = self._comps.get(k)
        if hit is None:
            hit = {}
            for c in nx.connected_components(self.ledger.snapshots[k].graph):
                fs = frozenset(c)
                for s in fs:
                    hit[s] = fs
            self._comps[k] = hit
        return hit

    def at(self, t: int) -> dict[int, frozenset]:
        return self.comp_map(self.index(t))

    def root_members(self, root: int, sv: int, t_obs: int, t: int) -> frozenset:
        """Supervoxels that root ``root`` (seen over ``sv`` at ``t_obs``) owns at ``t``."""
        k0, k1 = sorted((self.index(t_obs), self.index(t)))
        c = self.comp_map(k0)[sv]
        if all(self.comp_map(k)[sv] == c for k in range(k0 + 1, k1 + 1)):
            return c
        return frozenset()

    def observe(self, cg: ChunkedGraph, t: int, rng: np.random.Generator, n: int = 6) -> None:
        """Roots of every supervoxel at t must partition the cells at t; keep a few as observations."""
        ids = self.truth.sv_ids
        roots = cg.get_roots(ids, t / 1000)
        comps = self.at(t)
        seen: dict[int, frozenset] = {}
        for s, r in zip(ids.tolist(), roots.tolist()):
            c = comps[s]
            assert seen.setdefault(r, c) == c, f"root {r} spans two cells at {t}"
        assert len(seen) == len(set(comps.values())), f"one cell has two roots at {t}"
        with self._lock:
            for i in rng.choice(ids.size, n, replace=False):
                self.observed.append((int(roots[i]), int(ids[i]), t))

    # ------------------------------------------------------------------ graph edits
    def merge(self, cg: ChunkedGraph, rng: np.random.Generator) -> int | None:
        comps = self.ledger.components()
        if len(comps) < 2:
            return None
        ca, cb = rng.choice(len(comps), 2, replace=False)
        a = int(rng.choice(sorted(comps[ca])))
        b = int(rng.choice(sorted(comps[cb])))
        expected = self.merge_edges(a, b)
        self.edges |= expected
        res = cg.merge([[a, *self.truth.nm(a)], [b, *self.truth.nm(b)]], user="editor")
        got = {tuple(sorted(e)) for e in cg.operations[res.operation_id].details["activated"]}
        assert got == expected
        self.ledger.record(res.operation_id, res.timestamp_ms, expected, set(), "merge", "editor")
        return res.timestamp_ms

    def split(self, cg: ChunkedGraph, rng: np.random.Generator) -> int | None:
        comps = [c for c in self.ledger.components() if len(c) >= 8]
        if not comps:
            return None
        c = sorted(comps[int(rng.integers(len(comps)))])
        a, b = (int(x) for x in rng.choice(c, 2, replace=False))
        try:
            res = cg.split([[a, *self.truth.nm(a)]], [[b, *self.truth.nm(b)]], user="editor")
        except PreconditionError:
            return None
        removed = {tuple(sorted(e)) for e in cg.operations[res.operation_id].details["deactivated"]}
        g = self.ledger.graph
        assert removed and all(g.has_edge(*e) for e in removed)
        h = g.copy()
        h.remove_edges_from(removed)
        assert not nx.has_path(h, a, b), "the split did not separate source and sink"
        self.ledger.record(res.operation_id, res.timestamp_ms, set(), removed, "split", "editor")
        return res.timestamp_ms


# ------------------------------------------------------------------------- checking
def brute(model: Model, table: str, t: int, preds: list[Pred], offset: int = 0, limit: int | None = None) -> list[Row]:
    rows = [r for r in model.alive(table, t) if all(p(r) for p in preds)]
    return rows[offset:] if limit is None else rows[offset : offset + limit]


def check_frame(df: pd.DataFrame, rows: list[Row], model: Model, table: str, comps: dict[int, frozenset]) -> None:
    """Same rows in id order; supervoxels/positions/values as modelled; roots partition like comps."""
    tm = model.tables[table]
    assert df["id"].tolist() == [r.id for r in rows]
    for f in tm.spatial:
        got = df[[f"{f}_position_{ax}" for ax in "xyz"]].to_numpy()
        want = np.array([r.pos[f] for r in rows]).reshape(-1, 3)
        assert np.allclose(got, want), f"{table}.{f}_position"
    for name in (rows[0].vals if rows else {}):
        if name in df.columns:
            got, want = df[name].tolist(), [r.vals[name] for r in rows]
            assert got == want or np.allclose(np.asarray(got, float), np.asarray(want, float)), name
    for b in tm.bound:
        assert df[f"{b}_supervoxel_id"].tolist() == [r.svs[b] for r in rows], f"{table}.{b}_supervoxel_id"
        root_of: dict[frozenset, int] = {}
        for r, root in zip(rows, df[f"{b}_root_id"].tolist()):
            if r.svs[b] == 0:
                assert root == 0, "a point on background has root 0"
                continue
            c = comps[r.svs[b]]
            if c in root_of:
                assert root_of[c] == root, f"{table}.{b}_root_id: one cell, two roots"
            else:
                assert root not in root_of.values(), f"{table}.{b}_root_id: two cells, one root"
                assert root != 0
                root_of[c] = root


def run_and_check(
    ann: AnnotationEngine, model: Model, cells: Cells, table: str, t: int,
    filters: list[Filter], preds: list[Pred], *, version: int | None = None,
    offset: int = 0, limit: int | None = None,
) -> pd.DataFrame:
    spec = QuerySpec([table], list(filters), offset=offset, limit=limit)
    res = ann.query(spec, version=version) if version is not None else ann.query(spec, t / 1000)
    df = res.table.to_pandas()
    want = brute(model, table, t, preds, offset, limit)
    try:
        check_frame(df, want, model, table, cells.at(t))
    except AssertionError as e:
        raise AssertionError(f"{e}\nquery at {t} (version {version}) filters {filters} offset {offset} limit {limit}") from e
    return df


def random_filters(rng: np.random.Generator, model: Model, cells: Cells, table: str, t: int) -> tuple[list[Filter], list[Pred], int, int | None]:
    """A random filter combination for ``table`` at ``t`` and the predicates that define its truth."""
    tm = model.tables[table]
    filters: list[Filter] = []
    preds: list[Pred] = []
    rows = list(tm.rows.values())
    kinds = rng.choice(["root_eq", "root_in", "root_notin", "sv", "id", "id_notin", "num", "spatial", "str", "created", "none"], size=int(rng.integers(1, 3)), replace=False)
    for kind in kinds:
        if kind.startswith("root") and tm.bound and cells.observed:
            b = str(rng.choice(tm.bound))
            recent = len(cells.observed) - 12 if rng.uniform() < 0.5 and t >= cells.observed[-1][2] else 0
            pool = cells.observed[max(recent, 0):]  # recent roots are mostly current
            obs = [pool[int(i)] for i in rng.choice(len(pool), int(rng.integers(1, 4)))]
            if kind != "root_eq" and rng.uniform() < 0.3 and rows:  # a row's current cell too
                r = rows[int(rng.integers(len(rows)))]
                if r.svs[b]:
                    obs.append((int(cells.cg.get_roots([r.svs[b]], t / 1000)[0]), r.svs[b], t))
            members = frozenset().union(*(cells.root_members(root, s, t0, t) for root, s, t0 in obs))
            roots = sorted({o[0] for o in obs})
            zero = kind != "root_eq" and rng.uniform() < 0.2  # root 0: points on background
            if zero:
                roots.append(0)
            col = f"{b}_root_id"
            if kind == "root_eq":
                filters.append(Filter("equal", table, col, obs[0][0]))
                members = cells.root_members(*obs[0], t)
                preds.append(lambda r, b=b, m=members: r.svs[b] in m)
            elif kind == "root_in":
                filters.append(Filter("in", table, col, roots))
                preds.append(lambda r, b=b, m=members, z=zero: r.svs[b] in m or (z and r.svs[b] == 0))
            else:
                filters.append(Filter("notin", table, col, roots))
                preds.append(lambda r, b=b, m=members, z=zero: not (r.svs[b] in m or (z and r.svs[b] == 0)))
        elif kind == "sv" and tm.bound and rows:
            b = str(rng.choice(tm.bound))
            svs = sorted({rows[int(i)].svs[b] for i in rng.choice(len(rows), 3)} | {int(cells.truth.sv_ids[0])})
            if rng.uniform() < 0.5:
                filters.append(Filter("in", table, f"{b}_supervoxel_id", svs))
                preds.append(lambda r, b=b, s=set(svs): r.svs[b] in s)
            else:
                filters.append(Filter("equal", table, f"{b}_supervoxel_id", svs[-1]))
                preds.append(lambda r, b=b, s=svs[-1]: r.svs[b] == s)
        elif kind in ("id", "id_notin") and rows:
            ids = sorted({int(x) for x in rng.integers(1, len(rows) + 3, 8)})
            op = "in" if kind == "id" else "notin"
            filters.append(Filter(op, table, "id", ids))
            preds.append((lambda r, s=set(ids): r.id in s) if op == "in" else (lambda r, s=set(ids): r.id not in s))
        elif kind == "num" and "size" in (rows[0].vals if rows else {}):
            v = float(rng.uniform(0, 100))
            op = str(rng.choice(["greater", "less", "greater_equal", "less_equal"]))
            cmp = {"greater": np.greater, "less": np.less, "greater_equal": np.greater_equal, "less_equal": np.less_equal}[op]
            filters.append(Filter(op, table, "size", v))
            preds.append(lambda r, c=cmp, v=v: bool(c(r.vals["size"], v)))
        elif kind == "spatial" and tm.spatial:
            f = str(rng.choice(tm.spatial))
            shape = np.asarray(model.volume.shape) * model.base_res / tm.res
            lo = rng.uniform(0, 0.5, 3) * shape
            hi = lo + rng.uniform(0.3, 0.6, 3) * shape
            filters.append(Filter("spatial", table, f"{f}_position", [lo.tolist(), hi.tolist()]))
            preds.append(lambda r, f=f, lo=lo, hi=hi: bool(np.all((r.pos[f] >= lo) & (r.pos[f] <= hi))))
        elif kind == "created" and rows:  # seconds; the engine's clock is ms
            v = rows[int(rng.integers(len(rows)))].created / 1000
            op = str(rng.choice(["greater", "less", "greater_equal", "less_equal"]))
            cmp = {"greater": np.greater, "less": np.less, "greater_equal": np.greater_equal, "less_equal": np.less_equal}[op]
            filters.append(Filter(op, table, "created", v))
            preds.append(lambda r, c=cmp, v=v: bool(c(r.created / 1000, v)))
        elif kind == "str" and rows and "cell_type" in rows[0].vals:
            if rng.uniform() < 0.5:
                v = str(rng.choice(CELL_TYPES))
                filters.append(Filter("equal", table, "cell_type", v))
                preds.append(lambda r, v=v: r.vals["cell_type"] == v)
            else:
                filters.append(Filter("regex", table, "cell_type", "^(pyr|ba)"))
                preds.append(lambda r: re.search("^(pyr|ba)", r.vals["cell_type"]) is not None)
    offset, limit = 0, None
    if rng.uniform() < 0.3:
        offset, limit = int(rng.integers(0, 10)), int(rng.integers(1, 30))
    return filters, preds, offset, limit


# ------------------------------------------------------------------------ generators
CELL_TYPES = ["pyramidal", "basket", "martinotti", "chandelier"]


def syn_batch(rng: np.random.Generator, fg: np.ndarray, bg: np.ndarray, n: int) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    pre = fg[rng.integers(len(fg), size=n)] + rng.uniform(0.05, 0.95, (n, 3))
    post_vox = np.where((rng.uniform(size=n) < 0.1)[:, None], bg[rng.integers(len(bg), size=n)], fg[rng.integers(len(fg), size=n)])
    post = post_vox + rng.uniform(0.05, 0.95, (n, 3))
    ctr = np.round((pre + post) / 2, 2)
    size = np.round(rng.uniform(0, 100, n), 3).tolist()
    return {"pre_pt": pre, "post_pt": post, "ctr_pt": ctr}, {"size": size}


def syn_records(pos: dict[str, np.ndarray], vals: dict[str, list]) -> list[dict]:
    return [
        {**{f: {"position": pos[f][k].tolist()} for f in pos}, "size": vals["size"][k]}
        for k in range(len(vals["size"]))
    ]


def syn_frame(pos: dict[str, np.ndarray], vals: dict[str, list]) -> pd.DataFrame:
    cols: dict[str, Any] = {}
    for f, p in pos.items():
        for k, ax in enumerate("xyz"):
            cols[f"{f}_position_{ax}"] = p[:, k]
    cols["size"] = vals["size"]
    return pd.DataFrame(cols)


def cell_batch(rng: np.random.Generator, fg: np.ndarray, n: int) -> tuple[dict[str, np.ndarray], dict[str, list]]:
    vox = fg[rng.integers(len(fg), size=n)] + rng.uniform(0.05, 0.95, (n, 3))
    pt = vox * (np.asarray(SYN_RES) / np.asarray(CELL_RES))
    types = [str(x) for x in rng.choice(CELL_TYPES, n)]
    return {"pt": pt}, {"classification_system": ["classical"] * n, "cell_type": types}


def cell_frame(pos, vals) -> pd.DataFrame:
    return pd.DataFrame({"pt_position": list(pos["pt"]), **vals})


def setup_tables(ann: AnnotationEngine, model: Model) -> None:
    ann.create_table("syn", "synapse", "synapses", SYN_RES, user=OWNER)
    model.table("syn", SYN_RES, ("pre_pt", "post_pt"), ("pre_pt", "post_pt", "ctr_pt"))
    ann.create_table("cells", "cell_type_local", "cell types", CELL_RES, user=OWNER)
    model.table("cells", CELL_RES, ("pt",), ("pt",))
    ann.create_table("tags", "reference_tag", "tags on synapses", SYN_RES, user=OWNER, reference_table="syn")
    model.table("tags", SYN_RES)


# ============================================================================== tests
@pytest.mark.parametrize("seed", [2024, 7])
def test_random_sequence_matches_brute_force(base, tmp_path, volume, fg, bg, seed):
    """~150 random inserts/updates/deletes/merges/splits/versions; queries at many past times."""
    d, cg, ann = fresh(base, tmp_path)
    rng = np.random.default_rng(seed)
    model = Model(volume, cg.meta.resolution)
    cells = Cells(GraphTruth.load(d), cg)
    cells.observe(cg, now_ms(), rng)
    setup_tables(ann, model)
    pos, vals = syn_batch(rng, fg, bg, 150)
    model.add(ann, "syn", ann.insert("syn", frame=syn_frame(pos, vals), user=OWNER), pos, vals)
    pos, vals = cell_batch(rng, fg, 40)
    model.add(ann, "cells", ann.insert("cells", frame=cell_frame(pos, vals), user=OWNER), pos, vals)

    stamps: list[int] = []  # times right at and just before every change
    versions: list[int] = []
    counts = dict.fromkeys(["ins", "frame", "upd", "del", "merge", "split", "version", "tag"], 0)

    def stamp(t: int) -> None:
        stamps.extend([t - 1, t])

    for step in range(150):
        r = rng.uniform()
        if r < 0.18:  # insert records
            table = "syn" if rng.uniform() < 0.7 else "cells"
            n = int(rng.integers(1, 6))
            if table == "syn":
                pos, vals = syn_batch(rng, fg, bg, n)
                recs = syn_records(pos, vals)
            else:
                pos, vals = cell_batch(rng, fg, n)
                recs = [{"pt": {"position": pos["pt"][k].tolist()}, "classification_system": vals["classification_system"][k], "cell_type": vals["cell_type"][k]} for k in range(n)]
            rows = model.add(ann, table, ann.insert(table, recs, user=OWNER), pos, vals)
            stamp(rows[0].created)
            counts["ins"] += 1
        elif r < 0.30:  # insert a DataFrame
            n = int(rng.integers(5, 20))
            if rng.uniform() < 0.5:
                pos, vals = syn_batch(rng, fg, bg, n)
                rows = model.add(ann, "syn", ann.insert("syn", frame=syn_frame(pos, vals), user=OWNER), pos, vals)
            else:
                pos, vals = cell_batch(rng, fg, n)
                rows = model.add(ann, "cells", ann.insert("cells", frame=cell_frame(pos, vals), user=OWNER), pos, vals)
            stamp(rows[0].created)
            counts["frame"] += 1
        elif r < 0.42:  # update
            alive = model.alive_ids("syn")
            old = [int(x) for x in rng.choice(alive, int(rng.integers(1, 3)), replace=False)]
            pos, vals = syn_batch(rng, fg, bg, len(old))
            recs = [{"id": o, **rec} for o, rec in zip(old, syn_records(pos, vals))]
            mapping = ann.update("syn", recs, user=OWNER)
            assert list(mapping) == old
            new_rows = model.add(ann, "syn", list(mapping.values()), pos, vals)
            model.deleted(ann, "syn", old)
            for o, row in zip(old, new_rows):
                old_row = model.tables["syn"].rows[o]
                assert old_row.superceded == row.id and old_row.deleted == row.created
            stamp(new_rows[0].created)
            counts["upd"] += 1
        elif r < 0.54:  # delete
            table = "syn" if rng.uniform() < 0.7 else "cells"
            ids = [int(x) for x in rng.choice(model.alive_ids(table), int(rng.integers(1, 4)), replace=False)]
            assert ann.delete(table, ids, user=OWNER) == sorted(ids)
            model.deleted(ann, table, ids)
            stamp(model.tables[table].rows[ids[0]].deleted)
            counts["del"] += 1
        elif r < 0.62:  # tags on alive synapses (reference table)
            targets = [int(x) for x in rng.choice(model.alive_ids("syn"), 2, replace=False)]
            tags = [str(x) for x in rng.choice(["good", "bad"], 2)]
            ids = ann.insert("tags", [{"target_id": t, "tag": g} for t, g in zip(targets, tags)], user=OWNER)
            rows = model.add(ann, "tags", ids, {}, {"target_id": targets, "tag": tags})
            stamp(rows[0].created)
            counts["tag"] += 1
        elif r < 0.75:
            t = cells.merge(cg, rng)
            if t is not None:
                stamp(t)
                cells.observe(cg, t, rng)
                counts["merge"] += 1
        elif r < 0.94:
            t = cells.split(cg, rng)
            if t is not None:
                stamp(t)
                cells.observe(cg, t, rng)
                counts["split"] += 1
        else:
            v = ann.create_version(user=OWNER)
            versions.append(v.version)
            counts["version"] += 1
        if step % 15 == 0 and stamps:  # right after the newest change, while the sequence runs
            t = stamps[-1]
            for table in ("syn", "cells"):
                f, p, off, lim = random_filters(rng, model, cells, table, t)
                run_and_check(ann, model, cells, table, t, f, p, offset=off, limit=lim)
    assert min(counts.values()) >= 2, counts
    if len(versions) < 2:
        versions += [ann.create_version(user=OWNER).version for _ in range(2 - len(versions))]

    # many past times: right at and just before changes, and midway between them
    picks = [stamps[int(i)] for i in rng.choice(len(stamps), 40, replace=False)]
    picks += [(a + b) // 2 for a, b in zip(stamps[::17], stamps[8::17])]
    for t in picks:
        for table in ("syn", "cells", "syn"):
            f, p, off, lim = random_filters(rng, model, cells, table, t)
            run_and_check(ann, model, cells, table, t, f, p, offset=off, limit=lim)
        # tags: a reference table, filtered by target
        tgt = int(rng.integers(1, len(model.tables["syn"].rows)))
        run_and_check(ann, model, cells, "tags", t, [Filter("equal", "tags", "target_id", tgt)], [lambda r, x=tgt: r.vals["target_id"] == x])
    # every version equals the brute force at its timestamp
    for v in [1, *versions]:
        tv = ann.versions[v].time_stamp
        run_and_check(ann, model, cells, "syn", tv, [], [], version=v)
        for _ in range(4):
            table = str(rng.choice(["syn", "cells"]))
            f, p, off, lim = random_filters(rng, model, cells, table, tv)
            run_and_check(ann, model, cells, table, tv, f, p, version=v, offset=off, limit=lim)
        assert ann.count("syn", version=v) == len(model.alive("syn", tv))
    # the replayed log (and reloaded version deltas) answer the same
    ann.close()
    cg.close()
    cg = ChunkedGraph.open(d)
    cells.cg = cg
    ann = AnnotationEngine.open(cg, d)
    for t in picks[::4] + [ann.versions[v].time_stamp for v in versions]:
        for table in ("syn", "cells"):
            f, p, off, lim = random_filters(rng, model, cells, table, t)
            run_and_check(ann, model, cells, table, t, f, p, offset=off, limit=lim)
    for v in versions:
        run_and_check(ann, model, cells, "syn", ann.versions[v].time_stamp, [], [], version=v)
    ann.close()
    cg.close()


def test_versions_deltas_expiry_export_and_reopen(base, tmp_path, volume, fg, bg):
    d, cg, ann = fresh(base, tmp_path)
    rng = np.random.default_rng(5)
    model = Model(volume, cg.meta.resolution)
    cells = Cells(GraphTruth.load(d), cg)
    setup_tables(ann, model)
    pos, vals = syn_batch(rng, fg, bg, 6000)
    model.add(ann, "syn", ann.insert("syn", frame=syn_frame(pos, vals), user=OWNER), pos, vals)
    ann.create_table("gone", "bound_tag", "deleted after v3", SYN_RES, user=OWNER)
    model.table("gone", SYN_RES, ("pt",), ("pt",))
    gpos, gvals = {"pt": syn_batch(rng, fg, bg, 5)[0]["pre_pt"]}, {"tag": [f"g{k}" for k in range(5)]}
    grecs = [{"pt": {"position": p.tolist()}, "tag": g} for p, g in zip(gpos["pt"], gvals["tag"])]
    model.add(ann, "gone", ann.insert("gone", grecs, user=OWNER), gpos, gvals)

    v2 = ann.create_version(user=OWNER)
    # a few changes: 3 new rows, 2 deleted, 1 updated
    pos, vals = syn_batch(rng, fg, bg, 3)
    model.add(ann, "syn", ann.insert("syn", syn_records(pos, vals), user=OWNER), pos, vals)
    ann.delete("syn", [5, 6], user=OWNER)
    model.deleted(ann, "syn", [5, 6])
    pos, vals = syn_batch(rng, fg, bg, 1)
    new = ann.update("syn", [{"id": 7, **syn_records(pos, vals)[0]}], user=OWNER)
    model.add(ann, "syn", list(new.values()), pos, vals)
    model.deleted(ann, "syn", [7])
    v3 = ann.create_version(user=OWNER)
    assert v2.bytes > 0 and v3.bytes * 6 < v2.bytes, (v2.bytes, v3.bytes)
    delta = pq.read_table(d / "versions" / f"v{v3.version}" / "syn.parquet").to_pandas()
    changed = {**dict.fromkeys([5, 6, 7], False), **dict.fromkeys([*range(6001, 6004), new[7]], True)}
    assert dict(zip(delta["id"], delta["present"])) == changed  # only the changed rows
    assert dir_bytes(d / "versions" / f"v{v3.version}") == v3.bytes

    before = {v: ann.query(QuerySpec(["syn"]), version=v).table.to_pandas() for v in (v2.version, v3.version)}
    for v in (v2, v3):
        run_and_check(ann, model, cells, "syn", v.time_stamp, [], [], version=v.version)
    # a table newer than a version reads as empty there
    assert ann.count("syn", version=1) == 0
    assert ann.query(QuerySpec(["syn"]), version=1).table.num_rows == 0

    # a deleted table is gone now, but still answers at the versions made while it existed
    ann.delete_table("gone", user=OWNER)
    with pytest.raises(NotFoundError, match="no annotation table 'gone'"):
        ann.query(QuerySpec(["gone"]))
    for v in (v2, v3):
        assert "gone" in ann.table_names(at=v.time_stamp)
        assert ann.count("gone", version=v.version) == 5
        run_and_check(ann, model, cells, "gone", v.time_stamp, [], [], version=v.version)

    # later edits (rows and graph) change nothing at the versions
    cells.observe(cg, v3.time_stamp, rng)
    for _ in range(3):
        for t in (cells.merge(cg, rng), cells.split(cg, rng)):
            if t is not None:
                cells.observe(cg, t, rng)
    pos, vals = syn_batch(rng, fg, bg, 10)
    model.add(ann, "syn", ann.insert("syn", syn_records(pos, vals), user=OWNER), pos, vals)
    ann.delete("syn", [1, 2, 3], user=OWNER)
    model.deleted(ann, "syn", [1, 2, 3])
    for v in (v2, v3):
        after = ann.query(QuerySpec(["syn"]), version=v.version).table.to_pandas()
        pd.testing.assert_frame_equal(after, before[v.version])
        run_and_check(ann, model, cells, "syn", v.time_stamp, [], [], version=v.version)
    # filtered queries on the large table (its supervoxel index is sorted, not a scan)
    assert ann.tables["syn"].sv_index["pre_pt"].indexed >= 6000
    t_now = now_ms()
    for v, t in ((v2.version, v2.time_stamp), (v3.version, v3.time_stamp), (None, t_now)):
        for _ in range(8):
            f, p, off, lim = random_filters(rng, model, cells, "syn", t)
            run_and_check(ann, model, cells, "syn", t, f, p, version=v, offset=off, limit=lim)

    # a version with a tiny lifetime expires; removing it folds its delta into the next one
    v4 = ann.create_version(lifetime_days=1e-9, user=OWNER)  # ~0.1 ms
    time.sleep(0.01)
    assert v4.version not in ann.version_numbers()
    with pytest.raises(NotFoundError, match="expired"):
        ann.query(QuerySpec(["syn"]), version=v4.version)
    cells.merge(cg, rng)
    ann.delete("syn", [10], user=OWNER)
    model.deleted(ann, "syn", [10])
    v5 = ann.create_version(lifetime_days=1, user=OWNER)
    assert "gone" not in ann.table_names(at=v5.time_stamp)
    with pytest.raises(NotFoundError, match="no annotation table 'gone'"):
        ann.query(QuerySpec(["gone"]), version=v5.version)
    ann.files.cache.clear()  # the fold rebuilds the versions from their files
    assert ann.remove_expired_versions(user=OWNER) == [v4.version]
    assert v4.version not in ann.version_numbers(expired=True)
    assert not (d / "versions" / f"v{v4.version}").exists()
    assert ann.versions[v5.version].bytes == dir_bytes(d / "versions" / f"v{v5.version}")  # the folded delta
    ann.files.cache.clear()  # rebuild v5 from the (rewritten) delta chain
    run_and_check(ann, model, cells, "syn", v5.time_stamp, [], [], version=v5.version)
    for _ in range(3):
        f, p, off, lim = random_filters(rng, model, cells, "syn", v5.time_stamp)
        run_and_check(ann, model, cells, "syn", v5.time_stamp, f, p, version=v5.version, offset=off, limit=lim)

    # keep_version: never expires (and can be given a lifetime again)
    assert ann.keep_version(v5.version, user=OWNER).expires_on is None
    assert not ann.versions[v5.version].expired(at=2**61)
    assert ann.remove_expired_versions(user=OWNER) == []
    v6 = ann.create_version(lifetime_days=2, user=OWNER)
    kept = ann.keep_version(v6.version, lifetime_days=30, user=OWNER)
    assert kept.expires_on > now_ms() + 29 * 86_400_000

    # export: a self-contained Parquet table equal to the query at that version
    out = ann.export_version_table(v3.version, "syn", tmp_path / "syn_v3.parquet")
    exported = pq.read_table(out).to_pandas()
    pd.testing.assert_frame_equal(exported, before[v3.version])
    check_frame(exported, brute(model, "syn", v3.time_stamp, []), model, "syn", cells.at(v3.time_stamp))

    # close and reopen: the same versions, sizes and answers
    numbers = ann.version_numbers()
    meta = {n: ann.versions[n].to_json() for n in numbers}
    answers = {n: ann.query(QuerySpec(["syn"]), version=n).table.to_pandas() for n in numbers}
    t_mid = v3.time_stamp + 1
    live = ann.query(QuerySpec(["syn"]), t_mid / 1000).table.to_pandas()
    ann.close()
    cg.close()
    cg = ChunkedGraph.open(d)
    cells.cg = cg
    ann = AnnotationEngine.open(cg, d)
    assert ann.version_numbers() == numbers
    assert {n: ann.versions[n].to_json() for n in numbers} == meta
    for n in numbers:
        pd.testing.assert_frame_equal(ann.query(QuerySpec(["syn"]), version=n).table.to_pandas(), answers[n])
        run_and_check(ann, model, cells, "syn", ann.versions[n].time_stamp, [], [], version=n)
    pd.testing.assert_frame_equal(ann.query(QuerySpec(["syn"]), t_mid / 1000).table.to_pandas(), live)
    assert ann.versions[v5.version].expires_on is None
    ann.close()
    cg.close()


def test_replay_keeps_missing_optional_values_and_strings(base, tmp_path, fg, bg):
    """Optional fields left out (NaN / None / False), strings and booleans survive close/reopen."""
    d, cg, ann = fresh(base, tmp_path)
    rng = np.random.default_rng(6)
    ann.create_table("syn", "synapse", "synapses", SYN_RES, user=OWNER)
    ann.create_table("comp", "postsynaptic_compartment", "compartments", SYN_RES, user=OWNER, reference_table="syn")
    recs = syn_records(*syn_batch(rng, fg, bg, 4))
    ann.insert("syn", [{k: v for k, v in r.items() if k != "size"} for r in recs[:2]] + recs[2:], user=OWNER)
    ann.insert("comp", [
        {"target_id": 1, "compartment": "soma"},
        {"target_id": 2, "compartment": "dendrite", "on_spine": True, "dendrite_class": "apical"},
        {"target_id": 3, "compartment": "axon", "on_spine": None, "dendrite_class": None},
    ], user=OWNER)
    ann.insert("comp", frame=pd.DataFrame({"target_id": [4, 1], "compartment": ["soma", "axon"], "dendrite_class": ["basal", None]}), user=OWNER)
    ann.update("comp", [{"id": 1, "target_id": 2, "compartment": "dendrite", "on_spine": False}], user=OWNER)

    def state() -> dict[str, Any]:
        out: dict[str, Any] = {t: ann.query(QuerySpec([t])).table.to_pandas() for t in ("syn", "comp")}
        out["records"] = json.dumps(ann.get_annotations("comp", range(1, 7)), sort_keys=True)
        return out

    before = state()
    assert before["syn"]["size"].isna().tolist() == [True, True, False, False]
    comp = before["comp"].set_index("id")
    assert comp.loc[3, "dendrite_class"] is None and comp.loc[6, "on_spine"] == np.False_
    assert comp.loc[5, "dendrite_class"] is None and comp.loc[4, "dendrite_class"] == "basal"
    ann.close()
    cg.close()
    cg = ChunkedGraph.open(d)
    ann = AnnotationEngine.open(cg, d)
    after = state()
    for k in ("syn", "comp"):
        pd.testing.assert_frame_equal(after[k], before[k], obj=k)
    assert after["records"] == before["records"]
    ann.close()
    cg.close()


# ------------------------------------------------------------------------- durability
WRITER = r"""
import json, sys
import numpy as np, zarr
from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.annotations.engine import AnnotationEngine
from cavelab.server.annotations.query import QuerySpec

d, seed = sys.argv[1], int(sys.argv[2])
cg = ChunkedGraph.open(d)
ann = AnnotationEngine.open(cg, d)
rng = np.random.default_rng(seed)
fg = np.argwhere(np.asarray(zarr.open_array(d + "/segmentation.zarr", mode="r")[:]) > 0)
alive = ann.query(QuerySpec(["syn"], select=["id"])).table.column("id").to_pylist()

def batch(n):
    pre = (fg[rng.integers(len(fg), size=n)] + 0.5).tolist()
    post = (fg[rng.integers(len(fg), size=n)] + 0.5).tolist()
    size = [float(x) for x in np.round(rng.uniform(0, 9, n), 2)]
    recs = [{"pre_pt": {"position": a}, "post_pt": {"position": b}, "ctr_pt": {"position": a}, "size": s}
            for a, b, s in zip(pre, post, size)]
    return recs, pre, post, size

print("READY", flush=True)
while True:
    r = rng.uniform()
    if r < 0.5 or len(alive) < 5:
        recs, pre, post, size = batch(int(rng.integers(1, 4)))
        ids = [int(i) for i in ann.insert("syn", recs, user="ana")]
        alive += ids
        print(json.dumps({"op": "insert", "ids": ids, "pre": pre, "post": post, "size": size}), flush=True)
    elif r < 0.75:
        old = int(alive.pop(int(rng.integers(len(alive)))))
        recs, pre, post, size = batch(1)
        new = ann.update("syn", [{"id": old, **recs[0]}], user="ana")[old]
        alive.append(new)
        print(json.dumps({"op": "update", "old": old, "ids": [new], "pre": pre, "post": post, "size": size}), flush=True)
    else:
        k = int(alive.pop(int(rng.integers(len(alive)))))
        ann.delete("syn", [k], user="ana")
        print(json.dumps({"op": "delete", "ids": [k]}), flush=True)
"""


@pytest.mark.slow
def test_kill9_keeps_every_acknowledged_annotation_change(base, tmp_path, volume):
    d, cg, ann = fresh(base, tmp_path)
    ann.create_table("syn", "synapse", "synapses", SYN_RES, user=OWNER)
    ann.close()
    cg.close()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(3)
    content: dict[int, dict] = {}  # acknowledged rows: id -> pre, post, size
    deleted: dict[int, int | None] = {}  # acknowledged deletions: id -> superseding id (or None)
    n_acks = 0
    for round_ in range(3):
        p = subprocess.Popen([sys.executable, str(script), str(d), str(round_)], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
        lines: list[str] = []
        assert p.stdout.readline().strip() == "READY"
        deadline = time.monotonic() + float(rng.uniform(0.8, 1.8))
        while time.monotonic() < deadline:
            lines.append(p.stdout.readline())
        assert p.poll() is None, "the writer died before it was killed"
        os.kill(p.pid, signal.SIGKILL)
        lines += list(p.stdout)  # acknowledgements printed before the kill
        p.wait()
        for line in lines:
            if not line.endswith("\n"):  # cut by the kill: not an acknowledgement
                continue
            a = json.loads(line)
            n_acks += 1
            for k, i in enumerate(a["ids"] if a["op"] != "delete" else []):
                content[i] = {"pre": a["pre"][k], "post": a["post"][k], "size": a["size"][k]}
            if a["op"] == "update":
                deleted[a["old"]] = a["ids"][0]
            elif a["op"] == "delete":
                deleted[a["ids"][0]] = None

        cg = ChunkedGraph.open(d)
        ann = AnnotationEngine.open(cg, d)
        n = ann.tables["syn"].n_rows
        assert set(content) <= set(range(1, n + 1)), "an acknowledged insert is lost"
        recs = {int(r["id"]): r for r in ann.get_annotations("syn", list(range(1, n + 1)))}
        for i, c in content.items():
            r = recs[i]
            assert r["pre_pt"]["position"] == c["pre"] and r["post_pt"]["position"] == c["post"]
            assert r["size"] == c["size"]
            for pt in ("pre_pt", "post_pt"):
                assert r[pt]["supervoxel_id"] == int(volume[tuple(np.floor(c[pt.split("_")[0]]).astype(int))])
            if i in deleted:
                assert r["deleted"] is not None, f"acknowledged deletion of {i} is lost"
                assert r["superceded_id"] == deleted[i]
        # nothing half-applied: an update shows both rows or neither, with one timestamp
        for r in recs.values():
            if r["superceded_id"] is not None:
                s = recs[r["superceded_id"]]
                assert r["deleted"] is not None and s["created"] == r["deleted"]
        extra = set(recs) - set(content)
        extra_deleted = {i for i, r in recs.items() if r["deleted"] is not None} - set(deleted)
        # at most the one operation in flight at the kill went through unacknowledged, whole
        assert len(extra) <= 3 and len(extra_deleted) <= 1, (extra, extra_deleted)
        if extra:  # the unacknowledged op went through completely: adopt it as the model
            assert extra == set(range(min(extra), max(extra) + 1)) and max(extra) == n
            for i in extra:
                r = recs[i]
                content[i] = {"pre": r["pre_pt"]["position"], "post": r["post_pt"]["position"], "size": r["size"]}
        for i in extra_deleted:
            deleted[i] = recs[i]["superceded_id"]
            assert deleted[i] is None or deleted[i] in extra
        alive_now = ann.query(QuerySpec(["syn"])).table.column("id").to_pylist()
        assert alive_now == sorted(set(content) - set(deleted))
        ann.close()
        cg.close()
    assert n_acks > 30, n_acks


# ------------------------------------------------------------------------- PostgreSQL
def _pg_available() -> bool:
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:
        return False


def _same_ops(ann: AnnotationEngine, cg: ChunkedGraph, truth: GraphTruth, records: list[dict]) -> None:
    ann.create_table("syn", "synapse", "synapses", SYN_RES, user=OWNER)
    ann.insert("syn", records[:20], user=OWNER)
    ann.insert("syn", frame=pd.DataFrame({
        **{f"{f}_position_{ax}": [r[f]["position"][k] for r in records[20:]] for f in ("pre_pt", "post_pt", "ctr_pt") for k, ax in enumerate("xyz")},
        "size": [r["size"] for r in records[20:]],
    }), user=OWNER)
    ann.update("syn", [{"id": 3, **records[0]}, {"id": 4, **records[1]}], user=OWNER)
    ann.delete("syn", [5, 6, 22], user=OWNER)
    roots = cg.get_roots(truth.sv_ids)
    a = int(truth.sv_ids[0])
    b = int(truth.sv_ids[np.flatnonzero(roots != roots[0])[0]])
    cg.merge([[a, *truth.nm(a)], [b, *truth.nm(b)]], user=OWNER)
    ann.create_version(user=OWNER)


def _answers(ann: AnnotationEngine) -> dict[str, pd.DataFrame]:
    out = {"now": ann.query(QuerySpec(["syn"])).table.to_pandas().drop(columns=["created"])}
    for v in ann.version_numbers():
        out[f"v{v}"] = ann.query(QuerySpec(["syn"]), version=v).table.to_pandas().drop(columns=["created"])
    out["records"] = pd.DataFrame(ann.get_annotations("syn", range(1, 33))).drop(columns=["created", "deleted"])
    return out


@pytest.mark.skipif(not _pg_available(), reason="PostgreSQL is not reachable on 127.0.0.1:5432")
def test_postgres_backend_matches_sqlite(base, tmp_path, fg, bg):
    from cavelab.server.storage.postgres import PostgresOperationLog

    rng = np.random.default_rng(9)
    records = syn_records(*syn_batch(rng, fg, bg, 30))
    name = f"pg_ann_{uuid.uuid4().hex[:12]}"
    key = f"{name}#annotations"
    d_pg = tmp_path / name
    shutil.copytree(base, d_pg)
    d_sq, cg_sq, ann_sq = fresh(base, tmp_path, "sqlite_twin")
    try:
        cg = ChunkedGraph.open(d_pg)
        ann = AnnotationEngine.open(cg, d_pg, storage_url=PG_URL)
        _same_ops(ann, cg, GraphTruth.load(d_pg), records)
        _same_ops(ann_sq, cg_sq, GraphTruth.load(d_sq), records)
        assert not (d_pg / "annotations.sqlite").exists()
        want = _answers(ann_sq)
        for k, df in _answers(ann).items():
            pd.testing.assert_frame_equal(df, want[k], obj=k)
        n_ops = len(list(ann.oplog))
        ann.close()
        cg.close()
        log = PostgresOperationLog(PG_URL, dataset=key)
        assert len(list(log)) == n_ops == 7  # create, 2 inserts, update, delete, 2 versions
        log.close()
        cg = ChunkedGraph.open(d_pg)
        ann = AnnotationEngine.open(cg, d_pg, storage_url=PG_URL)
        for k, df in _answers(ann).items():
            pd.testing.assert_frame_equal(df, want[k], obj=f"{k} after reopening")
        ann.insert("syn", records[:2], user=OWNER)  # ids continue after the replayed log
        assert ann.tables["syn"].n_rows == 34
        ann.close()
        cg.close()
    finally:
        log = PostgresOperationLog(PG_URL, dataset=key)
        log.drop()
        log.close()
        ann_sq.close()
        cg_sq.close()


# ------------------------------------------------------------------------- concurrency
def test_concurrent_queries_during_inserts_and_edits(base, tmp_path, volume, fg, bg):
    d, cg, ann = fresh(base, tmp_path)
    model = Model(volume, cg.meta.resolution)
    cells = Cells(GraphTruth.load(d), cg)
    setup_tables(ann, model)
    rng = np.random.default_rng(77)
    cells.observe(cg, now_ms(), rng, n=12)
    pos, vals = syn_batch(rng, fg, bg, 300)
    ids0 = ann.insert("syn", frame=syn_frame(pos, vals), user=OWNER)
    model.add(ann, "syn", ids0, pos, vals)
    span: list[int] = []  # when the writer wrote
    written: list[tuple[list[int], dict, dict]] = []
    results: list[tuple[int, list[Filter], pd.DataFrame, list]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            wr = np.random.default_rng(1)
            alive = [int(i) for i in ids0]
            span.append(now_ms())
            for _ in range(60):
                if wr.uniform() < 0.6:
                    p, v = syn_batch(wr, fg, bg, int(wr.integers(1, 4)))
                    new = [int(i) for i in ann.insert("syn", syn_records(p, v), user=OWNER)]
                    written.append((new, p, v))
                    alive += new
                elif wr.uniform() < 0.5:
                    ann.delete("syn", [alive.pop(int(wr.integers(len(alive))))], user=OWNER)
                else:
                    old = alive.pop(int(wr.integers(len(alive))))
                    p, v = syn_batch(wr, fg, bg, 1)
                    new = list(ann.update("syn", [{"id": old, **syn_records(p, v)[0]}], user=OWNER).values())
                    written.append((new, p, v))
                    alive += new
            span.append(now_ms())
        except BaseException as e:
            errors.append(e)

    def editor() -> None:
        try:
            er = np.random.default_rng(2)
            for k in range(16):
                t = cells.merge(cg, er) if k % 3 == 0 else cells.split(cg, er)
                if t is not None:
                    cells.observe(cg, t, er)
        except BaseException as e:
            errors.append(e)

    def reader(seed: int) -> None:
        try:
            qr = np.random.default_rng(seed)
            while not stop.is_set():
                t = now_ms()
                if results and qr.uniform() < 0.3:  # again at a time asked before: the same answer
                    t = results[int(qr.integers(len(results)))][0]
                with cells._lock:
                    obs = list(cells.observed)
                kind = qr.integers(4)
                if kind == 0:
                    fs: list[Filter] = []
                elif kind == 1:
                    o = [obs[int(i)] for i in qr.choice(len(obs), 3)]
                    fs = [Filter("in", "syn", "pre_pt_root_id", sorted({x[0] for x in o}))]
                elif kind == 2:
                    fs = [Filter("greater", "syn", "size", float(qr.uniform(0, 100)))]
                else:
                    lo = int(qr.integers(1, 300))
                    fs = [Filter("in", "syn", "id", list(range(lo, lo + 40)))]
                df = ann.query(QuerySpec(["syn"], fs), t / 1000).table.to_pandas()
                results.append((t, fs, df, obs))
        except BaseException as e:
            errors.append(e)

    made: list = []

    def versioner() -> None:
        try:
            for _ in range(3):
                time.sleep(0.05)
                made.append(ann.create_version(user=OWNER))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=f) for f in (writer, editor, versioner, versioner)]
    readers = [threading.Thread(target=reader, args=(s,)) for s in (11, 12)]
    for th in threads + readers:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    for th in readers:
        th.join()
    assert not errors, errors
    for new, p, v in written:
        model.add(ann, "syn", new, p, v, just_inserted=False)
    gone = [r.id for r in model.tables["syn"].rows.values() if ann.get_annotations("syn", [r.id])[0]["deleted"]]
    model.deleted(ann, "syn", gone)
    during = sum(span[0] <= t <= span[1] for t, *_ in results)
    assert during >= 20, (len(results), during)
    for t, fs, df, _obs in results:
        preds: list[Pred] = []
        for f in fs:
            if f.column == "pre_pt_root_id":
                obs_for = [o for o in _obs if o[0] in f.value]
                m = frozenset().union(*(cells.root_members(root, s, t0, t) for root, s, t0 in obs_for))
                preds.append(lambda r, m=m: r.svs["pre_pt"] in m)
            elif f.column == "size":
                preds.append(lambda r, v=f.value: r.vals["size"] > v)
            else:
                preds.append(lambda r, s=set(f.value): r.id in s)
        try:
            check_frame(df, brute(model, "syn", t, preds), model, "syn", cells.at(t))
        except AssertionError as e:
            raise AssertionError(f"{e}\nconcurrent query at {t} with {fs} ops {[(o, r.ts - t) for o, r in cg.operations.items() if abs(r.ts - t) < 100]}") from e
    # versions made concurrently: distinct numbers, each equal to the state at its timestamp
    assert sorted(v.version for v in made) == [n for n in ann.version_numbers() if n != 1]
    for v in made:
        run_and_check(ann, model, cells, "syn", v.time_stamp, [], [], version=v.version)
    ann.close()
    cg.close()


# --------------------------------------------------------------------------- bad input
def test_bad_input_raises_taxonomy_errors_and_changes_nothing(base, tmp_path, fg, bg):
    d, cg, ann = fresh(base, tmp_path, row_limit=5)
    rng = np.random.default_rng(4)
    ann.create_table("syn", "synapse", "synapses", SYN_RES, user=OWNER)
    ann.create_table("tags", "reference_tag", "tags", SYN_RES, user=OWNER, reference_table="syn")
    good = syn_records(*syn_batch(rng, fg, bg, 12))
    ann.insert("syn", good, user=OWNER)
    ann.delete("syn", [12], user=OWNER)
    ann.insert("tags", [{"target_id": 1, "tag": "a"}], user=OWNER)

    def rows() -> tuple[int, int, int, int]:
        return (ann.count("syn"), ann.tables["syn"].n_rows, ann.count("tags"), ann.tables["tags"].n_rows)

    n0 = rows()
    tables0 = ann.table_names()

    def refused(err: type, needle: str, fn, *a, **kw) -> None:
        with pytest.raises(err, match=needle):
            fn(*a, **kw)
        assert rows() == n0
        assert ann.table_names() == tables0

    # tables
    for bad in ("Bad", "1abc", "a-b", "x" * 64, "", "syn;drop"):
        refused(InputError, "invalid table name", ann.create_table, bad, "synapse", "d", SYN_RES, user=OWNER)
    refused(NotFoundError, "unknown annotation schema 'nope'", ann.create_table, "t1", "nope", "d", SYN_RES, user=OWNER)
    refused(ConflictError, "already exists", ann.create_table, "syn", "synapse", "d", SYN_RES, user=OWNER)
    refused(InputError, "reference_table", ann.create_table, "t2", "reference_tag", "d", SYN_RES, user=OWNER)
    refused(NotFoundError, "no annotation table 'ghost'", ann.create_table, "t3", "reference_tag", "d", SYN_RES, user=OWNER, reference_table="ghost")
    refused(InputError, "voxel_resolution", ann.create_table, "t4", "synapse", "d", (4, 4), user=OWNER)
    refused(InputError, "description", ann.create_table, "t5", "synapse", "  ", SYN_RES, user=OWNER)
    refused(InputError, "read_permission", ann.create_table, "t6", "synapse", "d", SYN_RES, user=OWNER, read_permission="WORLD")
    # rows
    refused(InputError, r"target_id \[999\]", ann.insert, "tags", [{"target_id": 1, "tag": "a"}, {"target_id": 999, "tag": "b"}], user=OWNER)
    refused(InputError, r"target_id \[12\]", ann.insert, "tags", [{"target_id": 12, "tag": "deleted target"}], user=OWNER)
    outside = [dict(good[0]), dict(good[1], post_pt={"position": [1e6, 5, 5]})]
    refused(OutOfBoundsError, "row 1: post_pt.position", ann.insert, "syn", outside, user=OWNER)
    refused(OutOfBoundsError, "pre_pt.position", ann.insert, "syn", [dict(good[0], pre_pt={"position": [-1, 5, 5]})], user=OWNER)
    refused(InputError, "pre_pt", ann.insert, "syn", [{k: v for k, v in good[0].items() if k != "pre_pt"}], user=OWNER)
    refused(InputError, "size", ann.insert, "syn", [dict(good[0], size="big")], user=OWNER)
    refused(InputError, "unknown field 'colour'", ann.insert, "syn", [dict(good[0], colour=1)], user=OWNER)
    refused(InputError, "non-empty list", ann.insert, "syn", [], user=OWNER)
    refused(NotFoundError, "no annotation table 'ghost'", ann.insert, "ghost", good[:1], user=OWNER)
    refused(NotFoundError, r"\[999\]", ann.update, "syn", [{"id": 999, **good[0]}], user=OWNER)
    refused(NotFoundError, r"\[12\]", ann.update, "syn", [{"id": 12, **good[0]}], user=OWNER)
    refused(InputError, "same id twice", ann.update, "syn", [{"id": 1, **good[0]}, {"id": 1, **good[1]}], user=OWNER)
    refused(InputError, "needs the annotation's 'id'", ann.update, "syn", [good[0]], user=OWNER)
    refused(OutOfBoundsError, "outside the volume", ann.update, "syn", [{"id": 2, **outside[1]}], user=OWNER)
    refused(NotFoundError, r"\[12\]", ann.delete, "syn", [3, 12], user=OWNER)
    refused(InputError, "integers", ann.delete, "syn", ["x"], user=OWNER)
    refused(ConflictError, "referenced by", ann.delete_table, "syn", user=OWNER)
    # queries
    refused(InputError, "has no column 'colour'", ann.query, QuerySpec(["syn"], [Filter("equal", "syn", "colour", 1)]))
    refused(InputError, "needs a string column", ann.query, QuerySpec(["syn"], [Filter("regex", "syn", "size", "^1")]))
    refused(InputError, "invalid regex", ann.query, QuerySpec(["tags"], [Filter("regex", "tags", "tag", "(")]))
    refused(InputError, "not in this query", ann.query, QuerySpec(["syn"], [Filter("equal", "tags", "tag", "a")]))
    refused(InputError, "only take filter_spatial_dict", ann.query, QuerySpec(["syn"], [Filter("equal", "syn", "pre_pt_position", 1)]))
    refused(InputError, "every min must be < max", ann.query, QuerySpec(["syn"], [Filter("spatial", "syn", "pre_pt_position", [[5, 5, 5], [1, 1, 1]])]))
    refused(InputError, "values must be float64", ann.query, QuerySpec(["syn"], [Filter("greater", "syn", "size", "x")]))
    refused(InputError, "row limit 5", ann.query, QuerySpec(["syn"]))
    refused(InputError, "above this server's row limit 5", ann.query, QuerySpec(["syn"], limit=6))
    refused(InputError, "before this dataset existed", ann.query, QuerySpec(["syn"]), 1.0)
    refused(NotFoundError, "no materialized version 99", ann.query, QuerySpec(["syn"]), version=99)
    refused(NotFoundError, "no annotation table 'ghost'", ann.query, QuerySpec(["ghost"]))
    # versions
    ann.create_version()
    numbers = ann.version_numbers()
    refused(InputError, "cannot be in the future", ann.create_version, time.time() + 3600)
    refused(InputError, "older than the newest version", ann.create_version, cg.meta.created_ms / 1000)
    refused(NotFoundError, "no materialized version 7", ann.keep_version, 7)
    assert ann.version_numbers() == numbers
    page = ann.query(QuerySpec(["syn"], limit=5, offset=5)).table.column("id").to_pylist()
    assert page == [6, 7, 8, 9, 10]  # paging within the row limit works
    assert ann.query(QuerySpec(["syn"], count=True)).table.column("count").to_pylist() == [11]
    ann.close()
    cg.close()


# --------------------------------------------------------------------------- permissions
@pytest.mark.parametrize(
    ("read", "write", "readers", "writers"),
    [
        ("PRIVATE", "PRIVATE", {OWNER}, {OWNER}),
        ("GROUP", "GROUP", {OWNER, "bo"}, {OWNER, "bo"}),
        ("PUBLIC", "PRIVATE", {OWNER, "bo", "cy"}, {OWNER}),
        ("PUBLIC", "GROUP", {OWNER, "bo", "cy"}, {OWNER, "bo"}),
        ("PUBLIC", "PUBLIC", {OWNER, "bo", "cy"}, {OWNER, "bo", "cy"}),
    ],
)
def test_permissions(base, tmp_path, fg, bg, read, write, readers, writers):
    d, cg, ann = fresh(base, tmp_path)
    groups = {OWNER: ["lab"], "bo": ["lab", "x"], "cy": ["other"]}
    rng = np.random.default_rng(8)
    ann.create_table("t", "synapse", "d", SYN_RES, user=OWNER, groups=["lab"], read_permission=read, write_permission=write)
    recs = syn_records(*syn_batch(rng, fg, bg, 10))
    ann.insert("t", recs[:4], user=OWNER, groups=groups[OWNER])
    for user in (OWNER, "bo", "cy"):
        g = groups[user]
        n = ann.count("t")
        if user in readers:
            assert ann.query(QuerySpec(["t"]), user=user, groups=g).table.num_rows == n
            assert ann.count("t", user=user, groups=g) == n
            assert ann.get_annotations("t", [1], user=user, groups=g)[0]["id"] == 1
            assert ann.table_metadata("t", user=user, groups=g)["read_permission"] == read
        else:
            for fn, args in (
                (ann.query, (QuerySpec(["t"]),)),
                (ann.count, ("t",)),
                (ann.get_annotations, ("t", [1])),
                (ann.table_metadata, ("t",)),
            ):
                with pytest.raises(PermissionDeniedError, match=f"user '{user}' may not read table 't'"):
                    fn(*args, user=user, groups=g)
        alive = [int(i) for i in ann.query(QuerySpec(["t"])).table.column("id").to_pylist()]
        if user in writers:
            new = ann.insert("t", recs[4:5], user=user, groups=g)
            upd = ann.update("t", [{"id": int(new[0]), **recs[5]}], user=user, groups=g)
            assert ann.delete("t", list(upd.values()), user=user, groups=g) == list(upd.values())
        else:
            for fn, args in (
                (ann.insert, ("t", recs[4:5])),
                (ann.update, ("t", [{"id": alive[0], **recs[5]}])),
                (ann.delete, ("t", alive[:1])),
            ):
                with pytest.raises(PermissionDeniedError, match=f"user '{user}' may not write to table 't'"):
                    fn(*args, user=user, groups=g)
            assert ann.count("t") == n
        if user != OWNER:  # metadata changes and deletion: the owner only, whatever the levels
            with pytest.raises(PermissionDeniedError, match="only the owner"):
                ann.update_table_metadata("t", {"description": "mine"}, user=user, groups=g)
            with pytest.raises(PermissionDeniedError, match="only the owner"):
                ann.delete_table("t", user=user, groups=g)
    # the server itself (user None) reads everything; the owner can open the table up
    assert ann.query(QuerySpec(["t"])).table.num_rows == 4
    ann.update_table_metadata("t", {"read_permission": "PUBLIC", "write_permission": "PUBLIC"}, user=OWNER)
    assert ann.count("t", user="cy", groups=["other"]) == 4
    ann.insert("t", recs[6:7], user="cy", groups=["other"])
    assert ann.get_annotations("t", [ann.tables["t"].n_rows])[0]["valid"]
    ann.close()
    cg.close()


def test_timestamps_round_trip():
    """The float seconds these tests pass map back to the same millisecond."""
    from cavelab.server.engine.timestamps import to_ms

    t = now_ms()
    assert all(to_ms(x / 1000) == x for x in range(t - 5000, t))
    assert to_ms(dt.datetime.fromtimestamp(t / 1000, tz=dt.timezone.utc)) == t
