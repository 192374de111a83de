"""L2 cache and skeletons through the unmodified caveclient (and pcg_skel) against a real server.

Truth is computed from the dataset's files: each voxel's supervoxel from ``segmentation.zarr``,
and each L2 node's supervoxels as the connected component of same-chunk supervoxels over the
active edges of the test's own networkx ledger (so new L2 nodes made by the test's edits are
checked too).
"""

from __future__ import annotations

import datetime as dt

import networkx as nx
import numpy as np
import pytest
import requests
import zarr
from cave_truth import decode_chunks, in_chunk_pair
from conftest import own_server_fixtures

dataset_dir, server, truth, ledger, client, api, editor = own_server_fixtures("morphology_api")


@pytest.fixture(scope="module")
def volume(dataset_dir) -> np.ndarray:
    return np.asarray(zarr.open_array(str(dataset_dir / "segmentation.zarr"), mode="r")[:])


def l2_sets(ledger, truth, svs: set[int]) -> list[set[int]]:
    """L2 nodes of a cell: components of its supervoxels within each atomic chunk."""
    g = ledger.at(None)
    bits = int(truth.meta["spatial_bits"])
    sv = np.array(sorted(svs), dtype=np.uint64)
    chunk = [tuple(c) for c in decode_chunks(sv, bits).tolist()]
    by_chunk: dict[tuple, list[int]] = {}
    for s, c in zip(sv.tolist(), chunk):
        by_chunk.setdefault(c, []).append(s)
    out = []
    for members in by_chunk.values():
        out += [set(c) for c in nx.connected_components(g.subgraph(members))]
    return out


def voxels_of(volume: np.ndarray, svs: set[int]) -> np.ndarray:
    return np.argwhere(np.isin(volume, np.array(sorted(svs), dtype=np.uint64)))


def a_cell(truth, ledger, min_svs: int = 30) -> int:
    for comp in sorted(ledger.components(), key=len, reverse=True):
        if len(comp) >= min_svs:
            return min(comp)
    raise AssertionError("no cell big enough")


def voxel_truth(volume, truth, members: set[int]) -> dict:
    """An L2 node's features computed here from the voxels of its chunk (numpy/scipy only)."""
    from scipy.ndimage import distance_transform_edt

    res = np.asarray(truth.resolution, dtype=float)
    cs = np.asarray(truth.chunk_size, dtype=int)
    sv = np.array(sorted(members), dtype=np.uint64)
    c = decode_chunks(sv[:1], int(truth.meta["spatial_bits"]))[0]
    lo = c * cs
    hi = np.minimum(lo + cs, volume.shape)
    mask = np.isin(volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]], sv)
    face = np.array([res[1] * res[2], res[0] * res[2], res[0] * res[1]])
    # faces between the node and anything else inside the chunk (not on the chunk's planes)
    area = sum(np.count_nonzero(np.diff(mask.astype(np.int8), axis=d)) * face[d] for d in range(3))
    pts = np.argwhere(mask) * res
    centred = pts - pts.mean(axis=0)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    # distance to the nearest voxel of the chunk that is not the node's (chunk planes are no boundary)
    dt = np.floor(distance_transform_edt(mask, sampling=res)[mask]) if not mask.all() else None
    return {"size_nm3": mask.sum() * res.prod(), "area_nm2": area, "n": int(mask.sum()), "pca": vt, "pca_val": sing,
            "max_dt_nm": None if dt is None else dt.max(), "mean_dt_nm": None if dt is None else dt.mean()}


