"""Skeletons from level-2 graphs (``cavelab.server.morphology.skeleton``), checked independently.

Trees, spanning and the nearest-vertex mapping are checked with networkx; SWC text is parsed back
with a small parser written here. No mocks.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest

from cavelab.server.morphology.skeleton import (
    DEFAULT_COLLAPSE_RADIUS,
    DEFAULT_INVALIDATION_D,
    Skeleton,
    skeletonize_graph,
)

BASE_ID = np.uint64(160_000_000_000_000_000)


# ---------------------------------------------------------------------- graph builders
def _ids(n: int) -> np.ndarray:
    return BASE_ID + np.arange(n, dtype=np.uint64) * np.uint64(7)


def _polyline(start, end, step: float, rng: np.random.Generator | None, jitter: float = 0.0):
    start, end = np.asarray(start, float), np.asarray(end, float)
    n = max(int(round(np.linalg.norm(end - start) / step)), 1)
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    pts = start + t * (end - start)
    if rng is not None and jitter:
        pts[1:] += rng.normal(0.0, jitter, size=pts[1:].shape)
    return pts


class GraphBuilder:
    """Accumulates points and index edges; ``build`` returns (node_ids, coords, id_edges)."""

    def __init__(self) -> None:
        self.pts: list[np.ndarray] = []
        self.edges: list[tuple[int, int]] = []
        self.n = 0

    def add_chain(self, pts: np.ndarray, attach_to: int | None = None) -> np.ndarray:
        idx = np.arange(self.n, self.n + len(pts))
        self.pts.append(np.asarray(pts, float))
        self.n += len(pts)
        self.edges += list(zip(idx[:-1].tolist(), idx[1:].tolist()))
        if attach_to is not None:
            self.edges.append((attach_to, int(idx[0])))
        return idx

    def add_points(self, pts: np.ndarray) -> np.ndarray:
        idx = np.arange(self.n, self.n + len(pts))
        self.pts.append(np.asarray(pts, float))
        self.n += len(pts)
        return idx

    def add_edge(self, a: int, b: int) -> None:
        self.edges.append((int(a), int(b)))

    def build(self):
        coords = np.vstack(self.pts)
        ids = _ids(self.n)
        e = np.asarray(self.edges, dtype=np.int64).reshape(-1, 2)
        return ids, coords, ids[e]


def y_neuron(seed: int = 0):
    """A Y: 20 µm trunk from the origin, then two 15 µm branches, ~500 nm spacing with jitter,
    plus short cross edges (i -> i+2) along each chain and across the fork."""
    rng = np.random.default_rng(seed)
    b = GraphBuilder()
    trunk = b.add_chain(_polyline([0, 0, 0], [20000, 0, 0], 500, rng, 60))
    fork = int(trunk[-1])
    tip_a = np.array([20000 + 15000 / np.sqrt(2), 15000 / np.sqrt(2), 0])
    tip_b = np.array([20000 + 15000 / np.sqrt(2), -15000 / np.sqrt(2), 0])
    br_a = b.add_chain(_polyline([20000, 0, 0], tip_a, 500, rng, 60)[1:], attach_to=fork)
    br_b = b.add_chain(_polyline([20000, 0, 0], tip_b, 500, rng, 60)[1:], attach_to=fork)
    for chain in (trunk, br_a, br_b):
        for i in range(0, len(chain) - 2, 3):
            b.add_edge(chain[i], chain[i + 2])
    b.add_edge(br_a[0], br_b[0])  # a short cross edge at the fork
    ids, coords, edges = b.build()
    return ids, coords, edges, {"tips": (int(br_a[-1]), int(br_b[-1])), "start": int(trunk[0])}


# ---------------------------------------------------------------------- independent checks
def assert_valid_tree(sk: Skeleton) -> None:
    v = len(sk.vertices)
    assert sk.vertices.shape == (v, 3) and sk.vertices.dtype == np.float64
    assert sk.edges.shape == (max(v - 1, 0), 2) and sk.edges.dtype == np.int64
    assert sk.radius.shape == (v,)
    assert 0 <= sk.root < v
    g = nx.Graph()
    g.add_nodes_from(range(v))
    g.add_edges_from(sk.edges.tolist())
    assert nx.is_tree(g)
    # orientation child -> parent: a directed tree pointing at the root
    children = sk.edges[:, 0]
    assert len(np.unique(children)) == len(children)
    assert sk.root not in set(children.tolist())
    dg = nx.DiGraph()
    dg.add_nodes_from(range(v))
    dg.add_edges_from(sk.edges[:, ::-1].tolist())  # parent -> child
    assert nx.is_arborescence(dg)
    par = sk.parents()
    assert par[sk.root] == -1 and (np.delete(par, sk.root) >= 0).all()


def assert_spanning_and_nearest(sk: Skeleton, ids, coords, edges) -> None:
    """Every node maps to a vertex, and it is the vertex nearest along the (bridged) graph."""
    n = len(ids)
    m2s = sk.mesh_to_skel_map
    assert m2s.shape == (n,) and m2s.dtype == np.int64
    assert ((m2s >= 0) & (m2s < len(sk.vertices))).all()
    assert np.array_equal(sk.node_ids, ids)
    mesh_index = np.asarray(sk.meta["mesh_index"])
    assert np.array_equal(coords[mesh_index], sk.vertices)  # vertices are a subset of the nodes
    assert np.array_equal(m2s[mesh_index], np.arange(len(sk.vertices)))  # a vertex maps to itself
    if sk.meta["n_components"] != 1 or sk.meta["collapse_soma"]:
        return  # bridges/soma change the graph: checked separately
    pos = {int(x): i for i, x in enumerate(ids.tolist())}
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for a, b in edges.tolist():
        i, j = pos[int(a)], pos[int(b)]
        if i != j:
            g.add_edge(i, j, weight=float(np.linalg.norm(coords[i] - coords[j])))
    d_min = nx.multi_source_dijkstra_path_length(g, set(mesh_index.tolist()))
    for node in range(n):
        target = int(mesh_index[m2s[node]])
        d_mapped = nx.dijkstra_path_length(g, node, target)
        assert d_mapped == pytest.approx(d_min[node], rel=1e-9, abs=1e-6)
        assert d_mapped <= sk.meta["invalidation_d"] + 1e-6


# ---------------------------------------------------------------------- the Y neuron
def test_y_neuron_with_soma_point():
    ids, coords, edges, info = y_neuron()
    soma = np.array([-300.0, 200.0, 0.0])
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=soma)
    assert_valid_tree(sk)
    assert_spanning_and_nearest(sk, ids, coords, edges)
    # root is the input node nearest to the soma point
    assert np.array_equal(
        sk.vertices[sk.root], coords[np.argmin(np.linalg.norm(coords - soma, axis=1))]
    )
    # two branches + trunk: three degree-1 vertices (root and two tips), one branch point
    deg = np.bincount(sk.edges.ravel(), minlength=len(sk.vertices))
    assert (deg == 1).sum() == 3
    assert (deg >= 3).sum() == 1
    assert len(sk.end_points()) == 2 and len(sk.branch_points()) == 1
    tip_vertices = {tuple(sk.vertices[t]) for t in sk.end_points()}
    assert tip_vertices == {tuple(coords[t]) for t in info["tips"]}
    # each node lies close to its vertex (nodes skipped by cross edges are ~1 spacing away)
    d = np.linalg.norm(coords - sk.vertices[sk.mesh_to_skel_map], axis=1)
    assert d.max() < 1000.0
    # cable ~ 20 + 15 + 15 µm (jitter lengthens it a little)
    assert 49_000 < sk.cable_length() < 56_000
    assert sk.meta["invalidation_d"] == DEFAULT_INVALIDATION_D == 7500.0
    assert DEFAULT_COLLAPSE_RADIUS == 7500.0


def test_y_neuron_without_soma_point_roots_at_a_tip():
    ids, coords, edges, info = y_neuron(seed=3)
    sk = skeletonize_graph(ids, coords, edges)
    assert_valid_tree(sk)
    assert_spanning_and_nearest(sk, ids, coords, edges)
    root_xyz = tuple(sk.vertices[sk.root])
    extremes = {tuple(coords[i]) for i in (*info["tips"], info["start"])}
    assert root_xyz in extremes  # far-point heuristic roots at an extremity
    deg = np.bincount(sk.edges.ravel(), minlength=len(sk.vertices))
    assert (deg == 1).sum() == 3
    assert sk.compartment().tolist() == [3] * len(sk.vertices)  # no soma without a root point


def test_small_invalidation_keeps_more_vertices():
    ids, coords, edges, _ = y_neuron(seed=1)
    coarse = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3))
    fine = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3), invalidation_d=400.0)
    assert_valid_tree(fine)
    assert_spanning_and_nearest(fine, ids, coords, edges)
    assert len(fine.vertices) >= len(coarse.vertices)
    assert fine.meta["invalidation_d"] == 400.0


# ---------------------------------------------------------------------- lines, rings, tiny graphs
def test_straight_line_cable_length():
    b = GraphBuilder()
    b.add_chain(_polyline([0, 0, 0], [0, 0, 10000], 100, None))
    ids, coords, edges = b.build()
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.array([0.0, 0.0, -50.0]))
    assert_valid_tree(sk)
    assert len(sk.vertices) == len(ids)
    assert sk.cable_length() == pytest.approx(10000.0, rel=1e-9)
    assert sk.vertices[sk.root].tolist() == [0.0, 0.0, 0.0]
    assert sk.distance_to_root().max() == pytest.approx(10000.0)


def test_jittered_line_cable_length_close_to_length():
    rng = np.random.default_rng(5)
    b = GraphBuilder()
    b.add_chain(_polyline([0, 0, 0], [30000, 0, 0], 500, rng, 20))
    ids, coords, edges = b.build()
    sk = skeletonize_graph(ids, coords, edges)
    assert_valid_tree(sk)
    assert sk.cable_length() == pytest.approx(30000.0, rel=0.01)


def test_ring_becomes_a_tree():
    ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    coords = np.column_stack([5000 * np.cos(ang), 5000 * np.sin(ang), np.zeros_like(ang)])
    ids = _ids(len(ang))
    idx = np.arange(len(ang))
    edges = ids[np.column_stack([idx, np.roll(idx, -1)])]
    for inv in (DEFAULT_INVALIDATION_D, 600.0):
        sk = skeletonize_graph(ids, coords, edges, invalidation_d=inv)
        assert_valid_tree(sk)
        assert_spanning_and_nearest(sk, ids, coords, edges)
        assert sk.cable_length() < 2 * np.pi * 5000


def test_disconnected_graph_is_one_spanning_tree():
    b = GraphBuilder()
    a = b.add_chain(_polyline([0, 0, 0], [10000, 0, 0], 500, None))
    c = b.add_chain(_polyline([12000, 0, 0], [20000, 0, 0], 500, None))
    lone = b.add_chain(np.array([[5000.0, 9000.0, 0.0]]))
    ids, coords, edges = b.build()
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3))
    assert_valid_tree(sk)
    assert_spanning_and_nearest(sk, ids, coords, edges)
    assert sk.meta["n_components"] == 3 and sk.meta["n_bridge_edges"] == 2
    vid = {tuple(v): i for i, v in enumerate(sk.vertices.tolist())}
    # the gap is bridged between the closest points of the two pieces
    pair = {vid[tuple(coords[a[-1]])], vid[tuple(coords[c[0]])]}
    assert any(set(e) == pair for e in sk.edges.tolist())
    # the isolated node (9 µm from everything, beyond invalidation_d) becomes a tip
    assert vid[tuple(coords[lone[0]])] in set(sk.end_points().tolist())
    assert sk.mesh_to_skel_map[lone[0]] == vid[tuple(coords[lone[0]])]


def test_many_isolated_nodes():
    rng = np.random.default_rng(11)
    coords = rng.uniform(0, 50000, size=(60, 3))
    ids = _ids(60)
    sk = skeletonize_graph(ids, coords, np.zeros((0, 2), dtype=np.uint64))
    assert_valid_tree(sk)
    assert_spanning_and_nearest(sk, ids, coords, np.zeros((0, 2), dtype=np.uint64))
    assert sk.meta["n_components"] == 60 and sk.meta["n_bridge_edges"] == 59


def test_single_node():
    ids = _ids(1)
    coords = np.array([[100.0, 200.0, 300.0]])
    sk = skeletonize_graph(
        ids, coords, np.zeros((0, 2), dtype=np.uint64), radii_nm=np.array([42.0])
    )
    assert_valid_tree(sk)
    assert len(sk.vertices) == 1 and sk.root == 0
    assert sk.mesh_to_skel_map.tolist() == [0]
    assert sk.cable_length() == 0.0
    assert sk.radius.tolist() == [42.0]
    assert parse_swc(sk.to_swc()) == [(1, 3, 0.1, 0.2, 0.3, 0.042, -1)]
    d = sk.to_dict()
    assert d["edges"] == [] and d["root"] == 0 and d["lvl2_ids"] == [int(ids[0])]
    # a self-loop edge (pcg_skel's singlet form [[l2, l2]]) is the same thing
    sk2 = skeletonize_graph(ids, coords, np.array([[ids[0], ids[0]]]))
    assert len(sk2.vertices) == 1 and sk2.edges.shape == (0, 2)


def test_two_nodes():
    ids = _ids(2)
    coords = np.array([[0.0, 0.0, 0.0], [0.0, 800.0, 0.0]])
    edges = ids[None, :]
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.array([0.0, 790.0, 0.0]))
    assert_valid_tree(sk)
    assert len(sk.vertices) == 2 and sk.vertices[sk.root].tolist() == [0.0, 800.0, 0.0]
    assert sk.cable_length() == pytest.approx(800.0)
    # disconnected pair: bridged
    sk2 = skeletonize_graph(ids, coords, np.zeros((0, 2), dtype=np.uint64))
    assert_valid_tree(sk2)
    assert len(sk2.vertices) == 2 and sk2.meta["n_bridge_edges"] == 1


def test_input_order_and_duplicates_do_not_matter():
    ids, coords, edges, _ = y_neuron(seed=2)
    perm = np.random.default_rng(0).permutation(len(ids))
    dup = np.vstack([edges, edges[:10, ::-1]])  # duplicates, both orientations
    sk1 = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3))
    sk2 = skeletonize_graph(ids[perm], coords[perm], dup, root_point_nm=np.zeros(3))
    assert_valid_tree(sk2)
    assert sk1.cable_length() == pytest.approx(sk2.cable_length())
    assert len(sk1.vertices) == len(sk2.vertices)
    # the same node maps to the same location either way
    m1 = sk1.vertices[sk1.mesh_to_skel_map]
    m2 = np.empty_like(m1)
    m2[perm] = sk2.vertices[sk2.mesh_to_skel_map]
    assert np.allclose(m1, m2)


def test_bad_inputs():
    ids = _ids(3)
    coords = np.zeros((3, 3))
    with pytest.raises(ValueError, match="not in node_ids"):
        skeletonize_graph(ids, coords, np.array([[ids[0], np.uint64(5)]]))
    with pytest.raises(ValueError, match="unique"):
        skeletonize_graph(np.array([1, 1, 2], dtype=np.uint64), coords, np.zeros((0, 2)))
    with pytest.raises(ValueError, match="rows"):
        skeletonize_graph(ids, np.zeros((2, 3)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="empty"):
        skeletonize_graph(np.zeros(0, dtype=np.uint64), np.zeros((0, 3)), np.zeros((0, 2)))


def test_nan_points_are_filled():
    b = GraphBuilder()
    b.add_chain(_polyline([0, 0, 0], [5000, 0, 0], 500, None))
    ids, coords, edges = b.build()
    coords[4] = np.nan
    sk = skeletonize_graph(ids, coords, edges)
    assert sk.meta["n_nan_filled"] == 1
    assert np.isfinite(sk.vertices).all()
    assert_valid_tree(sk)


def test_zero_length_edges_collapse_into_parent():
    b = GraphBuilder()
    pts = _polyline([0, 0, 0], [4000, 0, 0], 500, None)
    pts = np.vstack([pts[:5], pts[4:5], pts[5:]])  # node 5 sits exactly on node 4
    b.add_chain(pts)
    ids, coords, edges = b.build()
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3))
    assert_valid_tree(sk)
    assert len(sk.vertices) == len(ids) - 1
    assert sk.mesh_to_skel_map[4] == sk.mesh_to_skel_map[5]
    seg = np.linalg.norm(sk.vertices[sk.edges[:, 0]] - sk.vertices[sk.edges[:, 1]], axis=1)
    assert (seg > 0).all()


# ---------------------------------------------------------------------- soma collapse
def soma_neuron():
    """A blob of nodes (1 µm grid inside a 3 µm sphere) with two dendrites leaving it."""
    b = GraphBuilder()
    g = np.arange(-3000, 3001, 1000)
    grid = np.array([[x, y, z] for x in g for y in g for z in g], float)
    grid = grid[np.linalg.norm(grid, axis=1) <= 3000]
    blob = b.add_points(grid)
    key = {tuple(p): int(i) for p, i in zip(grid.tolist(), blob.tolist())}
    for p, i in key.items():
        for axis in range(3):
            q = list(p)
            q[axis] += 1000
            if tuple(q) in key:
                b.add_edge(i, key[tuple(q)])
    d1 = b.add_chain(
        _polyline([3500, 0, 0], [30000, 0, 0], 500, None), attach_to=key[(3000.0, 0.0, 0.0)]
    )
    d2 = b.add_chain(
        _polyline([-3500, 0, 0], [-25000, 0, 0], 500, None), attach_to=key[(-3000.0, 0.0, 0.0)]
    )
    ids, coords, edges = b.build()
    return ids, coords, edges, (d1, d2)


def test_collapse_soma_maps_soma_nodes_to_root():
    ids, coords, edges, (d1, d2) = soma_neuron()
    soma = np.array([100.0, -100.0, 50.0])
    radius = 4200.0
    sk = skeletonize_graph(
        ids, coords, edges, root_point_nm=soma, collapse_soma=True, collapse_radius=radius
    )
    assert_valid_tree(sk)
    assert_spanning_and_nearest(sk, ids, coords, edges)
    assert np.array_equal(
        sk.vertices[sk.root], coords[np.argmin(np.linalg.norm(coords - soma, axis=1))]
    )
    inside = np.linalg.norm(coords - soma, axis=1) < radius
    assert inside.sum() > 100
    assert (sk.mesh_to_skel_map[inside] == sk.root).all()
    assert sk.meta["n_soma_nodes"] == inside.sum()
    # no other vertex inside the soma; both dendrites leave from the root
    vin = np.linalg.norm(sk.vertices - soma, axis=1) < radius
    assert np.flatnonzero(vin).tolist() == [sk.root]
    assert (sk.parents() == sk.root).sum() == 2
    assert len(sk.end_points()) == 2
    assert sk.compartment()[sk.root] == 1
    # without collapse the blob is covered by ordinary vertices
    plain = skeletonize_graph(ids, coords, edges, root_point_nm=soma)
    assert_valid_tree(plain)
    assert (plain.mesh_to_skel_map[inside] != plain.root).any()


# ---------------------------------------------------------------------- radius
def test_radius_is_mean_over_mapped_nodes():
    ids, coords, edges, _ = y_neuron(seed=4)
    rng = np.random.default_rng(2)
    radii = rng.uniform(100, 400, len(ids))
    radii[3] = np.nan
    sk = skeletonize_graph(ids, coords, edges, radii, root_point_nm=np.zeros(3))
    for v in range(len(sk.vertices)):
        vals = radii[sk.mesh_to_skel_map == v]
        vals = vals[np.isfinite(vals)]
        if len(vals):
            assert sk.radius[v] == pytest.approx(vals.mean())
    assert np.isfinite(sk.radius).all()
    no_r = skeletonize_graph(ids, coords, edges)
    assert (no_r.radius == 1.0).all()


# ---------------------------------------------------------------------- formats
def parse_swc(text: str) -> list[tuple]:
    """A minimal independent SWC reader: (id, type, x, y, z, r, parent) per non-comment line."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split(" ")
        assert len(f) == 7, line
        rows.append(
            (int(f[0]), int(f[1]), float(f[2]), float(f[3]), float(f[4]), float(f[5]), int(f[6]))
        )
    return rows


