"""Concurrent edits: unrelated cells in parallel, the same cells serialised, stale roots refused."""

from __future__ import annotations

import threading

import networkx as nx
import numpy as np
import pytest

from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.errors import StaleRootError

from graph_factory import random_graph


def _components(g, extra_active=(), removed=()):
    G = nx.Graph()
    G.add_nodes_from(range(g.n_supervoxels))
    G.add_edges_from(g.edges[g.active].tolist())
    G.add_edges_from(extra_active)
    G.remove_edges_from(removed)
    return list(nx.connected_components(G))


def test_parallel_merges_of_unrelated_cells(tmp_path):
    _, g = random_graph(tmp_path / "ds", seed=31, grid=(4, 4, 2), sv_per_chunk=12, p_active=0.35)
    cg = ChunkedGraph.open(tmp_path / "ds", max_merge_chunk_distance=None)
    roots = cg.get_roots(g.sv_ids)
    # disjoint pairs of cells, one pair per thread
    cells = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    pairs = [(int(cells[2 * k][0]), int(cells[2 * k + 1][0])) for k in range(min(8, len(cells) // 2))]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(pairs))

    def work(a: int, b: int) -> None:
        try:
            barrier.wait()
            res = cg.merge([[int(g.sv_ids[a])], [int(g.sv_ids[b])]], user=f"t{a}")
            # read-your-writes: an acknowledged edit is visible at once, even when edits in the
            # same millisecond pushed its timestamp ahead of the wall clock
            assert cg.get_root(int(g.sv_ids[a])) in res.new_root_ids
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=p) for p in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(cg.operations) == len(pairs)
    ts = sorted(r.ts for r in cg.operations.values())
    assert len(set(ts)) == len(ts), "operation timestamps strictly increase"
    extra = []
    for rec in cg.operations.values():
        idx = {int(s): i for i, s in enumerate(g.sv_ids.tolist())}
        extra += [(idx[a], idx[b]) for a, b in rec.details["activated"]]
    after = cg.get_roots(g.sv_ids)
    comps = _components(g, extra)
    assert len(np.unique(after)) == len(comps)
    for c in comps:
        assert np.unique(after[list(c)]).size == 1


def test_same_cell_edits_serialise_and_stale_roots_conflict(tmp_path):
    _, g = random_graph(tmp_path / "ds", seed=32, grid=(4, 4, 2), sv_per_chunk=12, p_active=0.35)
    cg = ChunkedGraph.open(tmp_path / "ds", max_merge_chunk_distance=None)
    roots = cg.get_roots(g.sv_ids)
    uniq, counts = np.unique(roots, return_counts=True)
    order = np.argsort(-counts)
    hub = int(np.flatnonzero(roots == uniq[order[0]])[0])  # everyone merges into this cell
    others = [int(np.flatnonzero(roots == uniq[k])[0]) for k in order[1:9]]
    errors: list[BaseException] = []

    def work(o: int) -> None:
        try:
            cg.merge([[int(g.sv_ids[hub])], [int(g.sv_ids[o])]])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(o,)) for o in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    # all of them ended up in one cell: no merge was lost to a race
    final = cg.get_roots(g.sv_ids[[hub, *others]])
    assert np.unique(final).size == 1

    # a root named in an edit must be current: the old one is refused, naming the current root
    old_root = int(roots[hub])
    with pytest.raises(StaleRootError) as ei:
        cg.split([[old_root, 0, 0, 0]], [[old_root, 8, 8, 40]])
    assert ei.value.status == 409
    assert ei.value.details["current_roots"][str(old_root)] == [int(final[0])]