def check_l2_features(client, volume, truth, l2_ids, sets) -> dict[str, int]:
    """Served features against the voxels: size exact; area exact (CAVE's uint32 floor); rep point
    inside the node; max/mean distance within 1 nm / 1 %; PCA axes (float16) within 0.01 and
    singular values within 0.5 % where CAVE serves them (>= 0.01 µm³ and at most 10,000 voxels,
    above which CAVE samples points)."""
    from cavelab.server.morphology.l2features import PCA_MAX_POINTS

    res = np.asarray(truth.resolution, dtype=float)
    data = client.l2cache.get_l2data([int(x) for x in l2_ids])
    checked = {"nodes": 0, "dt": 0, "pca_val": 0, "pca_axes": 0}
    for l2, members in zip(l2_ids, sets):
        d = data[str(int(l2))]
        t = voxel_truth(volume, truth, members)
        checked["nodes"] += 1
        assert d["size_nm3"] == pytest.approx(t["size_nm3"])
        assert d["area_nm2"] == int(t["area_nm2"])
        rep = np.floor(np.asarray(d["rep_coord_nm"]) / res).astype(int)
        assert int(volume[tuple(rep)]) in members, "rep_coord_nm lies inside the L2 node"
        if t["max_dt_nm"] is not None:
            assert abs(d["max_dt_nm"] - t["max_dt_nm"]) <= 1
            assert d["mean_dt_nm"] == pytest.approx(t["mean_dt_nm"], rel=0.01, abs=1)
            checked["dt"] += 1
        if d["size_nm3"] >= 1e7:  # CAVE computes no PCA below 0.01 µm³
            pca = np.asarray(d["pca"])
            assert pca.shape == (3, 3) and len(d["pca_val"]) == 3
            if 3 <= t["n"] <= PCA_MAX_POINTS:
                v = t["pca_val"]  # decreasing, as the served values
                np.testing.assert_allclose(d["pca_val"], v, rtol=5e-3, atol=1e-3)
                checked["pca_val"] += 1
                for i in range(3):  # an axis is defined where its value stands apart (sign free)
                    if min(abs(v[i] - v[j]) for j in (i - 1, i + 1) if 0 <= j < 3) > 0.05 * v[0]:
                        assert abs(abs(pca[i] @ t["pca"][i]) - 1) < 0.01
                        checked["pca_axes"] += 1
        else:
            assert "pca" not in d and "pca_val" not in d
        assert np.asarray(d["chunk_intersect_count"]).shape == (2, 3)
        assert d["area_nm2"] > 0 and d["max_dt_nm"] > 0 and d["mean_dt_nm"] > 0
    return checked


def test_l2cache_has_cache_and_metadata(client) -> None:
    assert client.l2cache.has_cache()
    attrs = set(client.l2cache.attributes)
    assert {"size_nm3", "area_nm2", "rep_coord_nm", "pca", "pca_val", "max_dt_nm", "mean_dt_nm", "chunk_intersect_count"} <= attrs


def test_l2_features_match_the_voxels(client, truth, ledger, volume) -> None:
    sv = a_cell(truth, ledger)
    root = int(client.chunkedgraph.get_root_id(sv))
    l2_ids = np.asarray(client.chunkedgraph.get_leaves(root, stop_layer=2), dtype=np.uint64)
    # match each served L2 node with a truth set through one of its supervoxels
    sets = l2_sets(ledger, truth, ledger.component_of(sv))
    by_sv = {s: k for k, members in enumerate(sets) for s in members}
    ordered = []
    for l2 in l2_ids.tolist():
        leaves = set(int(x) for x in client.chunkedgraph.get_leaves(l2))
        k = by_sv[next(iter(leaves))]
        assert leaves == sets[k]
        ordered.append(sets[k])
    assert len(ordered) == len(sets)
    checked = check_l2_features(client, volume, truth, l2_ids, ordered)
    assert checked["dt"] and checked["pca_val"] and checked["pca_axes"], checked
    table = client.l2cache.get_l2data_table([int(x) for x in l2_ids[:5]])
    assert {"rep_coord_nm_x", "pca_val_0", "size_nm3"} <= set(table.columns)


def test_new_l2_nodes_after_edits_have_features_at_once(client, truth, ledger, editor, volume) -> None:
    """A merge inside a chunk and a split make new L2 nodes; their features are there right after."""
    a, b = in_chunk_pair(truth, ledger)  # merging them makes a new L2 node
    op, new_roots = editor.merge(a, b)
    l2_ids = np.asarray(client.chunkedgraph.get_leaves(new_roots[0], stop_layer=2), dtype=np.uint64)
    sets = l2_sets(ledger, truth, ledger.component_of(a))
    by_sv = {s: k for k, members in enumerate(sets) for s in members}
    new_l2 = int(client.chunkedgraph.get_roots([a], stop_layer=2)[0])
    assert new_l2 in l2_ids.tolist()
    # asked for at once: the worker's copy if it is done, else computed on the spot for this call
    check_l2_features(client, volume, truth, [new_l2], [sets[by_sv[a]]])
    # split the two cells apart again: every L2 node of both sides against the voxels
    _, split_roots, removed = editor.split([a], [b], new_roots[0])
    assert len(split_roots) == 2 and removed
    for sv in (a, b):
        root = int(client.chunkedgraph.get_root_id(sv))
        assert root in split_roots
        l2_ids = [int(x) for x in client.chunkedgraph.get_leaves(root, stop_layer=2)]
        sets = l2_sets(ledger, truth, ledger.component_of(sv))
        by_sv = {s: k for k, members in enumerate(sets) for s in members}
        ordered = [sets[by_sv[int(client.chunkedgraph.get_leaves(x)[0])]] for x in l2_ids]
        assert len(l2_ids) == len(sets)
        check_l2_features(client, volume, truth, l2_ids, ordered)