@pytest.mark.parametrize("id_base", [1, 0])
def test_swc_round_trip(id_base):
    ids, coords, edges, _ = y_neuron(seed=6)
    radii = np.random.default_rng(1).uniform(50, 500, len(ids))
    sk = skeletonize_graph(ids, coords, edges, radii, root_point_nm=np.zeros(3))
    text = sk.to_swc(id_base=id_base)
    rows = parse_swc(text)
    assert len(rows) == len(sk.vertices)
    swc_ids = [r[0] for r in rows]
    assert sorted(swc_ids) == list(range(id_base, id_base + len(rows)))
    assert [r[6] for r in rows].count(-1) == 1
    seen = set()
    for r in rows:  # parents come before children
        assert r[6] == -1 or r[6] in seen
        seen.add(r[0])
    # µm in the file; match rows back to vertices by position
    xyz = np.array([r[2:5] for r in rows]) * 1000.0
    order = [int(np.argmin(np.linalg.norm(sk.vertices - p, axis=1))) for p in xyz]
    assert sorted(order) == list(range(len(sk.vertices)))
    assert np.abs(sk.vertices[order] - xyz).max() <= 0.5 + 1e-9
    assert np.allclose(np.array([r[5] for r in rows]) * 1000.0, sk.radius[order], atol=0.5 + 1e-9)
    id_to_v = {r[0]: v for r, v in zip(rows, order)}
    parents = {id_to_v[r[0]]: (id_to_v[r[6]] if r[6] != -1 else -1) for r in rows}
    assert [parents[v] for v in range(len(sk.vertices))] == sk.parents().tolist()
    types = {id_to_v[r[0]]: r[1] for r in rows}
    assert types[sk.root] == 1 and {t for v, t in types.items() if v != sk.root} == {3}
    custom = parse_swc(sk.to_swc(np.full(len(sk.vertices), 2)))
    assert {r[1] for r in custom} == {2}
    # the service's line format: %i %i %.3f %.3f %.3f %.3f %i
    first = text.splitlines()[0].split(" ")
    assert all(len(x.split(".")[1]) == 3 for x in first[2:6])


