"""``cavelab ingest``: source directory -> dataset directory.

Stages: (1) the volume stage (:mod:`cavelab.server.ingest.volume`) rewrites labels into graphene
supervoxel IDs and builds the supervoxel graph; (2) :func:`build_base_graph` builds the L2 nodes
and the octree hierarchy with :mod:`cavelab.server.engine.hierarchy`, the same code that edits
use; (3) everything is written to the dataset directory and an empty operation log is created.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cavelab.server.engine.hierarchy import build_layers, l2_components, segment_counters
from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.engine.timestamps import now_ms
from cavelab.server.errors import IngestError
from cavelab.server.ingest.types import SupervoxelGraph
from cavelab.server.storage import open_array_store, open_operation_log


@dataclass
class Level2:
    """The L2 nodes of a supervoxel graph: ``n_l2`` components of the active in-chunk edges,
    ``sv_l2`` each supervoxel's component, with the ``sv_chunk`` and ``edge_layer`` arrays they
    were found from (the hierarchy needs them again)."""

    n_l2: int
    sv_l2: np.ndarray
    sv_chunk: np.ndarray
    edge_layer: np.ndarray


def level2_membership(meta: DatasetMeta, g: SupervoxelGraph) -> Level2:
    """The L2 nodes as components of the active in-chunk edges (see :class:`Level2`)."""
    sv_chunk = meta.layout.chunk_coords(g.sv_ids)
    edges = np.asarray(g.edges, dtype=np.int64).reshape(-1, 2)
    edge_layer = meta.layout.edge_layers(sv_chunk[edges[:, 0]], sv_chunk[edges[:, 1]]).astype(np.int64)
    n_l2, sv_l2 = l2_components(g.n_supervoxels, edges, edge_layer, np.asarray(g.active, dtype=bool))
    return Level2(n_l2, sv_l2, sv_chunk, edge_layer)


def level2_rows(n_l2: int, sv_l2: np.ndarray) -> np.ndarray:
    """Each supervoxel's L2 row in the saved node arrays (:func:`build_base_graph`'s
    ``sv_parent``): L2 IDs count up per chunk in order of their smallest supervoxel and the
    supervoxels are in chunk order, so the rows follow the nodes' smallest supervoxels."""
    _, first_sv = np.unique(sv_l2, return_index=True)
    row_of = np.empty(n_l2, dtype=np.int64)
    row_of[np.argsort(first_sv, kind="stable")] = np.arange(n_l2)
    return row_of[sv_l2]