def test_skeleton_dict_and_swc(client, truth, ledger) -> None:
    sv = a_cell(truth, ledger)
    root = int(client.chunkedgraph.get_root_id(sv))
    sk = client.skeleton.get_skeleton(root, output_format="dict")
    l2 = set(int(x) for x in client.chunkedgraph.get_leaves(root, stop_layer=2))
    assert set(int(x) for x in sk["lvl2_ids"]) == l2
    assert len(sk["mesh_to_skel_map"]) == len(l2)
    v = np.asarray(sk["vertices"])
    e = np.asarray(sk["edges"])
    tree = nx.Graph()
    tree.add_nodes_from(range(len(v)))
    tree.add_edges_from(e.tolist())
    assert nx.is_tree(tree), "the skeleton is one tree"
    assert set(np.asarray(sk["mesh_to_skel_map"]).tolist()) <= set(range(len(v)))
    swc = client.skeleton.get_skeleton(root, output_format="swc")
    assert len(swc) == len(v)
    assert (swc["parent"] == -1).sum() == 1


def test_skeleton_changes_right_after_an_edit(client, truth, ledger, editor) -> None:
    sv = a_cell(truth, ledger)
    root = int(client.chunkedgraph.get_root_id(sv))
    before = client.skeleton.get_skeleton(root, output_format="dict")
    comp = ledger.component_of(sv)
    a, b = next((x, y) if x in comp else (y, x) for x, y in truth.edges.tolist() if (x in comp) != (y in comp))
    _, new_roots = editor.merge(a, b)
    after = client.skeleton.get_skeleton(new_roots[0], output_format="dict")
    merged = l2_sets(ledger, truth, ledger.component_of(a))
    assert len(after["lvl2_ids"]) == len(merged) == len(after["mesh_to_skel_map"])
    assert set(after["lvl2_ids"]) != set(before["lvl2_ids"])
    assert len(after["lvl2_ids"]) >= len(before["lvl2_ids"])  # the other cell joined (minus in-chunk fusions)


def test_pcg_skel_runs_against_the_server(client, truth, ledger, volume) -> None:
    pcg_skel = pytest.importorskip("pcg_skel")
    sv = a_cell(truth, ledger)
    root = int(client.chunkedgraph.get_root_id(sv))
    sk = pcg_skel.pcg_skeleton(root, client)
    ours = client.skeleton.get_skeleton(root, output_format="dict")
    assert len(sk.vertices) == len(ours["vertices"])
    # pcg_meshwork with synapses from the datastack's synapse table
    res = [float(x) for x in truth.resolution]
    if "synapses" not in client.annotation.get_tables():
        client.annotation.create_table("synapses", "synapse", "synapses for pcg_skel", voxel_resolution=res)
    mine = voxels_of(volume, ledger.component_of(sv))[:6]
    others = np.argwhere((volume > 0) & ~np.isin(volume, np.array(sorted(ledger.component_of(sv)), dtype=np.uint64)))[:6]
    recs = [
        {"pre_pt": {"position": p.tolist()}, "post_pt": {"position": q.tolist()}, "ctr_pt": {"position": p.tolist()}, "size": 1}
        for p, q in zip(mine, others)
    ]
    client.annotation.post_annotation("synapses", recs)
    nrn = pcg_skel.pcg_meshwork(root, client=client, synapses="all", timestamp=dt.datetime.now(dt.timezone.utc))
    assert len(nrn.anno.pre_syn.df) == len(recs)
    assert len(nrn.skeleton.vertices) == len(ours["vertices"])


