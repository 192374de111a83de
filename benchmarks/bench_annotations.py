"""Benchmarks of annotation tables and materialization (issue 3); results beside CAVE's medians.

Usage::

    python benchmarks/bench_annotations.py --preset small --no-markdown   # quick debug run
    python benchmarks/bench_annotations.py --preset large                 # 10 M synapses

What it does, on a work copy of the ingested dataset (the ingested dataset is never written):

1. generates (once, cached as Parquet beside the dataset) ``N`` synthetic synapses: pairs of
   face-adjacent voxels whose supervoxels differ, are non-zero and belong to different roots
   at ingest, sampled uniformly over the whole volume and sorted by segmentation chunk;
2. starts a real Jupyter server with the cavelab extension, creates the table ``synapses``
   through caveclient and bulk-loads the rows through ``POST cave/api/annotation/.../bulk``
   (Parquet bodies of ~1 M rows), timing each batch;
3. creates a version (time, bytes), edits ~20 neurons through caveclient (merges, splits),
   records a timestamp ``T``, makes a few more edits, creates a second version;
4. times "presynapses of one neuron" through caveclient: at a version (aligned), at ``T``
   (``live_live_query``, edited and unedited neurons) and with caveclient's composite
   ``query_table(timestamp=T)``; then, with the server stopped, in process;
5. loads the version-aligned table into PostgreSQL (``localhost:5432``) with B-tree indexes on
   the root-ID columns, as CAVE's frozen tables have, and times the same query there.

Results go to ``benchmarks/results/annotations_<preset>.json``; ``BENCHMARKS.md`` is re-rendered
by :func:`bench_graph.render`, which includes :func:`render_section` when that file exists.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
import json
import logging
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_graph import (
    RESULTS,
    ROOT,
    cavelab,
    fmt,
    free_port,
    fresh_copy,
    pct,
    run_child_measured,
    timed,
)

from cavelab.server.synth.synapses import synthetic_synapses

HERE = Path(__file__).resolve().parent
TABLE = "synapses"
DEFAULT_ROWS = {"large": 10_000_000, "small": 200_000, "tiny": 5_000}
CAVE_MS = {"aligned": 525.0, "not_aligned_low": 978.0, "not_aligned_high": 1385.0}
"""CAVE's published medians for "presynapses of one neuron" (Dorkenwald et al. 2025)."""
TARGET_MS = {"aligned": 10.0, "timestamp": 20.0}
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
UPLOAD_COLUMNS = [
    *(f"{p}_position_{ax}" for p in ("pre_pt", "post_pt", "ctr_pt") for ax in "xyz"),
    "size",
]


# --------------------------------------------------------------------------- dataset
def ensure_dataset(preset: str, src: Path, ds: Path) -> dict[str, Any]:
    """Generate and ingest ``preset`` unless already there (the same files bench_graph uses)."""
    if not (src / "source.json").exists():
        print(f"generating {preset} into {src} ...", flush=True)
        subprocess.run(cavelab("generate", str(src), "--preset", preset, "--overwrite", "--quiet"), check=True)
    marker = ds / "bench_ingest.json"
    if not marker.exists():
        print(f"ingesting into {ds} ...", flush=True)
        wall, peak = run_child_measured(cavelab("ingest", str(src), str(ds), "--overwrite", "--quiet"))
        rep = json.loads((ds / "ingest_report.json").read_text())
        info = {"wall_s": wall, "peak_rss_gib": peak, "n_supervoxels": rep["n_supervoxels"], "n_edges": rep["n_edges"]}
        info["supervoxels_per_second"] = rep["n_supervoxels"] / wall
        marker.write_text(json.dumps(info))
    return json.loads(marker.read_text())


def work_copy(ds: Path, work: Path) -> Path:
    """:func:`bench_graph.fresh_copy` without any annotation state (log, versions)."""
    out = fresh_copy(ds, work)
    for p in out.iterdir():
        if p.name.startswith("annotations.sqlite") or p.name == "versions":
            p.unlink()
    return out


