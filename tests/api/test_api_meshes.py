"""Neuroglancer graphene meshes and the precomputed volume over HTTP, against a real server.

The routes are read as neuroglancer's graphene datasource reads them: the graphene info's
``data_dir`` and ``mesh``, ``{data_dir}/{mesh}/info``, the manifest
``meshing/api/v1/table/{t}/manifest/{id}:0?verify=1&prepend_seg_ids=1`` (entries
``~{l2}:{fragment}``) and the Draco fragments ``{data_dir}/{mesh}/dynamic/{fragment}``. Truth:
the L2 nodes (caveclient ``get_leaves(stop_layer=2)``), the chunk geometry, and the dataset's
``segmentation.zarr``.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
import zarr
from cave_truth import in_chunk_pair
from conftest import own_server_fixtures

dataset_dir, server, truth, ledger, client, api, editor = own_server_fixtures("meshes_api")

DracoPy = pytest.importorskip("DracoPy")


@pytest.fixture(scope="module")
def volume(dataset_dir) -> np.ndarray:
    return np.asarray(zarr.open_array(str(dataset_dir / "segmentation.zarr"), mode="r")[:])


@pytest.fixture(scope="module")
def info(api, truth) -> dict:
    r = api.get(f"{api.server.cave}/segmentation/table/{truth.name}/info")
    assert r.status_code == 200, r.text
    return r.json()


def manifest(api, truth, node: int, **params) -> requests.Response:
    q = {"verify": "1", "prepend_seg_ids": "1", **params}
    return api.get(f"{api.server.cave}/meshing/api/v1/table/{truth.name}/manifest/{node}:0", params=q)


def fragments(api, truth, node: int) -> dict[int, str]:
    """``{l2 id: fragment file}`` from the manifest, checking neuroglancer's entry format."""
    r = manifest(api, truth, node)
    assert r.status_code == 200, r.text
    out = {}
    for entry in r.json()["fragments"]:
        assert entry.startswith("~")
        key, frag = entry[1:].split(":", 1)  # neuroglancer's getGrapheneFragmentKey
        assert not frag.startswith("~")  # not sharded: read from {mesh}/dynamic/
        out[int(key)] = frag
    return out


def fetch(api, info: dict, frag: str) -> tuple[np.ndarray, np.ndarray]:
    r = api.get(f"{info['data_dir']}/{info['mesh']}/dynamic/{frag}")
    assert r.status_code == 200, r.text
    m = DracoPy.decode(r.content)
    return np.asarray(m.points, dtype=np.float64), np.asarray(m.faces)


def a_root(client, ledger, min_svs: int = 30) -> int:
    for comp in sorted(ledger.components(), key=len, reverse=True):
        if len(comp) >= min_svs:
            return int(client.chunkedgraph.get_root_id(min(comp)))
    raise AssertionError("no cell big enough")


def check_fragment_in_chunk(api, info, truth, l2: int, frag: str) -> None:
    """Decodes to a non-empty mesh inside the L2 chunk's box plus one voxel (nm)."""
    v, f = fetch(api, info, frag)
    assert len(v) > 0 and len(f) > 0
    res = np.asarray(truth.resolution, dtype=float)
    cs = np.asarray(info["graph"]["chunk_size"])
    bits = int(info["graph"]["spatial_bit_masks"]["2"])
    shift = 64 - 8 - 3 * bits
    c = np.array([(l2 >> (shift + 2 * bits)) & ((1 << bits) - 1), (l2 >> (shift + bits)) & ((1 << bits) - 1), (l2 >> shift) & ((1 << bits) - 1)])
    lo = (c * cs - 1) * res
    hi = (c * cs + cs + 1) * res
    tol = res / 4  # Draco's 16-bit quantization
    assert np.all(v.min(axis=0) >= lo - tol) and np.all(v.max(axis=0) <= hi + tol), (l2, v.min(0), v.max(0), lo, hi)


def test_info_documents(api, info, truth) -> None:
    assert info["mesh"] == "graphene_meshes"
    assert info["data_dir"].startswith(api.server.cave)
    r = api.get(f"{info['data_dir']}/{info['mesh']}/info")
    assert r.status_code == 200
    mi = r.json()
    assert mi["@type"] == "neuroglancer_legacy_mesh"
    shard = mi["sharding"]["2"]  # present: neuroglancer then reads fragments from dynamic/
    assert shard["@type"] == "neuroglancer_uint64_sharded_v1"
    r = api.get(f"{info['data_dir']}/info")
    assert r.status_code == 200 and r.json()["scales"] == info["scales"]


def test_manifest_lists_every_l2_node_and_fragments_decode(api, info, truth, client, ledger) -> None:
    root = a_root(client, ledger)
    l2 = {int(x) for x in client.chunkedgraph.get_leaves(root, stop_layer=2)}
    frags = fragments(api, truth, root)
    assert set(frags) == l2  # thin cells: every L2 node has a surface of its own
    assert len(frags) == len(l2) > 1
    for i, fr in frags.items():
        assert fr.split(":", 1)[0] == str(i)
        check_fragment_in_chunk(api, info, truth, i, fr)
    # without prepend_seg_ids: the bare file names; return_seg_ids adds the IDs
    r = manifest(api, truth, root, prepend_seg_ids="0", return_seg_ids="1").json()
    assert sorted(r["fragments"]) == sorted(frags.values())
    assert sorted(int(x) for x in r["seg_ids"]) == sorted(frags)
    # POST answers the same (PyChunkedGraph accepts both)
    p = api.post(f"{api.server.cave}/meshing/api/v1/table/{truth.name}/manifest/{root}:0?verify=1&prepend_seg_ids=1")
    assert p.status_code == 200 and sorted(p.json()["fragments"]) == sorted(f"~{k}:{v}" for k, v in frags.items())
    # an L2 ID lists itself; any node of layer >= 2 lists its L2 nodes
    one = next(iter(frags))
    assert fragments(api, truth, one) == {one: frags[one]}


