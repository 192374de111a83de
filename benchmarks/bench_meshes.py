"""Benchmarks of L2 meshes, root meshes and mesh refresh after edits (issue 4).

Usage::

    python benchmarks/bench_meshes.py --preset small          # generates + ingests if needed
    python benchmarks/bench_meshes.py --preset large --no-mesh-all

What it does, on a work copy of the ingested dataset (``/tmp/cavelab_<preset>_ds``, made by the
same helpers as the other benchmarks when missing):

1. in process: meshes every L2 node of a sample of atomic chunks (ms per chunk: one read with a
   one-voxel overlap and one zmesh pass), then ``MeshService.root_mesh`` cold (first request:
   its L2 meshes computed) and warm (L2 meshes cached, stitched again) for typical roots, and
   optionally ``MeshService.mesh_all`` (every L2 node: the "mesh at ingest" warm-up), then
   :func:`bench_refresh_inprocess`: ``ChunkedGraph.merge`` + a listening ``MeshService``, ms from
   the merge's return until the new root's L2 meshes are all cached and ``root_mesh`` returned;
2. starts a real Jupyter server and, after each of ~10 merges through caveclient, measures
   :func:`bench_mesh_refresh`: ms from the acknowledgement until the new root's graphene manifest
   lists a fragment for each of its L2 nodes and the new L2 node's fragment is served (Draco).

Results go to ``benchmarks/results/meshes_<preset>.json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from bench_annotations import ensure_dataset, running_server, work_copy
from bench_graph import timed
from bench_morphology import pct, pick_merges, pick_roots

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TARGET_MS = {"refresh": 1000.0}


def bench_mesh_refresh(srv: Any, merges: list[dict[str, Any]], res: tuple[float, ...], prewarm: bool = True) -> dict[str, Any]:
    """Merges through caveclient; ms from each acknowledgement until the new root's manifest
    lists a mesh for every L2 node and the new L2 node's fragment can be fetched (decoded).

    ``merges`` as :func:`bench_morphology.pick_merges` makes them (``svs``, ``points_nm``, ``roots``).
    With ``prewarm`` both cells' manifests are requested before the merge (as neuroglancer does
    for cells on screen), so only the new L2 node is meshed afterwards; without it the first
    manifest of the new root meshes every L2 node of both cells.

    >>> bench_mesh_refresh(srv, merges, (8.0, 8.0, 40.0))["refresh_after_ack_ms"]   # doctest: +SKIP
    {'p50': 41.2, 'p95': 77.9, 'n': 10}
    """
    import DracoPy
    import requests

    cl = srv.client
    s = requests.Session()
    s.headers.update(srv.headers)
    info = s.get(f"{srv.url}/segmentation/table/{srv.name}/info", timeout=60).json()
    frag_base = f"{info['data_dir']}/{info['mesh']}/dynamic"
    manifest_url = f"{srv.url}/meshing/api/v1/table/{srv.name}/manifest"
    merge_ms, refresh_ms, manifest_ms, fetch_ms, polls, fails, per = [], [], [], [], [], [], []
    for m in merges:
        if prewarm:
            for r0 in m["roots"]:
                s.get(f"{manifest_url}/{int(r0)}:0", params={"verify": "1", "prepend_seg_ids": "1"}, timeout=600)
        pts_vox = [(np.asarray(p) / np.asarray(res)).tolist() for p in m["points_nm"]]
        try:
            t0 = time.perf_counter()
            r = cl.chunkedgraph.do_merge(m["svs"], pts_vox, resolution=list(res))
            ack = time.perf_counter()
        except Exception as e:  # the server's message is the result
            fails.append(f"merge {m['svs']}: {type(e).__name__}: {str(e)[:500]}")
            continue
        merge_ms.append((ack - t0) * 1e3)
        new_root = int(r["new_root_ids"][0])
        l2 = {int(x) for x in cl.chunkedgraph.get_leaves(new_root, stop_layer=2)}
        new_l2 = int(cl.chunkedgraph.get_roots([m["svs"][0]], stop_layer=2)[0])
        n = 0
        frags: dict[int, str] = {}
        while True:
            n += 1
            t1 = time.perf_counter()
            resp = s.get(f"{manifest_url}/{new_root}:0", params={"verify": "1", "prepend_seg_ids": "1"}, timeout=600)
            manifest_ms.append((time.perf_counter() - t1) * 1e3)
            if resp.ok:
                frags = {int(e[1:].split(":", 1)[0]): e[1:].split(":", 1)[1] for e in resp.json()["fragments"]}
                if set(frags) == l2 or (new_l2 in frags and set(frags) <= l2 and n > 1):
                    break
            if time.perf_counter() - ack > 30:
                fails.append(f"manifest of {new_root} incomplete after 30 s ({resp.status_code})")
                break
            time.sleep(0.005)
        t2 = time.perf_counter()
        fr = s.get(f"{frag_base}/{frags.get(new_l2, str(new_l2))}", timeout=600)
        ok = fr.ok and len(DracoPy.decode(fr.content).faces) > 0
        done = time.perf_counter()
        fetch_ms.append((done - t2) * 1e3)
        if not ok:
            fails.append(f"fragment of new L2 {new_l2}: HTTP {fr.status_code}")
        refresh_ms.append((done - ack) * 1e3)
        polls.append(n)
        per.append({"new_root": new_root, "new_l2": new_l2, "n_l2": len(l2), "n_listed": len(frags),
                    "merge_ms": merge_ms[-1], "refresh_ms": refresh_ms[-1]})
    return {
        "n_merges": len(merge_ms), "failures": fails, "prewarmed": prewarm,
        "merge_ms": pct(merge_ms),
        "refresh_after_ack_ms": pct(refresh_ms),
        "manifest_call_ms": pct(manifest_ms),
        "fragment_fetch_ms": pct(fetch_ms),
        "manifest_polls_max": max(polls, default=0),
        "merges": per,
    }



def bench_refresh_inprocess(cg: Any, merges: list[dict[str, Any]], prewarm: bool = True) -> dict[str, Any]:
    """``ChunkedGraph.merge`` in process with a listening ``MeshService``: ms from the return of
    the merge until every L2 node of the new root is cached (the worker's refresh done) and
    ``root_mesh(new_root)`` has returned. With ``prewarm`` both cells' root meshes are made first.
    Also records what the worker meshed (L2 nodes, chunks, ms per meshing call) and open edges.

    >>> bench_refresh_inprocess(cg, merges)["refresh_after_merge_ms"]   # doctest: +SKIP
    {'p50': 240.1, 'p95': 520.3, 'n': 10}
    """
    from cavelab.server.morphology.mesh_service import MeshService
    from cavelab.server.morphology.meshes import open_edges

    svc = MeshService(cg)
    calls: list[tuple[int, int, float]] = []
    compute = svc._compute

    def logged(ids: np.ndarray) -> Any:
        t = time.perf_counter()
        out = compute(ids)
        ch = cg.meta.layout.chunk_coords(np.asarray(ids, dtype=np.uint64))
        calls.append((len(ids), len(np.unique(ch, axis=0)), (time.perf_counter() - t) * 1e3))
        return out

    svc._compute = logged  # type: ignore[method-assign]
    merge_ms, refresh_ms, per, fails = [], [], [], []
    try:
        for m in merges:
            if prewarm:
                for r0 in m["roots"]:
                    svc.root_mesh(int(r0))
            calls.clear()
            try:
                t0 = time.perf_counter()
                cg.merge([[m["svs"][0]], [m["svs"][1]]], user="bench")
                ack = time.perf_counter()
            except Exception as e:
                fails.append(f"merge {m['svs']}: {type(e).__name__}: {e}")
                continue
            new_root = int(cg.get_root(m["svs"][0]))
            l2 = cg.get_leaves(new_root, stop_layer=2).tolist()
            while not all(svc.cached(l2)) or svc.pending():
                if time.perf_counter() - ack > 60:
                    fails.append(f"{new_root}: not refreshed after 60 s")
                    break
                time.sleep(0.002)
            rm = svc.root_mesh(new_root)
            done = time.perf_counter()
            merge_ms.append((ack - t0) * 1e3)
            refresh_ms.append((done - ack) * 1e3)
            per.append({"new_root": new_root, "n_l2": len(l2), "refresh_ms": refresh_ms[-1],
                        "meshed": [list(c) for c in calls], "open_edges": open_edges(rm)})
    finally:
        svc.close()
    return {"n_merges": len(refresh_ms), "failures": fails, "prewarmed": prewarm,
            "merge_ms": pct(merge_ms), "refresh_after_merge_ms": pct(refresh_ms),
            "open_edges_max": max((p["open_edges"] for p in per), default=0), "merges": per}


def bench_inprocess(cg: Any, roots: list[int], n_chunks: int, mesh_all: bool, rng: np.random.Generator) -> dict[str, Any]:
    """ms per chunk (all L2 nodes of the chunk), root meshes cold and warm, optional mesh_all."""
    from cavelab.server.morphology.mesh_service import MeshService
    from cavelab.server.morphology.meshes import l2_meshes, open_edges

    st = cg.state
    out: dict[str, Any] = {}
    l2_all = np.unique(np.asarray(cg.get_roots(st.sv_ids, stop_layer=2), dtype=np.uint64))
    chunks = st.layout.chunk_coords(l2_all)
    keys, inv = np.unique(chunks, axis=0, return_inverse=True)
    inv = inv.ravel()
    pick = rng.choice(len(keys), size=min(n_chunks, len(keys)), replace=False)
    per_chunk, per_node, faces = [], [], []
    for k in pick.tolist():
        ids = l2_all[inv == k]
        t, ms = timed(l2_meshes, cg.meta, cg, cg.segmentation, ids)
        per_chunk.append(t * 1e3)
        per_node.append(t * 1e3 / ids.size)
        faces.append(sum(m.n_faces for m in ms.values()))
    out["chunk_ms"] = pct(per_chunk)
    out["per_l2_in_chunk_ms"] = pct(per_node)
    out["faces_per_chunk"] = pct(faces)
    out["n_l2_total"] = int(l2_all.size)
    out["n_chunks_total"] = int(len(keys))
    svc = MeshService(cg, listen=False)
    try:
        cold, warm, n_l2, opened, nfaces = [], [], [], [], []
        for r in roots:
            t, m = timed(svc.root_mesh, r)
            cold.append(t * 1e3)
            n_l2.append(len(cg.get_leaves(r, stop_layer=2)))
            opened.append(open_edges(m))
            nfaces.append(m.n_faces)
        for _ in range(3):
            warm += [timed(svc.root_mesh, r)[0] * 1e3 for r in roots]
        out.update({"root_mesh_cold_ms": pct(cold), "root_mesh_warm_ms": pct(warm), "n_l2": pct(n_l2),
                    "root_faces": pct(nfaces), "root_open_edges_max": int(max(opened, default=0)),
                    "root_open_edges_total": int(sum(opened))})
        if mesh_all:
            print("  mesh_all ...", flush=True)
            last = [time.perf_counter()]

            def progress(done: int, total: int) -> None:
                if time.perf_counter() - last[0] > 10:
                    print(f"    {done:,}/{total:,} L2 nodes", flush=True)
                    last[0] = time.perf_counter()

            out["mesh_all"] = svc.mesh_all(progress=progress)
            out["mesh_all"]["l2_per_s"] = out["mesh_all"]["n_l2"] / max(out["mesh_all"]["seconds"], 1e-9)
    finally:
        svc.close()
    return out


def run(a: argparse.Namespace) -> dict[str, Any]:
    from cavelab.server.engine.graph import ChunkedGraph

    src = Path(a.source or f"/tmp/cavelab_{a.preset}_src")
    ds = Path(a.dataset or f"/tmp/cavelab_{a.preset}_ds")
    if not (ds / "dataset.json").exists():  # never re-ingest (overwrite) an existing dataset
        ensure_dataset(a.preset, src, ds)
    rng = np.random.default_rng(5)
    res: dict[str, Any] = {
        "preset": a.preset, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "targets_ms": TARGET_MS, "missing": [],
    }
    work = Path(tempfile.mkdtemp(prefix="cavelab-bench-mesh-", dir=a.workdir))
    wds = work_copy(ds, work / "ds")
    try:
        t, cg = timed(ChunkedGraph.open, wds)
        res["open_graph_s"] = t
        pool, _big, res["neurons"], roots_all = pick_roots(cg, rng, a.sample)
        roots = pool[: a.neurons]
        merges = pick_merges(cg, roots_all, set(roots), a.merges + a.merges_inprocess, rng)
        del roots_all
        ip_merges, merges = merges[a.merges:], merges[: a.merges]
        print("in-process measurements ...", flush=True)
        res["inprocess"] = bench_inprocess(cg, roots, a.chunks, not a.no_mesh_all, rng)
        print(json.dumps(res["inprocess"], indent=1), flush=True)
        if ip_merges:  # on the work copy: the server below replays them, its merges are others
            res["refresh_inprocess"] = bench_refresh_inprocess(cg, ip_merges)
            print("refresh_inprocess", json.dumps({x: v for x, v in res["refresh_inprocess"].items() if x != "merges"},
                                                  indent=1), flush=True)
        resolution = tuple(float(r) for r in cg.meta.resolution)
        cg.close()
        with running_server(wds, work / "server.log") as srv:
            res["server_ready_s"] = srv.ready_s
            try:
                h = max(1, len(merges) // 2)
                res["refresh"] = bench_mesh_refresh(srv, merges[:h], resolution, prewarm=True)
                res["refresh_cold"] = bench_mesh_refresh(srv, merges[h:], resolution, prewarm=False)
                for k in ("refresh", "refresh_cold"):
                    print(k, json.dumps({x: v for x, v in res[k].items() if x != "merges"}, indent=1), flush=True)
            except Exception as e:
                res["missing"].append(f"refresh failed: {type(e).__name__}: {e}")
                res["refresh_error"] = traceback.format_exc()
                print(res["refresh_error"], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rf = (res.get("refresh") or {}).get("refresh_after_ack_ms")
    ri = (res.get("refresh_inprocess") or {}).get("refresh_after_merge_ms")
    res["targets_met"] = {"refresh_p95": None if not rf else rf["p95"] <= TARGET_MS["refresh"],
                          "refresh_inprocess_p95": None if not ri else ri["p95"] <= TARGET_MS["refresh"]}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--source", help="source dir (default /tmp/cavelab_<preset>_src)")
    ap.add_argument("--dataset", help="ingested dataset dir (default /tmp/cavelab_<preset>_ds)")
    ap.add_argument("--workdir", help="where the work copy goes (default: the temp dir)")
    ap.add_argument("--sample", type=int, default=1000, help="roots sampled for the L2-count distribution")
    ap.add_argument("--neurons", type=int, default=20, help="typical neurons for root meshes")
    ap.add_argument("--chunks", type=int, default=30, help="atomic chunks meshed whole")
    ap.add_argument("--merges", type=int, default=20, help="merges: half of pre-viewed cells, half cold")
    ap.add_argument("--merges-inprocess", type=int, default=10, help="merges in process (ChunkedGraph.merge + MeshService)")
    ap.add_argument("--no-mesh-all", action="store_true", help="skip meshing every L2 node (use on large: ~1 h)")
    a = ap.parse_args()
    res = run(a)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"meshes_{a.preset}.json"
    path.write_text(json.dumps(res, indent=2, default=str))
    print(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
