"""Meshes of L2 nodes and roots (zmesh) on a real tiny dataset, checked against its voxels."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.ingest.pipeline import ingest
from cavelab.server.morphology.mesh_service import MeshService, fragment_name, parse_fragment
from cavelab.server.morphology.meshes import Mesh, l2_meshes, open_edges, root_mesh, stale_contexts
from cavelab.server.synth import generate

from graph_factory import in_chunk_merge

pytest.importorskip("zmesh")
pytest.importorskip("trimesh")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("meshes")
    generate(tmp / "src", preset="tiny", seed=7, progress=False)
    ingest(tmp / "src", tmp / "ds", progress=False, workers=1)
    return tmp / "ds"


@pytest.fixture()
def graph(dataset: Path) -> ChunkedGraph:
    cg = ChunkedGraph.open(dataset)
    yield cg
    cg.close()


def _truth(ds: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels (zarr) -> L2 node ID per voxel (0 = background), and the L2 node IDs."""
    import zarr

    vol = np.asarray(zarr.open_array(str(ds / "segmentation.zarr"), mode="r")[:])
    sv_ids = np.load(ds / "graph" / "sv_ids.npy")
    parent = np.load(ds / "graph" / "sv_parent.npy")
    node_ids = np.load(ds / "graph" / "node_ids.npy")
    o = np.argsort(sv_ids)
    flat = vol.ravel()
    l2 = np.zeros(flat.size, dtype=np.uint64)
    fg = flat != 0
    pos = np.searchsorted(sv_ids[o], flat[fg])
    l2[fg] = node_ids[parent[o[pos]]]
    return vol, l2.reshape(vol.shape), np.unique(l2[fg])


