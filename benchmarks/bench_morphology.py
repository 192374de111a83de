"""Benchmarks of L2 features and skeletons (issue 4); results beside CAVE's medians.

Usage::

    python benchmarks/bench_morphology.py --preset large               # the issue's run
    python benchmarks/bench_morphology.py --preset small --no-markdown # quick debug run

What it does, on a work copy of the ingested dataset (symlinks; the ingested dataset is never
written):

1. in process: opens the graph, estimates the distribution of L2 nodes per root from a sample of
   roots and picks "typical" neurons (L2 counts between the median and the 90th percentile);
   picks in-chunk merge pairs for step 4; times volume (sum of the L2 nodes' ``size_nm3``) and
   ``MorphologyService.skeleton`` cold (first request for the neuron: its L2 features are
   computed then) and warm (cached), and "features warm, skeleton cold";
2. starts a real Jupyter server with the cavelab extension and times, through the unmodified
   caveclient, volume (``get_leaves(stop_layer=2)`` + ``l2cache.get_l2data(size_nm3)`` summed),
   cavelab's ``POST cave/api/morphology/{ds}/summary`` and ``skeleton.get_skeleton(dict)``, cold
   (different neurons than step 1, first request to this server) and warm;
3. ``pcg_skel.pcg_skeleton(root, client)`` against the same server, same run;
4. ~10 merges through caveclient, then the time from each merge's acknowledgement until the new
   L2 node's features and the new root's skeleton are answered.

Cold figures include reading the segmentation: the dataset may have been ingested without the
per-supervoxel statistics, in which case every L2 node's features are computed from its chunk's
voxels on first request. Results go to ``benchmarks/results/morphology_<preset>.json``;
``BENCHMARKS.md`` gets a section via :func:`render_section` (called by ``bench_graph.render``).
"""

from __future__ import annotations

import argparse
import gc
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
from bench_annotations import dir_bytes, rss_gib, running_server, save_results, work_copy
from bench_graph import fmt, timed
from bench_graph import pct as _pct

HERE = Path(__file__).resolve().parent
CAVE_MS = {"volume": 710.0, "skeleton": 1171.0}
"""CAVE's published medians (Dorkenwald et al. 2025)."""
TARGET_MS = {"volume": 10.0, "skeleton": 50.0, "refresh": 1000.0}


def pct(xs: list[float]) -> dict[str, float] | None:
    """:func:`bench_graph.pct`, or None for no samples."""
    return _pct(xs) if len(xs) else None


# --------------------------------------------------------------------------- selection
def pick_roots(cg: Any, rng: np.random.Generator, n_sample: int) -> tuple[list[int], list[int], dict[str, Any], np.ndarray]:
    """Typical roots (L2 counts in [median, p90] of a uniform sample of roots), shuffled; and the
    sample's big roots (at or above its 99th percentile)."""
    st = cg.state
    t, roots = timed(cg.get_roots, st.sv_ids)
    roots = np.asarray(roots, dtype=np.uint64)
    uniq = np.unique(roots)
    sample = rng.choice(uniq, size=min(n_sample, uniq.size), replace=False)
    counts = np.array([len(cg.get_leaves(int(r), stop_layer=2)) for r in sample])
    lo, hi = float(np.percentile(counts, 50)), float(np.percentile(counts, 90))
    pool = sample[(counts >= lo) & (counts <= hi)]
    rng.shuffle(pool)
    p99 = float(np.percentile(counts, 99))
    big = sample[counts >= p99]
    rng.shuffle(big)
    dist = {"n_roots": int(uniq.size), "n_sampled": int(sample.size), "median": lo, "p90": hi,
            "p99": float(np.percentile(counts, 99)), "max_sampled": int(counts.max()), "get_roots_all_s": t,
            "pool": int(pool.size), "big_pool": int(big.size)}
    return [int(x) for x in pool], [int(x) for x in big], dist, roots