def test_stitched_fragments_close(api, info, truth, client, ledger) -> None:
    """The fragments of a cell, stitched (seam vertices merged), leave few open edges: the
    seams coincide up to Draco's quantization."""
    root = a_root(client, ledger)
    vs, fs, n = [], [], 0
    for fr in fragments(api, truth, root).values():
        v, f = fetch(api, info, fr)
        vs.append(v)
        fs.append(f + n)
        n += len(v)
    v, f = np.concatenate(vs), np.concatenate(fs)
    key = np.rint(v * 32).astype(np.int64)  # 1/32 nm: far above Draco's quantization error here
    _, inv = np.unique(key, axis=0, return_inverse=True)
    f = inv.ravel()[f]
    f = f[(f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])]
    e = np.sort(f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, cnt = np.unique(e, axis=0, return_counts=True)
    assert (cnt == 1).sum() == 0


def test_manifest_changes_right_after_merge_and_split(api, info, truth, client, ledger, editor) -> None:
    a, b = in_chunk_pair(truth, ledger, min_cell=3)
    old_roots = [int(client.chunkedgraph.get_root_id(x)) for x in (a, b)]
    before = [fragments(api, truth, r) for r in old_roots]
    _, new_roots = editor.merge(a, b)
    after = fragments(api, truth, new_roots[0])  # right after the acknowledgement
    l2 = {int(x) for x in client.chunkedgraph.get_leaves(new_roots[0], stop_layer=2)}
    assert set(after) == l2
    new_l2 = int(client.chunkedgraph.get_roots([a], stop_layer=2)[0])
    assert new_l2 in after and all(new_l2 not in x for x in before)
    check_fragment_in_chunk(api, info, truth, new_l2, after[new_l2])
    # split along the same edge
    _, split_roots, _ = editor.split([a], [b], new_roots[0])
    assert len(split_roots) == 2
    for sv in (a, b):
        r = int(client.chunkedgraph.get_root_id(sv))
        fr = fragments(api, truth, r)
        assert set(fr) == {int(x) for x in client.chunkedgraph.get_leaves(r, stop_layer=2)}
        l2sv = int(client.chunkedgraph.get_roots([sv], stop_layer=2)[0])
        assert l2sv in fr and l2sv not in after
        check_fragment_in_chunk(api, info, truth, l2sv, fr[l2sv])


def test_volume_chunks_are_the_segmentation(api, info, volume) -> None:
    sc = info["scales"][0]
    cs = np.asarray(sc["chunk_sizes"][0])
    size = np.asarray(sc["size"])
    for c in ([0, 0, 0], (size // cs - 1).tolist()):
        lo = np.asarray(c) * cs
        hi = np.minimum(lo + cs, size)
        name = "_".join(f"{a}-{b}" for a, b in zip(lo.tolist(), hi.tolist()))
        r = api.get(f"{info['data_dir']}/{sc['key']}/{name}")
        assert r.status_code == 200, r.text
        got = np.frombuffer(r.content, dtype="<u8").reshape(tuple((hi - lo).tolist()), order="F")
        np.testing.assert_array_equal(got, volume[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])


def test_bad_mesh_requests(api, info, truth, client) -> None:
    sv = int(truth.sv_ids[0])
    root = int(client.chunkedgraph.get_root_id(sv))
    for node, words in ((sv, "supervoxel"), (root + 987654, "not a node"), ("12x", "ID"), (2**64 + 5, "ID")):
        r = manifest(api, truth, node)
        assert r.status_code == 400, (node, r.status_code, r.text)
        assert words in r.json()["message"], r.json()
    r = api.get(f"{api.server.cave}/meshing/api/v1/table/nope/manifest/{root}:0")
    assert r.status_code == 404 and "nope" in r.json()["message"]
    r = api.get(f"{api.server.cave}/meshing/api/v1/table/{truth.name}/manifest/{root}:x")
    assert r.status_code == 400
    M = f"{info['data_dir']}/{info['mesh']}/dynamic"
    for frag, code in ((f"{root}:0:0-1_0-1_0-1", 400), ("garbage", 400), (f"{sv}:0:x", 400), (f"{2**64 + 1}:0", 400)):
        r = api.get(f"{M}/{frag}")
        assert r.status_code == code, (frag, r.status_code, r.text)
        assert r.json()["message"]
    r = api.get(f"{api.server.cave}/precomputed/other/graphene_meshes/info")
    assert r.status_code == 404
    sc = info["scales"][0]
    for name in ("1-2_0-1_0-1", "0-999999_0-1_0-1", "junk"):
        r = api.get(f"{info['data_dir']}/{sc['key']}/{name}")
        assert r.status_code == 400, (name, r.text)
    r = api.get(f"{info['data_dir']}/9_9_9/0-1_0-1_0-1")
    assert r.status_code == 404
    assert api.status()["ready"]
