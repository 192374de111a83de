"""The volume stage of ingest: OME-Zarr reading, graphene relabelling, the supervoxel graph.

Sources are written by hand inside each test (``tmp_path``) with known geometry and compared
with an independent brute-force implementation (plain Python loops over voxels).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zarr

from cavelab.server.engine.ids import GrapheneLayout
from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.errors import IngestError
from cavelab.server.ingest.contacts import face_contacts, slab_contacts
from cavelab.server.ingest.ngff import open_ngff, write_ngff_attrs
from cavelab.server.ingest.volume import (
    SUPERVOXEL_MAP_FILE,
    build_supervoxel_graph,
    output_chunks,
)

BIG = 2**40 + 5  # a label that does not fit 32 bits

# -- writing sources ------------------------------------------------------------------


def write_volume(
    zpath: Path,
    labels_xyz: np.ndarray,
    *,
    axes: str = "zyx",
    zarr_format: int = 3,
    scale_xyz: tuple[float, float, float] = (4.0, 4.0, 40.0),
    unit: str = "nanometer",
    chunks: tuple[int, int, int] | None = None,
) -> None:
    """Store ``labels_xyz`` (indexed x, y, z) as OME-Zarr with the given axis order."""
    perm = ["xyz".index(a) for a in axes]
    arr = np.ascontiguousarray(labels_xyz.transpose(perm))
    z = zarr.create_array(
        store=str(zpath / "0"),
        shape=arr.shape,
        dtype=arr.dtype,
        chunks=chunks or tuple(max(1, s // 2) for s in arr.shape),
        zarr_format=zarr_format,
    )
    z[:] = arr
    write_ngff_attrs(
        zpath,
        axes=tuple(axes),  # type: ignore[arg-type]
        scale=tuple(scale_xyz[p] for p in perm),  # type: ignore[arg-type]
        unit=unit,
        zarr_format=zarr_format,
    )


def write_edges(src: Path, rows: list[tuple[int, int, float, float]]) -> None:
    sv1, sv2, aff, area = (list(c) for c in zip(*rows)) if rows else ([], [], [], [])
    pq.write_table(
        pa.table(
            {
                "sv1": pa.array(sv1, pa.uint64()),
                "sv2": pa.array(sv2, pa.uint64()),
                "affinity": pa.array(aff, pa.float32()),
                "area": pa.array(area, pa.float64()),
            }
        ),
        src / "edges.parquet",
    )


def write_components(src: Path, seg: dict[int, int]) -> None:
    pq.write_table(
        pa.table(
            {
                "sv": pa.array(list(seg), pa.uint64()),
                "segment": pa.array(list(seg.values()), pa.int64()),
            }
        ),
        src / "components.parquet",
    )


def make_source(
    root: Path,
    labels_xyz: np.ndarray,
    edges: list[tuple[int, int, float, float]],
    components: dict[int, int] | None = None,
    name: str = "src",
    **vol_kw,
) -> Path:
    src = root / name
    src.mkdir(parents=True)
    write_volume(src / "segmentation.zarr", labels_xyz, **vol_kw)
    write_edges(src, edges)
    if components is not None:
        write_components(src, components)
    return src


def meta_for(src: Path, chunk_size: tuple[int, int, int], **kw) -> DatasetMeta:
    vol = open_ngff(src / "segmentation.zarr")
    kw.setdefault("n_layers", DatasetMeta.layers_for(vol.shape, chunk_size))
    return DatasetMeta(
        name="t",
        resolution=vol.resolution,
        size=vol.shape,
        chunk_size=chunk_size,
        created_ms=0,
        **kw,
    )


def ingest(
    src: Path,
    chunk_size=(4, 4, 3),
    *,
    out: Path | None = None,
    threshold=None,
    workers=1,
    meta_kw=None,
):
    out = out or src.parent / (src.name + "_ds")
    meta = meta_for(src, chunk_size, **(meta_kw or {}))
    graph, report = build_supervoxel_graph(
        src, out, meta, threshold=threshold, progress=False, workers=workers
    )
    return graph, report, out, meta


# -- an independent brute-force reference -------------------------------------------------


def reference(labels: np.ndarray, cs, layout: GrapheneLayout, edges, seg_of_label):
    """Everything the stage must produce, computed voxel by voxel in plain Python."""
    X, Y, Z = labels.shape
    ids = np.zeros(labels.shape, dtype=np.uint64)
    chunk_labels: dict[tuple, list] = defaultdict(set)
    for x, y, z in np.ndindex(labels.shape):
        if labels[x, y, z]:
            chunk_labels[(x // cs[0], y // cs[1], z // cs[2])].add(int(labels[x, y, z]))
    sv_label = {}
    for c, labs in chunk_labels.items():
        for seg, lab in enumerate(sorted(labs), start=1):
            sv = int(layout.node_ids(1, [c[0]], [c[1]], [c[2]], [seg])[0])
            sv_label[sv] = lab
    inv = {
        (c, lab): int(layout.node_ids(1, [c[0]], [c[1]], [c[2]], [s])[0])
        for c, labs in chunk_labels.items()
        for s, lab in enumerate(sorted(labs), 1)
    }
    vox = defaultdict(list)
    for x, y, z in np.ndindex(labels.shape):
        lab = int(labels[x, y, z])
        if lab:
            sv = inv[((x // cs[0], y // cs[1], z // cs[2]), lab)]
            ids[x, y, z] = sv
            vox[sv].append((x, y, z))
    sv_ids = sorted(sv_label)
    index = {sv: i for i, sv in enumerate(sv_ids)}
    sizes = [len(vox[s]) for s in sv_ids]
    bbox = [[*np.min(vox[s], 0), *(np.max(vox[s], 0) + 1)] for s in sv_ids]
    cent = [np.mean(vox[s], 0) for s in sv_ids]
    # face contacts between pieces
    contact = defaultdict(int)
    for x, y, z in np.ndindex(labels.shape):
        for dx, dy, dz in ((1, 0, 0), (0, 1, 0), (0, 0, 1)):
            x2, y2, z2 = x + dx, y + dy, z + dz
            if x2 >= X or y2 >= Y or z2 >= Z:
                continue
            a, b = int(ids[x, y, z]), int(ids[x2, y2, z2])
            if a and b and a != b:
                ia, ib = sorted((index[a], index[b]))
                contact[(ia, ib)] += 1
    lab_of = [sv_label[s] for s in sv_ids]
    out = {}  # (i, j) -> (affinity, area, active)
    # ties and chains (union-find over the face ties)
    parent = list(range(len(sv_ids)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (i, j), n in contact.items():
        if lab_of[i] == lab_of[j]:
            out[(i, j)] = (np.inf, n, True)
            parent[find(i)] = find(j)
    pieces = defaultdict(list)
    for i, lab in enumerate(lab_of):
        pieces[lab].append(i)
    n_chained = 0
    for ps in pieces.values():
        groups = {}
        for p in ps:  # ascending: the first seen is the group's lowest piece
            groups.setdefault(find(p), p)
        reps = sorted(groups.values())
        if len(reps) > 1:
            n_chained += 1
        for a, b in zip(reps, reps[1:]):
            out[(a, b)] = (np.inf, 0.0, True)
    # listed edges, merged
    merged = defaultdict(list)
    for a, b, aff, area in edges:
        merged[(min(a, b), max(a, b))].append((aff, area))
    n_lonely = 0
    for (a, b), vals in merged.items():
        aff = float(np.mean([np.float32(v[0]) for v in vals]))
        area = float(sum(v[1] for v in vals))
        active = seg_of_label(a) == seg_of_label(b)
        touching = {k: n for k, n in contact.items() if {lab_of[k[0]], lab_of[k[1]]} == {a, b}}
        if touching:
            tot = sum(touching.values())
            for k, n in touching.items():
                out[k] = (aff, area * n / tot, active)
        else:
            n_lonely += 1
            big_a = max(pieces[a], key=lambda i: (sizes[i], -i))
            big_b = max(pieces[b], key=lambda i: (sizes[i], -i))
            out[tuple(sorted((big_a, big_b)))] = (aff, area, active)
    return {
        "ids": ids,
        "sv_ids": np.array(sv_ids, dtype=np.uint64),
        "labels": np.array(lab_of, dtype=np.uint64),
        "sizes": np.array(sizes),
        "bbox": np.array(bbox),
        "centroid": np.array(cent),
        "edges": out,
        "n_chained": n_chained,
        "n_lonely": n_lonely,
    }


def assert_matches_reference(graph, ref):
    np.testing.assert_array_equal(graph.sv_ids, ref["sv_ids"])
    np.testing.assert_array_equal(graph.sv_labels, ref["labels"])
    np.testing.assert_array_equal(graph.sv_sizes, ref["sizes"])
    np.testing.assert_array_equal(graph.sv_bbox, ref["bbox"])
    np.testing.assert_allclose(graph.sv_centroid, ref["centroid"], rtol=1e-6)
    keys = sorted(ref["edges"])
    np.testing.assert_array_equal(graph.edges, np.array(keys, dtype=np.int64).reshape(-1, 2))
    exp = np.array([ref["edges"][k] for k in keys], dtype=object).reshape(-1, 3)
    np.testing.assert_allclose(graph.affinity, exp[:, 0].astype(np.float64), rtol=1e-6)
    np.testing.assert_allclose(graph.area, exp[:, 1].astype(np.float64), rtol=1e-5)
    np.testing.assert_array_equal(graph.active, exp[:, 2].astype(bool))


def random_volume(shape, values, seed, block=2, p_zero=0.15):
    """Blocky random labels with noise: many contacts, labels cut by chunk borders."""
    rng = np.random.default_rng(seed)
    coarse = rng.choice(values, size=tuple(-(-s // block) for s in shape))
    vol = (
        coarse.repeat(block, 0)
        .repeat(block, 1)
        .repeat(block, 2)[: shape[0], : shape[1], : shape[2]]
        .copy()
    )
    noise = rng.random(shape) < 0.1
    vol[noise] = rng.choice(values, size=int(noise.sum()))
    vol[rng.random(shape) < p_zero] = 0
    return vol.astype(np.uint64)


def touching_label_pairs(vol):
    pairs, _ = face_contacts(vol)
    return [tuple(int(v) for v in p) for p in pairs]


# -- the hand-built geometry ------------------------------------------------------------


@pytest.fixture
def geometry():
    """A 3 x 2 x 2 chunk grid (chunks 4 x 4 x 3) with labels of known shape.

    * 7: a bar along x (y 0-1, z 0-1) through all three x chunks: three pieces, tied.
    * 3: x 0-5 (y 2-3, z 0-1), on the bar: two pieces, 8 + 4 faces with the bar.
    * BIG: x 6-11 (y 2-3, z 0-1): touches 3 across x = 5|6 (4 faces) and the bar.
    * 9: two single voxels far apart (chunks (0,1,1) and (2,1,1)): chained.
    * 11 and 12: listed but never touching.
    * 13: touches the bar (z = 2), not listed: dropped.
    """
    v = np.zeros((12, 8, 6), dtype=np.uint64)
    v[:, 0:2, 0:2] = 7
    v[0:6, 2:4, 0:2] = 3
    v[6:12, 2:4, 0:2] = BIG
    v[0, 6, 4] = 9
    v[11, 6, 4] = 9
    v[0, 7, 0] = 11
    v[11, 7, 5] = 12
    v[5, 0, 2] = 13
    edges = [
        (3, 7, 0.8, 30.0),
        (BIG, 3, 0.25, 5.0),
        (7, BIG, 0.5, 6.0),
        (7, BIG, 0.7, 6.0),  # duplicate, either order: mean affinity, summed area
        (12, 11, 0.9, 2.0),
    ]
    components = {3: 1, 7: 1, BIG: 2, 11: 3, 12: 3}
    return v, edges, components


def test_geometry_ids_pieces_ties_and_edges(tmp_path, geometry):
    v, edges, comps = geometry
    src = make_source(tmp_path, v, edges, comps)
    g, rep, out, meta = ingest(src)
    layout = meta.layout
    assert meta.grid_shape == (3, 2, 2)
    # IDs: layer 1, the right chunk, per-chunk counters 1..k in ascending label order
    assert np.all(layout.layers(g.sv_ids) == 1)
    cc = layout.chunk_coords(g.sv_ids)
    segs = layout.segments(g.sv_ids)
    for c in {tuple(r) for r in cc.tolist()}:
        m = np.all(cc == c, axis=1)
        assert segs[m].tolist() == list(range(1, int(m.sum()) + 1))
        assert np.all(np.diff(g.sv_labels[m].astype(np.float64)) > 0)
    # label 7: three pieces in chunks (0|1|2, 0, 0), tied with 2 x 2 faces each
    p7 = np.flatnonzero(g.sv_labels == 7)
    assert cc[p7].tolist() == [[0, 0, 0], [1, 0, 0], [2, 0, 0]]
    assert g.sv_sizes[p7].tolist() == [16, 16, 16]
    assert g.sv_bbox[p7[1]].tolist() == [4, 0, 0, 8, 2, 2]

    def edge(i, j):
        k = np.flatnonzero((g.edges[:, 0] == min(i, j)) & (g.edges[:, 1] == max(i, j)))
        assert k.size == 1, (i, j)
        return float(g.affinity[k[0]]), float(g.area[k[0]]), bool(g.active[k[0]])

    assert edge(p7[0], p7[1]) == (np.inf, 4.0, True)
    assert edge(p7[1], p7[2]) == (np.inf, 4.0, True)
    # 3-7: 8 faces in chunk 0 and 4 in chunk 1 share the listed area 30
    p3 = np.flatnonzero(g.sv_labels == 3)
    assert edge(p3[0], p7[0]) == pytest.approx((0.8, 20.0, True))
    assert edge(p3[1], p7[1]) == pytest.approx((0.8, 10.0, True))
    # BIG-3 across the x = 5|6 face inside chunk 1; BIG-7 merged duplicate (mean, sum)
    pb = np.flatnonzero(g.sv_labels == BIG)
    assert edge(p3[1], pb[0]) == pytest.approx((0.25, 5.0, False))
    a, area, act = edge(pb[0], p7[1])
    assert (a, act) == pytest.approx((0.6, False)) and area == pytest.approx(12.0 * 4 / 12)
    # 9: pieces that never touch are chained with a zero-area tie
    p9 = np.flatnonzero(g.sv_labels == 9)
    assert edge(p9[0], p9[1]) == (np.inf, 0.0, True)
    # 11-12: listed, never touching: placed between their (only) pieces
    p11, p12 = np.flatnonzero(g.sv_labels == 11), np.flatnonzero(g.sv_labels == 12)
    assert edge(p11[0], p12[0]) == pytest.approx((0.9, 2.0, True))
    # 13 touches the bar but is not listed: no edge
    p13 = np.flatnonzero(g.sv_labels == 13)
    assert not np.any(np.isin(g.edges, p13))
    assert rep["warning_counts"] == {
        "labels_chained": 1,
        "edges_not_touching": 1,
        "unlisted_contacts_dropped": 1,
    }
    assert len(rep["warnings"]) == 2
    assert rep["n_labels"] == 7 and rep["n_supervoxels"] == g.n_supervoxels
    assert rep["n_duplicate_edge_rows"] == 1 and rep["n_listed_pairs"] == 4
    assert rep["n_ties"] == 2 + 1 + 1 + 1  # 7 (2 ties), 3 (1), BIG (1), 9 (1 chain)
    for key in ("seconds", "supervoxels_per_second", "timings", "n_edges"):
        assert key in rep
    # the relabelled volume
    seg = zarr.open_array(str(out / meta.segmentation_path), mode="r")
    assert seg.dtype == np.uint64 and seg.shape == (12, 8, 6)
    ids = seg[:]
    assert np.array_equal(ids == 0, v == 0)
    np.testing.assert_array_equal(g.sv_labels[np.searchsorted(g.sv_ids, ids[v > 0])], v[v > 0])


def test_geometry_matches_bruteforce(tmp_path, geometry):
    v, edges, comps = geometry
    src = make_source(tmp_path, v, edges, comps)
    g, rep, out, meta = ingest(src)
    ref = reference(v, meta.chunk_size, meta.layout, edges, lambda lab: comps.get(lab, -lab))
    assert_matches_reference(g, ref)


@pytest.mark.parametrize("seed", [0, 1])
def test_random_volume_matches_bruteforce(tmp_path, seed):
    """Partial edge chunks, big labels, noise: everything equals the voxel-by-voxel reference."""
    values = [0, 5, 17, 40, 41, 99, 1000, BIG, 2**63 + 3]
    v = random_volume((10, 9, 7), values, seed)
    pairs = touching_label_pairs(v)
    rng = np.random.default_rng(seed)
    listed = [p for p in pairs if rng.random() < 0.7]
    edges = [(a, b, float(np.float32(rng.random())), float(rng.integers(0, 50))) for a, b in listed]
    edges.append((listed[0][1], listed[0][0], 0.5, 7.0))  # duplicate, reversed
    present = sorted({int(x) for x in np.unique(v) if x})
    comps = {lab: i % 3 for i, lab in enumerate(present[:-2])}
    src = make_source(tmp_path, v, edges, comps, chunks=(3, 4, 5))
    g, rep, out, meta = ingest(src, chunk_size=(4, 4, 3))
    ref = reference(v, meta.chunk_size, meta.layout, edges, lambda lab: comps.get(lab, -lab))
    assert_matches_reference(g, ref)
    ids = zarr.open_array(str(out / meta.segmentation_path), mode="r")[:]
    np.testing.assert_array_equal(ids, ref["ids"])
    assert rep["warning_counts"].get("labels_chained", 0) == ref["n_chained"]
    assert rep["warning_counts"].get("edges_not_touching", 0) == ref["n_lonely"]


def test_ties_connect_every_label(tmp_path):
    v = random_volume((12, 10, 9), [0, 1, 2, 3, 4, 2**50], seed=3, block=3, p_zero=0.3)
    src = make_source(tmp_path, v, [], None)
    g, rep, _, _ = ingest(src, chunk_size=(4, 3, 4), threshold=0.5)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    ties = np.isinf(g.affinity)
    n = g.n_supervoxels
    m = coo_matrix((np.ones(int(ties.sum())), tuple(g.edges[ties].T)), shape=(n, n))
    _, comp = connected_components(m, directed=False)
    for lab in np.unique(g.sv_labels):
        assert np.unique(comp[g.sv_labels == lab]).size == 1
    # ties only join pieces of one label, and only listed edges exist besides them
    assert np.all(g.sv_labels[g.edges[ties, 0]] == g.sv_labels[g.edges[ties, 1]])
    assert g.n_edges == int(ties.sum())
    assert np.all(g.active[ties])


def test_threshold_mode(tmp_path):
    v = np.zeros((6, 2, 2), dtype=np.uint64)
    for i, lab in enumerate([1, 2, 3, 4, 5, 6]):
        v[i] = lab
    edges = [(1, 2, 0.9, 4), (2, 3, 0.3, 4), (3, 4, 0.7, 4), (4, 5, 0.7, 4), (5, 6, 0.1, 4)]
    src = make_source(tmp_path, v, edges, {1: 1, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1})
    g, rep, _, _ = ingest(src, chunk_size=(6, 2, 2), threshold=0.5)
    assert g.edges.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    assert g.active.tolist() == [True, False, True, True, False]
    assert g.affinity.tolist() == pytest.approx([0.9, 0.3, 0.7, 0.7, 0.1])
    assert any("ignored" in w for w in rep["warnings"])  # threshold beats components.parquet
    assert rep["n_segments"] == 3
    # with components.parquet instead: everything in segment 1 is active
    g2, rep2, _, _ = ingest(src, chunk_size=(6, 2, 2), out=tmp_path / "ds2")
    assert g2.active.all() and rep2["n_segments"] == 1


def test_components_unlisted_labels_are_own_segments(tmp_path):
    v = np.zeros((4, 1, 1), dtype=np.uint64)
    v[:, 0, 0] = [1, 2, 3, 4]
    # 1 and 3 share a segment (no edge joins them); 4 is not listed: its own segment
    src = make_source(
        tmp_path, v, [(1, 2, 0.5, 1), (2, 3, 0.5, 1), (3, 4, 0.5, 1)], {1: 10, 3: 10, 2: 20}
    )
    g, rep, _, _ = ingest(src, chunk_size=(4, 1, 1))
    assert g.active.tolist() == [False, False, False]
    assert rep["n_segments"] == 3
    write_components(src, {1: 10, 3: 10, 4: 10, 2: 20})
    g, rep, _, _ = ingest(src, chunk_size=(4, 1, 1), out=tmp_path / "ds2")
    assert g.active.tolist() == [False, False, True] and rep["n_segments"] == 2


def test_supervoxel_map_and_output_array(tmp_path, geometry):
    v, edges, comps = geometry
    src = make_source(tmp_path, v, edges, comps)
    g, rep, out, meta = ingest(src, meta_kw={"voxel_offset": (100, 200, 300)})
    t = pq.read_table(out / SUPERVOXEL_MAP_FILE)
    assert t.schema.field("label").type == pa.uint64()
    assert t.schema.field("sv_id").type == pa.uint64()
    np.testing.assert_array_equal(t.column("sv_id").to_numpy(), g.sv_ids)
    np.testing.assert_array_equal(t.column("label").to_numpy(), g.sv_labels)
    seg = zarr.open_array(str(out / meta.segmentation_path), mode="r")
    assert seg.metadata.zarr_format == 3
    assert seg.attrs["resolution"] == [4.0, 4.0, 40.0]
    assert seg.attrs["voxel_offset"] == [100, 200, 300]
    assert all(c % k == 0 for c, k in zip(meta.chunk_size, seg.chunks))
    # bounding boxes and centroids are in dataset voxels (offset included)
    p7 = np.flatnonzero(g.sv_labels == 7)
    assert g.sv_bbox[p7[0]].tolist() == [100, 200, 300, 104, 202, 302]
    assert g.sv_centroid[p7[0]].tolist() == pytest.approx([101.5, 200.5, 300.5])


def test_shard_writer_matches_zarr(tmp_path, monkeypatch):
    """Direct shard encoding equals zarr's own writes (several inner chunks, edges, zeros)."""
    from cavelab.server.ingest import volume as V

    v = random_volume((150, 9, 6), [0, 3, 8, BIG], seed=11, block=3)
    v[70:140] = 0  # whole inner chunks of fill value are not stored
    src = make_source(tmp_path, v, [], None, chunks=(6, 9, 50))
    cs = (128, 8, 4)
    assert output_chunks(cs) == (64, 8, 4)
    g1, _, o1, meta = ingest(src, chunk_size=cs, threshold=0.5, out=tmp_path / "direct")
    assert V._ShardWriter(str(o1 / meta.segmentation_path)).direct
    monkeypatch.setattr(V._ShardWriter, "_layout_ok", staticmethod(lambda meta: False))
    g2, _, o2, _ = ingest(src, chunk_size=cs, threshold=0.5, out=tmp_path / "zarr")
    a = zarr.open_array(str(o1 / meta.segmentation_path), mode="r")[:]
    b = zarr.open_array(str(o2 / meta.segmentation_path), mode="r")[:]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(g1.sv_labels[np.searchsorted(g1.sv_ids, a[v > 0])], v[v > 0])
    assert np.all(a[v == 0] == 0)
    # point lookups through zarr read the shards written directly
    seg = zarr.open_array(str(o1 / meta.segmentation_path), mode="r")
    assert int(seg[149, 8, 5]) == int(a[149, 8, 5])


