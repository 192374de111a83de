"""Point-in-time reads of a freshly ingested graph, checked against independent truths."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.engine.ids import GrapheneLayout, compute_layer_bits
from cavelab.server.errors import InputError, InvalidNodeError

from graph_factory import random_graph


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    d = tmp_path_factory.mktemp("reads") / "ds"
    meta, g = random_graph(d, seed=21, grid=(5, 4, 3), sv_per_chunk=10, p_active=0.55)
    cg = ChunkedGraph.open(d)
    yield meta, g, cg
    cg.close()


def _truth(g):
    G = nx.Graph()
    G.add_nodes_from(range(g.n_supervoxels))
    G.add_edges_from(g.edges[g.active].tolist())
    return G


def test_layer_bits_match_pychunkedgraph():
    # PyChunkedGraph's rule: root 1 bit, one more per layer down, layer 2 at least 10, layer 1 = layer 2
    assert compute_layer_bits(10) == {10: 1, 9: 1, 8: 2, 7: 3, 6: 4, 5: 5, 4: 6, 3: 7, 2: 10, 1: 10}
    lay = GrapheneLayout(12)
    nid = int(lay.node_ids(12, [0], [0], [0], [5])[0])
    assert nid >> 56 == 12 and str(nid).startswith("8646911")  # MICrONS-style root prefix


def test_ids_decode_like_cloudvolume(graph):
    meta, g, cg = graph
    lay = meta.layout
    bits = lay.bits[1]
    seg_bits = 64 - 8 - 3 * bits
    ids = g.sv_ids.astype(np.uint64)
    # CloudVolume's graphene decoding: layer = id >> 56, then x, y, z fields of `bits` bits
    x = (ids >> np.uint64(seg_bits + 2 * bits)) & np.uint64(2**bits - 1)
    y = (ids >> np.uint64(seg_bits + bits)) & np.uint64(2**bits - 1)
    z = (ids >> np.uint64(seg_bits)) & np.uint64(2**bits - 1)
    assert np.all(ids >> np.uint64(56) == 1)
    assert np.array_equal(np.stack([x, y, z], 1).astype(np.int64), lay.chunk_coords(ids))


def test_roots_are_components(graph):
    _, g, cg = graph
    roots = cg.get_roots(g.sv_ids)
    comps = list(nx.connected_components(_truth(g)))
    assert len(np.unique(roots)) == len(comps)
    for c in comps:
        assert np.unique(roots[list(c)]).size == 1
    assert np.all(cg.state.layout.layers(roots) == cg.n_layers)


def test_l2_parents_are_per_chunk_components(graph):
    meta, g, cg = graph
    chunk = meta.layout.chunk_coords(g.sv_ids)
    same = np.all(chunk[g.edges[:, 0]] == chunk[g.edges[:, 1]], axis=1)
    H = nx.Graph()
    H.add_nodes_from(range(g.n_supervoxels))
    H.add_edges_from(g.edges[g.active & same].tolist())
    l2 = cg.get_roots(g.sv_ids, stop_layer=2)
    assert np.all(cg.state.layout.layers(l2) == 2)
    comps = list(nx.connected_components(H))
    assert len(np.unique(l2)) == len(comps)
    for c in comps:
        assert np.unique(l2[list(c)]).size == 1
    # an L2 node lives in its supervoxels' chunk
    assert np.array_equal(meta.layout.chunk_coords(l2), chunk)


def test_hierarchy_structure(graph):
    _, _, cg = graph
    st = cg.state
    n = cg.n_layers
    for node in range(st.n_nodes):
        layer = int(st.n_layer.a[node])
        kids = st.children(node)
        if layer == 2:
            assert kids.size >= 1
            continue
        kl = st.n_layer.a[kids]
        assert np.all(kl < layer)
        if layer < n:
            assert kids.size >= 2, "a non-root node that joins nothing must be skipped"
        # the node's chunk contains every child's chunk
        c = st.layout.chunk_coords(st.n_id.a[node])[0]
        cc = st.layout.chunk_coords(st.n_id.a[kids])
        assert np.all((cc >> (layer - np.maximum(kl, 2))[:, None]) == c)
        assert np.all(st.n_parent.a[kids] == node)


def test_leaves_children_and_bounds(graph):
    meta, g, cg = graph
    G = _truth(g)
    roots = cg.get_roots(g.sv_ids)
    big = max(nx.connected_components(G), key=len)
    root = int(roots[next(iter(big))])
    leaves = cg.get_leaves(root)
    assert set(leaves.tolist()) == set(g.sv_ids[list(big)].tolist())
    # children partition the leaves
    union = np.concatenate([cg.get_leaves(int(c)) for c in cg.get_children(root)])
    assert np.array_equal(np.sort(union), np.sort(leaves))
    # bounds keep whole chunks that intersect the box (voxels, max exclusive)
    box = np.array([[0, 0, 0], [meta.chunk_size[0] * 2, meta.chunk_size[1], meta.size[2]]])
    chunk = meta.layout.chunk_coords(g.sv_ids[list(big)])
    hi = (box[1] - 1) // np.asarray(meta.chunk_size)
    want = g.sv_ids[list(big)][np.all(chunk <= hi, axis=1)]
    assert set(cg.get_leaves(root, bounds=box).tolist()) == set(want.tolist())
    l2 = cg.get_leaves(root, stop_layer=2)
    assert set(l2.tolist()) == set(cg.get_roots(leaves, stop_layer=2).tolist())


def test_level2_graph_matches_truth(graph):
    _, g, cg = graph
    G = _truth(g)
    big = sorted(max(nx.connected_components(G), key=len))
    root = int(cg.get_roots(g.sv_ids[big[:1]])[0])
    l2_of = dict(zip(big, cg.get_roots(g.sv_ids[big], stop_layer=2).tolist()))
    want = set()
    for a, b in G.subgraph(big).edges():
        if l2_of[a] != l2_of[b]:
            want.add(tuple(sorted((l2_of[a], l2_of[b]))))
    got = {tuple(sorted(p)) for p in cg.level2_graph(root).tolist()}
    assert got == want


def test_bad_inputs(graph):
    meta, g, cg = graph
    assert cg.get_roots([12345])[0] == 0  # not a node: 0, as CAVE's fail_to_zero
    with pytest.raises(InvalidNodeError):
        cg.get_root(12345)
    with pytest.raises(InputError):
        cg.get_roots(g.sv_ids[:2], timestamp=(meta.created_ms - 60_000) / 1000)
    with pytest.raises(InputError):
        cg.get_roots(g.sv_ids[:1], stop_layer=99)
    with pytest.raises(InputError):
        cg.get_roots(["abc"])
    l2 = int(cg.get_roots(g.sv_ids[:1], stop_layer=2)[0])
    with pytest.raises(InvalidNodeError):
        cg.is_latest_roots([l2])  # a node, but not a root
    with pytest.raises(InvalidNodeError):
        cg.get_leaves(int(g.sv_ids[0]))  # supervoxels have no leaves
    with pytest.raises(InputError):
        cg.get_leaves(int(cg.get_roots(g.sv_ids[:1])[0]), bounds=np.array([[5, 5, 5], [1, 1, 1]]))
