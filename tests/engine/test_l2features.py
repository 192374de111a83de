"""L2-cache features: per-supervoxel statistics of the chunk pass and every L2 feature, checked
against brute force from the voxels of a real (tiny) ingested dataset. No mocks."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy import ndimage

from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.engine.segmentation import Segmentation
from cavelab.server.ingest.pipeline import ingest
from cavelab.server.ingest.volume import SV_STAT_ARRAYS
from cavelab.server.morphology.l2features import (
    ATTRIBUTES,
    PCA_MAX_POINTS,
    PCA_MIN_SIZE_NM3,
    L2Features,
    SupervoxelStats,
    attribute_metadata,
    cave_record,
    compute_all,
    dt_features_from_voxels,
    features_for_nodes,
    l2_features_from_stats,
)
from cavelab.server.synth import generate

edt = pytest.importorskip("edt")


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    root = tmp_path_factory.mktemp("l2f")
    generate(root / "src", "tiny", seed=0, progress=False)
    rep = ingest(root / "src", root / "ds", workers=1, progress=False)  # default: every feature
    d = root / "ds"
    meta = DatasetMeta.load(d)
    g = {p.stem: np.load(p) for p in (d / "graph").glob("*.npy")}
    seg = np.asarray(zarr.open_array(str(d / meta.segmentation_path), mode="r")[:])
    return {"dir": d, "meta": meta, "g": g, "seg": seg, "report": rep}


def _chunks(meta):
    cs = np.asarray(meta.chunk_size)
    for c in np.ndindex(*meta.grid_shape):
        lo = np.asarray(c) * cs
        hi = np.minimum(lo + cs, meta.size)
        yield np.asarray(c), lo, hi


def _faces(block, value):
    """Faces across x, y, z between ``block == value`` and a different value, inside the block."""
    out = []
    for d in range(3):
        a = np.moveaxis(block, d, 0)
        diff = a[1:] != a[:-1]
        out.append(int(np.sum(diff & (a[1:] == value)) + np.sum(diff & (a[:-1] == value))))
    return np.array(out)


def _l2_volume(ds):
    """Every voxel's L2 node index (-1: background), via sv_ids and sv_parent."""
    g, seg = ds["g"], ds["seg"]
    idx = np.searchsorted(g["sv_ids"], seg)
    idx = np.minimum(idx, g["sv_ids"].size - 1)
    fg = seg != 0
    assert np.all(g["sv_ids"][idx[fg]] == seg[fg])
    return np.where(fg, g["sv_parent"][idx], -1)