def pick_merges(cg: Any, roots: np.ndarray, avoid: set[int], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` pairs of touching supervoxels of different cells in one atomic chunk (as the tests pick them),
    with a voxel of each (nm), no root used twice and none in ``avoid``."""
    from cavelab.server.engine.segmentation import Segmentation

    st = cg.state
    e = np.flatnonzero(~st.e_active.a)
    a, b = st.e_sv.a[e].T
    same = np.all(st.sv_chunk[a] == st.sv_chunk[b], axis=1) & (roots[a] != roots[b])
    seg = Segmentation(cg.dataset_dir, cg.meta)
    res = np.asarray(cg.meta.resolution, dtype=np.float64)
    cs = np.asarray(cg.meta.chunk_size, dtype=np.int64)
    size = np.asarray(cg.meta.size, dtype=np.int64)
    offset = np.asarray(cg.meta.voxel_offset, dtype=np.int64)
    used = set(avoid)
    out: list[dict[str, Any]] = []
    for k in rng.permutation(np.flatnonzero(same)):
        ra, rb = int(roots[a[k]]), int(roots[b[k]])
        if ra in used or rb in used:
            continue
        sa, sb = int(st.sv_ids[a[k]]), int(st.sv_ids[b[k]])
        chunk = cg.meta.layout.chunk_coords(np.array([sa], dtype=np.uint64))[0]
        lo = np.asarray(chunk, dtype=np.int64) * cs
        hi = np.minimum(lo + cs, size)
        block = seg.read_box(lo + offset, hi + offset)
        pa, pb = np.argwhere(block == sa), np.argwhere(block == sb)
        if not len(pa) or not len(pb):
            continue
        out.append({"svs": [sa, sb], "roots": [ra, rb],
                    "points_nm": [((pa[0] + lo + offset) * res).tolist(), ((pb[0] + lo + offset) * res).tolist()]})
        used |= {ra, rb}
        if len(out) == n:
            break
    return out


# --------------------------------------------------------------------------- in process
def bench_inprocess(cg: Any, roots: list[int]) -> dict[str, Any]:
    """Volume and skeleton per neuron in process: cold (half of ``roots`` each) and warm."""
    from cavelab.server.morphology.service import open_service

    t, svc = timed(open_service, cg)
    out: dict[str, Any] = {"open_service_s": t}

    def volume(r: int) -> float:
        l2 = np.asarray(cg.get_leaves(r, stop_layer=2), dtype=np.uint64)
        return float(svc.features_array(l2, "size_nm3").sum())

    half = len(roots) // 2
    vol_first, sk_first = roots[:half], roots[half:]
    cold_v = [timed(volume, r)[0] * 1e3 for r in vol_first]  # features computed here
    print(f"  in process volume cold p50 {np.median(cold_v):.0f} ms", flush=True)
    sk_feat_warm = [timed(svc.skeleton, r)[0] * 1e3 for r in vol_first]  # features warm, skeleton cold
    cold_s = [timed(svc.skeleton, r)[0] * 1e3 for r in sk_first]  # features and skeleton cold
    print(f"  in process skeleton cold p50 {np.median(cold_s):.0f} ms", flush=True)
    warm_v, warm_s, warm_sum, sk_rebuild, n_l2, n_vert = [], [], [], [], [], []
    for _ in range(3):
        for r in roots:
            warm_v.append(timed(volume, r)[0] * 1e3)
            warm_s.append(timed(svc.skeleton, r)[0] * 1e3)
            warm_sum.append(timed(svc.summaries, [r])[0] * 1e3)
            with svc._lock:
                svc._skeletons.pop(r, None)
            sk_rebuild.append(timed(svc.skeleton, r)[0] * 1e3)
    for r in roots:
        n_l2.append(len(cg.get_leaves(r, stop_layer=2)))
        n_vert.append(len(svc.skeleton(r).node_ids))
    out.update({
        "volume_cold_ms": pct(cold_v),
        "volume_warm_ms": pct(warm_v),
        "summary_warm_ms": pct(warm_sum),
        "skeleton_cold_ms": pct(cold_s),
        "skeleton_features_warm_ms": pct(sk_feat_warm + sk_rebuild),
        "skeleton_warm_ms": pct(warm_s),
        "n_l2": pct(n_l2),
        "skeleton_vertices": pct(n_vert),
        "cold_ms_per_l2_node": pct([t / n for t, n in zip(cold_v, n_l2[:half])]),
    })
    svc.close()
    return out


# --------------------------------------------------------------------------- over HTTP
def bench_http(srv: Any, sets: dict[str, list[int]], n_pcg: int) -> dict[str, Any]:
    """Volume, summary route and skeleton through caveclient, cold and warm; pcg_skel."""
    import requests

    cl = srv.client
    out: dict[str, Any] = {}

    def volume(r: int) -> float:
        l2 = cl.chunkedgraph.get_leaves(r, stop_layer=2)
        d = cl.l2cache.get_l2data([int(x) for x in l2], attributes=["size_nm3"])
        return float(sum(v["size_nm3"] for v in d.values()))

    def summary(r: int) -> float:
        resp = requests.post(f"{srv.url}/api/morphology/{srv.name}/summary", json={"root_ids": [int(r)]},
                             headers=srv.headers, timeout=600)
        resp.raise_for_status()
        return resp.json()[0]["volume_nm3"]

    def skeleton(r: int) -> dict[str, Any]:
        return cl.skeleton.get_skeleton(int(r), output_format="dict")

    if sets.get("skeleton_parts"):  # where a cold caveclient skeleton call spends its time
        parts: dict[str, list[float]] = {"is_valid_nodes": [], "raw_get": []}
        sess = requests.Session()
        sess.headers.update(srv.headers)
        for r in sets["skeleton_parts"]:
            parts["is_valid_nodes"].append(timed(cl.chunkedgraph.is_valid_nodes, int(r))[0] * 1e3)
            url = f"{srv.url}/skeletoncache/api/v1/{srv.name}/async/get_skeleton/4/{int(r)}/flatdict"
            parts["raw_get"].append(timed(lambda u=url: sess.get(u, timeout=600).raise_for_status())[0] * 1e3)
        out["skeleton_cold_parts_ms"] = {k: pct(v) for k, v in parts.items()}
        print(f"  cold skeleton parts: {out['skeleton_cold_parts_ms']}", flush=True)
    cold = {}
    for key, fn in (("volume", volume), ("summary", summary), ("skeleton", skeleton)):
        ms = [timed(fn, r)[0] * 1e3 for r in sets[key]]
        cold[key] = ms
        print(f"  caveclient {key} cold p50 {np.median(ms):.0f} ms ({len(ms)} neurons)", flush=True)
    out["volume_cold_ms"] = pct(cold["volume"])
    out["summary_cold_ms"] = pct(cold["summary"])
    out["skeleton_cold_ms"] = pct(cold["skeleton"])
    allr = sets["volume"] + sets["summary"] + sets["skeleton"]
    for fn in (volume, summary, skeleton):  # every neuron's features and skeleton warm
        for r in allr:
            fn(r)
    vols_http = {r: volume(r) for r in allr}
    out["volume_equals_summary"] = all(abs(vols_http[r] - summary(r)) <= 1e-6 * max(1.0, vols_http[r]) for r in allr)
    warm: dict[str, list[float]] = {"volume": [], "summary": [], "skeleton": []}
    for _ in range(3):
        for r in allr:
            for key, fn in (("volume", volume), ("summary", summary), ("skeleton", skeleton)):
                warm[key].append(timed(fn, r)[0] * 1e3)
    for key, ms in warm.items():
        out[f"{key}_warm_ms"] = pct(ms)
        print(f"  caveclient {key} warm p50 {np.median(ms):.1f} ms", flush=True)
    out["leaves_l2_ms"] = pct([timed(cl.chunkedgraph.get_leaves, r, stop_layer=2)[0] * 1e3 for r in allr])
    # pcg_skel: on neurons whose features are warm on the server, then on cold ones
    try:
        import pcg_skel

        pcg_warm = [timed(pcg_skel.pcg_skeleton, r, cl)[0] * 1e3 for r in allr[:n_pcg]]
        out["pcg_skel_features_warm_ms"] = pct(pcg_warm)
        print(f"  pcg_skel (features warm) p50 {np.median(pcg_warm):.0f} ms", flush=True)
        if sets.get("pcg_cold"):
            pcg_cold = [timed(pcg_skel.pcg_skeleton, r, cl)[0] * 1e3 for r in sets["pcg_cold"]]
            out["pcg_skel_cold_ms"] = pct(pcg_cold)
            print(f"  pcg_skel (cold) p50 {np.median(pcg_cold):.0f} ms", flush=True)
        sk = pcg_skel.pcg_skeleton(allr[0], cl)
        out["pcg_skel_vertices_equal_ours"] = len(sk.vertices) == len(skeleton(allr[0])["vertices"])
    except Exception as e:  # report, don't lose the rest of the run
        out["pcg_skel_error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        print(out["pcg_skel_error"], flush=True)
    return out


def wait_warm(srv: Any, limit_s: float = 600) -> float:
    """Seconds until the server's L2-feature worker has done its start-up work (status route)."""
    import requests

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit_s:
        st = requests.get(f"{srv.url}/api/status", headers=srv.headers, timeout=5).json()
        if st.get("l2_features_warm"):
            break
        time.sleep(0.2)
    return time.perf_counter() - t0


def bench_refresh(srv: Any, merges: list[dict[str, Any]], res: tuple[float, ...], prewarm: bool) -> dict[str, Any]:
    """Merges through caveclient; ms from acknowledgement to the new L2 features / new skeleton.

    With ``prewarm`` both cells' skeletons are requested before the merge (as when a user looks at
    the neurons before editing), so only the new L2 node is cold afterwards; without it the new
    root's skeleton needs the features of every L2 node of both cells (first request).
    """
    cl = srv.client
    merge_ms, l2_ms, sk_ms, sk_call_ms, fails, polls, per = [], [], [], [], [], [], []
    for m in merges:
        if prewarm:
            for r in m["roots"]:
                cl.skeleton.get_skeleton(int(r), output_format="dict")
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
        new_l2 = int(cl.chunkedgraph.get_roots([m["svs"][0]], stop_layer=2)[0])
        n = 0
        while True:
            n += 1
            d = cl.l2cache.get_l2data([new_l2])
            if d.get(str(new_l2)) or d.get(new_l2):
                break
            if time.perf_counter() - ack > 30:
                fails.append(f"no features for new L2 {new_l2} after 30 s")
                break
            time.sleep(0.005)
        l2_ms.append((time.perf_counter() - ack) * 1e3)
        polls.append(n)
        t1 = time.perf_counter()
        cl.skeleton.get_skeleton(new_root, output_format="dict")
        t2 = time.perf_counter()
        sk_ms.append((t2 - ack) * 1e3)
        sk_call_ms.append((t2 - t1) * 1e3)
        per.append({"new_root": new_root, "new_l2": new_l2, "merge_ms": merge_ms[-1], "l2_ms": l2_ms[-1],
                    "skeleton_ms": sk_ms[-1], "new_root_n_l2": len(cl.chunkedgraph.get_leaves(new_root, stop_layer=2))})
    return {
        "n_merges": len(merge_ms), "failures": fails, "prewarmed": prewarm,
        "merge_ms": pct(merge_ms),
        "l2_features_after_ack_ms": pct(l2_ms),
        "skeleton_after_ack_ms": pct(sk_ms),
        "skeleton_call_ms": pct(sk_call_ms),
        "l2_polls_max": max(polls, default=0), "merges": per,
    }


# --------------------------------------------------------------------------- report
def _pp(d: dict[str, float] | None) -> str:
    if not d:
        return "n/a"
    if d["p95"] < 0.1:  # cache hits: microseconds
        return f"{fmt(d['p50'] * 1e3)} / {fmt(d['p95'] * 1e3)} µs"
    return f"{fmt(d['p50'])} / {fmt(d['p95'])} ms"


def render_section(res: dict[str, Any]) -> str:
    """The "Morphology" section of ``BENCHMARKS.md``."""
    ip, h, rf = res.get("inprocess", {}), res.get("http", {}), res.get("refresh") or {}
    rc = res.get("refresh_cold") or {}
    nb = res["neurons"]
    rows = [
        ("Volume, in process, **cold** (first request for the neuron)", _pp(ip.get("volume_cold_ms")), "710 ms", "≤ 10 ms"),
        ("Volume, in process, warm (features cached)", _pp(ip.get("volume_warm_ms")), "710 ms", "≤ 10 ms"),
        ("Volume, caveclient `get_leaves` + `l2cache.get_l2data` summed, **cold**", _pp(h.get("volume_cold_ms")), "710 ms", "≤ 10 ms"),
        ("Volume, caveclient `get_leaves` + `l2cache.get_l2data` summed, warm", _pp(h.get("volume_warm_ms")), "710 ms", "≤ 10 ms"),
        ("Summary route `POST cave/api/morphology/{ds}/summary` (volume, area, cable, bbox), **cold**", _pp(h.get("summary_cold_ms")), "—", "—"),
        ("Summary route, warm", _pp(h.get("summary_warm_ms")), "—", "—"),
        ("Skeleton, in process, **cold** (features and skeleton)", _pp(ip.get("skeleton_cold_ms")), "1,171 ms", "≤ 50 ms"),
        ("Skeleton, in process, features warm, skeleton built", _pp(ip.get("skeleton_features_warm_ms")), "1,171 ms", "≤ 50 ms"),
        ("Skeleton, in process, warm (cached skeleton)", _pp(ip.get("skeleton_warm_ms")), "1,171 ms", "≤ 50 ms"),
        ("Skeleton, caveclient `skeleton.get_skeleton(dict)`, **cold**", _pp(h.get("skeleton_cold_ms")), "1,171 ms", "≤ 50 ms"),
        ("Skeleton, caveclient `skeleton.get_skeleton(dict)`, warm", _pp(h.get("skeleton_warm_ms")), "1,171 ms", "≤ 50 ms"),
        ("`pcg_skel.pcg_skeleton(root, client)` against cavelab, features warm on the server", _pp(h.get("pcg_skel_features_warm_ms")), "—", "—"),
        ("`pcg_skel.pcg_skeleton(root, client)` against cavelab, cold", _pp(h.get("pcg_skel_cold_ms")), "—", "—"),
        ("After a merge of two viewed (warm) cells: acknowledgement → new L2 node's features answered", _pp(rf.get("l2_features_after_ack_ms")), "—", "≤ 1 s"),
        ("After a merge of two viewed (warm) cells: acknowledgement → new root's skeleton answered", _pp(rf.get("skeleton_after_ack_ms")), "—", "≤ 1 s"),
        ("After a merge of two never-requested (cold) cells: → new L2 node's features", _pp(rc.get("l2_features_after_ack_ms")), "—", "≤ 1 s"),
        ("After a merge of two never-requested (cold) cells: → new root's skeleton", _pp(rc.get("skeleton_after_ack_ms")), "—", "≤ 1 s"),
        ("After a merge of two viewed cells (manifests fetched first): → new root's neuroglancer manifest lists a mesh "
         "for every L2 node and the new fragment is fetched", _pp((res.get("mesh_refresh") or {}).get("refresh_after_ack_ms")), "—", "≤ 1 s"),
    ]
    out = [
        "## Morphology (L2 features, volume, skeletons)",
        "",
        f"Latest run: {res['when']} on {res['machine']}, preset `{res['preset']}`. Produced by "
        "`python benchmarks/bench_morphology.py`; raw figures in `benchmarks/results/morphology_<preset>.json`.",
        "",
        f"p50 / p95 per neuron over typical neurons: roots with between {nb['median']:.0f} and {nb['p90']:.0f} L2 nodes "
        f"(the median and 90th percentile of a uniform sample of {nb['n_sampled']:,} of the {nb['n_roots']:,} roots); "
        f"the in-process neurons had {fmt(ip['n_l2']['p50']) if ip else 'n/a'} L2 nodes (p50). "
        "**Cold** = the first request for that neuron in that process: "
        + ("this dataset has no saved L2 features or per-supervoxel statistics, so each L2 node's features are "
           "computed from its chunk's voxels (one chunk read per L2 node) and then cached by L2 ID. "
           if not res.get("has_saved_l2_features") else "the L2 features saved at ingest are read and cached by L2 ID. ")
        + "**Warm** = the features (and, for skeletons, "
        "the skeleton of that root) are cached. Cold HTTP figures use different neurons than the in-process ones. "
        "CAVE's figures are its published medians (Dorkenwald et al. 2025).",
        "",
        "| operation | cavelab p50 / p95 | CAVE median | target |",
        "|---|---|---|---|",
    ]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    ib, hb = res.get("inprocess_big"), res.get("http_big")
    if ib or hb:
        out += [
            "",
            f"Big neurons (≥ {nb['p99']:.0f} L2 nodes, the sample's 99th percentile; up to {nb['max_sampled']:,}); "
            f"in process they had {fmt(ib['n_l2']['p50']) if ib else 'n/a'} L2 nodes (p50):",
            "",
            "| operation, big neurons | cavelab p50 / p95 | CAVE median | target |",
            "|---|---|---|---|",
        ]
        ib, hb = ib or {}, hb or {}
        big_rows = [
            ("Volume, in process", f"**cold** {_pp(ib.get('volume_cold_ms'))}; warm {_pp(ib.get('volume_warm_ms'))}", "710 ms", "≤ 10 ms"),
            ("Volume, caveclient (leaves + l2cache)", f"**cold** {_pp(hb.get('volume_cold_ms'))}; warm {_pp(hb.get('volume_warm_ms'))}", "710 ms", "≤ 10 ms"),
            ("Skeleton, in process", f"**cold** {_pp(ib.get('skeleton_cold_ms'))}; features warm {_pp(ib.get('skeleton_features_warm_ms'))}; "
             f"cached {_pp(ib.get('skeleton_warm_ms'))}", "1,171 ms", "≤ 50 ms"),
            ("Skeleton, caveclient", f"**cold** {_pp(hb.get('skeleton_cold_ms'))}; warm {_pp(hb.get('skeleton_warm_ms'))}", "1,171 ms", "≤ 50 ms"),
            ("`pcg_skel.pcg_skeleton` against cavelab, features warm", _pp(hb.get("pcg_skel_features_warm_ms")), "—", "—"),
        ]
        out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in big_rows]
    extra = []
    if rf:
        extra.append(f"{rf['n_merges']} merges through caveclient took {_pp(rf.get('merge_ms'))}")
    if h.get("leaves_l2_ms"):
        extra.append(f"`get_leaves(stop_layer=2)` alone {_pp(h['leaves_l2_ms'])}")
    if "volume_equals_summary" in h:
        extra.append(f"l2cache volume equals the summary route's: {h['volume_equals_summary']}")
    if "pcg_skel_vertices_equal_ours" in h:
        extra.append(f"pcg_skel's vertex count equals ours: {h['pcg_skel_vertices_equal_ours']}")
    if res.get("server_ready_s"):
        extra.append(f"server ready in {fmt(res['server_ready_s'])} s")
    if res.get("refresh_cold"):
        extra.append(f"merges of cold cells {_pp(rc.get('merge_ms'))}")
    out += ["", "Other figures: " + "; ".join(extra) + "." if extra else ""]
    if res.get("missing"):
        out += ["", "Missing from this run: " + " ".join(m.rstrip(".") + "." for m in res["missing"])]
    out.append("")
    notes = HERE / "analysis_morphology.md"  # hand-written reading of the figures
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def run(a: argparse.Namespace) -> dict[str, Any]:
    from cavelab.server.engine.graph import ChunkedGraph

    ds = Path(a.dataset or f"/tmp/cavelab_{a.preset}_ds")
    if not (ds / "bench_ingest.json").exists():
        raise SystemExit(f"{ds} is not an ingested dataset (run bench_graph.py or bench_annotations.py first)")
    rng = np.random.default_rng(4)
    res: dict[str, Any] = {
        "preset": a.preset,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}",
        "cave_ms": CAVE_MS, "targets_ms": TARGET_MS, "missing": [],
    }
    work = Path(tempfile.mkdtemp(prefix="cavelab-bench-morph-", dir=a.workdir))
    wds = work_copy(ds, work / "ds")
    try:
        print("opening the graph in process ...", flush=True)
        t, cg = timed(ChunkedGraph.open, wds)
        res["open_graph_s"] = t
        res["has_saved_l2_features"] = any((wds / "graph").glob("l2_*.npy"))
        pool, big, res["neurons"], roots_all = pick_roots(cg, rng, a.sample)
        print(f"  {res['neurons']['pool']} typical roots ({res['neurons']['median']:.0f}-{res['neurons']['p90']:.0f} L2 nodes)", flush=True)
        n = a.neurons
        ip_roots = pool[:n]
        rest = pool[n:]
        k = max(1, n // 2)
        sets = {"volume": rest[:k], "summary": rest[k:k + a.summary_cold], "skeleton": rest[k + a.summary_cold:2 * k + a.summary_cold]}
        sets["pcg_cold"] = rest[2 * k + a.summary_cold: 2 * k + a.summary_cold + a.pcg_cold]
        used = set(pool[: 2 * k + a.summary_cold + a.pcg_cold + n]) | set(big)
        nb = a.big
        big_ip, big_http, big_parts = big[:nb], big[nb: 2 * nb], big[2 * nb: 2 * nb + nb // 2]
        res["merges_planned"] = merges = pick_merges(cg, roots_all, used, a.merges + a.merges_cold + a.mesh_merges, rng)
        del roots_all
        print("in-process measurements ...", flush=True)
        res["inprocess"] = bench_inprocess(cg, ip_roots)
        if big_ip:
            print(f"in-process measurements, {len(big_ip)} big neurons ...", flush=True)
            res["inprocess_big"] = bench_inprocess(cg, big_ip)
        res["bench_rss_gib"] = rss_gib(os.getpid())
        resolution = tuple(float(r) for r in cg.meta.resolution)
        cg.close()
        del cg
        gc.collect()
        print("server ...", flush=True)
        with running_server(wds, work / "server.log") as srv:
            res["server_ready_s"] = srv.ready_s
            print(f"  ready in {srv.ready_s:.1f} s", flush=True)
            try:
                res["http"] = bench_http(srv, sets, a.pcg)
                if big_http:
                    print(f"  {len(big_http)} big neurons ...", flush=True)
                    h2 = len(big_http) // 2
                    res["http_big"] = bench_http(srv, {"volume": big_http[:h2], "summary": [], "skeleton": big_http[h2:],
                                                       "skeleton_parts": big_parts}, len(big_http))
            except Exception as e:
                res["missing"].append(f"HTTP figures failed: {type(e).__name__}: {e}")
                res["http_error"] = traceback.format_exc()
                print(res["http_error"], flush=True)
            res["l2_worker_warm_s"] = wait_warm(srv)
            try:
                res["refresh"] = bench_refresh(srv, merges[: a.merges], resolution, prewarm=True)
                print(f"  refresh (pre-warmed): {res['refresh']}", flush=True)
                res["refresh_cold"] = bench_refresh(srv, merges[a.merges : a.merges + a.merges_cold], resolution, prewarm=False)
                print(f"  refresh (cold): {res['refresh_cold']}", flush=True)
                from bench_meshes import bench_mesh_refresh

                res["mesh_refresh"] = bench_mesh_refresh(srv, merges[a.merges + a.merges_cold :], resolution, prewarm=True)
                print(f"  mesh refresh: {res['mesh_refresh']}", flush=True)
            except Exception as e:
                res["missing"].append(f"Refresh figures failed: {type(e).__name__}: {e}")
                res["refresh_error"] = traceback.format_exc()
                print(res["refresh_error"], flush=True)
            res["server_rss_gib"] = rss_gib(srv.proc.pid)
        log = (work / "server.log").read_text(errors="replace")
        res["server_tracebacks"] = [blk[:3000] for blk in log.split("Traceback (most recent call last)")[1:]][:10]
        res["work_dir_bytes"] = dir_bytes(work)
    finally:
        if a.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    ip, h = res["inprocess"], res.get("http", {})
    rf = res.get("refresh") or {}

    def met(d: dict[str, float] | None, target: float, q: str = "p50") -> bool | None:
        return None if not d else d[q] <= target

    res["targets_met"] = {
        "volume_warm_inprocess": met(ip.get("volume_warm_ms"), TARGET_MS["volume"]),
        "volume_cold_inprocess": met(ip.get("volume_cold_ms"), TARGET_MS["volume"]),
        "skeleton_warm_inprocess": met(ip.get("skeleton_warm_ms"), TARGET_MS["skeleton"]),
        "skeleton_features_warm_inprocess": met(ip.get("skeleton_features_warm_ms"), TARGET_MS["skeleton"]),
        "skeleton_cold_inprocess": met(ip.get("skeleton_cold_ms"), TARGET_MS["skeleton"]),
        "volume_warm_http": met(h.get("volume_warm_ms"), TARGET_MS["volume"]),
        "volume_cold_http": met(h.get("volume_cold_ms"), TARGET_MS["volume"]),
        "skeleton_warm_http": met(h.get("skeleton_warm_ms"), TARGET_MS["skeleton"]),
        "skeleton_cold_http": met(h.get("skeleton_cold_ms"), TARGET_MS["skeleton"]),
        "refresh_l2_p95": met(rf.get("l2_features_after_ack_ms"), TARGET_MS["refresh"], "p95"),
        "refresh_skeleton_p95": met(rf.get("skeleton_after_ack_ms"), TARGET_MS["refresh"], "p95"),
        "refresh_mesh_p95": met((res.get("mesh_refresh") or {}).get("refresh_after_ack_ms"), TARGET_MS["refresh"], "p95"),
    }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--dataset", help="ingested dataset dir (default /tmp/cavelab_<preset>_ds)")
    ap.add_argument("--workdir", help="where the work copy goes (default: the temp dir)")
    ap.add_argument("--sample", type=int, default=3000, help="roots sampled for the L2-count distribution")
    ap.add_argument("--neurons", type=int, default=50, help="typical neurons in process (half cold volume, half cold skeleton)")
    ap.add_argument("--summary-cold", type=int, default=10, help="neurons for the cold summary route")
    ap.add_argument("--pcg", type=int, default=20, help="pcg_skel calls on warm neurons")
    ap.add_argument("--pcg-cold", type=int, default=10, help="pcg_skel calls on cold neurons")
    ap.add_argument("--big", type=int, default=10, help="big neurons (>= p99 of L2 counts) in process and again over HTTP")
    ap.add_argument("--merges", type=int, default=30, help="merges of pre-warmed neurons")
    ap.add_argument("--merges-cold", type=int, default=10, help="merges of neurons never requested before")
    ap.add_argument("--mesh-merges", type=int, default=15, help="merges for the mesh refresh (cells viewed first)")
    ap.add_argument("--no-markdown", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work copy")
    a = ap.parse_args()
    save_results("morphology", a.preset, run(a), render_section, markdown=not a.no_markdown)


if __name__ == "__main__":
    sys.exit(main())