def test_bad_morphology_requests(api, truth, client) -> None:
    sv = int(truth.sv_ids[0])
    base = api.server.cave
    S = f"{base}/skeletoncache/api/v1/{truth.name}"
    r = api.get(f"{S}/async/get_skeleton/4/{sv}/flatdict")
    assert r.status_code == 400 and "not a root" in r.json()["message"]
    r = api.get(f"{S}/async/get_skeleton/4/12345x/flatdict")
    assert r.status_code == 400
    root = int(client.chunkedgraph.get_root_id(sv))
    r = api.get(f"{S}/async/get_skeleton/9/{root}/flatdict")
    assert r.status_code == 400 and "version" in r.json()["message"]
    r = api.get(f"{S}/async/get_skeleton/4/{root}/xml")
    assert r.status_code == 400 and "format" in r.json()["message"]
    A = f"{base}/l2cache/api/v1/table/{truth.name}/attributes"
    r = api.post(A, params={"attribute_names": "size_nm3,colour"}, json={"l2_ids": [1]})
    assert r.status_code == 400 and "colour" in r.json()["message"]
    r = api.post(A, json={"l2_ids": list(range(300_000))})
    assert r.status_code == 400 and "limit" in r.json()["message"]
    out = api.post(A, json={"l2_ids": [sv, root]}).json()
    assert out == {str(sv): {}, str(root): {}}  # not L2 IDs: no data, as CAVE answers
    r = requests.post(f"{S}/bulk/get_cached_skeletons/4/flatdict", json={"root_ids": [sv]}, headers=api.s.headers, timeout=30)
    assert r.status_code == 200 and r.json() == {str(sv): "invalid_rid"}
    many = ",".join([str(root)] * 600)  # huge bulk requests: refused with the limit named
    r = api.get(f"{S}/bulk/get_skeletons/4/flatdict/false/{many}")
    assert r.status_code == 400 and "limit" in r.json()["message"]
    r = api.post(f"{base}/api/morphology/{truth.name}/summary", json={"root_ids": [root] * 600})
    assert r.status_code == 400 and "limit" in r.json()["message"]
    assert api.status()["ready"]


def test_summary_of_many_roots(api, truth, ledger, client, volume) -> None:
    """Volume (exact), bounding box and cable length of several roots in one call."""
    comps = sorted(ledger.components(), key=len, reverse=True)[:3]
    roots = [int(client.chunkedgraph.get_root_id(min(c))) for c in comps]
    r = api.post(f"{api.server.cave}/api/morphology/{truth.name}/summary", json={"root_ids": roots})
    assert r.status_code == 200, r.text
    res = np.asarray(truth.resolution, dtype=float)
    for c, s in zip(comps, r.json()):
        vox = voxels_of(volume, c)
        assert s["volume_nm3"] == pytest.approx(len(vox) * float(np.prod(res)))
        assert s["bbox_nm"][0] == pytest.approx((vox.min(axis=0) * res).tolist())
        assert s["bbox_nm"][1] == pytest.approx(((vox.max(axis=0) + 1) * res).tolist())
        assert s["cable_length_nm"] > 0 and s["area_nm2"] > 0
    bad = api.post(f"{api.server.cave}/api/morphology/{truth.name}/summary", json={"root_ids": [int(truth.sv_ids[0])]})
    assert bad.status_code == 400 and "not root" in bad.json()["message"]


def test_root_mesh_for_notebooks(client, truth, ledger, volume) -> None:
    """``kernel_ext.root_mesh``: a closed surface whose enclosed volume is the cell's voxel volume."""
    from cavelab.kernel_ext import root_mesh

    sv = a_cell(truth, ledger)
    root = int(client.chunkedgraph.get_root_id(sv))
    mesh = root_mesh(client, root)
    assert mesh.n_faces > 0 and mesh.vertices.dtype == np.float32
    # closed: every undirected edge is shared by exactly two triangles
    f = mesh.faces.astype(np.int64)
    e = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert np.all(counts == 2)
    # the divergence theorem's volume against the voxel count (marching cubes on voxel centres
    # cuts corners: within 15 % for these thin synthetic neurites)
    v = mesh.vertices.astype(np.float64)[f]
    enclosed = abs(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()) / 6
    res = np.asarray(truth.resolution, dtype=float)
    n_vox = len(voxels_of(volume, ledger.component_of(sv)))
    assert 0.85 < enclosed / (n_vox * res.prod()) < 1.15
    # bad input: a supervoxel ID is not a root
    with pytest.raises(requests.HTTPError, match="400"):
        root_mesh(client, sv)