def dir_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# --------------------------------------------------------------------------- synapses
def load_synapses(ds: Path, n: int) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The cached synapse table (generated on the first call)."""
    path = ds.parent / f"{ds.name}_synapses_{n}.parquet"
    info_path = path.with_suffix(".json")
    if not path.exists():
        print(f"generating {n:,} synapses -> {path} ...", flush=True)
        t, df = timed(synthetic_synapses, ds, n)
        df.to_parquet(path, compression="zstd", index=False)
        info_path.write_text(json.dumps({"generate_s": t, "contacts_total": df.attrs["contacts_total"]}))
    return pd.read_parquet(path), json.loads(info_path.read_text())


# --------------------------------------------------------------------------- server
@dataclass
class Server:
    """A running Jupyter server with the cavelab extension, and a caveclient connected to it."""

    url: str
    name: str
    token: str
    proc: subprocess.Popen
    ready_s: float
    client: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@contextmanager
def running_server(ds: Path, log_path: Path) -> Iterator[Server]:
    """Start ``ds``'s server (bench_graph's way, via :func:`cavelab.server.serve.build_command`)."""
    import requests
    from caveclient import CAVEclient

    from cavelab.server.serve import build_command

    home = Path(tempfile.mkdtemp(prefix="cavelab-bench-home-"))
    cmd = build_command(ds, port=free_port(), root_dir=home)
    env = dict(os.environ, HOME=str(home), JUPYTER_RUNTIME_DIR=str(home / "runtime"), **cmd.env)
    with open(log_path, "ab") as logf:
        proc = subprocess.Popen(cmd.argv, env=env, stdout=logf, stderr=logf, start_new_session=True)
    headers = {"Authorization": f"Bearer {cmd.token}"}
    try:
        t0 = time.perf_counter()
        while True:
            try:
                st = requests.get(f"{cmd.url}/api/status", headers=headers, timeout=5).json()
                if st.get("state") == "error":
                    raise SystemExit(f"the server could not open the dataset: {st.get('message')}")
                if st.get("ready"):
                    break
            except (requests.RequestException, ValueError):
                pass
            if time.perf_counter() - t0 > 900 or proc.poll() is not None:
                raise SystemExit(f"server did not start; see {log_path}")
            time.sleep(0.5)
        srv = Server(cmd.url, cmd.name, cmd.token, proc, time.perf_counter() - t0, headers=headers)
        srv.client = CAVEclient(cmd.name, server_address=cmd.url, auth_token=cmd.token, write_server_cache=False)
        yield srv
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(home, ignore_errors=True)


def post_json(srv: Server, path: str, body: Any = None, data: bytes | None = None, timeout: float = 1800) -> Any:
    """POST to ``{server}/cave/{path}``; raise with the server's message on an error."""
    import requests

    r = requests.post(f"{srv.url}/{path}", json=body if data is None else None, data=data, headers=srv.headers, timeout=timeout)
    if not r.ok:
        raise RuntimeError(f"POST {path} -> {r.status_code}: {r.text[:2000]}")
    return r.json()


def bulk_load(srv: Server, df: pd.DataFrame, batch: int) -> dict[str, Any]:
    """Insert ``df`` in Parquet batches through the bulk route; rows/s overall and per batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = f"api/annotation/{srv.name}/table/{TABLE}/bulk"
    batches, post_s, encode_s, ids = [], 0.0, 0.0, []
    for start in range(0, len(df), batch):
        part = df.iloc[start : start + batch][UPLOAD_COLUMNS]
        t0 = time.perf_counter()
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), buf, compression="zstd")
        body = buf.getvalue()
        t1 = time.perf_counter()
        ans = post_json(srv, path, data=body)
        t2 = time.perf_counter()
        encode_s += t1 - t0
        post_s += t2 - t1
        ids.append((ans["first_id"], ans["last_id"]))
        batches.append({"rows": int(ans["n"]), "bytes": len(body), "post_s": t2 - t1, "rows_per_s": ans["n"] / (t2 - t1)})
        print(f"  batch {len(batches)}: {ans['n']:,} rows in {t2 - t1:.1f} s ({ans['n'] / (t2 - t1):,.0f} rows/s)", flush=True)
    n = sum(b["rows"] for b in batches)
    contiguous = all(b[0] == a[1] + 1 for a, b in zip(ids, ids[1:])) and ids[0][0] == 1
    return {
        "rows": n, "batch_rows": batch, "batches": batches, "post_s": post_s, "encode_s": encode_s,
        "rows_per_s": n / post_s, "rows_per_s_incl_encoding": n / (post_s + encode_s),
        "body_bytes": sum(b["bytes"] for b in batches), "ids_contiguous": contiguous,
        "rows_per_s_batches": pct([b["rows_per_s"] for b in batches]),
    }


def lookup_cost(ds: Path, df: pd.DataFrame, batch: int) -> dict[str, float]:
    """Seconds to look up the supervoxels of one batch's pre and post points (the server's zarr reads)."""
    from cavelab.server.engine.meta import DatasetMeta
    from cavelab.server.engine.segmentation import Segmentation

    seg = Segmentation(ds, DatasetMeta.load(ds))
    part = df.iloc[:batch]
    out = {"rows": len(part)}
    for pt in ("pre_pt", "post_pt"):
        vox = part[[f"{pt}_position_{ax}" for ax in "xyz"]].to_numpy(np.int64)
        out[f"{pt}_s"], _ = timed(seg.supervoxels_at, vox)
    return out


def rss_gib(pid: int) -> float:
    """Resident memory of a process and its children, GiB."""
    import psutil

    p = psutil.Process(pid)
    return (p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True))) / 2**30


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, GiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def create_version(srv: Server, ds: Path) -> dict[str, Any]:
    """A version now, through cavelab's route: seconds, bytes, on-disk size of ``versions/``."""
    t, ans = timed(post_json, srv, f"api/materialize/{srv.name}/version", {})
    return {"version": int(ans["version"]), "seconds": t, "bytes": int(ans["bytes"]),
            "time_stamp": ans["time_stamp"], "versions_dir_bytes": dir_bytes(ds / "versions")}


