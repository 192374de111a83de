"""Tests for the split algorithm (``cavelab.server.engine.mincut``).

The independent truth is networkx: its minimum cut value for the cut weight, and
its connected components for the partition after removing the cut edges.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cavelab.server.engine.mincut import FINITE_BUDGET, CutResult, min_cut, scale_capacities
from cavelab.server.errors import InputError, PreconditionError

INF = np.inf


# --------------------------------------------------------------------------- helpers


def arr(edges: list[tuple[int, int, float]]) -> tuple[np.ndarray, np.ndarray]:
    e = np.array([(a, b) for a, b, _ in edges], dtype=np.int64).reshape(-1, 2)
    w = np.array([w for _, _, w in edges], dtype=np.float64)
    return e, w


def nx_simple(n: int, edges: np.ndarray, aff: np.ndarray, big: float = 1e9) -> nx.Graph:
    """networkx graph with parallel capacities summed and infinite edges as ``big``."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    for (a, b), w in zip(edges.tolist(), aff.tolist(), strict=True):
        if a == b:
            continue
        w = big if np.isinf(w) else w
        if g.has_edge(a, b):
            g[a][b]["capacity"] += w
        else:
            g.add_edge(a, b, capacity=w)
    return g


def tolerance(edges: np.ndarray, aff: np.ndarray) -> float:
    """The documented scaling precision: ``2 m sum(a) / (2**29 - m)``."""
    fin = aff[np.isfinite(aff)]
    m = max(len(edges), 1)
    return 2 * m * float(fin.sum()) / (FINITE_BUDGET - m) + 1e-12


def check_partition(
    n: int, edges: np.ndarray, aff: np.ndarray, sources, sinks, res: CutResult
) -> None:
    """The cut and the components agree with networkx on the graph minus the cut edges."""
    cut = res.cut_edge_index
    assert cut.dtype == np.int64
    assert np.all(np.diff(cut) > 0), "cut indices sorted and unique"
    assert not np.isinf(aff[cut]).any(), "an infinite edge was cut"
    g = nx.MultiGraph()
    g.add_nodes_from(range(n))
    keep = np.ones(len(edges), dtype=bool)
    keep[cut] = False
    g.add_edges_from(edges[keep].tolist())
    truth = {frozenset(c) for c in nx.connected_components(g)}
    got = [frozenset(c.tolist()) for c in res.components]
    assert len(got) == len(truth) and set(got) == truth, "each component is a connected component"
    for c in res.components:
        assert np.all(np.diff(c) > 0)
    # every cut edge really crosses between components (removing exactly them disconnects)
    label = {v: i for i, c in enumerate(res.components) for v in c.tolist()}
    for a, b in edges[cut].tolist():
        assert label[a] != label[b]
    assert int(np.asarray(sources)[0]) in got[0]
    if not res.illegal_split:
        assert set(np.asarray(sources).tolist()) <= got[0]
        assert set(np.asarray(sinks).tolist()) <= got[1]
        for s in np.asarray(sources).tolist():
            for t in np.asarray(sinks).tolist():
                assert not nx.has_path(g, s, t)
        sizes = [len(c) for c in got[2:]]
        assert sizes == sorted(sizes, reverse=True)


def two_clusters(rng: np.random.Generator, size: int = 20, n_bridges: int = 3):
    """Two dense clusters (0..size-1 and size..2*size-1) joined by weak bridge edges."""
    edges: list[tuple[int, int, float]] = []
    for base in (0, size):
        for i in range(size):
            edges.append((base + i, base + (i + 1) % size, float(rng.uniform(0.5, 1.0))))
            for j in range(i + 2, size):
                if rng.random() < 0.35:
                    edges.append((base + i, base + j, float(rng.uniform(0.5, 1.0))))
    bridges = []
    for _ in range(n_bridges):
        bridges.append(len(edges))
        edges.append((int(rng.integers(size)), int(size + rng.integers(size)), 0.02))
    e, w = arr(edges)
    perm = rng.permutation(len(e))  # the bridges anywhere in the edge list
    inv = np.argsort(perm)
    return e[perm], w[perm], np.sort(inv[bridges])