def build_base_graph(
    meta: DatasetMeta, g: SupervoxelGraph, l2: Level2 | None = None
) -> dict[str, np.ndarray]:
    """The engine's base arrays (see :data:`cavelab.server.engine.state.BASE_ARRAYS`);
    ``l2`` is :func:`level2_membership` if already computed."""
    layout = meta.layout
    edges = np.asarray(g.edges, dtype=np.int64).reshape(-1, 2)
    active = np.asarray(g.active, dtype=bool)

    # level 2: components of active in-chunk edges
    l2 = l2 if l2 is not None else level2_membership(meta, g)
    n_l2, sv_l2, sv_chunk, edge_layer = l2.n_l2, l2.sv_l2, l2.sv_chunk, l2.edge_layer
    _, first_sv = np.unique(sv_l2, return_index=True)
    l2_chunk = sv_chunk[first_sv]

    # layers 3..n over the L2 graph
    cross = active & (edge_layer >= 2)
    l2_pairs = sv_l2[edges[cross]]
    keep = l2_pairs[:, 0] != l2_pairs[:, 1]
    layers = build_layers(l2_chunk, l2_pairs[keep], edge_layer[cross][keep], meta.n_layers)

    # IDs: per-chunk counters, in order of the smallest supervoxel inside
    ids_by_layer = [
        layout.node_ids(2, l2_chunk[:, 0], l2_chunk[:, 1], l2_chunk[:, 2], 0)
        | segment_counters(layout.chunk_ids(2, *l2_chunk.T), first_sv)
    ]
    first_l2 = [np.arange(n_l2)]
    for ln in layers:
        cids = layout.chunk_ids(ln.layer, *ln.chunk.T)
        ids_by_layer.append(cids | segment_counters(cids, ln.first_vertex))
        first_l2.append(ln.first_vertex)
    offsets = np.cumsum([0] + [a.size for a in ids_by_layer])
    all_ids = np.concatenate(ids_by_layer)
    n_nodes = all_ids.size
    parent = np.full(n_nodes, -1, dtype=np.int64)

    # children of L2 nodes are supervoxels
    order = np.argsort(sv_l2, kind="stable")
    cnt = np.bincount(sv_l2, minlength=n_l2)
    ptr_parts = [cnt]
    child_parts = [order.astype(np.int64)]
    for i, ln in enumerate(layers):
        ref = np.empty(ln.child_ref.size, dtype=np.int64)
        for cl in np.unique(ln.child_layer):
            m = ln.child_layer == cl
            ref[m] = offsets[int(cl) - 2] + ln.child_ref[m]
        me = offsets[i + 1] + np.repeat(np.arange(ln.n), np.diff(ln.child_ptr))
        parent[ref] = me
        ptr_parts.append(np.diff(ln.child_ptr))
        child_parts.append(ref)
    counts = np.concatenate(ptr_parts)
    children = np.concatenate(child_parts)  # node-space indices (supervoxel indices for L2)

    # sort nodes by ID so the engine can binary-search them
    perm = np.argsort(all_ids, kind="stable")
    inv = np.empty_like(perm)
    inv[perm] = np.arange(n_nodes)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    new_counts = counts[perm]
    new_ptr = np.r_[0, np.cumsum(new_counts)].astype(np.int64)
    gather = np.repeat(starts[perm], new_counts) + (
        np.arange(new_ptr[-1]) - np.repeat(new_ptr[:-1], new_counts)
    )
    new_children = children[gather]
    is_l2_child = np.repeat(perm < n_l2, new_counts)
    new_children = np.where(is_l2_child, new_children, inv[np.where(is_l2_child, 0, new_children)])
    new_parent = np.where(parent[perm] >= 0, inv[np.maximum(parent[perm], 0)], -1)
    sv_parent = inv[sv_l2]
    return {
        "sv_ids": np.asarray(g.sv_ids, dtype=np.uint64),
        "sv_parent": sv_parent.astype(np.int64),
        "sv_sizes": np.asarray(g.sv_sizes, dtype=np.int64),
        "sv_bbox": np.asarray(g.sv_bbox, dtype=np.int32),
        "sv_centroid": np.asarray(g.sv_centroid, dtype=np.float32),
        "edges": edges,
        "affinity": np.asarray(g.affinity, dtype=np.float32),
        "area": np.asarray(g.area, dtype=np.float32),
        "active": active,
        "node_ids": all_ids[perm],
        "node_parent": new_parent.astype(np.int64),
        "node_child_ptr": new_ptr,
        "node_children": new_children.astype(np.int64),
    }


def write_dataset(
    dataset_dir: str | Path,
    meta: DatasetMeta,
    g: SupervoxelGraph,
    extra: dict[str, np.ndarray] | None = None,
    l2: Level2 | None = None,
) -> dict[str, Any]:
    """Build the hierarchy for ``g`` and write arrays, metadata and an empty operation log.

    ``extra`` arrays (e.g. the per-supervoxel statistics) are saved with the base arrays;
    ``l2`` is :func:`level2_membership` if already computed.
    """
    t0 = time.perf_counter()
    arrays = build_base_graph(meta, g, l2)
    arrays.update(extra or {})
    t1 = time.perf_counter()
    d = Path(dataset_dir)
    d.mkdir(parents=True, exist_ok=True)
    open_array_store(d).save(arrays)
    open_operation_log(d).close()
    meta.save(d)
    layers = meta.layout.layers(arrays["node_ids"])
    return {
        "hierarchy_seconds": t1 - t0,
        "write_seconds": time.perf_counter() - t1,
        "n_nodes": int(arrays["node_ids"].size),
        "nodes_per_layer": {int(k): int(v) for k, v in zip(*np.unique(layers, return_counts=True))},
        "n_roots": int(np.sum(layers == meta.n_layers)),
    }