def test_dict_format():
    ids, coords, edges, _ = y_neuron(seed=7)
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3), collapse_soma=True)
    d = sk.to_dict()
    assert set(d) == {
        "meta",
        "edges",
        "mesh_to_skel_map",
        "root",
        "vertices",
        "radius",
        "compartment",
        "lvl2_ids",
    }
    v = len(sk.vertices)
    assert len(d["vertices"]) == v and all(len(x) == 3 for x in d["vertices"])
    assert len(d["edges"]) == v - 1 and all(len(x) == 2 for x in d["edges"])
    assert len(d["radius"]) == v and len(d["compartment"]) == v
    assert len(d["mesh_to_skel_map"]) == len(d["lvl2_ids"]) == len(ids)
    assert d["lvl2_ids"] == [int(x) for x in ids]
    assert isinstance(d["root"], int) and d["compartment"][d["root"]] == 1
    assert max(d["mesh_to_skel_map"]) < v
    meta = d["meta"]
    assert meta["skeleton_version"] == 4
    for key in (
        "root_id",
        "soma_pt_x",
        "soma_pt_y",
        "soma_pt_z",
        "soma_radius",
        "collapse_soma",
        "collapse_function",
        "invalidation_d",
        "smooth_vertices",
        "compute_radius",
        "shape_function",
        "smooth_iterations",
        "smooth_neighborhood",
        "smooth_r",
        "cc_vertex_thresh",
        "remove_zero_length_edges",
        "collapse_params",
        "timestamp",
        "skeleton_type",
        "meta",
    ):
        assert key in meta
    assert meta["meta"] == {"datastack": None, "space": "l2cache"}
    assert meta["collapse_soma"] is True and meta["soma_pt_x"] == 0.0
    back = json.loads(json.dumps(d))  # plain JSON types only
    assert back == d
    assert np.array_equal(np.array(back["edges"]), sk.edges)