# --------------------------------------------------------------------------- basics


def test_chain_is_cut_at_weak_link():
    e, w = arr([(0, 1, 0.9), (1, 2, 0.1), (2, 3, 0.9)])
    res = min_cut(4, e, w, np.array([0]), np.array([3]))
    assert res.cut_edge_index.tolist() == [1]
    assert [c.tolist() for c in res.components] == [[0, 1], [2, 3]]
    assert res.illegal_split is False


def test_components_cover_isolated_vertices_and_order():
    # 6 and 7 have no edges; 4-5 is a separate piece
    e, w = arr([(0, 1, 0.9), (1, 2, 0.1), (2, 3, 0.9), (4, 5, 1.0)])
    res = min_cut(8, e, w, np.array([3]), np.array([0]))
    assert [c.tolist() for c in res.components] == [[2, 3], [0, 1], [4, 5], [6], [7]]


def test_scale_capacities():
    caps = scale_capacities(np.array([1.0, 0.25, 0.0, 1e-300, 0.5]))
    assert caps.dtype == np.int32
    assert caps[2] == 0 and caps[3] == 1
    assert int(caps.astype(np.int64).sum()) <= FINITE_BUDGET
    assert abs(caps[1] / caps[0] - 0.25) < 1e-6 and abs(caps[4] / caps[0] - 0.5) < 1e-6
    # huge affinities do not overflow, many edges stay within the budget
    caps = scale_capacities(np.full(100_000, 1e300))
    assert int(caps.astype(np.int64).sum()) <= FINITE_BUDGET and caps.min() >= 1
    assert scale_capacities(np.zeros(3)).tolist() == [0, 0, 0]
    assert scale_capacities(np.zeros(0)).size == 0


def test_large_capacities_do_not_overflow():
    # A star of heavy spokes and a fan of paths: the flow value approaches the
    # whole budget; int32 residuals must not wrap around.
    rng = np.random.default_rng(3)
    edges = [(0, i, 1e6) for i in range(1, 200)] + [(i, 200, 1e6) for i in range(1, 200)]
    edges += [(0, 201, 1e-30), (201, 200, 1.0)]
    e, w = arr(edges)
    perm = rng.permutation(len(e))
    res = min_cut(
        202,
        e[perm],
        w[perm],
        np.array([0]),
        np.array([200]),
        path_augment=False,
        disallow_isolating_cut=False,
    )
    cut_w = w[perm][res.cut_edge_index].sum()
    assert cut_w == pytest.approx(199e6 + 1e-30, rel=1e-6)
    check_partition(202, e[perm], w[perm], [0], [200], res)


# --------------------------------------------------------------------------- against networkx


@pytest.mark.parametrize("path_augment", [False, True])
def test_cut_value_matches_networkx(path_augment):
    rng = np.random.default_rng(12345)
    checked = 0
    for _ in range(60):
        n = int(rng.integers(4, 30))
        m = int(rng.integers(n, 4 * n))
        e = rng.integers(0, n, size=(m, 2))
        w = rng.uniform(0.0, 1.0, m).round(3)
        if rng.random() < 0.3:
            w[rng.integers(m)] = 0.0
        s, t = (int(x) for x in rng.choice(n, 2, replace=False))
        g = nx_simple(n, e, w)
        if not nx.has_path(g, s, t):
            continue
        res = min_cut(
            n,
            e,
            w,
            np.array([s]),
            np.array([t]),
            path_augment=path_augment,
            disallow_isolating_cut=False,
        )
        value = nx.minimum_cut_value(g, s, t)
        assert w[res.cut_edge_index].sum() == pytest.approx(value, abs=tolerance(e, w))
        check_partition(n, e, w, [s], [t], res)
        checked += 1
    assert checked > 30


