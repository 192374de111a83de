"""The ``cavelab`` command line: generate -> ingest -> info, and clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd


def cavelab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cavelab.server.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_generate_ingest_info(tmp_path):
    src, ds = tmp_path / "src", tmp_path / "ds"
    r = cavelab("generate", str(src), "--preset", "tiny", "--quiet")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["name"] == "tiny"
    r = cavelab("ingest", str(src), str(ds), "--quiet", "--workers", "1")
    assert r.returncode == 0, r.stderr
    assert "cavelab serve" in r.stdout
    info = json.loads(cavelab("info", str(ds)).stdout)
    assert info["n_layers"] >= 3 and info["ingest_report"]["n_supervoxels"] > 0
    # every source label maps to supervoxels that decode to layer 1
    svmap = pd.read_parquet(ds / "supervoxel_map.parquet")
    labels = pd.read_parquet(src / "ground_truth.parquet")["sv"]
    assert set(labels.astype(np.uint64)) == set(svmap["label"].astype(np.uint64))
    assert np.all(svmap["sv_id"].to_numpy(np.uint64) >> np.uint64(56) == 1)
    # ingesting into a non-empty directory is refused unless asked
    r = cavelab("ingest", str(src), str(ds), "--quiet")
    assert r.returncode == 2 and "not empty" in r.stderr


def test_refusals_name_the_problem(tmp_path):
    r = cavelab("ingest", str(tmp_path / "nope"), str(tmp_path / "ds"))
    assert r.returncode == 2 and "not a directory" in r.stderr
    r = cavelab("generate", str(tmp_path / "x"), "--preset", "huge")
    assert r.returncode == 2 and "tiny, small, large" in r.stderr
    r = cavelab("info", str(tmp_path))
    assert r.returncode == 2 and "cavelab ingest" in r.stderr


def test_failed_overwrite_keeps_the_old_dataset_and_leaves_nothing_behind(tmp_path):
    import shutil

    import pytest

    from cavelab.server.errors import IngestError
    from cavelab.server.ingest.pipeline import ingest
    from cavelab.server.synth import generate

    src, ds = tmp_path / "src", tmp_path / "ds"
    generate(src, preset="tiny", seed=1, progress=False)
    ingest(src, ds, progress=False, workers=1)
    before = sorted(p.name for p in ds.iterdir())
    meta_before = (ds / "dataset.json").read_text()
    # a source whose edges name a label absent from the volume: refused after chunks were written
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    edges = pd.read_parquet(bad / "edges.parquet")
    edges.loc[0, "sv2"] = np.uint64(2**62 + 12345)
    edges.to_parquet(bad / "edges.parquet")
    with pytest.raises(IngestError, match="absent|not in the volume|missing"):
        ingest(bad, ds, progress=False, workers=1, overwrite=True)
    assert sorted(p.name for p in ds.iterdir()) == before
    assert (ds / "dataset.json").read_text() == meta_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "ds", "src"]
    # and a fresh directory that fails is not left half-written
    with pytest.raises(IngestError):
        ingest(bad, tmp_path / "new", progress=False, workers=1)
    assert not (tmp_path / "new").exists() or not any((tmp_path / "new").iterdir())


def test_ingest_can_compute_l2_features(tmp_path) -> None:
    """``cavelab ingest --l2-features all`` saves every L2 node's features, equal to on-demand ones."""
    import numpy as np

    from cavelab.server.cli import main
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.morphology.l2features import ATTRIBUTES, L2Features
    from cavelab.server.synth import generate

    generate(tmp_path / "src", preset="tiny", seed=2, progress=False)
    assert main(["ingest", str(tmp_path / "src"), str(tmp_path / "ds"), "--quiet", "--workers", "1", "--l2-features", "all"]) == 0
    cg = ChunkedGraph.open(tmp_path / "ds")
    saved = L2Features.open(cg)
    assert saved.complete
    l2 = cg.get_leaves(int(cg.get_roots(cg.state.sv_ids[:1])[0]), stop_layer=2)
    got = saved.features(l2)
    fresh = L2Features(cg.meta, cg.state, None)  # no saved arrays: nothing to read from disk
    fresh.stats, fresh.segmentation = saved.stats, saved.segmentation
    again = fresh.features(l2)
    for name in ATTRIBUTES:
        np.testing.assert_allclose(np.asarray(got[name], float), np.asarray(again[name], float), rtol=1e-5, atol=1e-3, err_msg=name)
    cg.close()
