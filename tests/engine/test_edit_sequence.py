"""A random sequence of hundreds of merges, splits, undos and redos, checked against networkx.

The truth is a networkx graph of the active supervoxel edges that this test maintains itself
from the ingest input plus the edge changes each operation reports (merge: the inactive edges
between the two cells, or the clicked pair; split: the removed edges, which the test checks
really separate sources from sinks). Roots are compared with its connected components now and at
every earlier operation's timestamp.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.errors import PreconditionError

from graph_factory import random_graph


def _partition_matches(roots: np.ndarray, G: nx.Graph) -> None:
    """Engine roots must induce exactly the connected components of G."""
    seen: dict[int, int] = {}
    for k, comp in enumerate(nx.connected_components(G)):
        c = np.fromiter(comp, dtype=np.int64)
        rs = np.unique(roots[c])
        assert rs.size == 1, f"component {k} spans roots {rs.tolist()}"
        r = int(rs[0])
        assert r != 0
        assert r not in seen, f"root {r} shared by two components"
        seen[r] = k


class Model:
    """The test's own record of the active supervoxel graph over time."""

    def __init__(self, g) -> None:
        self.ids = g.sv_ids
        self.G = nx.Graph()
        self.G.add_nodes_from(range(g.n_supervoxels))
        self.G.add_edges_from(g.edges[g.active].tolist())
        self.all_edges = {tuple(e) for e in g.edges.tolist()}
        self.inactive = {tuple(e) for e in g.edges[~g.active].tolist()}
        self.snapshots: list[tuple[int, nx.Graph]] = []
        self.changes: dict[int, tuple[list, list]] = {}  # op -> (activated, deactivated) as index pairs

    def idx(self, sv_id) -> int:
        return int(np.searchsorted(self.ids, np.uint64(sv_id)))

    def pairs(self, id_pairs) -> list[tuple[int, int]]:
        return [tuple(sorted((self.idx(a), self.idx(b)))) for a, b in id_pairs]

    def apply(self, act, deact) -> None:
        for a, b in act:
            self.G.add_edge(a, b)
            self.inactive.discard((a, b))
            self.all_edges.add((a, b))
        for a, b in deact:
            if self.G.has_edge(a, b):
                self.G.remove_edge(a, b)
            self.inactive.add((a, b))

    def expected_merge_edges(self, a: int, b: int) -> set[tuple[int, int]]:
        ca = nx.node_connected_component(self.G, a)
        cb = nx.node_connected_component(self.G, b)
        found = {e for e in self.inactive if (e[0] in ca and e[1] in cb) or (e[0] in cb and e[1] in ca)}
        return found or {tuple(sorted((a, b)))}