def test_unit_affinities_match_networkx_minimum_edge_cut():
    rng = np.random.default_rng(7)
    for _ in range(20):
        g = nx.gnm_random_graph(25, 70, seed=int(rng.integers(1 << 30)))
        s, t = 0, 24
        if not nx.has_path(g, s, t):
            continue
        e = np.array(list(g.edges()), dtype=np.int64)
        res = min_cut(
            25,
            e,
            np.ones(len(e)),
            np.array([s]),
            np.array([t]),
            path_augment=False,
            disallow_isolating_cut=False,
        )
        assert len(res.cut_edge_index) == len(nx.minimum_edge_cut(g, s, t))


def test_direct_mode_multiple_points_match_networkx_super_terminals():
    """Direct mode = min cut between a super-source and a super-sink (networkx)."""
    rng = np.random.default_rng(99)
    checked = 0
    for _ in range(40):
        n = int(rng.integers(8, 30))
        g0 = nx.connected_watts_strogatz_graph(n, 4, 0.3, seed=int(rng.integers(1 << 30)))
        e = np.array(list(g0.edges()), dtype=np.int64)
        w = rng.uniform(0.05, 1.0, len(e))
        pts = rng.choice(n, 4, replace=False)
        src, snk = pts[:2], pts[2:]
        g = nx_simple(n, e, w)
        for x in src:
            g.add_edge("S", int(x), capacity=1e9)
        for x in snk:
            g.add_edge("T", int(x), capacity=1e9)
        value = nx.minimum_cut_value(g, "S", "T")
        try:
            res = min_cut(n, e, w, src, snk, path_augment=False, disallow_isolating_cut=False)
        except PreconditionError as exc:  # a team not connected by real edges after the cut
            assert "Failed to find a cut" in exc.message
            continue
        assert w[res.cut_edge_index].sum() == pytest.approx(value, abs=tolerance(e, w))
        check_partition(n, e, w, src, snk, res)
        checked += 1
    assert checked > 20


# --------------------------------------------------------------------------- robustness


def test_two_clusters_split_cleanly_wherever_the_points_are():
    rng = np.random.default_rng(2024)
    size = 20
    for _ in range(25):
        e, w, bridges = two_clusters(rng, size=size)
        k_src, k_snk = (int(x) for x in rng.integers(1, 4, 2))
        src = rng.choice(size, k_src, replace=False)
        snk = size + rng.choice(size, k_snk, replace=False)
        res = min_cut(2 * size, e, w, src, snk)
        assert res.cut_edge_index.tolist() == bridges.tolist()
        assert [c.tolist() for c in res.components] == [
            list(range(size)),
            list(range(size, 2 * size)),
        ]
        check_partition(2 * size, e, w, src, snk, res)


def test_path_augmentation_avoids_cutting_off_weakly_attached_points():
    """Two labelled leaves hang off cluster A by edges weaker than the bridge.

    Direct mode links them with an infinite edge and cuts off just the two leaves,
    which then are not even connected to each other (refused); path augmentation
    keeps the path between them, which runs through A, and splits the two clusters
    cleanly.
    """
    rng = np.random.default_rng(5)
    size = 20
    e, w, bridges = two_clusters(rng, size=size)
    leaf1, leaf2 = 2 * size, 2 * size + 1
    extra_e, extra_w = arr([(leaf1, 3, 0.01), (leaf2, 11, 0.01)])
    e, w = np.vstack([e, extra_e]), np.concatenate([w, extra_w])
    n = 2 * size + 2
    src, snk = np.array([leaf1, leaf2]), np.array([size + 1, size + 7])

    with pytest.raises(PreconditionError, match="Failed to find a cut that separated"):
        min_cut(n, e, w, src, snk, path_augment=False)
    direct = min_cut(n, e, w, src, snk, path_augment=False, preview=True)
    assert direct.illegal_split
    assert sorted(w[direct.cut_edge_index].tolist()) == [0.01, 0.01]
    assert direct.components[0].tolist() == [leaf1]

    res = min_cut(n, e, w, src, snk)
    assert res.cut_edge_index.tolist() == bridges.tolist()
    assert res.components[0].tolist() == [*range(size), leaf1, leaf2]
    check_partition(n, e, w, src, snk, res)


