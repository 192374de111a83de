"""Tiers 2 and 3 through caveclient: merge, split (and preview), undo, redo, then every history
query, checked against the networkx model of the tests' own edits and against past timestamps.

The ``story`` fixture performs the edits once (merge A+B, split C, undo the merge, redo it);
each test then checks one aspect of the result.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import pytest
from cave_truth import Editor, GraphTruth, Ledger, ms, partition_matches


def _now() -> dt.datetime:
    time.sleep(0.003)
    t = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.003)
    return t


@dataclass
class Story:
    a: int = 0
    b: int = 0
    roots_ab: list[int] = field(default_factory=list)  # A0, B0
    op_merge: int = 0
    merged_1: int = 0
    op_split: int = 0
    split_root: int = 0
    split_new: list[int] = field(default_factory=list)
    split_removed: set = field(default_factory=set)
    source: int = 0
    sink: int = 0
    preview: tuple = ()
    op_undo: int = 0
    undo_roots: list[int] = field(default_factory=list)
    op_redo: int = 0
    merged_2: int = 0
    t: dict[str, dt.datetime] = field(default_factory=dict)


def _capacity_graph(truth: GraphTruth, G: nx.Graph, comp: set[int]) -> nx.Graph:
    H = nx.Graph()
    for u, v in G.subgraph(comp).edges:
        i = truth.edge_index.get((min(u, v), max(u, v)))
        cap = float(truth.affinity[i]) if i is not None else 1e-3
        H.add_edge(u, v, capacity=cap if np.isfinite(cap) else float("inf"))
    return H


def _split_candidates(truth: GraphTruth, ledger: Ledger, comp: set[int]):
    """Far-apart supervoxel pairs of one cell whose min cut is finite (separable)."""
    H = _capacity_graph(truth, ledger.graph, comp)
    start = min(comp)
    dist = nx.single_source_shortest_path_length(H, start)
    far = sorted(dist, key=dist.get, reverse=True)
    for s in [start, *far[1:4]]:
        d2 = nx.single_source_shortest_path_length(H, s)
        for t in sorted(d2, key=d2.get, reverse=True)[:6]:
            if t != s and nx.minimum_cut_value(H, s, t) < float("inf"):
                yield s, t


@pytest.fixture(scope="module")
def story(cg, editor: Editor, truth: GraphTruth, ledger: Ledger) -> Story:
    st = Story()
    st.t["start"] = _now()
    comps = sorted((c for c in ledger.components() if len(c) >= 4), key=len)
    assert len(comps) >= 3, "the test dataset needs at least three cells"
    # --- merge two mid-sized cells
    A, B = comps[len(comps) // 2], comps[len(comps) // 2 - 1]
    st.a, st.b = min(A), min(B)
    st.roots_ab = [int(cg.get_root_id(st.a)), int(cg.get_root_id(st.b))]
    st.t["before_merge"] = _now()
    st.op_merge, new = editor.merge(st.a, st.b)
    assert len(new) == 1
    st.merged_1 = new[0]
    st.t["after_merge"] = _now()
    # --- split another cell between two far-apart supervoxels
    C = next(c for c in reversed(comps) if c is not A and c is not B)
    st.split_root = int(cg.get_root_id(min(C)))
    for s, t in _split_candidates(truth, ledger, C):
        pts = [truth.nm(s)], [truth.nm(t)]
        res = cg.preview_split(*pts, st.split_root, source_supervoxels=[s], sink_supervoxels=[t])
        if res[2]:
            st.source, st.sink, st.preview = s, t, res
            break
    assert st.preview, "no separable source/sink pair found"
    st.t["before_split"] = _now()
    st.op_split, st.split_new, st.split_removed = editor.split([st.source], [st.sink], st.split_root)
    st.t["after_split"] = _now()
    # --- undo the merge, then redo it (raw POST: caveclient has no redo)
    st.op_undo, st.undo_roots = editor.undo(st.op_merge)
    st.t["after_undo"] = _now()
    st.op_redo, new = editor.redo(st.op_merge)
    st.merged_2 = new[0]
    st.t["end"] = _now()
    return st


def test_current_roots_match_the_model(story: Story, cg, truth: GraphTruth, ledger: Ledger):
    roots = cg.get_roots(truth.sv_ids)
    partition_matches(truth.sv_ids, roots, ledger.components())
    assert int(cg.get_root_id(story.a)) == int(cg.get_root_id(story.b)) == story.merged_2


@pytest.mark.parametrize("when", ["start", "before_merge", "after_merge", "before_split", "after_split", "after_undo"])
def test_roots_at_past_timestamps(story: Story, cg, truth: GraphTruth, ledger: Ledger, when):
    t = story.t[when]
    roots = cg.get_roots(truth.sv_ids, timestamp=t)
    partition_matches(truth.sv_ids, roots, ledger.components(ms(t)))


def test_merge(story: Story, cg, ledger: Ledger):
    before = story.t["before_merge"]
    assert int(cg.get_root_id(story.a, timestamp=before)) == story.roots_ab[0]
    assert int(cg.get_root_id(story.b, timestamp=before)) == story.roots_ab[1]
    assert cg.is_latest_roots(story.roots_ab, timestamp=before).all()
    assert not cg.is_latest_roots(story.roots_ab).any()
    assert not cg.is_latest_roots([story.merged_1]).any()
    assert cg.is_latest_roots([story.merged_2]).all()
    assert set(cg.get_leaves(story.merged_2).tolist()) == ledger.component_of(story.a)


def test_split_preview_and_split(story: Story, cg, truth: GraphTruth, ledger: Ledger):
    src_cc, snk_cc, ok = story.preview
    assert ok and story.source in src_cc and story.sink in snk_cc
    assert not set(src_cc) & set(snk_cc)
    G_before = ledger.at(ms(story.t["before_split"]))
    # the cut removed only active edges and separates sources from sinks
    assert story.split_removed and all(G_before.has_edge(*e) for e in story.split_removed)
    G_after = ledger.at(ms(story.t["after_split"]))
    assert not nx.has_path(G_after, story.source, story.sink)
    assert set(src_cc) == nx.node_connected_component(G_after, story.source)
    assert set(snk_cc) == nx.node_connected_component(G_after, story.sink)
    assert len(story.split_new) == 2
    new_roots = {int(cg.get_root_id(story.source)), int(cg.get_root_id(story.sink))}
    assert new_roots == set(story.split_new)
    assert not cg.is_latest_roots([story.split_root]).any()


def test_undo_and_redo(story: Story, cg, ledger: Ledger):
    t = story.t["after_undo"]
    ra, rb = int(cg.get_root_id(story.a, timestamp=t)), int(cg.get_root_id(story.b, timestamp=t))
    assert ra != rb and {ra, rb} == set(story.undo_roots)
    assert not ledger.component_of(story.a, ms(t)) & ledger.component_of(story.b, ms(t))
    assert story.merged_2 not in (story.merged_1, ra, rb)


def test_operation_details(story: Story, cg, truth: GraphTruth):
    ops = [story.op_merge, story.op_split, story.op_undo, story.op_redo]
    d = cg.get_operation_details(ops)
    assert set(d) == {str(o) for o in ops}
    m, s = d[str(story.op_merge)], d[str(story.op_split)]
    assert m["added_edges"] == [[story.a, story.b]]
    assert m["roots"] == [story.merged_1]
    assert sorted(m["source_coords"][0]) == sorted(truth.nm(story.a))
    assert {tuple(sorted(e)) for e in s["removed_edges"]} == story.split_removed
    assert sorted(s["roots"]) == sorted(story.split_new)
    assert s["source_ids"] == [story.source] and s["sink_ids"] == [story.sink]
    for v in d.values():
        assert isinstance(v["user"], str) and v["user"]
        dt.datetime.fromisoformat(v["timestamp"])


def test_root_timestamps_of_edited_roots(story: Story, cg):
    # against the times this test recorded around each edit, not the server's own log
    ms_ = dt.timedelta(milliseconds=2)
    created = cg.get_root_timestamps([story.merged_1])[0]
    assert story.t["before_merge"] - ms_ <= created <= story.t["after_merge"] + ms_
    expired = cg.get_root_timestamps([story.merged_1], latest=True)[0]  # client subtracts 1 ms
    assert story.t["after_split"] - ms_ <= expired <= story.t["after_undo"] + ms_


def _expected_lineage(story: Story) -> set[tuple[int, int]]:
    a0, b0 = story.roots_ab
    u1, u2 = story.undo_roots
    m1, m2 = story.merged_1, story.merged_2
    return {(a0, m1), (b0, m1), (m1, u1), (m1, u2), (u1, m2), (u2, m2)}


def test_lineage_graph(story: Story, cg):
    g = cg.get_lineage_graph(story.merged_2)  # sends the stray `name=timestamp_future`
    assert set(g) >= {"nodes", "links", "directed"}
    assert {(x["source"], x["target"]) for x in g["links"]} == _expected_lineage(story)
    nxg = cg.get_lineage_graph(story.merged_2, as_nx_graph=True)
    assert isinstance(nxg, nx.DiGraph) and set(nxg.edges) == _expected_lineage(story)
    ops = {n["id"]: n["operation_id"] for n in g["nodes"]}
    assert ops[story.merged_1] == story.op_merge and ops[story.merged_2] == story.op_redo
    # a window that ends before the undo stops at the merge
    g2 = cg.get_lineage_graph(
        story.roots_ab[0], timestamp_past=story.t["start"], timestamp_future=story.t["after_merge"]
    )
    assert {(x["source"], x["target"]) for x in g2["links"]} == {(story.roots_ab[0], story.merged_1)}


def test_single_root_routes(story: Story, api):
    # routes caveclient does not use but Neuroglancer/PyChunkedGraph clients do
    g = api.get(f"root/{story.merged_2}/lineage_graph").json()
    assert {(x["source"], x["target"]) for x in g["links"]} == _expected_lineage(story)
    t = api.get(f"root/{story.merged_2}/tabular_change_log").json()
    assert list(t["operation_id"].values()) == [story.op_merge]


def test_latest_and_original_roots(story: Story, cg):
    a0, b0 = story.roots_ab
    assert cg.get_latest_roots(a0).tolist() == [story.merged_2]
    assert sorted(cg.get_latest_roots(a0, timestamp=story.t["after_undo"]).tolist()) == sorted(story.undo_roots)
    assert sorted(cg.get_original_roots(story.merged_2).tolist()) == sorted([a0, b0])
    assert cg.suggest_latest_roots(a0) == story.merged_2


def test_past_ids(story: Story, cg):
    r = cg.get_past_ids([story.merged_2], timestamp_past=story.t["before_merge"])
    assert sorted(r["past_id_map"][story.merged_2]) == sorted(story.roots_ab)
    r2 = cg.get_past_ids(story.split_new, timestamp_past=story.t["before_split"])
    for new in story.split_new:
        assert r2["past_id_map"][new] == [story.split_root]
    # an untouched root maps to itself both ways
    untouched = int(cg.get_root_id(story.source))
    r3 = cg.get_past_ids([untouched], timestamp_past=story.t["after_split"])
    assert r3["past_id_map"][untouched] == [untouched]
    assert r3["future_id_map"] == {untouched: untouched}


def test_change_log(story: Story, cg):
    log = cg.get_change_log(story.merged_2)
    assert log["operations_ids"] == [story.op_merge]
    assert log["n_mergers"] == 1 and log["n_splits"] == 0
    assert sorted(log["past_ids"]) == sorted(story.roots_ab)
    assert sum(u["n_mergers"] for u in log["user_info"].values()) == 1
    full = cg.get_change_log(story.merged_2, filtered=False)
    assert set(full["operations_ids"]) == {story.op_merge, story.op_undo, story.op_redo}
    split_log = cg.get_change_log(story.split_new[0])
    assert split_log["operations_ids"] == [story.op_split] and split_log["n_splits"] == 1


def test_merge_log(story: Story, cg, truth: GraphTruth):
    ml = cg.get_merge_log(story.merged_2)
    assert ml["merge_edges"] == [[[story.a, story.b]]]
    (coords,) = ml["merge_edge_coords"]
    assert np.allclose(coords[0][0], truth.voxel(story.a)) and np.allclose(coords[1][0], truth.voxel(story.b))


def test_tabular_change_log(story: Story, cg):
    logs = cg.get_tabular_change_log([story.merged_2, story.split_new[0]])
    m, s = logs[story.merged_2], logs[story.split_new[0]]
    assert m["operation_id"].tolist() == [story.op_merge] and m["is_merge"].tolist() == [True]
    assert sorted(m["before_root_ids"].iloc[0]) == sorted(story.roots_ab)
    assert m["after_root_ids"].iloc[0] == [story.merged_1]
    assert s["operation_id"].tolist() == [story.op_split] and s["is_merge"].tolist() == [False]
    assert {"timestamp", "user_id", "user_name", "user_affiliation"} <= set(m.columns)
    full = cg.get_tabular_change_log([story.merged_2], filtered=False)[story.merged_2]
    assert set(full["operation_id"]) == {story.op_merge, story.op_undo, story.op_redo}
    assert {"in_neuron", "is_relevant"} <= set(full.columns)


def test_delta_roots(story: Story, cg):
    old, new = cg.get_delta_roots(story.t["before_split"], story.t["after_split"])
    assert old.tolist() == [story.split_root]
    assert sorted(new.tolist()) == sorted(story.split_new)
    old, new = cg.get_delta_roots(story.t["start"], story.t["end"])
    assert set(old.tolist()) == {*story.roots_ab, story.split_root}
    assert set(new.tolist()) == {*story.split_new, story.merged_2}


def test_user_operations(story: Story, cg):
    df = cg.get_user_operations(0, story.t["start"])
    ops = {story.op_merge, story.op_split, story.op_undo, story.op_redo}
    assert ops <= set(df["operation_id"])
    assert df["timestamp"].min() >= story.t["start"] - dt.timedelta(milliseconds=1)
    df2 = cg.get_user_operations(0, story.t["start"], include_undo=False)
    assert {story.op_merge, story.op_split} <= set(df2["operation_id"])
    assert not {story.op_undo, story.op_redo} & set(df2["operation_id"])
    df3 = cg.get_user_operations(0, story.t["start"], timestamp_end=story.t["after_merge"])
    assert set(df3["operation_id"]) & ops == {story.op_merge}


def test_status_counts_operations(story: Story, api):
    assert api.status()["n_operations"] >= 4


def test_operation_details_with_repeated_parameters(api, cg) -> None:
    """``operation_ids`` given twice adds up (caveclient sends one JSON list; both forms work)."""
    one = api.get("operation_details", params={"operation_ids": "[1, 2]"})
    two = api.get("operation_details", params=[("operation_ids", "[1]"), ("operation_ids", "2")])
    assert one.status_code == two.status_code == 200
    assert one.json() == two.json() and set(one.json()) == {"1", "2"}
    assert api.get("operation_details").status_code == 400