def _voxel_boxes(l2vol: np.ndarray, ids: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """L2 ID -> (min voxel, max voxel + 1, voxel count)."""
    coords = np.argwhere(l2vol != 0)
    lab = l2vol[l2vol != 0]
    out = {}
    order = np.argsort(lab, kind="stable")
    lab, coords = lab[order], coords[order]
    starts = np.searchsorted(lab, ids)
    ends = np.searchsorted(lab, ids, side="right")
    for i, s, e in zip(ids.tolist(), starts, ends):
        c = coords[s:e]
        out[int(i)] = (c.min(axis=0), c.max(axis=0) + 1, int(e - s))
    return out


def _covered(graph: ChunkedGraph, vol: np.ndarray, l2vol: np.ndarray, ids: np.ndarray):
    """L2 ID -> (block origin, mask of the node's voxels, mask of the joined overlap voxels).

    The block is the node's chunk plus one voxel on the high faces (what is meshed); overlap
    voxels are those outside the chunk of supervoxels of the node's root (the supervoxels of a
    neighbouring chunk joined to the node: their whole cross-section in the overlap slice).
    """
    meta = graph.meta
    cs = np.asarray(meta.chunk_size)
    svs = np.unique(vol[vol != 0])
    sv_roots = graph.get_roots(svs)
    node_roots = dict(zip(ids.tolist(), graph.get_roots(ids).tolist()))
    out = {}
    for i in ids.tolist():
        lo = meta.layout.chunk_coords([i])[0] * cs
        hi = np.minimum(lo + cs + 1, meta.size)
        blk = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
        own = l2vol[blk] == i
        sv = vol[blk]
        outside = np.ones(sv.shape, dtype=bool)
        outside[: cs[0], : cs[1], : cs[2]] = False
        same = np.isin(sv, svs[sv_roots == node_roots[i]]) & outside
        out[int(i)] = (lo, own, same)
    return out


def _signed_volume(m: Mesh) -> float:
    v = m.vertices.astype(np.float64)
    a, b, c = v[m.faces[:, 0]], v[m.faces[:, 1]], v[m.faces[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _n_open_edges(m: Mesh) -> int:
    """Edges used by one face only."""
    e = np.sort(m.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64), axis=1)
    _, cnt = np.unique(e, axis=0, return_counts=True)
    return int((cnt == 1).sum())


def _parse_precomputed(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Neuroglancer legacy fragment: uint32le n, float32le [n, 3], uint32le triangles to the end."""
    (n,) = struct.unpack("<I", data[:4])
    vals = struct.unpack(f"<{3 * n}f", data[4 : 4 + 12 * n])
    rest = data[4 + 12 * n :]
    assert len(rest) % 12 == 0
    tri = struct.unpack(f"<{len(rest) // 4}I", rest)
    return np.array(vals, dtype=np.float32).reshape(n, 3), np.array(tri, dtype=np.uint32).reshape(-1, 3)


def _root_volume(graph: ChunkedGraph, vol: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Root ID per voxel (0 = background), the supervoxels and their roots."""
    svs = np.unique(vol[vol != 0])
    roots = graph.get_roots(svs)
    rootvol = np.zeros(vol.shape, dtype=np.uint64)
    fg = vol != 0
    rootvol[fg] = roots[np.searchsorted(svs, vol[fg])]
    return rootvol, svs, roots


def _cell_truth(graph: ChunkedGraph, mask: np.ndarray) -> Mesh:
    """Independent truth: zmesh's marching cubes of the whole cell's full-resolution voxel mask
    (closed at the volume's faces), in global nm with voxel ``i`` spanning ``[i, i + 1)``."""
    import zmesh

    res = np.asarray(graph.meta.resolution, dtype=np.float64)
    mesher = zmesh.Mesher(tuple(res))
    mesher.mesh(mask.astype(np.uint32), close=True)
    m = mesher.get(1, normals=False, voxel_centered=True)
    # close=True pads one voxel: shift back; then the volume's offset
    v = np.asarray(m.vertices, dtype=np.float64) - res + np.asarray(graph.meta.voxel_offset) * res
    return Mesh(v, np.asarray(m.faces))


def test_l2_meshes_inside_their_chunk(graph: ChunkedGraph, dataset: Path) -> None:
    """Each L2 mesh lies in its chunk's box grown by one voxel (the cubes it owns); meshes are
    non-empty for these thin cells; dtypes and indices are sane."""
    _, _, ids = _truth(dataset)
    meta = graph.meta
    res = np.asarray(meta.resolution)
    cs = np.asarray(meta.chunk_size)
    for simplify in (False, True):
        meshes = l2_meshes(meta, graph, graph.segmentation, ids, simplify=simplify)
        assert set(meshes) == set(int(i) for i in ids.tolist())
        n_empty = 0
        for i, m in meshes.items():
            if not m.n_faces:
                n_empty += 1
                continue
            assert m.vertices.dtype == np.float32 and m.faces.dtype == np.uint32
            assert int(m.faces.max()) < m.n_vertices
            lo = meta.layout.chunk_coords([i])[0] * cs
            b = m.bounds()
            assert np.all(b[0] >= (lo - 1) * res - 1e-3), (i, b, lo)
            assert np.all(b[1] <= (lo + cs + 1) * res + 1e-3), (i, b, lo)
            assert m.context is not None and m.context.neighbours.size == m.context.in_cell.size
        assert n_empty <= ids.size // 20, n_empty


@pytest.mark.parametrize("simplify", [False, True])
def test_root_mesh_is_the_cells_closed_surface(graph: ChunkedGraph, dataset: Path, simplify: bool) -> None:
    """Stitched root meshes against the marching cubes of each whole cell's voxel mask:
    unsimplified they are the same surface (same faces, same volume) with no open edge;
    simplified they are still closed and keep the volume; the volume is the voxel count's."""
    vol, _, _ = _truth(dataset)
    rootvol, _, roots = _root_volume(graph, vol)
    res = np.asarray(graph.meta.resolution)
    ur, cnt = np.unique(roots, return_counts=True)
    cache: dict[int, Mesh] = {}
    checked = 0
    for r in ur[np.argsort(-cnt)][:8].tolist():
        mask = rootvol == r
        truth = _cell_truth(graph, mask)
        m = root_mesh(graph, graph.segmentation, r, cache, simplify=simplify)
        l2 = graph.get_leaves(r, stop_layer=2)
        assert l2.size > 1
        assert open_edges(truth) == 0
        assert open_edges(m) == 0, (r, open_edges(m))
        t = m.to_trimesh()
        assert t.is_watertight, r
        v, vt = _signed_volume(m), _signed_volume(truth)
        if simplify:
            assert m.n_faces < truth.n_faces
            assert v == pytest.approx(vt, rel=1e-3)
        else:
            assert m.n_faces == truth.n_faces
            assert v == pytest.approx(vt, rel=1e-9)
            # same vertex set as the truth
            a = np.unique(np.rint(m.vertices.astype(np.float64) * 64).astype(np.int64), axis=0)
            b = np.unique(np.rint(truth.vertices.astype(np.float64) * 64).astype(np.int64), axis=0)
            assert np.array_equal(a, b)
        # marching cubes cuts voxel corners: a little less than the voxels, within 3 %
        n_vox = int(mask.sum())
        assert v / (n_vox * float(np.prod(res))) == pytest.approx(0.985, abs=0.015), (r, v, n_vox)
        c = np.argwhere(mask)
        lo, hi = c.min(axis=0), c.max(axis=0) + 1
        b = m.bounds()
        assert np.all(np.abs(b[0] - lo * res) <= res + 1e-3) and np.all(np.abs(b[1] - hi * res) <= res + 1e-3)
        checked += 1
    assert checked == 8


def test_precomputed_round_trip(graph: ChunkedGraph, dataset: Path) -> None:
    _, _, ids = _truth(dataset)
    ms = l2_meshes(graph.meta, graph, graph.segmentation, ids[:5])
    for m in ms.values():
        data = m.to_precomputed()
        assert len(data) == 4 + 12 * m.n_vertices + 12 * m.n_faces
        v, f = _parse_precomputed(data)
        np.testing.assert_array_equal(v, m.vertices)
        np.testing.assert_array_equal(f, m.faces)
        back = Mesh.from_precomputed(data)
        np.testing.assert_array_equal(back.vertices, m.vertices)
    cat = Mesh.concatenate(list(ms.values()))
    assert cat.n_vertices == sum(m.n_vertices for m in ms.values())
    t = cat.to_trimesh()
    assert t.vertices.shape == cat.vertices.shape and t.faces.shape == cat.faces.shape


def test_draco_round_trip(graph: ChunkedGraph, dataset: Path) -> None:
    pytest.importorskip("DracoPy")
    _, _, ids = _truth(dataset)
    res = np.asarray(graph.meta.resolution)
    for m in l2_meshes(graph.meta, graph, graph.segmentation, ids[:5]).values():
        back = Mesh.from_draco(m.to_draco())
        assert back.n_faces == m.n_faces and back.n_vertices == m.n_vertices
        b0, b1 = m.bounds(), back.bounds()
        assert np.all(np.abs(b0 - b1) <= res / 4)  # 16-bit quantization of the box


def _copy(tmp_path: Path, dataset: Path) -> ChunkedGraph:
    import shutil

    shutil.copytree(dataset, tmp_path / "ds")
    return ChunkedGraph.open(tmp_path / "ds")


def test_mesh_after_merge_covers_both(tmp_path: Path, dataset: Path) -> None:
    import zarr

    cg = _copy(tmp_path, dataset)
    try:
        a, b = in_chunk_merge(cg)
        old = [int(x) for x in cg.get_roots([a, b], stop_layer=2)]
        cg.merge([[a], [b]], user="test")
        new_l2 = int(cg.get_roots([a], stop_layer=2)[0])
        assert new_l2 == int(cg.get_roots([b], stop_layer=2)[0]) and new_l2 not in old
        m = l2_meshes(cg.meta, cg, cg.segmentation, np.array([new_l2], dtype=np.uint64))[new_l2]
        vol = np.asarray(zarr.open_array(str(tmp_path / "ds" / "segmentation.zarr"), mode="r")[:])
        res = np.asarray(cg.meta.resolution)
        b0, b1 = m.bounds()
        for sv in (a, b):
            c = np.argwhere(vol == sv)
            lo, hi = c.min(axis=0) * res, (c.max(axis=0) + 1) * res
            assert np.all(b0 <= lo + res) and np.all(b1 >= hi - res), (sv, b0, b1, lo, hi)
        root = int(cg.get_root(a))
        rm = root_mesh(cg, cg.segmentation, root)
        rootvol, _, _ = _root_volume(cg, vol)
        assert rm.n_faces and open_edges(rm) == 0
        truth = _cell_truth(cg, rootvol == root)
        assert _signed_volume(rm) == pytest.approx(_signed_volume(truth), rel=1e-3)
    finally:
        cg.close()


def _cross_chunk_pair(cg: ChunkedGraph) -> tuple[int, int]:
    """Two touching supervoxels of different cells in neighbouring chunks (inactive edge)."""
    st = cg.state
    e = np.flatnonzero(~st.e_active.a)
    a, b = st.e_sv.a[e].T
    d = np.abs(st.sv_chunk[a].astype(np.int64) - st.sv_chunk[b].astype(np.int64)).sum(axis=1)
    roots = cg.get_roots(st.sv_ids)
    for k in np.flatnonzero(d == 1):
        if roots[a[k]] != roots[b[k]]:
            return int(st.sv_ids[a[k]]), int(st.sv_ids[b[k]])
    raise AssertionError("no cross-chunk merge candidate")


def test_service_refreshes_meshes_after_edits(tmp_path: Path, dataset: Path) -> None:
    """MeshService: new L2 meshes are there right after an edit without a request (the worker);
    a merge across a chunk border re-meshes the cached neighbours whose cell changed, so the
    merged cell's stitched mesh is again its closed surface; a split too; bad IDs are 4xx."""
    import zarr

    from cavelab.server.errors import InvalidNodeError

    cg = _copy(tmp_path, dataset)
    svc = MeshService(cg)
    try:
        vol = np.asarray(zarr.open_array(str(tmp_path / "ds" / "segmentation.zarr"), mode="r")[:])
        a, b = in_chunk_merge(cg)
        ra, rb = (int(x) for x in cg.get_roots([a, b]))
        for r in (ra, rb):
            svc.root_mesh(r)  # viewed before the edit: cached
        cg.merge([[a], [b]], user="test")
        assert svc.wait_idle(60)
        new_l2 = int(cg.get_roots([a], stop_layer=2)[0])
        assert svc.cached([new_l2]) == [True]  # meshed by the worker, not by a request
        root = int(cg.get_root(a))
        assert all(svc.cached(cg.get_leaves(root, stop_layer=2).tolist()))
        m = svc.root_mesh(root)
        assert open_edges(m) == 0
        # split it again along the same edge
        cg.split([[a]], [[b]], user="test")
        assert svc.wait_idle(60)
        la, lb = (int(x) for x in cg.get_roots([a, b], stop_layer=2))
        assert la != lb and svc.cached([la, lb]) == [True, True]
        for sv in (a, b):
            r = int(cg.get_root(sv))
            assert open_edges(svc.root_mesh(r)) == 0
        # across a chunk border: no new L2 node; cached neighbours go stale and are re-meshed
        c, d = _cross_chunk_pair(cg)
        rc, rd = (int(x) for x in cg.get_roots([c, d]))
        cached = {}
        for r in (rc, rd):
            svc.root_mesh(r)
            cached.update(svc.l2_meshes(cg.get_leaves(r, stop_layer=2)))
        cg.merge([[c], [d]], user="test")
        assert svc.wait_idle(60)
        merged = int(cg.get_root(c))
        kept = [i for i in cg.get_leaves(merged, stop_layer=2).tolist() if i in cached]
        # L2 nodes of both cells that kept their IDs but now touch the other cell
        assert stale_contexts(cg, {i: cached[i] for i in kept}), "some kept L2 node's context changed"
        assert stale_contexts(cg, svc.l2_meshes(kept)) == []  # re-meshed (worker or request)
        rm = svc.root_mesh(merged)
        rootvol, _, _ = _root_volume(cg, vol)
        truth = _cell_truth(cg, rootvol == merged)
        assert open_edges(rm) == 0
        assert _signed_volume(rm) == pytest.approx(_signed_volume(truth), rel=1e-3)
        # names and errors
        name = fragment_name(new_l2, svc.l2_mesh(la), cg.meta)
        assert parse_fragment(name) == new_l2
        with pytest.raises(InvalidNodeError, match="supervoxel"):
            svc.root_mesh(a)
        with pytest.raises(InvalidNodeError):
            svc.root_mesh(int(merged) + 12345)
        with pytest.raises(InvalidNodeError, match="level-2"):
            svc.l2_mesh(merged)
        assert svc.pending() == 0 and svc.cache_bytes > 0
    finally:
        svc.close()
        cg.close()


def test_service_cache_is_bounded_and_mesh_all(graph: ChunkedGraph) -> None:
    svc = MeshService(graph, max_bytes=200_000, listen=False)
    try:
        seen = []
        stats = svc.mesh_all(progress=lambda done, total: seen.append((done, total)), batch=16)
        assert stats["n_l2"] > 16 and seen[-1] == (stats["n_l2"], stats["n_l2"])
        assert svc.cache_bytes <= 200_000 + max(m.nbytes for m in svc._store.values())
        assert stats["faces"] > 0
    finally:
        svc.close()


def test_service_meshes_exact_after_many_merges(tmp_path: Path, dataset: Path) -> None:
    """Every L2 mesh cached (unsimplified) before a series of merges of touching cells (in one
    chunk and across chunk borders); after each merge the service's stitched mesh of the merged
    cell is exactly the marching cubes of the cell's voxel mask (same faces, same vertices, no
    open edge): every L2 mesh the edit changed was re-meshed, also those of nodes touching the
    other cell only diagonally (a cube's corners are 26-neighbours)."""
    import zarr

    cg = _copy(tmp_path, dataset)
    svc = MeshService(cg, simplify=False)
    try:
        vol = np.asarray(zarr.open_array(str(tmp_path / "ds" / "segmentation.zarr"), mode="r")[:])
        svc.mesh_all()
        st = cg.state
        e = np.flatnonzero(~st.e_active.a)
        a, b = st.e_sv.a[e].T
        roots = cg.get_roots(st.sv_ids)
        rng = np.random.default_rng(3)
        done = 0
        for k in rng.permutation(np.flatnonzero(roots[a] != roots[b])).tolist():
            sa, sb = int(st.sv_ids[a[k]]), int(st.sv_ids[b[k]])
            if cg.get_root(sa) == cg.get_root(sb):  # joined by an earlier merge
                continue
            cg.merge([[sa], [sb]], user="test")
            assert svc.wait_idle(60)
            merged = int(cg.get_root(sa))
            assert all(svc.cached(cg.get_leaves(merged, stop_layer=2).tolist()))
            m = svc.root_mesh(merged)
            rootvol, _, _ = _root_volume(cg, vol)
            truth = _cell_truth(cg, rootvol == merged)
            assert open_edges(m) == 0
            assert m.n_faces == truth.n_faces
            va = np.unique(np.rint(m.vertices.astype(np.float64) * 64).astype(np.int64), axis=0)
            vb = np.unique(np.rint(truth.vertices.astype(np.float64) * 64).astype(np.int64), axis=0)
            assert np.array_equal(va, vb)
            done += 1
            if done == 6:
                break
        assert done == 6
    finally:
        svc.close()
        cg.close()


def test_edits_of_unviewed_cells_mesh_nothing_until_asked(tmp_path: Path, dataset: Path) -> None:
    """The worker keeps only viewed cells meshed: an edit of cells nobody asked meshes for costs
    no meshing; the first request then meshes the new cell, closed."""
    cg = _copy(tmp_path, dataset)
    svc = MeshService(cg)
    try:
        a, b = in_chunk_merge(cg)
        cg.merge([[a], [b]], user="test")
        assert svc.wait_idle(60)
        root = int(cg.get_root(a))
        leaves = cg.get_leaves(root, stop_layer=2).tolist()
        assert not any(svc.cached(leaves))  # nothing meshed without a viewer
        assert open_edges(svc.root_mesh(root)) == 0  # viewed now: meshed on request
        cg.split([[a]], [[b]], user="test")  # an edit of a viewed cell: kept meshed
        assert svc.wait_idle(60)
        for sv in (a, b):
            assert all(svc.cached(cg.get_leaves(int(cg.get_root(sv)), stop_layer=2).tolist()))
    finally:
        svc.close()
        cg.close()