# --------------------------------------------------------------------------- infinite and parallel edges


def test_infinite_edges_are_never_cut():
    # 1 and 2 are pieces of one supervoxel (infinite edge 1); with a weak finite
    # edge there instead, the minimum cut would go right through it
    e, w = arr([(0, 1, 1.0), (1, 2, INF), (2, 3, 0.9), (1, 3, 0.2), (0, 2, 0.2)])
    weak = w.copy()
    weak[1] = 0.01
    res = min_cut(4, e, weak, np.array([0]), np.array([3]), disallow_isolating_cut=False)
    assert res.cut_edge_index.tolist() == [1, 3, 4]
    for path_augment in (True, False):
        res = min_cut(
            4, e, w, np.array([0]), np.array([3]), path_augment=path_augment,
            disallow_isolating_cut=False,
        )  # fmt: skip
        assert res.cut_edge_index.tolist() == [2, 3]
        assert [c.tolist() for c in res.components] == [[0, 1, 2], [3]]
        check_partition(4, e, w, [0], [3], res)
        value = nx.minimum_cut_value(nx_simple(4, e, w), 0, 3)
        assert w[res.cut_edge_index].sum() == pytest.approx(value, abs=tolerance(e, w))


def test_fragments_are_contracted_and_all_their_edges_cut():
    # 1 and 2 are pieces of one supervoxel; 3 touches both pieces; the sink is a piece
    e, w = arr([(0, 1, 0.9), (1, 2, INF), (1, 3, 0.2), (2, 3, 0.2), (3, 4, 0.9), (0, 5, 1.0)])
    res = min_cut(6, e, w, np.array([2]), np.array([4]))
    assert res.cut_edge_index.tolist() == [2, 3]
    assert [c.tolist() for c in res.components] == [[0, 1, 2, 5], [3, 4]]
    check_partition(6, e, w, [2], [4], res)


def test_same_supervoxel_through_fragments_is_rejected():
    e, w = arr([(0, 1, INF), (1, 2, 0.5)])
    with pytest.raises(PreconditionError, match=r"same supervoxel\(s\) \[0, 1\]"):
        min_cut(3, e, w, np.array([0]), np.array([1]))


def test_parallel_edges_are_summed_and_all_cut():
    # 0 =(0.3 + 0.3)= 1 -(0.5)- 2: cutting the parallel pair costs 0.6 > 0.5
    e, w = arr([(0, 1, 0.3), (1, 0, 0.3), (1, 2, 0.5)])
    res = min_cut(3, e, w, np.array([0]), np.array([2]), disallow_isolating_cut=False)
    assert res.cut_edge_index.tolist() == [2]
    w2 = np.array([0.3, 0.3, 0.7])
    res = min_cut(3, e, w2, np.array([0]), np.array([2]), disallow_isolating_cut=False)
    assert res.cut_edge_index.tolist() == [0, 1]
    check_partition(3, e, w2, [0], [2], res)


# --------------------------------------------------------------------------- path overlap rules


def test_overlap_dropped_when_both_teams_stay_connected():
    """Sink path t1-t2 and source path s2-s3 share h; both teams stay connected without h.

    h is then free: the cheaper side is the sources' (cut t1-h, h-t2: 1.8 < 2.0),
    although the sinks have the lower geometric-mean path length and would have
    kept h had the overlap been resolved by rerouting.
    """
    s1, s2, s3, h, t1, t2, t3, s4, t4 = range(9)
    e, w = arr([
        (s1, s2, 0.55), (s1, s3, 0.55), (s2, h, 1.0), (h, s3, 1.0),
        (t1, h, 0.9), (h, t2, 0.9), (t1, t3, 0.85), (t2, t3, 0.85),
        (s1, s4, 1.0), (t3, t4, 1.0),
    ])  # fmt: skip
    res = min_cut(9, e, w, np.array([s1, s2, s3]), np.array([t1, t2, t3]))
    assert res.cut_edge_index.tolist() == [4, 5]
    assert [c.tolist() for c in res.components] == [[s1, s2, s3, h, s4], [t1, t2, t3, t4]]


