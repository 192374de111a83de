"""Crash safety: a writer process is killed with SIGKILL at random points; every edit it had
acknowledged must be present after reopening, and the hierarchy must equal the connected
components of the active edges implied by the log (computed here with networkx)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import networkx as nx
import numpy as np
import pytest

from cavelab.server.engine.graph import ChunkedGraph

from graph_factory import random_graph

WRITER = r"""
import sys, numpy as np
from cavelab.server.engine.graph import ChunkedGraph
from cavelab.server.errors import CavelabError
cg = ChunkedGraph.open(sys.argv[1], max_merge_chunk_distance=None)
rng = np.random.default_rng(int(sys.argv[2]))
ids = cg.state.sv_ids
while True:
    roots = cg.get_roots(ids)
    a, b = rng.integers(0, ids.size, 2)
    try:
        if roots[a] != roots[b]:
            res = cg.merge([[int(ids[a])], [int(ids[b])]])
        else:
            members = np.flatnonzero(roots == roots[a])
            if members.size < 4:
                continue
            s, t = rng.choice(members, 2, replace=False)
            res = cg.split([[int(ids[s])]], [[int(ids[t])]])
    except CavelabError:
        continue
    print("ACK", res.operation_id, flush=True)
"""


@pytest.mark.slow
def test_kill9_keeps_every_acknowledged_edit(tmp_path: Path):
    ds = tmp_path / "ds"
    meta, g = random_graph(ds, seed=5, grid=(4, 4, 2), sv_per_chunk=12, p_active=0.5)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    rng = np.random.default_rng(0)
    acked: set[int] = set()
    env = dict(os.environ)
    for round_ in range(6):
        p = subprocess.Popen(
            [sys.executable, str(script), str(ds), str(round_)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.monotonic() + float(rng.uniform(1.5, 3.5))
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if line.startswith("ACK"):
                acked.add(int(line.split()[1]))
        os.kill(p.pid, signal.SIGKILL)
        for line in p.stdout:  # acknowledgements printed before the kill
            if line.startswith("ACK"):
                acked.add(int(line.split()[1]))
        p.wait()

        cg = ChunkedGraph.open(ds)
        assert acked <= set(cg.operations), f"lost acknowledged edits {sorted(acked - set(cg.operations))}"
        # truth: ingest edges plus every logged change, in order
        G = nx.Graph()
        G.add_nodes_from(range(g.n_supervoxels))
        G.add_edges_from(g.edges[g.active].tolist())
        idx = {int(s): i for i, s in enumerate(g.sv_ids.tolist())}
        for op in sorted(cg.operations):
            d = cg.operations[op].details
            G.add_edges_from((idx[a], idx[b]) for a, b in d["activated"])
            G.remove_edges_from((idx[a], idx[b]) for a, b in d["deactivated"])
        roots = cg.get_roots(g.sv_ids)
        comps = list(nx.connected_components(G))
        assert len(np.unique(roots)) == len(comps)
        for comp in comps:
            assert np.unique(roots[list(comp)]).size == 1
        cg.close()
    assert len(acked) > 20