def test_meshparty_like_fields():
    ids, coords, edges, _ = y_neuron(seed=8)
    sk = skeletonize_graph(ids, coords, edges, np.full(len(ids), 250.0), root_point_nm=np.zeros(3))
    m = sk.to_meshparty_like()
    assert set(m) >= {
        "vertices",
        "edges",
        "root",
        "radius",
        "mesh_to_skel_map",
        "vertex_properties",
    }
    assert np.array_equal(m["vertices"], sk.vertices) and np.array_equal(m["edges"], sk.edges)
    assert m["root"] == sk.root
    assert np.array_equal(coords[m["mesh_index"]], m["vertices"])
    assert m["vertex_properties"]["radius"].shape == (len(sk.vertices),)
    assert m["vertex_properties"]["compartment"][sk.root] == 1
    assert len(m["mesh_to_skel_map"]) == len(ids)
    assert m["meta"]["invalidation_d"] == DEFAULT_INVALIDATION_D


def test_meshparty_round_trip_if_installed():
    skeleton_mod = pytest.importorskip("meshparty.skeleton")
    ids, coords, edges, _ = y_neuron(seed=9)
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3))
    mp = skeleton_mod.Skeleton(**sk.to_meshparty_like())
    assert mp.n_vertices == len(sk.vertices)
    assert int(mp.root) == sk.root
    assert mp.path_length() == pytest.approx(sk.cable_length())
    assert len(mp.end_points) == len(sk.end_points())
    mp2 = skeleton_mod.Skeleton.from_dict(sk.to_dict())
    assert mp2.n_vertices == len(sk.vertices)