def test_overlap_rerouted_for_the_loser():
    """Both teams' only short paths cross at h; the sources win (shorter) and keep h."""
    s1, h, s2, t1, t2, a, b, t4 = range(8)
    e, w = arr([
        (s1, h, 1.0), (h, s2, 1.0),
        (t1, h, 0.9), (h, t2, 0.9),
        (t1, a, 0.8), (a, b, 0.8), (b, t2, 0.8), (a, t4, 1.0),
    ])  # fmt: skip
    res = min_cut(8, e, w, np.array([s1, s2]), np.array([t1, t2]))
    assert res.cut_edge_index.tolist() == [2, 3]
    assert [c.tolist() for c in res.components] == [[s1, h, s2], [t1, t2, a, b, t4]]


def test_overlap_roles_swapped_when_the_loser_cannot_reroute():
    """The sources win on length, but the sinks have no other route: roles are swapped."""
    s1, h, s2, t1, t2, c, d, x, y = range(9)
    e, w = arr([
        (s1, h, 1.0), (h, s2, 1.0),
        (t1, h, 0.9), (h, t2, 0.9),
        (s1, c, 0.8), (c, d, 0.8), (d, s2, 0.8), (c, x, 1.0), (t1, y, 1.0),
    ])  # fmt: skip
    res = min_cut(9, e, w, np.array([s1, s2]), np.array([t1, t2]))
    assert res.cut_edge_index.tolist() == [0, 1]
    assert [c.tolist() for c in res.components] == [[s1, s2, c, d, x], [h, t1, t2, y]]


def test_irreparable_overlap():
    # a star: every source path and every sink path must use the centre
    e, w = arr([(0, 1, 1.0), (0, 2, 1.0), (0, 3, 1.0), (0, 4, 1.0)])
    with pytest.raises(PreconditionError, match="overlapped irreparably"):
        min_cut(5, e, w, np.array([1, 2]), np.array([3, 4]))
    # preview does not hide precondition errors
    with pytest.raises(PreconditionError, match="overlapped irreparably"):
        min_cut(5, e, w, np.array([1, 2]), np.array([3, 4]), preview=True)


def test_source_path_blocked_by_a_sink_point():
    e, w = arr([(0, 1, 1.0), (1, 2, 1.0)])
    with pytest.raises(PreconditionError, match="overlapped irreparably"):
        min_cut(3, e, w, np.array([0, 2]), np.array([1]))


# --------------------------------------------------------------------------- isolating cuts


def _pair_on_cluster():
    """Sources 20, 21 (strongly joined) hang off cluster 0..9 (bridged to 10..19) by weak edges."""
    rng = np.random.default_rng(11)
    e, w, _ = two_clusters(rng, size=10, n_bridges=1)
    extra_e, extra_w = arr([(20, 21, 1.0), (20, 2, 0.05), (21, 5, 0.05)])
    return np.vstack([e, extra_e]), np.concatenate([w, extra_w])


def test_isolating_cut_is_refused_and_previewed():
    e, w = _pair_on_cluster()
    src, snk = np.array([20, 21]), np.array([4, 8])
    with pytest.raises(
        PreconditionError, match=r"only cut off the labelled source points \[20, 21\]"
    ):
        min_cut(22, e, w, src, snk)
    prev = min_cut(22, e, w, src, snk, preview=True)
    assert prev.illegal_split is True
    assert prev.components[0].tolist() == [20, 21]
    ok = min_cut(22, e, w, src, snk, disallow_isolating_cut=False)
    assert ok.illegal_split is False and ok.components[0].tolist() == [20, 21]
    assert sorted(w[ok.cut_edge_index].tolist()) == [0.05, 0.05]