@pytest.mark.parametrize(("seed", "local_cuts"), [(3, False), (11, False), (17, True)])
def test_random_edit_sequence_matches_networkx(tmp_path, monkeypatch, seed, local_cuts):
    if local_cuts:  # force CAVE's local (boxed) multicut, with its whole-cell fallback
        from cavelab.server.engine import edits

        monkeypatch.setattr(edits, "LOCAL_CUT_MIN_SUPERVOXELS", 8)
        monkeypatch.setattr(edits, "LOCAL_CUT_PAD_NM", (80.0, 80.0, 80.0))
    meta, g = random_graph(tmp_path / "ds", seed=seed, grid=(4, 4, 2), sv_per_chunk=14, p_active=0.5)
    cg = ChunkedGraph.open(tmp_path / "ds", max_merge_chunk_distance=None)
    m = Model(g)
    rng = np.random.default_rng(seed)
    n_ops = {"merge": 0, "split": 0, "undo": 0, "redo": 0, "refused": 0}
    history: list[int] = []
    t_ingest = meta.created_ms
    m.snapshots.append((t_ingest, m.G.copy()))
    for _step in range(260):
        roots = cg.get_roots(g.sv_ids)
        r = rng.uniform()
        if r < 0.45:
            a, b = (int(x) for x in rng.integers(0, g.n_supervoxels, 2))
            if roots[a] == roots[b]:
                with pytest.raises(PreconditionError):
                    cg.merge([[int(g.sv_ids[a])], [int(g.sv_ids[b])]])
                n_ops["refused"] += 1
                continue
            expected = m.expected_merge_edges(a, b)
            res = cg.merge([[int(g.sv_ids[a])], [int(g.sv_ids[b])]])
            rec = cg.operations[res.operation_id]
            act = m.pairs(rec.details["activated"])
            assert set(act) == expected
            assert len(res.new_root_ids) == 1
            n_ops["merge"] += 1
        elif r < 0.8:
            uniq, counts = np.unique(roots, return_counts=True)
            big = uniq[counts >= 4]
            if not big.size:
                continue
            members = np.flatnonzero(roots == rng.choice(big))
            k = int(rng.integers(1, 3))
            pts = rng.choice(members, 2 * k, replace=False)
            src, snk = pts[:k], pts[k:]
            try:
                res = cg.split([[int(g.sv_ids[s])] for s in src], [[int(g.sv_ids[s])] for s in snk])
            except PreconditionError:
                n_ops["refused"] += 1
                continue
            rec = cg.operations[res.operation_id]
            deact = m.pairs(rec.details["deactivated"])
            assert deact, "a split must remove edges"
            assert all(m.G.has_edge(*e) for e in deact), "removed edges must have been active"
            act = []
            H = m.G.copy()
            H.remove_edges_from(deact)
            for s in src:
                for t in snk:
                    assert not nx.has_path(H, int(s), int(t)), "split did not separate"
            assert len(res.new_root_ids) >= 2
            n_ops["split"] += 1
        else:
            if not history:
                continue
            target = int(rng.choice(history))
            tact, tdeact = m.changes[target]
            kind = "undo" if rng.uniform() < 0.7 else "redo"
            want_act, want_deact = (tdeact, tact) if kind == "undo" else (tact, tdeact)
            would_change = any(not m.G.has_edge(*e) for e in want_act) or any(
                m.G.has_edge(*e) for e in want_deact
            )
            if not would_change:
                with pytest.raises(PreconditionError):
                    getattr(cg, kind)(target)
                n_ops["refused"] += 1
                continue
            res = getattr(cg, kind)(target)
            rec = cg.operations[res.operation_id]
            act = m.pairs(rec.details["activated"])
            deact = m.pairs(rec.details["deactivated"])
            assert set(act) == {e for e in want_act if not m.G.has_edge(*e)}
            assert set(deact) == {e for e in want_deact if m.G.has_edge(*e)}
            n_ops[kind] += 1
        if r < 0.45:
            deact = []
        m.apply(act, deact)
        m.changes[res.operation_id] = (act, deact)
        history.append(res.operation_id)
        m.snapshots.append((res.timestamp_ms, m.G.copy()))
        _partition_matches(cg.get_roots(g.sv_ids), m.G)
    assert n_ops["merge"] > 30 and n_ops["split"] > 30 and n_ops["undo"] > 5, n_ops

    # every past state is still readable at its time (inclusive), and just before the next one
    for k, (ts, G) in enumerate(m.snapshots):
        roots_then = cg.get_roots(g.sv_ids, timestamp=ts / 1000)
        _partition_matches(roots_then, G)
        if k % 10 == 0:  # the scalar path (used by the HTTP hot path) agrees, from SVs and L2 nodes
            for i in rng.integers(0, g.n_supervoxels, 15):
                assert cg.get_root(int(g.sv_ids[i]), timestamp=ts / 1000) == roots_then[i]
                assert cg.try_get_root_now(int(g.sv_ids[i]), timestamp=ts / 1000) == roots_then[i]
                l2 = int(cg.get_roots([g.sv_ids[i]], timestamp=ts / 1000, stop_layer=2)[0])
                assert cg.get_root(l2, timestamp=ts / 1000) == roots_then[i]
        if k + 1 < len(m.snapshots):
            nxt = m.snapshots[k + 1][0]
            if nxt - 1 >= ts:
                _partition_matches(cg.get_roots(g.sv_ids, timestamp=(nxt - 1) / 1000), G)

    # latest roots and is_latest agree, from every root ever seen
    hist = cg.history()
    now = cg.state.last_ts
    seen_roots = set()
    for ts, _G in m.snapshots[:: max(1, len(m.snapshots) // 25)]:
        seen_roots.update(np.unique(cg.get_roots(g.sv_ids, timestamp=ts / 1000)).tolist())
    for r in list(seen_roots)[:120]:
        latest = hist.latest_roots(r, timestamp=now / 1000)
        assert latest.size >= 1
        assert np.all(cg.is_latest_roots(latest, timestamp=now / 1000))

    # the same graph after reopening (replay of the log)
    before = cg.get_roots(g.sv_ids)
    cg.close()
    cg2 = ChunkedGraph.open(tmp_path / "ds")
    assert np.array_equal(cg2.get_roots(g.sv_ids), before)
    ts_mid, G_mid = m.snapshots[len(m.snapshots) // 2]
    _partition_matches(cg2.get_roots(g.sv_ids, timestamp=ts_mid / 1000), G_mid)
    cg2.close()