def test_edge_table_sorted_and_unsorted_paths_agree(tmp_path):
    """Rows sorted by pair take a no-sort path; shuffled/reversed/duplicated rows the general one."""
    from cavelab.server.ingest.volume import _load_edges

    rng = np.random.default_rng(3)
    labels = np.unique(rng.choice(2**62, 300)).astype(np.uint64)
    pairs = np.unique(np.sort(rng.choice(labels, (800, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    aff = rng.random(len(pairs)).astype(np.float32)
    area = rng.integers(0, 9, len(pairs)).astype(np.float64)
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_edges(a, [(int(x), int(y), float(f), float(r)) for (x, y), f, r in zip(pairs, aff, area)])
    perm = rng.permutation(len(pairs))
    rows = [(int(pairs[i, 1]), int(pairs[i, 0]), float(aff[i]), float(area[i])) for i in perm]
    rows.append((int(pairs[0, 0]), int(pairs[0, 1]), float(aff[0]), 5.0))  # a duplicate
    write_edges(b, rows)
    ea, eb = _load_edges(a), _load_edges(b)
    assert ea.n_duplicate_rows == 0 and eb.n_duplicate_rows == 1
    for f in ("labels", "ilo", "hi", "indptr", "affinity"):
        np.testing.assert_array_equal(getattr(ea, f), getattr(eb, f), err_msg=f)
    expect = area.astype(np.float32).copy()
    expect[0] += 5
    np.testing.assert_array_equal(eb.area, expect)
    np.testing.assert_array_equal(ea.labels[ea.ilo], pairs[:, 0])
    np.testing.assert_array_equal(ea.hi, pairs[:, 1])
    np.testing.assert_array_equal(ea.labels[ea.ihi()], pairs[:, 1])


def test_interleave_few_and_many():
    from cavelab.server.ingest.volume import _insertion_points, _interleave

    rng = np.random.default_rng(0)
    for n_x in (3, 20_000):
        lo = np.sort(rng.integers(0, 5000, 60_000))
        hi = rng.integers(0, 10**6, lo.size) * 2  # even: never equal to an extra pair
        o = np.lexsort((hi, lo))
        lo, hi = lo[o], hi[o]
        x_lo = np.sort(rng.integers(0, 5000, n_x))
        x_hi = rng.integers(0, 10**6, n_x) * 2 + 1  # never equal to a main pair
        o = np.lexsort((x_hi, x_lo))
        x_lo, x_hi = x_lo[o], x_hi[o]
        at = _insertion_points(lo, hi, x_lo, x_hi)
        out_lo = np.empty(lo.size + n_x, dtype=lo.dtype)
        out_hi = np.empty(lo.size + n_x, dtype=hi.dtype)
        _interleave(lo, x_lo, at, out_lo)
        _interleave(hi, x_hi, at, out_hi)
        o = np.lexsort((np.concatenate([hi, x_hi]), np.concatenate([lo, x_lo])))
        np.testing.assert_array_equal(out_lo, np.concatenate([lo, x_lo])[o])
        np.testing.assert_array_equal(out_hi, np.concatenate([hi, x_hi])[o])


def test_output_chunks():
    assert output_chunks((256, 256, 32)) == (64, 64, 16)
    assert output_chunks((100, 100, 20)) == (50, 50, 10)
    assert output_chunks((4, 4, 3)) == (4, 4, 3)
    assert output_chunks((97, 64, 16)) == (97, 64, 16)  # a prime: the whole extent


@pytest.mark.parametrize("axes,zarr_format", [("xyz", 2), ("yxz", 3), ("zxy", 2)])
def test_axis_order_and_zarr_version_do_not_matter(tmp_path, axes, zarr_format):
    v = random_volume((9, 7, 5), [0, 3, 8, 12, BIG], seed=5)
    edges = [(a, b, 0.5, 3.0) for a, b in touching_label_pairs(v)]
    base = make_source(tmp_path, v, edges, {3: 1, 8: 1}, name="base", axes="zyx", zarr_format=3)
    other = make_source(
        tmp_path, v, edges, {3: 1, 8: 1}, name="other", axes=axes, zarr_format=zarr_format
    )
    vb, vo = open_ngff(base / "segmentation.zarr"), open_ngff(other / "segmentation.zarr")
    assert (vb.version, vo.version) == ("0.5", "0.5" if zarr_format == 3 else "0.4")
    assert vb.shape == vo.shape == (9, 7, 5) and vb.resolution == vo.resolution
    np.testing.assert_array_equal(vo.read(-3, 100, 2, 5, 1, 4), v[:, 2:5, 1:4])
    g1, _, o1, meta = ingest(base, chunk_size=(4, 3, 2))
    g2, _, o2, _ = ingest(other, chunk_size=(4, 3, 2))
    for f in (
        "sv_ids",
        "sv_labels",
        "sv_sizes",
        "sv_bbox",
        "sv_centroid",
        "edges",
        "affinity",
        "area",
        "active",
    ):
        np.testing.assert_array_equal(getattr(g1, f), getattr(g2, f), err_msg=f)
    a = zarr.open_array(str(o1 / meta.segmentation_path), mode="r")[:]
    b = zarr.open_array(str(o2 / meta.segmentation_path), mode="r")[:]
    np.testing.assert_array_equal(a, b)


def test_workers_give_identical_results(tmp_path):
    v = random_volume((16, 12, 8), [0, 1, 2, 3, 5, 8, 13, BIG], seed=7)
    edges = [(a, b, 0.4, 2.0) for a, b in touching_label_pairs(v)]
    src = make_source(tmp_path, v, edges, None)
    g1, r1, o1, meta = ingest(
        src, chunk_size=(4, 4, 4), threshold=0.3, workers=1, out=tmp_path / "w1"
    )
    g2, r2, o2, _ = ingest(src, chunk_size=(4, 4, 4), threshold=0.3, workers=2, out=tmp_path / "w2")
    for f in (
        "sv_ids",
        "sv_labels",
        "sv_sizes",
        "sv_bbox",
        "sv_centroid",
        "edges",
        "affinity",
        "area",
        "active",
    ):
        np.testing.assert_array_equal(getattr(g1, f), getattr(g2, f), err_msg=f)
    np.testing.assert_array_equal(
        zarr.open_array(str(o1 / meta.segmentation_path), mode="r")[:],
        zarr.open_array(str(o2 / meta.segmentation_path), mode="r")[:],
    )
    assert r2["workers"] == 2
    # an error inside a worker (a negative label) reaches the caller as an IngestError
    bad = v.astype(np.int64)
    bad[13, 2, 7] = -1
    neg = make_source(tmp_path, bad, edges, None, name="neg")
    with pytest.raises(IngestError, match="negative label -1"):
        ingest(neg, chunk_size=(4, 4, 4), threshold=0.3, workers=2)


def test_units_signed_dtype_and_translation(tmp_path):
    v = np.zeros((4, 4, 2), dtype=np.int32)
    v[:2] = 5
    v[2:] = 6
    src = make_source(
        tmp_path,
        v,
        [(5, 6, 1.0, 8)],
        {5: 1, 6: 1},
        unit="micrometer",
        scale_xyz=(0.004, 0.004, 0.04),
    )
    vol = open_ngff(src / "segmentation.zarr")
    assert vol.resolution == pytest.approx((4.0, 4.0, 40.0)) and vol.dtype == np.int32
    g, _, _, _ = ingest(src, chunk_size=(2, 4, 2))
    assert g.sv_labels.tolist() == [5, 6] and g.area.tolist() == [8.0]
    zattrs = src / "segmentation.zarr" / "zarr.json"
    meta = json.loads(zattrs.read_text())
    ms = meta["attributes"]["ome"]["multiscales"][0]
    ms["axes"][0]["unit"] = "angstrom"  # z: 0.04 angstrom per voxel
    ms["datasets"][0]["coordinateTransformations"].append(
        {"type": "translation", "translation": [0.08, 0.0, 0.0]}  # z, y, x: 2 voxels in z
    )
    zattrs.write_text(json.dumps(meta))
    vol = open_ngff(src / "segmentation.zarr")
    assert vol.resolution == pytest.approx((4.0, 4.0, 0.004))
    assert vol.voxel_offset == (0, 0, 2)


def test_contacts_helpers():
    b = np.zeros((2, 2, 2), dtype=np.uint64)
    b[0] = 4
    b[1] = BIG
    b[1, 1, 1] = 0
    pairs, counts = face_contacts(b)
    assert pairs.tolist() == [[4, BIG]] and counts.tolist() == [3]
    pairs, counts = slab_contacts(b[0], b[1])
    assert pairs.tolist() == [[4, BIG]] and counts.tolist() == [3]
    with pytest.raises(ValueError):
        slab_contacts(b[0], b[1, :1])


# -- refusals -------------------------------------------------------------------------


def small_volume():
    v = np.zeros((4, 4, 2), dtype=np.uint64)
    v[:2] = 1
    v[2:] = 2
    return v


def _edit_ome(src: Path, fn) -> None:
    p = src / "segmentation.zarr" / "zarr.json"
    meta = json.loads(p.read_text())
    fn(meta["attributes"]["ome"]["multiscales"][0])
    p.write_text(json.dumps(meta))


NGFF_BREAKAGES = {
    "no multiscales": (lambda ms: ms.clear(), "multiscales[0].axes"),
    "missing axes": (lambda ms: ms.pop("axes"), "multiscales[0].axes"),
    "channel axis": (lambda ms: ms["axes"].insert(0, {"name": "c", "type": "channel"}), "channel"),
    "axis named t": (lambda ms: ms["axes"][0].update(name="t"), "'t'"),
    "duplicate axis": (lambda ms: ms["axes"][0].update(name="y"), "exactly three"),
    "bad unit": (lambda ms: ms["axes"][1].update(unit="parsec"), "parsec"),
    "missing unit": (lambda ms: ms["axes"][1].pop("unit"), "axes[1].unit"),
    "missing scale": (lambda ms: ms["datasets"][0].update(coordinateTransformations=[]), "'scale'"),
    "scale of 2 numbers": (
        lambda ms: ms["datasets"][0]["coordinateTransformations"][0].update(scale=[1, 2]),
        "3 finite numbers",
    ),
    "fractional translation": (
        lambda ms: ms["datasets"][0]["coordinateTransformations"].append(
            {"type": "translation", "translation": [0, 0.5, 0]}
        ),
        "whole number of voxels",
    ),
    "missing dataset path": (lambda ms: ms["datasets"][0].pop("path"), "datasets[0].path"),
    "wrong dataset path": (lambda ms: ms["datasets"][0].update(path="nope"), "'nope'"),
}


@pytest.mark.parametrize("case", sorted(NGFF_BREAKAGES))
def test_refuses_bad_ngff_metadata(tmp_path, case):
    fn, needle = NGFF_BREAKAGES[case]
    src = make_source(tmp_path, small_volume(), [(1, 2, 0.5, 1)], {1: 1})
    _edit_ome(src, fn)
    with pytest.raises(IngestError, match=needle.replace("[", r"\[").replace("(", r"\(")):
        ingest_meta = DatasetMeta(
            name="t",
            resolution=(4, 4, 40),
            size=(4, 4, 2),
            chunk_size=(2, 2, 2),
            n_layers=3,
            created_ms=0,
        )
        build_supervoxel_graph(
            src, tmp_path / "ds", ingest_meta, threshold=0.5, progress=False, workers=1
        )


def test_refuses_garbled_or_missing_metadata(tmp_path):
    src = make_source(tmp_path, small_volume(), [(1, 2, 0.5, 1)], {1: 1})
    z = src / "segmentation.zarr"
    (z / "zarr.json").write_text("{not json")
    with pytest.raises(IngestError, match="garbled"):
        open_ngff(z)
    (z / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    )
    with pytest.raises(IngestError, match="attributes.ome"):
        open_ngff(z)
    with pytest.raises(IngestError, match="no OME-Zarr volume"):
        open_ngff(tmp_path / "absent.zarr")
    with pytest.raises(IngestError, match="bare Zarr array"):
        open_ngff(z / "0")
    v2 = make_source(tmp_path, small_volume(), [], None, name="v2", zarr_format=2)
    (v2 / "segmentation.zarr" / ".zattrs").write_text(json.dumps({"omero": {}}))
    with pytest.raises(IngestError, match="'multiscales'"):
        open_ngff(v2 / "segmentation.zarr")
    meta = DatasetMeta(
        name="t",
        resolution=(4, 4, 40),
        size=(4, 4, 2),
        chunk_size=(2, 2, 2),
        n_layers=3,
        created_ms=0,
    )
    with pytest.raises(IngestError, match="not a directory"):
        build_supervoxel_graph(tmp_path / "nowhere", tmp_path / "x", meta, threshold=0.5)


def test_refuses_float_and_negative_labels(tmp_path):
    src = make_source(tmp_path, small_volume().astype(np.float32), [], None)
    with pytest.raises(IngestError, match="floating-point labels"):
        open_ngff(src / "segmentation.zarr")
    v = small_volume().astype(np.int16)
    v[3, 2, 1] = -4
    src = make_source(tmp_path, v, [(1, 2, 0.5, 1)], {1: 1}, name="neg")
    vol = open_ngff(src / "segmentation.zarr")
    vol.read(0, 2, 0, 4, 0, 2)  # the negative voxel is not in this box
    with pytest.raises(IngestError, match=r"negative label -4 at voxel \(x, y, z\) = \(3, 2, 1\)"):
        ingest(src, chunk_size=(2, 2, 2))


EDGE_BREAKAGES = {
    "missing column": (
        pa.table(
            {
                "sv1": pa.array([1], pa.uint64()),
                "sv2": pa.array([2], pa.uint64()),
                "affinity": [0.5],
            }
        ),
        r"lacks the column \['area'\]",
    ),
    "float labels": (
        pa.table({"sv1": [1.0], "sv2": [2.0], "affinity": [0.5], "area": [1.0]}),
        "'sv1' has type double",
    ),
    "absent label": (
        pa.table(
            {
                "sv1": pa.array([1, 1], pa.uint64()),
                "sv2": pa.array([2, 77], pa.uint64()),
                "affinity": [0.5, 0.5],
                "area": [1.0, 1.0],
            }
        ),
        r"absent from the volume, e.g. \[77\], in row 1;",
    ),
    "self edge": (
        pa.table(
            {
                "sv1": pa.array([1, 2], pa.uint64()),
                "sv2": pa.array([2, 2], pa.uint64()),
                "affinity": [0.5, 0.5],
                "area": [1.0, 1.0],
            }
        ),
        "self-edges .* row 1",
    ),
    "affinity > 1": (
        pa.table(
            {
                "sv1": pa.array([1], pa.uint64()),
                "sv2": pa.array([2], pa.uint64()),
                "affinity": [1.5],
                "area": [1.0],
            }
        ),
        r"affinity outside \[0, 1\].* row 0",
    ),
    "NaN affinity": (
        pa.table(
            {
                "sv1": pa.array([1], pa.uint64()),
                "sv2": pa.array([2], pa.uint64()),
                "affinity": [float("nan")],
                "area": [1.0],
            }
        ),
        "NaN",
    ),
    "negative area": (
        pa.table(
            {
                "sv1": pa.array([1], pa.uint64()),
                "sv2": pa.array([2], pa.uint64()),
                "affinity": [0.5],
                "area": [-1.0],
            }
        ),
        "area negative",
    ),
    "label 0": (
        pa.table(
            {
                "sv1": pa.array([0], pa.int64()),
                "sv2": pa.array([2], pa.int64()),
                "affinity": [0.5],
                "area": [1.0],
            }
        ),
        "0 is background",
    ),
    "null label": (
        pa.table(
            {
                "sv1": pa.array([None, 1], pa.uint64()),
                "sv2": pa.array([2, 2], pa.uint64()),
                "affinity": [0.5, 0.5],
                "area": [1.0, 1.0],
            }
        ),
        "null.* row 0",
    ),
}


@pytest.mark.parametrize("case", sorted(EDGE_BREAKAGES))
def test_refuses_bad_edges(tmp_path, case):
    table, needle = EDGE_BREAKAGES[case]
    src = make_source(tmp_path, small_volume(), [], {1: 1})
    pq.write_table(table, src / "edges.parquet")
    with pytest.raises(IngestError, match=needle):
        ingest(src, chunk_size=(2, 2, 2))


def test_refuses_missing_inputs_and_bad_components(tmp_path):
    src = make_source(tmp_path, small_volume(), [(1, 2, 0.5, 1)], None)
    with pytest.raises(IngestError, match="no components.parquet .* --threshold"):
        ingest(src, chunk_size=(2, 2, 2))
    (src / "edges.parquet").unlink()
    with pytest.raises(IngestError, match="no edges.parquet"):
        ingest(src, chunk_size=(2, 2, 2), threshold=0.5)
    write_edges(src, [(1, 2, 0.5, 1)])
    pq.write_table(pa.table({"sv": pa.array([1], pa.uint64())}), src / "components.parquet")
    with pytest.raises(IngestError, match=r"lacks the column \['segment'\]"):
        ingest(src, chunk_size=(2, 2, 2))
    write_components(src, {1: 1, 42: 1})
    with pytest.raises(IngestError, match=r"components.parquet names 1 label.*\[42\], in row 1"):
        ingest(src, chunk_size=(2, 2, 2))
    pq.write_table(
        pa.table({"sv": pa.array([1, 1], pa.uint64()), "segment": [3, 4]}),
        src / "components.parquet",
    )
    with pytest.raises(IngestError, match="label 1 is listed in two segments"):
        ingest(src, chunk_size=(2, 2, 2))
    pq.write_table(pa.table({"sv": [1.0], "segment": [3]}), src / "components.parquet")
    with pytest.raises(IngestError, match="'sv' has type double"):
        ingest(src, chunk_size=(2, 2, 2))


def test_refuses_empty_volume_grid_and_size(tmp_path):
    src = make_source(tmp_path, np.zeros((4, 4, 2), np.uint8), [], None)
    with pytest.raises(IngestError, match="holds no labels"):
        ingest(src, chunk_size=(2, 2, 2), threshold=0.5)
    wide = make_source(
        tmp_path, np.ones((1025, 1, 1), np.uint8), [], None, name="wide", chunks=(1025, 1, 1)
    )
    with pytest.raises(IngestError, match="chunk grid .* too large"):
        ingest(wide, chunk_size=(1, 1, 1), threshold=0.5)  # 13 layers: no 10-bit layout
    with pytest.raises(IngestError, match="chunk grid .* too large"):
        ingest(wide, chunk_size=(1, 1, 1), threshold=0.5, meta_kw={"n_layers": 12})
    meta = meta_for(src, (2, 2, 2))
    meta.size = (8, 4, 2)
    with pytest.raises(IngestError, match="differs from the source volume's shape"):
        build_supervoxel_graph(src, tmp_path / "x", meta, threshold=0.5, progress=False)


# -- throughput -----------------------------------------------------------------------


def jittered_volume(shape, cell, seed=0, p_zero=0.25):
    """Irregular labels of about ``prod(cell)`` voxels (like the generator's supervoxels)."""
    rng = np.random.default_rng(seed)
    g = [s // c + 2 for s, c in zip(shape, cell)]
    coarse = rng.choice(2**48, size=int(np.prod(g)), replace=False).astype(np.uint64) + 1
    coarse = coarse.reshape(g)
    coarse[rng.random(g) < p_zero] = 0

    def field(n1, n2, amp, b1, b2):
        f = rng.integers(0, amp + 1, size=(n1 // b1 + 1, n2 // b2 + 1))
        return np.repeat(np.repeat(f, b1, 0), b2, 1)[:n1, :n2]

    X, Y, Z = shape
    ix = (np.arange(X)[:, None, None] + field(Y, Z, cell[0] // 2, 2, 1)[None]) // cell[0]
    iy = (np.arange(Y)[None, :, None] + field(X, Z, cell[1] // 2, 2, 1)[:, None]) // cell[1]
    iz = (np.arange(Z)[None, None, :] + field(X, Y, cell[2] // 2, 2, 2)[:, :, None]) // cell[2]
    return coarse[ix, iy, iz]


@pytest.mark.slow
def test_throughput(tmp_path):
    """~60-voxel supervoxels (as in the ``large`` synthetic preset), 128 x 128 x 32 chunks."""
    shape, cs = (256, 256, 128), (128, 128, 32)
    v = jittered_volume(shape, (5, 5, 2))
    pairs, _ = face_contacts(v)
    rng = np.random.default_rng(0)
    edges_t = pa.table(
        {
            "sv1": pairs[:, 0],
            "sv2": pairs[:, 1],
            "affinity": rng.random(len(pairs)).astype(np.float32),
            "area": rng.integers(1, 50, len(pairs)).astype(np.uint32),
        }
    )
    src = tmp_path / "src"
    src.mkdir()
    write_volume(src / "segmentation.zarr", v, chunks=cs[::-1])
    pq.write_table(edges_t, src / "edges.parquet")
    del v
    meta = meta_for(src, cs)
    t0 = time.perf_counter()
    g, rep = build_supervoxel_graph(
        src, tmp_path / "ds", meta, threshold=0.5, progress=False, workers=2
    )
    dt = time.perf_counter() - t0
    rate = g.n_supervoxels / dt
    print(
        f"\n{g.n_supervoxels} supervoxels, {g.n_edges} edges in {dt:.2f} s: "
        f"{rate:,.0f} supervoxels/s; timings {rep['timings']}"
    )
    assert rep["supervoxels_per_second"] > 0
    assert rate > 10_000  # a loose floor only: the 2 cores are shared with other work