def test_isolating_cut_allowed_when_it_only_borders_labelled_points():
    # the labelled pair touches the rest only through sink point 4
    rng = np.random.default_rng(11)
    e, w, _ = two_clusters(rng, size=10, n_bridges=1)
    extra_e, extra_w = arr([(20, 21, 1.0), (20, 4, 0.05), (21, 4, 0.05)])
    e, w = np.vstack([e, extra_e]), np.concatenate([w, extra_w])
    res = min_cut(22, e, w, np.array([20, 21]), np.array([4, 8]))
    assert res.components[0].tolist() == [20, 21]
    check_partition(22, e, w, [20, 21], [4, 8], res)


def test_single_point_isolation_direct_vs_path_mode():
    # a leaf supervoxel 5 weakly attached to a dense blob
    e, w = arr(
        [
            (0, 1, 1.0),
            (1, 2, 1.0),
            (2, 3, 1.0),
            (3, 0, 1.0),
            (0, 2, 1.0),
            (4, 1, 1.0),
            (4, 3, 1.0),
            (5, 0, 0.1),
        ]
    )
    with pytest.raises(PreconditionError, match=r"only cut off the labelled source points \[5\]"):
        min_cut(6, e, w, np.array([5]), np.array([2]), path_augment=False)
    # path mode: a one-point team has no path vertices (as in CAVE), the leaf may be split off
    res = min_cut(6, e, w, np.array([5]), np.array([2]))
    assert res.cut_edge_index.tolist() == [7]


# --------------------------------------------------------------------------- preconditions


def test_same_sources_and_sinks():
    e, w = arr([(0, 1, 0.5), (1, 2, 0.5)])
    with pytest.raises(
        PreconditionError, match=r"same supervoxel\(s\) \[1\]; place the sink points"
    ):
        min_cut(3, e, w, np.array([0, 1]), np.array([1, 2]))


@pytest.mark.parametrize(("sources", "sinks", "bad"), [([5], [0], "Source"), ([0], [-1], "Sink")])
def test_points_out_of_range(sources, sinks, bad):
    e, w = arr([(0, 1, 0.5)])
    with pytest.raises(PreconditionError, match=f"{bad} point.* are not vertices of this graph"):
        min_cut(2, e, w, np.array(sources), np.array(sinks))


def test_no_points():
    e, w = arr([(0, 1, 0.5)])
    with pytest.raises(PreconditionError, match="at least one source and one sink"):
        min_cut(2, e, w, np.array([], dtype=np.int64), np.array([1]))


@pytest.mark.parametrize("path_augment", [True, False])
def test_not_connected(path_augment):
    e, w = arr([(0, 1, 0.5), (2, 3, 0.5)])
    with pytest.raises(
        PreconditionError, match="not connected in this cell's graph; nothing to split"
    ):
        min_cut(4, e, w, np.array([0]), np.array([3]), path_augment=path_augment)
    with pytest.raises(PreconditionError, match="nothing to split"):
        min_cut(4, np.zeros((0, 2), dtype=np.int64), np.zeros(0), np.array([0]), np.array([3]))


def test_team_not_connected_path_mode():
    e, w = arr([(0, 1, 0.5), (1, 2, 0.5), (3, 4, 0.5)])
    with pytest.raises(PreconditionError, match=r"source points \[0, 3\] are not all connected"):
        min_cut(5, e, w, np.array([0, 3]), np.array([2]))
    with pytest.raises(PreconditionError, match=r"source points \[3, 0\] are not all connected"):
        min_cut(5, e, w, np.array([3, 0]), np.array([2]))
    with pytest.raises(PreconditionError, match=r"sink points \[2, 4\] are not all connected"):
        min_cut(5, e, w, np.array([0]), np.array([2, 4]))