def test_supervoxel_statistics_match_voxels(ds):
    meta, g, seg = ds["meta"], ds["g"], ds["seg"]
    for name in SV_STAT_ARRAYS:
        assert name in g, name
    res = np.asarray(meta.resolution)
    off = np.asarray(meta.voxel_offset)
    S = g["sv_ids"].size
    assert g["sv_moments"].shape == (S, 9) and g["sv_faces"].shape == (S, 3)
    assert g["sv_chunk_faces"].shape == (S, 2, 3) and g["sv_rep_voxel"].shape == (S, 3)
    contacts = {}
    for _, lo, hi in _chunks(meta):
        block = seg[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        for sv in np.unique(block[block != 0]):
            i = int(np.searchsorted(g["sv_ids"], sv))
            pts = np.argwhere(block == sv)
            x, y, z = pts.T.astype(np.float64)
            ref = [x.sum(), y.sum(), z.sum(), (x * x).sum(), (y * y).sum(), (z * z).sum()]
            ref += [(x * y).sum(), (x * z).sum(), (y * z).sum()]
            np.testing.assert_array_equal(g["sv_moments"][i], ref)
            np.testing.assert_array_equal(g["sv_faces"][i], _faces(block, sv))
            for d in range(3):
                assert g["sv_chunk_faces"][i, 0, d] == np.sum(pts[:, d] == 0)
                assert g["sv_chunk_faces"][i, 1, d] == np.sum(pts[:, d] == block.shape[d] - 1)
            # the representative voxel: inside, and the supervoxel's voxel nearest its centroid
            rv = g["sv_rep_voxel"][i] - off - lo
            assert seg[tuple(g["sv_rep_voxel"][i] - off)] == sv
            d2 = (((pts - pts.mean(axis=0)) * res) ** 2).sum(axis=1)
            assert np.isclose((((rv - pts.mean(axis=0)) * res) ** 2).sum(), d2.min())
        for d in range(3):
            a = np.moveaxis(block, d, 0)
            p, q = a[:-1].ravel(), a[1:].ravel()
            m = (p != q) & (p != 0) & (q != 0)
            ia = np.searchsorted(g["sv_ids"], p[m])
            ib = np.searchsorted(g["sv_ids"], q[m])
            for u, v in zip(np.minimum(ia, ib).tolist(), np.maximum(ia, ib).tolist()):
                contacts.setdefault((u, v), [0, 0, 0])[d] += 1
    keys = sorted(contacts)
    np.testing.assert_array_equal(g["sv_contacts"], np.array(keys).reshape(-1, 2))
    np.testing.assert_array_equal(g["sv_contact_faces"], np.array([contacts[k] for k in keys]))


def _cave_rep(pts, dts, res):
    """CAVE's representative voxel by brute force: argmax floor(dt) * (1 - d / max d)."""
    d = np.linalg.norm((pts - pts.mean(axis=0)) * res, axis=1)
    w = 1 - d / d.max() if d.max() > 0 else np.ones(len(pts))
    return dts * w


def test_every_l2_feature_matches_brute_force(ds):
    meta, g = ds["meta"], ds["g"]
    res = np.asarray(meta.resolution, dtype=np.float64)
    vox = float(np.prod(res))
    off = np.asarray(meta.voxel_offset)
    l2vol = _l2_volume(ds)
    n_l2 = int(np.count_nonzero(meta.layout.layers(g["node_ids"]) == 2))
    assert g["l2_size_nm3"].shape == (n_l2,)
    seen = np.zeros(n_l2, dtype=bool)
    face_area = np.array([res[1] * res[2], res[0] * res[2], res[0] * res[1]])
    for _, lo, hi in _chunks(meta):
        block = l2vol[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
        for node in np.unique(block[block >= 0]).tolist():
            assert not seen[node], "an L2 node spans two chunks"
            seen[node] = True
            mask = block == node
            pts = np.argwhere(mask)
            n = len(pts)
            assert g["l2_size_nm3"][node] == n * vox
            assert g["l2_area_nm2"][node] == _faces(block, node) @ face_area
            for d in range(3):
                assert g["l2_chunk_intersect_count"][node, 0, d] == np.sum(pts[:, d] == 0)
                assert g["l2_chunk_intersect_count"][node, 1, d] == np.sum(
                    pts[:, d] == block.shape[d] - 1
                )
            # PCA of the voxel coordinates in nm: rows are the axes by decreasing variance
            p = pts * res
            c = p - p.mean(axis=0)
            lam, vec = np.linalg.eigh(c.T @ c)
            scale = (
                3.0 if n < 3 else ((PCA_MAX_POINTS - 1) / (n - 1) if n > PCA_MAX_POINTS else 1.0)
            )
            np.testing.assert_allclose(
                g["l2_pca_val"][node],
                np.sqrt(np.maximum(lam[::-1], 0) * scale),
                rtol=1e-5,
                atol=1e-3,
            )
            comps = g["l2_pca"][node].astype(np.float64)
            np.testing.assert_allclose(comps @ comps.T, np.eye(3), atol=1e-5)
            for k in range(3):  # distinct eigenvalues: the axis is determined up to sign
                if (
                    lam[2 - k] > 0
                    and np.min(np.abs(lam[2 - k] - np.delete(lam, 2 - k))) > 1e-3 * lam.max()
                ):
                    assert abs(comps[k] @ vec[:, 2 - k]) == pytest.approx(1, abs=1e-5)
                assert comps[k][np.argmax(np.abs(comps[k]))] > 0  # scikit-learn's sign convention
            # distance transform over the node's mask inside its chunk (black_border=False)
            dt = edt.edt(mask.astype(np.uint8), anisotropy=tuple(res), black_border=False)
            dts = np.floor(dt[mask])
            assert g["l2_max_dt_nm"][node] == pytest.approx(dts.max(), abs=1e-6)
            assert g["l2_mean_dt_nm"][node] == pytest.approx(dts.mean(), rel=1e-6)
            if not mask.all():  # scipy agrees on the distances (before truncation)
                ref = ndimage.distance_transform_edt(mask, sampling=res)
                np.testing.assert_allclose(dt[mask], ref[mask], rtol=1e-5)
            # rep_coord: inside the node, with CAVE's maximal score
            rv = np.rint(g["l2_rep_coord_nm"][node] / res).astype(np.int64) - off
            assert l2vol[tuple(rv)] == node
            score = _cave_rep(pts, dts, res)
            j = np.flatnonzero(np.all(pts == rv - lo, axis=1))[0]
            assert score[j] == pytest.approx(score.max(), abs=1e-9)
    assert seen.all()


def test_stats_features_and_their_rep_coord(ds):
    meta, g = ds["meta"], ds["g"]
    n_l2 = g["l2_size_nm3"].size
    f = l2_features_from_stats(g, np.arange(n_l2), meta=meta)
    for name in ("size_nm3", "area_nm2", "chunk_intersect_count"):
        np.testing.assert_array_equal(f[name], g[f"l2_{name}"], err_msg=name)
    np.testing.assert_array_equal(f["pca"], g["l2_pca"])
    np.testing.assert_array_equal(f["pca_val"], g["l2_pca_val"])
    # the statistics' representative point is inside the node
    l2vol = _l2_volume(ds)
    res = np.asarray(meta.resolution)
    rv = np.rint(f["rep_coord_nm"] / res).astype(np.int64) - np.asarray(meta.voxel_offset)
    np.testing.assert_array_equal(l2vol[rv[:, 0], rv[:, 1], rv[:, 2]], np.arange(n_l2))


def test_few_nodes_equal_all_nodes(ds):
    meta, g, d = ds["meta"], ds["g"], ds["dir"]
    stats = SupervoxelStats.load(d)
    n_l2 = g["l2_size_nm3"].size
    rng = np.random.default_rng(0)
    nodes = np.unique(np.r_[rng.choice(n_l2, size=min(25, n_l2), replace=False), 0, n_l2 - 1])
    ptr, ch = g["node_child_ptr"], g["node_children"]
    members = [ch[ptr[i] : ptr[i + 1]] for i in nodes]
    f = features_for_nodes(meta, stats, Segmentation(d, meta), members)
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(f[name], g[f"l2_{name}"][nodes], err_msg=name)
    # one node at a time (the sparse contact lookup), including single-supervoxel nodes
    n_sv = np.diff(ptr[: n_l2 + 1])
    one = [int(nodes[1]), int(np.argmax(n_sv)), int(np.flatnonzero(n_sv == 1)[0])]
    for node in one:
        f = features_for_nodes(meta, stats, Segmentation(d, meta), [ch[ptr[node] : ptr[node + 1]]])
        for name in ATTRIBUTES:
            np.testing.assert_array_equal(f[name][0], g[f"l2_{name}"][node], err_msg=name)
    # the voxel path alone computes the statistics' features too
    seg = Segmentation(d, meta)
    node = int(nodes[0])
    ids = g["sv_ids"][members[0]]
    c = meta.layout.chunk_coords(ids[:1])[0]
    lo = c * np.asarray(meta.chunk_size)
    hi = np.minimum(lo + meta.chunk_size, meta.size)
    v = dt_features_from_voxels(
        seg.read_box(lo, hi), lo, {int(i): node for i in ids}, meta.resolution, all_features=True
    )
    assert v["l2"].tolist() == [node]
    for name in ATTRIBUTES:
        np.testing.assert_allclose(
            v[name][0], g[f"l2_{name}"][node], rtol=1e-6, atol=1e-5, err_msg=name
        )


def test_service_features_by_id_saved_and_computed(ds):
    cg = ChunkedGraph.open(ds["dir"])
    try:
        g = ds["g"]
        n_l2 = g["l2_size_nm3"].size
        ids = g["node_ids"][:n_l2][::7]
        feats = L2Features.open(cg)
        assert feats.complete
        saved = feats(ids)
        feats.complete = False  # as for nodes made by edits: statistics + one read per chunk
        computed = feats(ids)
        for name in ATTRIBUTES:
            np.testing.assert_array_equal(
                saved[name], g[f"l2_{name}"][::7][: ids.size], err_msg=name
            )
            np.testing.assert_array_equal(computed[name], saved[name], err_msg=name)
        feats.stats = None  # a dataset without supervoxel statistics: everything from voxels
        voxels = feats(ids[:5])
        for name in ATTRIBUTES:
            np.testing.assert_allclose(
                voxels[name], saved[name][:5], rtol=1e-6, atol=1e-5, err_msg=name
            )
    finally:
        cg.close()


def test_metadata_and_cave_records(ds):
    assert list(attribute_metadata()) == [
        "size_nm3",
        "area_nm2",
        "max_dt_nm",
        "mean_dt_nm",
        "rep_coord_nm",
        "chunk_intersect_count",
        "pca",
        "pca_val",
    ]
    assert attribute_metadata()["pca"] == "<class 'numpy.float16'>"
    g = ds["g"]
    feats = {name: g[f"l2_{name}"] for name in ATTRIBUTES}
    small = int(np.argmin(feats["size_nm3"]))
    big = int(np.argmax(feats["size_nm3"]))
    assert feats["size_nm3"][small] < PCA_MIN_SIZE_NM3 <= feats["size_nm3"][big]
    rs, rb = cave_record(feats, small), cave_record(feats, big)
    assert "pca" not in rs and "pca_val" not in rs
    assert np.asarray(rb["pca"]).shape == (3, 3) and len(rb["pca_val"]) == 3
    assert np.asarray(rb["chunk_intersect_count"]).shape == (2, 3)
    assert isinstance(rb["area_nm2"], int) and isinstance(rb["max_dt_nm"], int)
    assert rb["size_nm3"] == feats["size_nm3"][big] and len(rb["rep_coord_nm"]) == 3


def test_ingest_reports_and_modes(ds, tmp_path):
    rep = ds["report"]["l2_features"]
    assert rep["dt"] and rep["n_l2"] == ds["g"]["l2_size_nm3"].size
    feats, r = compute_all(ds["dir"], dt=False)
    assert not r["dt"] and "l2_max_dt_nm" not in feats
    np.testing.assert_array_equal(feats["l2_area_nm2"], ds["g"]["l2_area_nm2"])
    # only the statistics' features, or none: computed on demand by the service
    src = ds["dir"].parent / "src"
    ingest(src, tmp_path / "st", workers=1, progress=False, l2_features="stats")
    names = {p.stem for p in (tmp_path / "st" / "graph").glob("l2_*.npy")}
    assert "l2_area_nm2" in names and "l2_max_dt_nm" not in names
    ingest(src, tmp_path / "ds", workers=1, progress=False, l2_features="none")
    assert not list((tmp_path / "ds" / "graph").glob("l2_*.npy"))
    cg = ChunkedGraph.open(tmp_path / "ds")
    try:
        ids = ds["g"]["node_ids"][:5]
        f = L2Features.open(cg)(ids)
        for name in ATTRIBUTES:
            np.testing.assert_array_equal(f[name], ds["g"][f"l2_{name}"][:5], err_msg=name)
    finally:
        cg.close()
    with pytest.raises(Exception, match="l2_features"):
        ingest(src, tmp_path / "x", workers=1, progress=False, l2_features="some")


def test_voxels_only_path_equals_the_statistics_path(tmp_path) -> None:
    """Without supervoxel statistics, all nodes (several per chunk, read once) get the same features."""
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.ingest.pipeline import ingest as run_ingest
    from cavelab.server.morphology.l2features import ATTRIBUTES, L2Features
    from cavelab.server.synth import generate as run_generate

    run_generate(tmp_path / "src", preset="tiny", seed=9, progress=False)
    run_ingest(tmp_path / "src", tmp_path / "ds", progress=False, workers=1)
    cg = ChunkedGraph.open(tmp_path / "ds")
    with_stats = L2Features.open(cg)
    voxels_only = L2Features.open(cg)
    voxels_only.stats = None  # what a dataset ingested before the statistics existed has
    l2 = np.unique(cg.get_roots(cg.state.sv_ids, stop_layer=2))
    a, b = with_stats.features(l2), voxels_only.features(l2)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(np.asarray(a[name], float), np.asarray(b[name], float), rtol=1e-4, atol=1e-3, err_msg=name)
    cg.close()