# --------------------------------------------------------------------------- edits
@dataclass
class EditLog:
    """Edits made through caveclient, and the neurons they touched."""

    merges_ms: list[float] = field(default_factory=list)
    splits_ms: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    touched: set[int] = field(default_factory=set)  # roots at ingest that any edit changed
    new_roots: list[int] = field(default_factory=list)  # roots created by the edits
    ops: list[dict[str, Any]] = field(default_factory=list)


def pick_neurons(df: pd.DataFrame, rng: np.random.Generator) -> tuple[np.ndarray, pd.Series, dict[str, float]]:
    """Roots whose presynapse count is between the median and the 90th percentile, shuffled."""
    counts = df["pre_root0"].value_counts()
    lo, hi = float(counts.quantile(0.5)), float(counts.quantile(0.9))
    pool = counts[(counts >= lo) & (counts <= hi)].index.to_numpy(dtype=np.uint64)
    rng.shuffle(pool)
    return pool, counts, {"median": lo, "p90": hi, "max": float(counts.max()), "n_roots_with_presynapses": int(counts.size)}


def merge_neuron(cgc: Any, df: pd.DataFrame, root: int, avoid: set[int], res: tuple[float, ...], log: EditLog, rng: np.random.Generator) -> int | None:
    """Merge ``root`` with the partner of one of its synapses (a real contact); the new root."""
    mine = df[df["pre_root0"].to_numpy() == np.uint64(root)]
    cand = mine[~mine["post_root0"].isin(list(avoid))]
    pre = cand[[f"pre_pt_position_{ax}" for ax in "xyz"]].to_numpy(np.int64)
    post = cand[[f"post_pt_position_{ax}" for ax in "xyz"]].to_numpy(np.int64)
    pre_sv, post_sv, partner = (cand[c].to_numpy(np.uint64) for c in ("pre_sv", "post_sv", "post_root0"))
    for i in rng.permutation(len(cand))[:5]:
        svs, pts = [int(pre_sv[i]), int(post_sv[i])], [pre[i].tolist(), post[i].tolist()]
        try:
            t, r = timed(cgc.do_merge, svs, pts, resolution=res)
        except Exception as e:  # the server's message is the result to report
            log.failures.append(f"merge {root}: {type(e).__name__}: {str(e)[:300]}")
            continue
        log.merges_ms.append(t * 1e3)
        log.touched |= {int(root), int(partner[i])}
        new = [int(x) for x in r["new_root_ids"]]
        log.new_roots += new
        log.ops.append({"kind": "merge", "root": int(root), "partner": int(partner[i]), "new": new})
        return new[0]
    return None


def split_neuron(cgc: Any, df: pd.DataFrame, root: int, current: int, res: tuple[float, ...], log: EditLog, rng: np.random.Generator) -> list[int] | None:
    """Split ``current`` (ingest root ``root``) between two far-apart presynaptic supervoxels."""
    mine = df[df["pre_root0"].to_numpy() == np.uint64(root)]
    pos = mine[[f"pre_pt_position_{ax}" for ax in "xyz"]].to_numpy(np.float64) * np.asarray(res)
    svs = mine["pre_sv"].to_numpy()
    for a in rng.permutation(len(mine))[:3]:
        d = np.linalg.norm(pos - pos[a], axis=1)
        d[svs == svs[a]] = -1
        b = int(np.argmax(d))
        if d[b] <= 0:
            continue
        try:
            t, (op, new) = timed(cgc.execute_split, [pos[a].tolist()], [pos[b].tolist()], int(current),
                                 source_supervoxels=[int(svs[a])], sink_supervoxels=[int(svs[b])])
        except Exception as e:  # the server's message is the result to report
            log.failures.append(f"split {current}: {type(e).__name__}: {str(e)[:300]}")
            continue
        log.splits_ms.append(t * 1e3)
        log.touched.add(int(root))
        new = [int(x) for x in new]
        log.new_roots += new
        log.ops.append({"kind": "split", "root": int(current), "new": new, "operation_id": int(op)})
        return new
    return None


# --------------------------------------------------------------------------- timing
def time_calls(fn: Callable[[int], Any], roots: list[int], warmup: int = 3) -> tuple[dict[str, float], list[int]]:
    """p50/p95 (ms) of ``fn(root)`` over ``roots`` (after ``warmup`` untimed calls); rows each."""
    for r in roots[:warmup]:
        fn(r)
    ms, rows = [], []
    for r in roots:
        t, out = timed(fn, r)
        ms.append(t * 1e3)
        rows.append(len(out))
    return pct(ms), rows