def test_team_not_connected_direct_mode_fails_postcondition():
    # direct mode links 0 and 3 virtually; after the cut they are in different components
    e, w = arr([(0, 1, 0.5), (1, 2, 0.5), (3, 4, 0.5)])
    with pytest.raises(PreconditionError, match="Failed to find a cut that separated"):
        min_cut(5, e, w, np.array([0, 3]), np.array([2]), path_augment=False)
    res = min_cut(5, e, w, np.array([0, 3]), np.array([2]), path_augment=False, preview=True)
    assert res.illegal_split is True
    assert 0 in res.components[0].tolist()
    check_partition(5, e, w, [0, 3], [2], res)


@pytest.mark.parametrize(
    ("edges", "aff", "match"),
    [
        (np.array([[0, 1, 2]]), np.array([1.0]), "shape"),
        (np.array([[0, 1]]), np.array([1.0, 2.0]), "affinities"),
        (np.array([[0, 1]]), np.array([np.nan]), ">= 0"),
        (np.array([[0, 1]]), np.array([-1.0]), ">= 0"),
        (np.array([[0, 9]]), np.array([1.0]), "outside"),
        (np.array([[0.0, 1.0]]), np.array([1.0]), "integer"),
    ],
)
def test_malformed_input(edges, aff, match):
    with pytest.raises(InputError, match=match):
        min_cut(3, edges, aff, np.array([0]), np.array([1]))


# --------------------------------------------------------------------------- property test


@st.composite
def graphs(draw):
    n = draw(st.integers(3, 12))
    m = draw(st.integers(2, 3 * n))
    pair = st.tuples(st.integers(0, n - 1), st.integers(0, n - 1))
    edges = draw(st.lists(pair, min_size=m, max_size=m))
    weight = st.one_of(
        st.sampled_from([0.0, INF, 1e-38, 1.0]), st.floats(0.001, 1.0, allow_nan=False)
    )
    aff = draw(st.lists(weight, min_size=m, max_size=m))
    pts = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=6, unique=True))
    k = draw(st.integers(1, len(pts) - 1))
    return n, np.array(edges, dtype=np.int64), np.array(aff), np.array(pts[:k]), np.array(pts[k:])


def _confirm_refusal(n, e, w, src, snk, message: str) -> None:
    """A refusal must be right for the reason it gives (an independent networkx check)."""
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(e.tolist())
    inf = nx.Graph()
    inf.add_nodes_from(range(n))
    inf.add_edges_from(e[np.isinf(w)].tolist())
    comp = {v: k for k, c in enumerate(nx.connected_components(inf)) for v in c}
    if "same supervoxel" in message:
        assert {comp[int(x)] for x in src} & {comp[int(x)] for x in snk}
    elif "not connected in this cell" in message:
        assert not any(nx.has_path(g, int(a), int(b)) for a in src for b in snk)
    elif "not all connected to each other" in message:
        assert any(
            not nx.has_path(g, int(a), int(b)) for team in (src, snk) for a in team for b in team
        )
    elif "overlapped" in message:
        # both teams need at least two points for their paths to be able to collide
        assert len(src) > 1 or len(snk) > 1
    else:
        raise AssertionError(f"unexpected refusal: {message}")



@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(graphs(), st.booleans(), st.booleans())
def test_property_cut_separates_and_components_are_connected(g, path_augment, disallow):
    n, e, w, src, snk = g
    try:
        res = min_cut(
            n,
            e,
            w,
            src,
            snk,
            path_augment=path_augment,
            disallow_isolating_cut=disallow,
            preview=True,
        )
    except PreconditionError as exc:
        _confirm_refusal(n, e, w, src, snk, exc.message)  # checked with networkx
        return
    check_partition(n, e, w, src, snk, res)
    if not res.illegal_split:
        # not previewing gives the same answer
        again = min_cut(
            n, e, w, src, snk, path_augment=path_augment, disallow_isolating_cut=disallow
        )
        assert again.cut_edge_index.tolist() == res.cut_edge_index.tolist()
        if len(src) == 1 and len(snk) == 1:  # no paths: the plain minimum cut
            value = nx.minimum_cut_value(nx_simple(n, e, w), int(src[0]), int(snk[0]))
            assert w[res.cut_edge_index].sum() == pytest.approx(value, abs=tolerance(e, w))