def ingest(
    source_dir: str | Path,
    dataset_dir: str | Path,
    *,
    chunk_size: tuple[int, int, int] | None = None,
    threshold: float | None = None,
    name: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 2,
    l2_features: str = "all",
) -> dict[str, Any]:
    """Ingest a source directory (see ``docs/input_format.md``) into a new dataset directory.

    Returns a report with counts, timings and the ingest rate (supervoxels per second).
    ``l2_features`` chooses which L2-cache features of every L2 node are computed now and saved
    as ``graph/l2_*.npy`` (:func:`cavelab.server.morphology.l2features.compute_all`): ``"all"``
    (the default: a pass over the written segmentation for the distance transform, run by
    ``workers`` processes while the hierarchy is built), ``"stats"`` only those that follow
    from the supervoxel statistics, or ``"none"``; the supervoxel statistics are always saved,
    and features not saved are computed when first asked for.

    >>> ingest("/data/my_source", "/data/my_dataset", chunk_size=(128, 128, 32))  # doctest: +SKIP
    """
    from cavelab.server.ingest.ngff import open_ngff
    from cavelab.server.ingest.volume import build_supervoxel_graph

    t0 = time.perf_counter()
    src = Path(source_dir)
    dst = Path(dataset_dir)
    if not src.is_dir():
        raise IngestError(f"source {src} is not a directory (see docs/input_format.md)")
    if l2_features not in ("all", "stats", "none"):
        raise IngestError(f"l2_features must be 'all', 'stats' or 'none', got {l2_features!r}")
    if dst.exists() and any(dst.iterdir()) and not overwrite:
        raise IngestError(f"{dst} is not empty; choose a new dataset directory or pass --overwrite")
    info: dict[str, Any] = {}
    if (src / "source.json").exists():
        try:
            info = json.loads((src / "source.json").read_text())
        except json.JSONDecodeError as e:
            raise IngestError(f"{src / 'source.json'} is not valid JSON: {e}") from e
    vol = open_ngff(src / "segmentation.zarr")
    if chunk_size is None:
        chunk_size = tuple(info.get("suggested_chunk_size") or (128, 128, 32))  # type: ignore[assignment]
    if len(chunk_size) != 3 or min(int(c) for c in chunk_size) < 1:
        raise IngestError(f"chunk size must be three positive voxel counts (x, y, z), got {list(chunk_size)}")
    size = tuple(int(s) for s in vol.shape)
    meta = DatasetMeta(
        name=name or info.get("name") or src.name.replace("-", "_"),
        resolution=tuple(float(r) for r in vol.resolution),  # type: ignore[arg-type]
        size=size,  # type: ignore[arg-type]
        chunk_size=tuple(int(c) for c in chunk_size),  # type: ignore[arg-type]
        n_layers=DatasetMeta.layers_for(size, chunk_size),  # type: ignore[arg-type]
        created_ms=0,  # set when the graph is written
        source={"path": str(src.resolve()), "threshold": threshold, **{k: v for k, v in info.items() if k != "name"}},
    )
    # build next to the destination and swap it in only when complete: a failed ingest leaves
    # no half-written dataset, and --overwrite never loses the old one to a bad source
    work = dst.parent / f".{dst.name}.partial"
    seg_cache = dst.parent / f".{dst.name}.segcache"  # chunk copies for the L2-feature pass
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(seg_cache, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        sv_stats: dict[str, np.ndarray] = {}
        if l2_features == "all":
            seg_cache.mkdir(parents=True)
        g, report = build_supervoxel_graph(
            src,
            work,
            meta,
            threshold=threshold,
            progress=progress,
            workers=workers,
            sv_stats=sv_stats,
            seg_cache=seg_cache if l2_features == "all" else None,
        )
        meta.created_ms = now_ms()
        l2 = level2_membership(meta, g) if l2_features != "none" else None
        dt_job = None
        if l2 is not None and l2_features == "all":  # over the segment-number copies, meanwhile
            from cavelab.server.morphology.l2features import start_dt_pass

            t_dt = time.perf_counter()
            sv_row = level2_rows(l2.n_l2, l2.sv_l2)
            dt_job = start_dt_pass(
                work, meta, g.sv_ids, sv_row, g.sv_sizes, sv_stats["sv_moments"], l2.n_l2,
                workers=workers, progress=progress, seg_cache=seg_cache,
            )
        hreport = write_dataset(work, meta, g, extra=sv_stats, l2=l2)
        if l2 is not None:
            del l2  # (its per-edge arrays are not needed any more)
            from cavelab.server.morphology.l2features import compute_all

            t_l2 = time.perf_counter()
            dt_feats = None
            if dt_job is not None:
                saved_rows = np.load(work / "graph" / "sv_parent.npy", mmap_mode="r")
                if not np.array_equal(saved_rows, sv_row):  # the rows are the saved node order
                    dt_job.cancel()
                    raise IngestError("internal: L2 rows of the distance-transform pass differ from the saved graph")
                dt_feats = dt_job.result()
            feats, l2report = compute_all(
                work,
                meta=meta,
                arrays=sv_stats,
                dt=False,
                dt_features=dt_feats,
                workers=workers,
                progress=progress,
            )
            open_array_store(work).save(feats)
            del feats
            l2report["seconds_after_hierarchy"] = time.perf_counter() - t_l2
            if dt_job is not None:
                l2report["dt_pass_wall_seconds"] = time.perf_counter() - t_dt
            hreport["l2_features"] = l2report
        del sv_stats
        total = time.perf_counter() - t0
        report = dict(report)
        report.update(hreport)
        report["total_seconds"] = total
        report["supervoxels_per_second"] = g.n_supervoxels / total if total > 0 else None
        report["n_layers"] = meta.n_layers
        (work / "ingest_report.json").write_text(json.dumps(report, indent=2, default=str))
        if dst.exists():
            shutil.rmtree(dst)
        work.rename(dst)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(seg_cache, ignore_errors=True)
    return report