def summary(ms: dict[str, float], rows: list[int]) -> dict[str, Any]:
    return {**ms, "rows_p50": float(np.median(rows)) if rows else 0.0, "rows_max": int(max(rows, default=0)), "rows_total": int(sum(rows))}


def cycle(xs: list[int], n: int) -> list[int]:
    """``n`` items, repeating ``xs`` as needed."""
    return [xs[i % len(xs)] for i in range(n)] if xs else []


def bench_http(srv: Server, sets: dict[str, list[int]], v: int, ts: dt.datetime, n_composite: int) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """The caveclient query kinds; also the rows each root returned (for cross-checks)."""
    mat = srv.client.materialize
    out: dict[str, Any] = {}
    rows: dict[str, list[int]] = {}

    def aligned(split: bool) -> Callable[[int], Any]:
        return lambda r: mat.query_table(TABLE, filter_equal_dict={"pre_pt_root_id": int(r)}, materialization_version=v, split_positions=split)

    def live(r: int) -> Any:
        return mat.live_live_query(TABLE, ts, filter_equal_dict={TABLE: {"pre_pt_root_id": int(r)}}, split_positions=True)

    def composite(r: int) -> Any:
        return mat.query_table(TABLE, filter_equal_dict={"pre_pt_root_id": int(r)}, timestamp=ts, split_positions=True)

    for key, fn, roots in (
        ("aligned_split", aligned(True), sets["aligned"]),
        ("aligned_default", aligned(False), sets["aligned"]),
        ("timestamp_edited", live, sets["edited"]),
        ("timestamp_unedited", live, sets["unedited"]),
        ("composite_edited", composite, sets["edited"][:n_composite]),
        ("composite_unedited", composite, sets["unedited"][:n_composite]),
    ):
        print(f"  caveclient {key} ({len(roots)} queries) ...", flush=True)
        ms, rows[key] = time_calls(fn, roots)
        out[key] = summary(ms, rows[key])
    return out, rows


