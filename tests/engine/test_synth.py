"""Tests of the synthetic dataset generator (cavelab.server.synth), on the ``tiny`` preset."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import cc3d
import numpy as np
import pyarrow.parquet as pq
import pytest
import zarr

from cavelab.server.ingest.contacts import face_contacts
from cavelab.server.synth import PRESETS, generate
from cavelab.server.synth.edges import count_contacts

TABLES = ("edges", "components", "ground_truth", "errors")


def _volume(src: Path) -> np.ndarray:
    return np.asarray(zarr.open_array(str(src / "segmentation.zarr" / "0"), mode="r")[:])


def _table(src: Path, name: str) -> dict[str, np.ndarray]:
    t = pq.read_table(src / f"{name}.parquet")
    return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}


def _brute_force_contacts(vol: np.ndarray) -> dict[tuple[int, int], int]:
    """Independent reference: count every differing, nonzero face pair of the whole volume."""
    out: dict[tuple[int, int], int] = defaultdict(int)
    for axis in range(3):
        a = np.moveaxis(vol, axis, 0)
        lo, hi = a[:-1].ravel(), a[1:].ravel()
        m = (lo != hi) & (lo != 0) & (hi != 0)
        pairs = np.sort(np.stack([lo[m], hi[m]], axis=1), axis=1)
        uniq, counts = np.unique(pairs, axis=0, return_counts=True)
        for (x, y), c in zip(uniq.tolist(), counts.tolist()):
            out[(x, y)] += c
    return dict(out)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    src = tmp_path_factory.mktemp("tiny_src")
    info = generate(src, "tiny", seed=3, progress=False, overwrite=True)
    return src, info


def test_outputs_and_source_json(tiny: tuple[Path, dict]) -> None:
    src, info = tiny
    for name in ("segmentation.zarr", "source.json", *(f"{t}.parquet" for t in TABLES)):
        assert (src / name).exists(), name
    on_disk = json.loads((src / "source.json").read_text())
    assert on_disk == info
    assert info["name"] == "tiny"
    assert info["generator"] == "cavelab.server.synth"
    assert info["seed"] == 3
    assert info["suggested_chunk_size"] == [32, 32, 8]
    assert info["resolution_nm"] == [8.0, 8.0, 40.0]
    c = info["counts"]
    assert c["labels"] == len(_table(src, "ground_truth")["sv"])
    assert c["edges"] == len(_table(src, "edges")["sv1"])
    assert (
        c["errors"] == len(_table(src, "errors")["kind"]) == c["false_merges"] + c["false_splits"]
    )
    assert 300 <= c["labels"] <= 1500
    assert 5 <= c["neurons"] <= 12


def test_ome_zarr_metadata(tiny: tuple[Path, dict]) -> None:
    src, _ = tiny
    zattrs = json.loads((src / "segmentation.zarr" / ".zattrs").read_text())
    ms = zattrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["z", "y", "x"]
    assert all(a["type"] == "space" and a["unit"] == "nanometer" for a in ms["axes"])
    assert len(ms["datasets"]) == 1 and ms["datasets"][0]["path"] == "0"
    (tf,) = ms["datasets"][0]["coordinateTransformations"]
    assert tf == {"type": "scale", "scale": [40.0, 8.0, 8.0]}
    zarray = json.loads((src / "segmentation.zarr" / "0" / ".zarray").read_text())
    assert zarray["zarr_format"] == 2
    assert zarray["dtype"] == "<u8"
    assert zarray["shape"] == [24, 96, 96]
    assert zarray["chunks"] == [8, 32, 32]
    assert zarray["dimension_separator"] == "/"
    group = zarr.open_group(str(src / "segmentation.zarr"), mode="r")
    assert group["0"].dtype == np.uint64


def test_labels_are_sparse_and_consistent(tiny: tuple[Path, dict]) -> None:
    src, _ = tiny
    vol = _volume(src)
    labels = np.unique(vol)
    assert labels[0] == 0 and labels.size > 300
    labels = labels[1:]
    assert labels.max() > 2**40  # arbitrary 64-bit-ish values, not 1..N
    assert labels.size < labels.max() // 1000
    gt, comp, edges = _table(src, "ground_truth"), _table(src, "components"), _table(src, "edges")
    assert np.array_equal(np.sort(gt["sv"]), labels)
    assert np.array_equal(np.sort(comp["sv"]), labels)
    assert np.isin(edges["sv1"], labels).all() and np.isin(edges["sv2"], labels).all()
    for t in (gt, comp, edges):
        for col, arr in t.items():
            if col in ("sv", "sv1", "sv2", "segment", "neuron"):
                assert arr.dtype == np.uint64, col
    # every supervoxel is one 6-connected piece
    assert cc3d.connected_components(vol, connectivity=6).max() == labels.size


def test_edges_are_exactly_the_touching_pairs(tiny: tuple[Path, dict]) -> None:
    src, _ = tiny
    vol = _volume(src)
    e = _table(src, "edges")
    assert np.all(e["sv1"] < e["sv2"])
    assert np.all((e["affinity"] >= 0) & (e["affinity"] <= 1))
    got = {(int(a), int(b)): int(c) for a, b, c in zip(e["sv1"], e["sv2"], e["area"])}
    assert len(got) == len(e["sv1"])  # no pair twice
    expected = _brute_force_contacts(vol)
    assert got == expected
    # the generator's fast counter agrees with ingest's face_contacts on a block
    sub = vol[:, 16:80, 8:72]
    small, inv = np.unique(sub, return_inverse=True)
    small_ids = inv.reshape(sub.shape).astype(np.uint32)
    p1, c1 = count_contacts(small_ids)
    p2, c2 = face_contacts(small_ids)
    assert np.array_equal(p1, p2) and np.array_equal(c1, c2)


def test_affinities_follow_ground_truth(tiny: tuple[Path, dict]) -> None:
    src, _ = tiny
    e, gt = _table(src, "edges"), _table(src, "ground_truth")
    neuron = dict(zip(gt["sv"].tolist(), gt["neuron"].tolist()))
    same = np.array([neuron[a] == neuron[b] for a, b in zip(e["sv1"].tolist(), e["sv2"].tolist())])
    assert same.any() and (~same).any()
    assert e["affinity"][same].min() >= 0.6
    assert e["affinity"][~same].max() <= 0.45


def _connected(members: set[int], edges: list[tuple[int, int]]) -> bool:
    adj: dict[int, list[int]] = defaultdict(list)
    for a, b in edges:
        if a in members and b in members:
            adj[a].append(b)
            adj[b].append(a)
    start = next(iter(members))
    seen, todo = {start}, [start]
    while todo:
        for n in adj[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen == members


def test_neurons_and_segments_are_connected(tiny: tuple[Path, dict]) -> None:
    src, _ = tiny
    e, gt, comp = _table(src, "edges"), _table(src, "ground_truth"), _table(src, "components")
    edges = list(zip(e["sv1"].tolist(), e["sv2"].tolist()))
    for table, col in ((gt, "neuron"), (comp, "segment")):
        groups: dict[int, set[int]] = defaultdict(set)
        for sv, g in zip(table["sv"].tolist(), table[col].tolist()):
            groups[g].add(sv)
        for members in groups.values():
            assert _connected(members, edges)


def test_errors(tiny: tuple[Path, dict]) -> None:
    src, _ = tiny
    e, gt, comp = _table(src, "edges"), _table(src, "ground_truth"), _table(src, "components")
    err = pq.read_table(src / "errors.parquet").to_pylist()
    neuron = dict(zip(gt["sv"].tolist(), gt["neuron"].tolist()))
    segment = dict(zip(comp["sv"].tolist(), comp["segment"].tolist()))
    edges = set(zip(e["sv1"].tolist(), e["sv2"].tolist()))
    svs_of: dict[int, set[int]] = defaultdict(set)
    for sv, n in neuron.items():
        svs_of[n].add(sv)
    kinds = [r["kind"] for r in err]
    assert "false_merge" in kinds and "false_split" in kinds
    involved = set()
    for r in err:
        assert not involved & set(r["neurons"])  # a neuron takes part in one error at most
        involved |= set(r["neurons"])
        assert (min(r["sv1"], r["sv2"]), max(r["sv1"], r["sv2"])) in edges
        if r["kind"] == "false_merge":
            a, b = r["neurons"]
            assert a != b and len(r["segments"]) == 1
            assert {neuron[r["sv1"]], neuron[r["sv2"]]} == {a, b}
            # the two neurons touch, and share one segment
            assert any((neuron[x], neuron[y]) in ((a, b), (b, a)) for x, y in edges)
            assert {segment[sv] for sv in svs_of[a] | svs_of[b]} == set(r["segments"])
        else:
            (n,) = r["neurons"]
            assert len(r["segments"]) >= 2
            assert {segment[sv] for sv in svs_of[n]} == set(r["segments"])
            assert segment[r["sv1"]] != segment[r["sv2"]]
            # nothing else is in those segments
            assert {neuron[sv] for sv, s in segment.items() if s in r["segments"]} == {n}
    # everything else: segments are exactly the ground-truth neurons
    for n, svs in svs_of.items():
        if n not in involved:
            (s,) = {segment[sv] for sv in svs}
            assert {sv for sv, t in segment.items() if t == s} == svs


def _same_outputs(a: Path, b: Path) -> bool:
    if not np.array_equal(_volume(a), _volume(b)):
        return False
    for name in TABLES:
        if not pq.read_table(a / f"{name}.parquet").equals(pq.read_table(b / f"{name}.parquet")):
            return False
    return True


def test_deterministic_and_block_independent(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    src, info = tiny
    again = generate(tmp_path / "again", "tiny", seed=3, progress=False)
    assert again == info and _same_outputs(src, tmp_path / "again")
    # 27 blocks instead of one: same output
    blocked = generate(tmp_path / "blocked", "tiny", seed=3, progress=False, block_size=(32, 32, 8))
    assert blocked["counts"] == info["counts"]
    assert _same_outputs(src, tmp_path / "blocked")
    other = generate(tmp_path / "other", "tiny", seed=4, progress=False)
    assert not np.array_equal(_volume(src), _volume(tmp_path / "other"))
    assert other["seed"] == 4


def test_coarse_search_is_block_independent(tmp_path: Path) -> None:
    kw = {"seed": 1, "progress": False, "edt_factor": (2, 2, 1)}
    one = generate(tmp_path / "one", "tiny", **kw)
    many = generate(tmp_path / "many", "tiny", block_size=(32, 32, 8), **kw)
    assert one["counts"] == many["counts"]
    assert _same_outputs(tmp_path / "one", tmp_path / "many")


def test_presets_and_errors(tmp_path: Path) -> None:
    assert {"tiny", "small", "large"} <= set(PRESETS)
    assert PRESETS["tiny"].grid_shape == (3, 3, 3)
    assert PRESETS["small"].grid_shape == (4, 4, 4)
    with pytest.raises(ValueError) as exc:
        generate(tmp_path / "x", "huge", progress=False)
    msg = str(exc.value)
    assert "huge" in msg and all(p in msg for p in ("tiny", "small", "large"))
    with pytest.raises(ValueError, match="unknown generator parameter"):
        generate(tmp_path / "x", "tiny", progress=False, no_such_option=1)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        generate(tmp_path / "full", "tiny", progress=False)
    info = generate(
        tmp_path / "full",
        "tiny",
        progress=False,
        overwrite=True,
        false_merge_rate=0.0,
        false_split_rate=0.0,
    )
    assert (tmp_path / "full" / "keep.txt").exists()
    assert info["counts"]["errors"] == 0
    assert pq.read_table(tmp_path / "full" / "errors.parquet").num_rows == 0
    gt, comp = _table(tmp_path / "full", "ground_truth"), _table(tmp_path / "full", "components")
    assert (
        len(set(zip(gt["neuron"].tolist(), comp["segment"].tolist()))) == info["counts"]["neurons"]
    )


@pytest.mark.slow
def test_worker_processes_give_the_same_output(tiny: tuple[Path, dict], tmp_path: Path) -> None:
    src, info = tiny
    out = generate(
        tmp_path / "mp", "tiny", seed=3, progress=False, block_size=(64, 64, 8), workers=2
    )
    assert out["counts"] == info["counts"]
    assert _same_outputs(src, tmp_path / "mp")


@pytest.mark.slow
def test_small_preset(tmp_path: Path) -> None:
    info = generate(tmp_path / "small", "small", seed=0, progress=False)
    c = info["counts"]
    assert 5_000 <= c["labels"] <= 20_000
    assert 20 <= c["neurons"] <= 45
    assert c["false_merges"] >= 1 and c["false_splits"] >= 1
    assert info["suggested_chunk_size"] == [64, 64, 16]
