"""Sustained edits with and without the morphology workers attached (issue 4's question: do the
L2-feature and mesh workers, which share the process and the GIL with edits, slow editing down?).

Opens a work copy of an ingested dataset in process, runs merge + undo pairs for ``--seconds``
(bench_graph's sustained-edit loop) bare, then again with ``MorphologyService`` and
``MeshService`` attached, and reports edits per minute, the workers' backlog when the loop stops
and how long they take to drain it. Results go to ``benchmarks/results/edit_load_<preset>.json``.

    python benchmarks/bench_edit_load.py --preset large --seconds 60
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_annotations import work_copy
from bench_graph import sustained_edits


def main() -> None:
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.morphology.mesh_service import open_mesh_service
    from cavelab.server.morphology.service import open_service

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--preset", default="large")
    ap.add_argument("--dataset", help="ingested dataset dir (default /tmp/cavelab_<preset>_ds)")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--drain-limit", type=float, default=120.0, help="seconds to wait for the workers' backlog")
    a = ap.parse_args()
    ds = Path(a.dataset or f"/tmp/cavelab_{a.preset}_ds")
    work = Path(tempfile.mkdtemp(prefix="cavelab-bench-edits-"))
    res: dict[str, Any] = {"preset": a.preset, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    try:
        cg = ChunkedGraph.open(work_copy(ds, work / "ds"))
        rng = np.random.default_rng(7)
        res["bare"] = sustained_edits(cg, rng, a.seconds)
        print("bare:", res["bare"], flush=True)
        morph, meshes = open_service(cg), open_mesh_service(cg)
        morph.warmed.wait(600)
        res["with_workers"] = sustained_edits(cg, rng, a.seconds)
        t0 = time.perf_counter()
        res["with_workers"]["backlog_at_stop"] = {"features": morph.pending(), "meshes": meshes.pending()}
        while (morph.pending() or meshes.pending()) and time.perf_counter() - t0 < a.drain_limit:
            time.sleep(0.1)
        res["with_workers"]["drain_seconds"] = time.perf_counter() - t0
        res["with_workers"]["backlog_after_drain_limit"] = {"features": morph.pending(), "meshes": meshes.pending()}
        print("with workers:", res["with_workers"], flush=True)
        res["ratio"] = res["with_workers"]["edits_per_minute"] / res["bare"]["edits_per_minute"]
        morph.close()
        meshes.close()
        cg.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = Path(__file__).parent / "results" / f"edit_load_{a.preset}.json"
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
