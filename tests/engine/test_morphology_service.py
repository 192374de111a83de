"""The morphology service on a real tiny dataset: new L2 nodes get their features within a second
of the edit being acknowledged, without anyone asking; skeletons follow edits at once."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.ingest.pipeline import ingest
from cavelab.server.morphology.l2features import L2Features, cave_record
from cavelab.server.morphology.service import open_service
from cavelab.server.synth import generate

from graph_factory import in_chunk_merge


@pytest.fixture()
def graph(tmp_path: Path) -> ChunkedGraph:
    generate(tmp_path / "src", preset="tiny", seed=5, progress=False)
    ingest(tmp_path / "src", tmp_path / "ds", progress=False, workers=1)
    cg = ChunkedGraph.open(tmp_path / "ds")
    yield cg
    cg.close()


def test_new_l2_features_arrive_within_a_second(graph: ChunkedGraph) -> None:
    svc = open_service(graph)
    a, b = in_chunk_merge(graph)
    root_before = graph.get_root(a)
    sk_before = svc.skeleton(root_before)
    res = graph.merge([[a], [b]], user="test")
    acked = time.monotonic()
    new_l2 = int(graph.get_roots([a], stop_layer=2)[0])
    assert new_l2 == int(graph.get_roots([b], stop_layer=2)[0])  # one new L2 node
    while not svc.cached([new_l2])[0] and time.monotonic() - acked < 1.0:
        time.sleep(0.005)
    assert svc.cached([new_l2])[0], "features of the new L2 node within 1 s of the acknowledgement"
    # computed in the feature process, they equal a fresh computation in this one
    assert svc._features_fn._pool is not None
    fresh = L2Features.open(graph).features(np.array([new_l2], dtype=np.uint64))
    assert svc.l2_data(np.array([new_l2], dtype=np.uint64))[new_l2] == cave_record(fresh, 0)
    # the new root's skeleton spans the merged cell's L2 nodes
    sk = svc.skeleton(res.new_root_ids[0])
    l2 = graph.get_leaves(res.new_root_ids[0], stop_layer=2)
    assert sorted(sk.node_ids.tolist()) == sorted(l2.tolist())
    assert new_l2 in sk.node_ids.tolist() and new_l2 not in sk_before.node_ids.tolist()
    svc.close()


def test_concurrent_requests_compute_each_l2_node_once(graph: ChunkedGraph) -> None:
    """Requests (and the edit worker) asking for the same L2 nodes at once share one computation."""
    import threading

    from cavelab.server.morphology.l2features import ATTRIBUTES
    from cavelab.server.morphology.service import MorphologyService

    real = L2Features.open(graph)
    computed: list[int] = []

    def counting(ids: np.ndarray) -> dict[str, np.ndarray]:
        computed.extend(int(i) for i in ids)
        time.sleep(0.05)  # a slow chunk read: the other threads arrive meanwhile
        return real.features(ids)

    svc = MorphologyService(graph, counting, ATTRIBUTES, record=cave_record)
    l2 = np.unique(graph.get_roots(graph.state.sv_ids[:200], stop_layer=2))
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(svc.l2_data(l2))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(computed) == sorted(int(i) for i in l2), "each node computed exactly once"
    assert len(answers) == 4 and all(a == answers[0] for a in answers)
    assert all(answers[0][int(i)] for i in l2)
    svc.close()


def test_worker_warms_up_before_the_first_edit(graph: ChunkedGraph) -> None:
    """The one-time work (contact index, first read) is done by the worker at open, not by an edit."""
    feats = L2Features.open(graph)
    from cavelab.server.morphology.l2features import ATTRIBUTES
    from cavelab.server.morphology.service import MorphologyService

    assert feats.stats is not None and feats.stats._ptr is None
    svc = MorphologyService(graph, feats, ATTRIBUTES)
    assert svc.warmed.wait(60)
    assert feats.stats._ptr is not None
    ptr = feats.stats.contact_ptr()
    lo = feats.stats.sv_contacts[:, 0]
    counts = np.bincount(np.asarray(lo, dtype=np.int64), minlength=feats.stats.sv_ids.size)
    assert np.array_equal(ptr, np.concatenate([[0], np.cumsum(counts)]))  # CSR offsets by lower sv
    svc.close()


def test_worker_skips_nodes_a_later_edit_replaced(graph: ChunkedGraph) -> None:
    """At a burst of edits the worker computes only nodes still in a current cell; the others are
    computed if a request ever asks for them."""
    import threading

    from cavelab.server.morphology.l2features import ATTRIBUTES
    from cavelab.server.morphology.service import MorphologyService

    real = L2Features.open(graph)
    go = threading.Event()
    computed: list[int] = []

    class Held:
        def warm(self) -> None:
            go.wait(30)  # the worker starts only when the test says so

        def __call__(self, ids: np.ndarray) -> dict[str, np.ndarray]:
            computed.extend(int(i) for i in ids)
            return real(ids)

    svc = MorphologyService(graph, Held(), ATTRIBUTES)
    a, b = in_chunk_merge(graph)
    res = graph.merge([[a], [b]], user="test")
    merged_l2 = int(graph.get_roots([a], stop_layer=2)[0])
    graph.undo(res.operation_id, user="test")
    current = [int(x) for x in graph.get_roots([a, b], stop_layer=2)]
    go.set()
    deadline = time.monotonic() + 30
    while (svc.pending() or not all(svc.cached(current))) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(svc.cached(current)) and merged_l2 not in computed
    # asked for anyway, the replaced node is computed on request
    assert svc.l2_data(np.array([merged_l2], dtype=np.uint64))[merged_l2]["size_nm3"] > 0
    svc.close()