def test_navis_round_trip_if_installed():
    pytest.importorskip("navis")
    ids, coords, edges, _ = y_neuron(seed=10)
    sk = skeletonize_graph(ids, coords, edges, root_point_nm=np.zeros(3))
    n = sk.to_navis()
    assert n.n_nodes == len(sk.vertices)
    assert float(n.cable_length) == pytest.approx(sk.cable_length(), rel=1e-6)


def test_to_navis_without_navis_raises_clearly():
    try:
        import navis  # noqa: F401
    except ImportError:
        sk = skeletonize_graph(_ids(1), np.zeros((1, 3)), np.zeros((0, 2), dtype=np.uint64))
        with pytest.raises(ImportError, match="navis"):
            sk.to_navis()
    else:  # pragma: no cover
        pytest.skip("navis is installed")


# ---------------------------------------------------------------------- random graphs
@pytest.mark.parametrize("seed", range(6))
def test_random_geometric_graphs(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(20, 300))
    coords = rng.uniform(0, 40000, size=(n, 3))
    # edges to near neighbours (may leave several components)
    d = np.linalg.norm(coords[:, None] - coords[None], axis=2)
    i, j = np.nonzero(np.triu(d < 7000, k=1))
    ids = _ids(n)
    edges = ids[np.column_stack([i, j])]
    soma = coords[0] + 100 if seed % 2 else None
    sk = skeletonize_graph(
        ids,
        coords,
        edges,
        root_point_nm=soma,
        invalidation_d=float(rng.uniform(1000, 12000)),
        collapse_soma=bool(seed % 3 == 1),
    )
    assert_valid_tree(sk)
    assert_spanning_and_nearest(sk, ids, coords, edges)
    if soma is not None:
        assert np.array_equal(sk.vertices[sk.root], coords[0])
