"""Tiers 1 and 4 through caveclient: root lookups, leaves, children, level-2 graph, subgraph.

Every answer is checked against networkx components of the active supervoxel edges read from the
dataset files (plus the tests' own edits, tracked by the ledger), never against another answer
to the same question.
"""

from __future__ import annotations

import datetime as dt

import networkx as nx
import numpy as np
import pytest
from cave_truth import GraphTruth, Ledger, decode_chunks, layer_of, ms, partition_matches


def _bits(cg) -> int:
    return int(cg.segmentation_info["graph"]["spatial_bit_masks"]["1"])


def _l2_components(truth: GraphTruth, G: nx.Graph, bits: int) -> list[set[int]]:
    """Level-2 truth: components of active edges whose two ends lie in one atomic chunk."""
    chunk = dict(zip((int(s) for s in truth.sv_ids), map(tuple, decode_chunks(truth.sv_ids, bits))))
    H = nx.Graph()
    H.add_nodes_from(G.nodes)
    H.add_edges_from((u, v) for u, v in G.edges if chunk[u] == chunk[v])
    return [set(c) for c in nx.connected_components(H)]


def _chunk_box(truth: GraphTruth, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """bounds (3x2 voxels, min/max) -> inclusive chunk box, like CAVE's bounding-box filter."""
    cs = truth.chunk_size
    off = np.asarray(truth.meta["voxel_offset"])
    lo = (bounds[:, 0] - off) // cs
    hi = (np.maximum(bounds[:, 1] - 1, bounds[:, 0]) - off) // cs
    return lo, hi


def _in_box(truth: GraphTruth, svs, bits: int, box) -> set[int]:
    svs = np.asarray(sorted(svs), dtype=np.uint64)
    c = decode_chunks(svs, bits)
    keep = np.all((c >= box[0]) & (c <= box[1]), axis=1)
    return {int(s) for s in svs[keep]}


def _big_cell(ledger: Ledger) -> set[int]:
    return max(ledger.components(), key=len)


def _root(cg, comp: set[int]) -> int:
    return int(cg.get_root_id(min(comp)))


@pytest.fixture()
def bounds(truth: GraphTruth) -> np.ndarray:
    """A box covering the lower half of the volume in x (caveclient's 3x2 form)."""
    size = np.asarray(truth.meta["size"])
    off = np.asarray(truth.meta["voxel_offset"])
    return np.stack([off, off + np.maximum(size // 2, truth.chunk_size)], axis=1)


def test_get_roots_match_components(cg, truth: GraphTruth, ledger: Ledger):
    roots = cg.get_roots(truth.sv_ids)
    assert roots.dtype == np.uint64 and roots.size == truth.sv_ids.size
    partition_matches(truth.sv_ids, roots, ledger.components())
    assert np.all(layer_of(roots) == truth.meta["n_layers"])


def test_get_roots_at_a_past_timestamp(cg, truth: GraphTruth, ledger: Ledger, t0):
    roots = cg.get_roots(truth.sv_ids, timestamp=t0)
    partition_matches(truth.sv_ids, roots, ledger.components(ms(t0)))


def test_get_roots_empty_input(cg, api):
    assert cg.get_roots([]).size == 0
    r = api.post("roots_binary", data=b"", params={"timestamp": dt.datetime.now().timestamp()})
    assert r.status_code == 200 and r.content == b""


def test_unknown_ids_map_to_zero(cg, truth: GraphTruth):
    bogus = int(truth.sv_ids.max()) + 1
    roots = cg.get_roots([int(truth.sv_ids[0]), bogus])
    assert roots[0] != 0 and roots[1] == 0


def test_stop_layer_2_gives_level2_components(cg, truth: GraphTruth, ledger: Ledger):
    l2 = cg.get_roots(truth.sv_ids, stop_layer=2)
    assert np.all(layer_of(l2) == 2)
    partition_matches(truth.sv_ids, l2, _l2_components(truth, ledger.graph, _bits(cg)))


def test_get_root_id(cg, truth: GraphTruth, ledger: Ledger):
    comp = _big_cell(ledger)
    sv = min(comp)
    root = int(cg.get_root_id(sv))
    assert layer_of(root) == truth.meta["n_layers"]
    others = [s for s in sorted(comp)[:20]]
    assert set(cg.get_roots(others).tolist()) == {root}
    l2 = int(cg.get_root_id(sv, level2=True))
    assert layer_of(l2) == 2
    assert int(cg.get_root_id(l2)) == root  # a node ID is accepted too
    l2_truth = next(c for c in _l2_components(truth, ledger.graph, _bits(cg)) if sv in c)
    assert set(cg.get_leaves(l2).tolist()) == l2_truth


def test_get_leaves(cg, truth: GraphTruth, ledger: Ledger, bounds):
    comp = _big_cell(ledger)
    root = _root(cg, comp)
    leaves = cg.get_leaves(root)
    assert set(leaves.tolist()) == comp and leaves.size == len(comp)
    # bounds: whole chunks that intersect the box
    box = _chunk_box(truth, bounds)
    assert set(cg.get_leaves(root, bounds=bounds).tolist()) == _in_box(truth, comp, _bits(cg), box)


def test_get_leaves_stop_layer(cg, truth: GraphTruth, ledger: Ledger):
    comp = _big_cell(ledger)
    root = _root(cg, comp)
    l2 = cg.get_leaves(root, stop_layer=2)
    assert np.all(layer_of(l2) == 2)
    l2_truth = [c for c in _l2_components(truth, ledger.graph, _bits(cg)) if c <= comp]
    assert len(l2) == len(l2_truth)
    by_node = cg.get_leaves_many(l2)
    assert sorted(map(frozenset, (set(v.tolist()) for v in by_node.values()))) == sorted(map(frozenset, l2_truth))
    l3 = cg.get_leaves(root, stop_layer=3)
    assert np.all(layer_of(l3) <= 3)
    union = set().union(*(set(v.tolist()) for v in cg.get_leaves_many(l3).values()))
    assert union == comp


def test_get_leaves_many(cg, ledger: Ledger, bounds, truth: GraphTruth):
    comps = sorted(ledger.components(), key=len)[-3:]
    roots = [_root(cg, c) for c in comps]
    out = cg.get_leaves_many(roots)
    assert {int(k) for k in out} == set(roots)
    for r, c in zip(roots, comps):
        assert set(out[r].tolist()) == c
    box = _chunk_box(truth, bounds)
    out_b = cg.get_leaves_many(roots, bounds=bounds)
    for r, c in zip(roots, comps):
        assert set(out_b[r].tolist()) == _in_box(truth, c, _bits(cg), box)


def test_get_children(cg, truth: GraphTruth, ledger: Ledger):
    comp = _big_cell(ledger)
    root = _root(cg, comp)
    children = cg.get_children(root)
    assert children.size and np.all(layer_of(children) < truth.meta["n_layers"])
    union = set()
    for ch in children.tolist():
        leaves = set(cg.get_leaves(int(ch)).tolist()) if layer_of(ch) > 1 else {int(ch)}
        assert not union & leaves
        union |= leaves
    assert union == comp


def test_is_latest_roots_and_timestamps(cg, truth: GraphTruth, ledger: Ledger):
    roots = np.unique(cg.get_roots(truth.sv_ids))
    assert cg.is_latest_roots(roots).all()
    # a cell no test edited keeps its ingest-time root: created when the graph was
    base = {frozenset(c) for c in ledger.components(truth.meta["created_ms"])}
    untouched = [c for c in ledger.components() if frozenset(c) in base]
    r = _root(cg, untouched[0])
    created = cg.get_root_timestamps([r])[0]
    assert abs(created.timestamp() - truth.created_s) < 1e-3
    when = dt.datetime.now(dt.timezone.utc)
    latest = cg.get_root_timestamps([r], latest=True, timestamp=when)[0]
    assert abs((when - latest).total_seconds() - 0.001) < 1.5e-3


def test_is_valid_nodes(cg, truth: GraphTruth):
    root = int(cg.get_root_id(int(truth.sv_ids[0])))
    bogus = int(truth.sv_ids.max()) + 1
    valid = cg.is_valid_nodes([int(truth.sv_ids[0]), root, bogus, 0])
    assert valid.tolist() == [True, True, False, False]


def _l2_truth_graph(cg, truth: GraphTruth, G: nx.Graph, comp: set[int], box=None):
    """Expected level-2 edges of a cell as pairs of supervoxel sets (IDs are the server's)."""
    bits = _bits(cg)
    l2 = [c for c in _l2_components(truth, G, bits) if c <= comp]
    if box is not None:
        l2 = [c for c in l2 if _in_box(truth, c, bits, box)]
    owner = {s: i for i, c in enumerate(l2) for s in c}
    pairs = set()
    for u, v in G.subgraph(owner).edges:
        a, b = owner[u], owner[v]
        if a != b:
            pairs.add(frozenset((frozenset(l2[a]), frozenset(l2[b]))))
    return pairs


def _as_sv_sets(cg, edge_graph) -> set:
    ids = sorted({int(x) for e in edge_graph for x in e})
    leaves = cg.get_leaves_many(ids) if ids else {}
    sets = {int(k): frozenset(v.tolist()) for k, v in leaves.items()}
    return {frozenset((sets[int(a)], sets[int(b)])) for a, b in edge_graph}


def test_level2_chunk_graph(cg, truth: GraphTruth, ledger: Ledger):
    comp = _big_cell(ledger)
    root = _root(cg, comp)
    eg = cg.level2_chunk_graph(root)
    assert _as_sv_sets(cg, eg) == _l2_truth_graph(cg, truth, ledger.graph, comp)


def test_level2_chunk_graph_with_bounds(cg, api, truth: GraphTruth, ledger: Ledger, bounds):
    comp = _big_cell(ledger)
    root = _root(cg, comp)
    eg = cg.level2_chunk_graph(root, bounds=bounds)  # raises unless Used-Bounds: true
    box = _chunk_box(truth, bounds)
    assert _as_sv_sets(cg, eg) == _l2_truth_graph(cg, truth, ledger.graph, comp, box)
    text = "_".join(f"{lo}-{hi}" for lo, hi in bounds)
    r = api.get(f"node/{root}/lvl2_graph", params={"bounds": text})
    assert r.status_code == 200 and r.headers["Used-Bounds"] == "true"
    assert api.get(f"node/{root}/lvl2_graph").headers.get("Used-Bounds") != "true"


def test_get_subgraph(cg, truth: GraphTruth, ledger: Ledger, bounds):
    comp = _big_cell(ledger)
    root = _root(cg, comp)
    nodes, aff, areas = cg.get_subgraph(root, bounds)
    box = _chunk_box(truth, bounds)
    inside = _in_box(truth, comp, _bits(cg), box)
    expected = {frozenset(e) for e in ledger.graph.subgraph(inside).edges}
    got = [frozenset(map(int, e)) for e in nodes]
    assert set(got) == expected and len(got) == len(expected)
    for e, a, ar in zip(nodes.tolist(), aff.tolist(), areas.tolist()):
        i = truth.edge_index.get((min(e), max(e)))
        if i is not None:  # edges added by merges have no ingest row
            assert a == pytest.approx(float(truth.affinity[i])) or (np.isinf(a) and np.isinf(truth.affinity[i]))
            assert ar == int(truth.area[i])


def test_int64_as_str(api, truth: GraphTruth, cg):
    sv = int(truth.sv_ids[0])
    r = api.get(f"node/{sv}/root", params={"int64_as_str": "1"})
    root = r.json()["root_id"]
    assert isinstance(root, str) and int(root) == int(cg.get_root_id(sv))
    r = api.post("node/leaves_many", params={"int64_as_str": "1"}, data=f'{{"node_ids": ["{root}"]}}')
    assert r.status_code == 200, r.text
    leaves = r.json()[root]
    assert all(isinstance(x, str) for x in leaves) and sv in {int(x) for x in leaves}
    plain = api.get(f"node/{sv}/root", params={"int64_as_str": "False"}).json()["root_id"]
    assert plain == int(root)


def test_oldest_timestamp(cg, truth: GraphTruth):
    assert abs(cg.get_oldest_timestamp().timestamp() - truth.created_s) < 1e-3


def test_suggest_latest_roots_of_a_current_root(cg, ledger: Ledger):
    root = _root(cg, _big_cell(ledger))
    assert cg.suggest_latest_roots(root) == root


def test_json_roots_route(api, truth: GraphTruth, ledger: Ledger):
    svs = [int(s) for s in truth.sv_ids]
    r = api.post("roots", json={"node_ids": svs})
    assert r.status_code == 200, r.text
    roots = np.asarray(r.json()["root_ids"], dtype=np.uint64)
    assert np.all(layer_of(roots) == truth.meta["n_layers"])
    partition_matches(truth.sv_ids, roots, ledger.components())