def bench_inprocess(ds: Path, sets: dict[str, list[int]], v: int, ts: dt.datetime, export: Path, rows_expected: int) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Open the work copy in this process (replays both logs), time queries, export the version."""
    from cavelab.server.annotations.engine import AnnotationEngine
    from cavelab.server.annotations.query import Filter, QuerySpec
    from cavelab.server.engine.graph import ChunkedGraph

    out: dict[str, Any] = {}
    rows: dict[str, list[int]] = {}
    t_cg, cg = timed(ChunkedGraph.open, ds)
    t_ann, ann = timed(AnnotationEngine.open, cg, ds)
    out["open_graph_s"], out["open_annotations_s"] = t_cg, t_ann
    out["rss_after_open_gib"] = rss_gib(os.getpid())
    try:
        def q(version: int | None, when: dt.datetime | None) -> Callable[[int], Any]:
            return lambda r: ann.query(QuerySpec([TABLE], [Filter("equal", TABLE, "pre_pt_root_id", int(r))]), when, version=version).table

        for key, fn, roots in (
            ("aligned", q(v, None), sets["aligned"]),
            ("timestamp_edited", q(None, ts), sets["edited"]),
            ("timestamp_unedited", q(None, ts), sets["unedited"]),
        ):
            ms, rows[key] = time_calls(fn, roots)
            out[key] = summary(ms, rows[key])
        # the whole version as one Parquet file, for PostgreSQL
        out["peak_rss_before_export_gib"] = peak_rss_gib()
        t, _ = timed(ann.export_version_table, v, TABLE, export)
        out["export_s"] = t
        out["export_bytes"] = export.stat().st_size
        out["peak_rss_after_export_gib"] = peak_rss_gib()
    finally:
        ann.close()
        cg.close()
    return out, rows


# --------------------------------------------------------------------------- PostgreSQL
def bench_postgres(export: Path, v: int, roots: list[int]) -> tuple[dict[str, Any], list[int]]:
    """Load the version-aligned table into PostgreSQL via COPY, index roots, time the same query."""
    import psycopg
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    name = f"{TABLE}_v{v}_bench"
    out: dict[str, Any] = {"table": name}
    pf = pq.ParquetFile(export)
    cols = list(pf.schema_arrow.names)
    types = {"id": "bigint PRIMARY KEY", "created": "timestamp", "valid": "boolean", "size": "double precision"}
    ddl = ", ".join(
        f"{c} {types.get(c, 'bigint' if c.endswith(('_id',)) else 'double precision')}" for c in cols
    )
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        out["server"] = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        try:
            conn.execute(f"CREATE UNLOGGED TABLE {name} ({ddl})")
            t0 = time.perf_counter()
            with conn.cursor() as cur, cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN WITH (FORMAT csv)") as cp:
                for batch in pf.iter_batches(batch_size=500_000, columns=cols):
                    buf = io.BytesIO()
                    pacsv.write_csv(batch, buf, pacsv.WriteOptions(include_header=False))
                    cp.write(buf.getvalue())
            out["copy_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            conn.execute(f"CREATE INDEX ON {name} (pre_pt_root_id)")
            conn.execute(f"CREATE INDEX ON {name} (post_pt_root_id)")
            out["index_s"] = time.perf_counter() - t0
            conn.execute(f"ANALYZE {name}")
            out["rows"] = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
            out["table_bytes"] = conn.execute(f"SELECT pg_total_relation_size('{name}')").fetchone()[0]
            sql = f"SELECT * FROM {name} WHERE pre_pt_root_id = %s"
            out["plan"] = " / ".join(r[0] for r in conn.execute(f"EXPLAIN {sql}", (int(roots[0]),)).fetchall())

            def query(r: int) -> pd.DataFrame:
                with conn.cursor() as cur:
                    cur.execute(sql, (int(r),), prepare=True)
                    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])

            ms, rows = time_calls(query, roots)
            out["aligned"] = summary(ms, rows)
        finally:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
    return out, rows


# --------------------------------------------------------------------------- report
def ratio_text(ms: float, ref: float) -> str:
    return f"{ref / ms:,.0f}× faster" if ms <= ref else f"{ms / ref:,.1f}× slower"


def render_section(res: dict[str, Any]) -> str:
    """The "Annotations and materialization" section of BENCHMARKS.md (from the results JSON)."""
    h, ip, pg = res["http"], res.get("inprocess", {}), res.get("postgres", {})
    bl, v1, v2 = res["bulk"], res["version_loaded"], res["version_edited"]

    def cell(d: dict[str, Any] | None) -> str:
        return f"{fmt(d['p50'])} / {fmt(d['p95'])} ms" if d else "n/a"

    def rows(d: dict[str, Any] | None) -> str:
        return f"{d['rows_p50']:,.0f}" if d else "—"

    aligned_cave = f"{CAVE_MS['aligned']:,.0f} ms"
    ts_cave = f"{CAVE_MS['not_aligned_low']:,.0f} / {CAVE_MS['not_aligned_high']:,.0f} ms"
    table = [
        ("At a version (aligned), caveclient `query_table(split_positions=True)`", cell(h["aligned_split"]), rows(h["aligned_split"]), aligned_cave, f"≤ {TARGET_MS['aligned']:.0f} ms", cell(pg.get("aligned"))),
        ("At a version, caveclient `query_table()` (default: positions merged client-side)", cell(h["aligned_default"]), rows(h["aligned_default"]), aligned_cave, f"≤ {TARGET_MS['aligned']:.0f} ms", "—"),
        ("At timestamp T, `live_live_query`, edited neurons", cell(h["timestamp_edited"]), rows(h["timestamp_edited"]), ts_cave, f"≤ {TARGET_MS['timestamp']:.0f} ms", "—"),
        ("At timestamp T, `live_live_query`, unedited neurons", cell(h["timestamp_unedited"]), rows(h["timestamp_unedited"]), ts_cave, f"≤ {TARGET_MS['timestamp']:.0f} ms", "—"),
        ("At timestamp T, caveclient composite `query_table(timestamp=T)`, edited", cell(h["composite_edited"]), rows(h["composite_edited"]), ts_cave, "—", "—"),
        ("At timestamp T, caveclient composite `query_table(timestamp=T)`, unedited", cell(h["composite_unedited"]), rows(h["composite_unedited"]), ts_cave, "—", "—"),
        ("At a version, in process (`AnnotationEngine.query`, no HTTP)", cell(ip.get("aligned")), rows(ip.get("aligned")), aligned_cave, "—", "—"),
        ("At timestamp T, in process, edited / unedited", f"{cell(ip.get('timestamp_edited'))}; {cell(ip.get('timestamp_unedited'))}" if ip else "n/a", rows(ip.get("timestamp_edited")), ts_cave, "—", "—"),
    ]
    d = res["dataset"]
    out = [
        "## Annotations and materialization",
        "",
        f"Latest run: {res['when']} on {res['machine']}, preset `{res['preset']}`: a `synapse` table of "
        f"**{res['rows']:,} rows** ({d['n_supervoxels']:,} supervoxels; synapses are face-adjacent voxel pairs "
        f"of different cells sampled from {res['synapses']['contacts_total']:,} contacts). Produced by "
        "`python benchmarks/bench_annotations.py`; raw figures in `benchmarks/results/annotations_<preset>.json`.",
        "",
        "\"Presynapses of one neuron\": p50 / p95 over different neurons (presynapse counts between the "
        f"median and the 90th percentile, {res['neurons']['median']:,.0f}–{res['neurons']['p90']:,.0f}). "
        f"T is an arbitrary timestamp between version {v1['version']} and version {v2['version']}, after "
        f"{res['edits']['n_before_T']} edits (merges and splits through caveclient) and before {res['edits']['n_after_T']} more. "
        "PostgreSQL answers the same version-aligned query in the same run, the way CAVE does "
        f"({pg.get('server', 'PostgreSQL')}, B-tree indexes on the root-ID columns, rows fetched into a pandas DataFrame).",
        "",
        "| query | cavelab p50 / p95 | rows (p50) | CAVE median | target | PostgreSQL p50 / p95 (same run) |",
        "|---|---|---|---|---|---|",
    ]
    out += [f"| {' | '.join(r)} |" for r in table]
    a, te = h["aligned_split"]["p50"], h["timestamp_edited"]["p50"]
    tu = h["timestamp_unedited"]["p50"]
    out += [
        "",
        f"Against CAVE's medians: aligned {ratio_text(a, CAVE_MS['aligned'])}; at a timestamp "
        f"{ratio_text(max(te, tu), CAVE_MS['not_aligned_low'])} (vs {CAVE_MS['not_aligned_low']:,.0f} ms). "
        f"Against the targets: aligned p50 {fmt(a)} ms vs {TARGET_MS['aligned']:.0f} ms "
        f"({'met' if res['targets_met']['aligned'] else 'NOT met'}); at T p50 {fmt(max(te, tu))} ms vs "
        f"{TARGET_MS['timestamp']:.0f} ms ({'met' if res['targets_met']['timestamp'] else 'NOT met'})."
        + (f" PostgreSQL in the same run: {fmt(pg['aligned']['p50'])} ms p50 (database and DataFrame only, no HTTP)." if pg.get("aligned") else ""),
        "",
        "| write | figure |",
        "|---|---|",
        f"| Bulk insert through the bulk route, {bl['rows']:,} rows in {len(bl['batches'])} Parquet request(s) of ≤ {bl['batch_rows']:,} rows | "
        f"{bl['rows_per_s']:,.0f} rows/s ({fmt(bl['post_s'])} s; per batch p50 {bl['rows_per_s_batches']['p50']:,.0f} rows/s) |",
    ]
    lk = bl.get("segmentation_lookup")
    if lk:
        out.append(
            f"| of which: supervoxel lookups of one batch's pre + post points in the segmentation (measured alone) | "
            f"{fmt(lk['pre_pt_s'] + lk['post_pt_s'])} s per {lk['rows']:,} rows |"
        )
    out += [
        f"| Version {v1['version']} ({res['rows']:,} rows, first version of the table) | {fmt(v1['seconds'])} s, {v1['bytes'] / 2**20:,.1f} MiB |",
        f"| Version {v2['version']} (after {res['edits']['n_total']} edits) | {fmt(v2['seconds'])} s, {v2['bytes'] / 2**10:,.1f} KiB |",
        f"| `versions/` on disk after both | {v2['versions_dir_bytes'] / 2**20:,.1f} MiB |",
        f"| Merges / splits through caveclient (p50) | {fmt(res['edits']['merge_ms']['p50'])} / {fmt(res['edits']['split_ms']['p50'])} ms |",
    ]
    if pg:
        out.append(f"| PostgreSQL: COPY {pg['rows']:,} rows / two B-tree indexes | {fmt(pg['copy_s'])} s / {fmt(pg['index_s'])} s ({pg['table_bytes'] / 2**30:.2f} GiB) |")
    if ip:
        out.append(f"| In process: open graph / replay annotation log | {fmt(ip['open_graph_s'])} s / {fmt(ip['open_annotations_s'])} s |")
    if res.get("server_rss_gib"):
        out.append(f"| Server memory (graph + table) after the bulk load | {res['server_rss_gib']['after_bulk']:.1f} GiB |")
    out.append("")
    if res.get("notes"):
        out += ["Notes from the run: " + " ".join(res["notes"]), ""]
    notes = HERE / "analysis_annotations.md"  # hand-written reading of the figures
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    return "\n".join(out)


def rewrite_markdown(preset: str) -> None:
    """Re-render BENCHMARKS.md from the graph results of ``preset`` (includes our section)."""
    import bench_graph

    graph = RESULTS / f"graph_{preset}.json"
    if not graph.exists():
        print(f"no {graph}; BENCHMARKS.md not rewritten (run bench_graph.py --preset {preset})")
        return
    (ROOT / "BENCHMARKS.md").write_text(bench_graph.render(json.loads(graph.read_text())))


# --------------------------------------------------------------------------- main
def run(a: argparse.Namespace) -> dict[str, Any]:
    """The whole benchmark; returns the results document."""
    from cavelab.server.engine.meta import DatasetMeta

    src = Path(a.source or f"/tmp/cavelab_{a.preset}_src")
    ds = Path(a.dataset or f"/tmp/cavelab_{a.preset}_ds")
    n = a.rows or DEFAULT_ROWS.get(a.preset, 200_000)
    n_q = a.samples or (200 if a.preset == "large" else 100)
    rng = np.random.default_rng(1)
    res: dict[str, Any] = {
        "preset": a.preset,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "rows": n,
        "cave_ms": CAVE_MS,
        "targets_ms": TARGET_MS,
        "notes": [],
    }
    res["ingest"] = ensure_dataset(a.preset, src, ds)
    meta = DatasetMeta.load(ds)
    resolution = tuple(float(r) for r in meta.resolution)
    t, (df, syn) = timed(load_synapses, ds, n)
    res["synapses"] = {**syn, "load_s": t}
    res["dataset"] = {"name": meta.name, "n_supervoxels": res["ingest"]["n_supervoxels"], "resolution": resolution,
                      "size": [int(s) for s in meta.size], "chunk_size": [int(c) for c in meta.chunk_size]}
    pool, counts, res["neurons"] = pick_neurons(df, rng)
    pool_list = [int(x) for x in pool]
    print(f"{len(pool_list):,} neurons with {res['neurons']['median']:.0f}-{res['neurons']['p90']:.0f} presynapses", flush=True)

    work = Path(tempfile.mkdtemp(prefix="cavelab-bench-ann-", dir=a.workdir))
    wds = work_copy(ds, work / "ds")
    try:
        with running_server(wds, work / "server.log") as srv:
            print(f"server ready in {srv.ready_s:.1f} s", flush=True)
            res["server_ready_s"] = srv.ready_s
            cgc = srv.client.chunkedgraph
            sample = df.sample(min(2000, len(df)), random_state=0)
            got = cgc.get_roots(sample["pre_sv"].to_numpy())
            res["roots_at_ingest_check"] = bool(np.array_equal(np.asarray(got, dtype=np.uint64), sample["pre_root0"].to_numpy()))
            t, _ = timed(srv.client.annotation.create_table, table_name=TABLE, schema_name="synapse",
                         description="synthetic synapses (cavelab benchmark)", voxel_resolution=list(resolution))
            res["create_table_s"] = t
            print(f"bulk loading {n:,} rows ...", flush=True)
            res["bulk"] = bulk_load(srv, df, a.batch)
            print(f"  {res['bulk']['rows_per_s']:,.0f} rows/s", flush=True)
            res["bulk"]["segmentation_lookup"] = lookup_cost(wds, df, a.batch)
            res["server_rss_gib"] = {"after_bulk": rss_gib(srv.proc.pid)}
            print("creating a version ...", flush=True)
            res["version_loaded"] = vl = create_version(srv, wds)
            print(f"  version {vl['version']}: {vl['seconds']:.1f} s, {vl['bytes']:,} bytes", flush=True)

            # edits: ~20 neurons, half merged with a synaptic partner, half split
            log = EditLog()
            n_edit = min(a.edits, max(2, len(pool_list) // 3))  # small presets have few neurons
            edit_roots = pool_list[:n_edit]
            # every pool root is valid at the loaded version (edits come after it); on small
            # presets the pool is shorter than the sample and roots repeat
            aligned_roots = cycle(pool_list[n_edit:] + edit_roots, n_q)
            edited_at_t: list[int] = []
            for k, r in enumerate(edit_roots):
                if k % 2 == 0:
                    new = merge_neuron(cgc, df, r, set(edit_roots) | log.touched, resolution, log, rng)
                    edited_at_t += [new] if new else []
                else:
                    parts = split_neuron(cgc, df, r, r, resolution, log, rng)
                    edited_at_t += parts or []
            n_before = len(log.ops)
            time.sleep(0.2)
            ts = dt.datetime.now(dt.timezone.utc)
            time.sleep(0.2)
            # a few more edits after T, on neurons edited before it, so that answering at T
            # needs the graph's history (their roots at T are no longer current)
            for r in edit_roots[: max(2, n_edit // 4) : 2]:
                op = next((o for o in log.ops if o["root"] == r and o["kind"] == "merge"), None)
                if op:
                    split_neuron(cgc, df, r, op["new"][0], resolution, log, rng)
            res["edits"] = {
                "n_before_T": n_before, "n_after_T": len(log.ops) - n_before, "n_total": len(log.ops),
                "merge_ms": pct(log.merges_ms) if log.merges_ms else None,
                "split_ms": pct(log.splits_ms) if log.splits_ms else None,
                "failures": log.failures, "ops": log.ops, "T": ts.isoformat(),
            }
            res["version_edited"] = ve = create_version(srv, wds)
            print(f"  version {ve['version']} after edits: {ve['seconds']:.2f} s, {ve['bytes']:,} bytes", flush=True)

            unedited = [x for x in pool_list if x not in log.touched]
            current = np.asarray(cgc.is_latest_roots(unedited, timestamp=ts), dtype=bool)
            res["unedited_not_current_at_T"] = int((~current).sum())  # expected 0
            unedited = [x for x, ok in zip(unedited, current) if ok]
            sets = {"aligned": aligned_roots, "edited": cycle(edited_at_t, max(len(edited_at_t), n_q // 2)),
                    "unedited": cycle(unedited, n_q // 2)}
            print(f"  {len(log.ops)} edits ({n_before} before T), {len(log.failures)} failed", flush=True)
            res["query_sets"] = {k: len(v) for k, v in sets.items()} | {
                "edited_distinct": len(set(edited_at_t)), "unedited_distinct": len(set(unedited)), "aligned_distinct": len(set(aligned_roots))}
            http, http_rows = bench_http(srv, sets, vl["version"], ts, a.composite)
            res["http"] = http
            expected = [int(counts.get(np.uint64(x), 0)) for x in aligned_roots]
            res["check_aligned_rows_match_generator"] = http_rows["aligned_split"] == expected
            res["check_composite_equals_live"] = all(
                http_rows[f"composite_{k}"] == http_rows[f"timestamp_{k}"][: a.composite] for k in ("edited", "unedited")
            )
            res["server_rss_gib"]["after_queries"] = rss_gib(srv.proc.pid)
        del df, sample
        gc.collect()

        export = work / f"{TABLE}_v{vl['version']}.parquet"
        if not a.no_inprocess:
            print("in-process queries (server stopped) ...", flush=True)
            res["inprocess"], ip_rows = bench_inprocess(wds, sets, vl["version"], ts, export, n)
            res["check_inprocess_equals_http"] = all(
                ip_rows[k] == http_rows[h] for k, h in (("aligned", "aligned_split"), ("timestamp_edited", "timestamp_edited"), ("timestamp_unedited", "timestamp_unedited"))
            )
        else:
            res["notes"].append("In-process figures skipped (--no-inprocess).")
        if not a.no_postgres and export.exists():
            print("PostgreSQL ...", flush=True)
            res["postgres"], pg_rows = bench_postgres(export, vl["version"], sets["aligned"])
            res["check_postgres_equals_http"] = pg_rows == http_rows["aligned_split"]
        res["bench_process_peak_rss_gib"] = peak_rss_gib()
        res["work_dir_bytes"] = dir_bytes(work)
        res["annotations_log_bytes"] = sum(p.stat().st_size for p in wds.glob("annotations.sqlite*"))
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    h = res["http"]
    res["targets_met"] = {
        "aligned": h["aligned_split"]["p50"] <= TARGET_MS["aligned"],
        "timestamp": max(h["timestamp_edited"]["p50"], h["timestamp_unedited"]["p50"]) <= TARGET_MS["timestamp"],
    }
    res["ratios_vs_cave"] = {
        "aligned": CAVE_MS["aligned"] / h["aligned_split"]["p50"],
        "timestamp_edited": CAVE_MS["not_aligned_low"] / h["timestamp_edited"]["p50"],
        "timestamp_unedited": CAVE_MS["not_aligned_low"] / h["timestamp_unedited"]["p50"],
    }
    res["ratios_vs_target"] = {
        "aligned": h["aligned_split"]["p50"] / TARGET_MS["aligned"],
        "timestamp": max(h["timestamp_edited"]["p50"], h["timestamp_unedited"]["p50"]) / TARGET_MS["timestamp"],
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--rows", type=int, help="synapses (default 10,000,000 for large, 200,000 for small)")
    ap.add_argument("--source", help="source dir (default /tmp/cavelab_<preset>_src)")
    ap.add_argument("--dataset", help="dataset dir (default /tmp/cavelab_<preset>_ds)")
    ap.add_argument("--workdir", help="where the work copy goes (default: the temp dir)")
    ap.add_argument("--batch", type=int, default=1_000_000, help="rows per bulk request")
    ap.add_argument("--edits", type=int, default=20, help="neurons edited before T")
    ap.add_argument("--samples", type=int, help="queries per kind (default 200 large, 100 otherwise)")
    ap.add_argument("--composite", type=int, default=30, help="composite query_table(timestamp=) samples per kind")
    ap.add_argument("--no-inprocess", action="store_true")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work copy")
    ap.add_argument("--render-only", action="store_true", help="only re-render BENCHMARKS.md from the results")
    a = ap.parse_args()
    if a.render_only:
        rewrite_markdown(a.preset)
        return
    logging.getLogger().setLevel(logging.ERROR)  # live_live_query logs a deprecation warning per call
    save_results("annotations", a.preset, run(a), render_section, markdown=not a.no_markdown)


def save_results(kind: str, preset: str, res: dict[str, Any], render: Any, *, markdown: bool) -> Path:
    """Write ``results/<kind>_<preset>.json``, print its section and re-render BENCHMARKS.md."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{kind}_{preset}.json"
    path.write_text(json.dumps(res, indent=2, default=str))
    print(render(res))
    print(f"results: {path}")
    if markdown:
        rewrite_markdown(preset)
    return path


if __name__ == "__main__":
    sys.exit(main())
