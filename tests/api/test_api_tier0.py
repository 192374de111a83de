"""Tier 0: caveclient constructs, every sub-client initialises, version and info documents."""

from __future__ import annotations

import numpy as np
import pytest
import requests
from cave_truth import GraphTruth, decode_chunks

VERSIONS = {
    "/info/version": "4.3.3",
    "/segmentation/api/version": "2.21.1",
    "/segmentation/api/versions": [0, 1],
    "/materialize/version": "5.26.4",
    "/materialize/api/versions": [2, 3],
    "/schema/versions": [2],
    "/nglstate/api/v1/version": "0.7.2",
    "/skeletoncache/api/version": "0.23.11",
    "/skeletoncache/api/versions": [-1, 0, 1, 2, 3, 4],
}


@pytest.mark.parametrize(("path", "expected"), sorted(VERSIONS.items()))
def test_version_endpoints(api, path, expected):
    r = api.get(path)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == expected


def test_client_constructs_and_every_subclient_initialises(client, server, truth: GraphTruth):
    from packaging.version import Version

    info = client.info.get_datastack_info()
    assert info["local_server"] == server.cave  # absolute, no trailing slash
    assert client.info.local_server() == server.cave
    # at "/", the graphene routes are also served at the host's root (CloudVolume needs that)
    assert client.info.segmentation_source() == f"graphene://{server.url}/segmentation/table/{truth.name}"
    assert requests.get(f"{server.url}/segmentation/table/{truth.name}/info", headers={"Authorization": f"Bearer {server.token}"}, timeout=30).ok
    assert info["aligned_volume"]["name"] == truth.name and info["aligned_volume"]["id"] == 1
    assert client.info.viewer_resolution().tolist() == truth.resolution.tolist()
    assert info["synapse_table"] == "synapses" and info["soma_table"] == "nuclei"  # CavelabConfig defaults
    assert client.chunkedgraph.table_name == truth.name
    assert client.chunkedgraph.server_version == Version("2.21.1")
    assert client.materialize.server_version == Version("5.26.4")
    assert client.materialize._api_version == 3
    assert client.annotation is not None
    assert client.schema._api_version == 2
    assert client.state.server_version == Version("0.7.2")
    assert client.skeleton.server_version == Version("0.23.11")
    assert client.l2cache is not None


def test_info_service_routes(client, api, truth: GraphTruth):
    assert client.info.get_datastacks() == [truth.name]
    assert client.info.get_aligned_volumes() == [truth.name]
    av = client.info.get_aligned_volume_info_by_id(1)
    assert av["name"] == truth.name
    assert client.info.get_datastacks_by_aligned_volume(truth.name) == [truth.name]
    assert api.get(f"/info/api/v2/aligned_volume/{truth.name}").json()["id"] == 1
    assert api.get(f"/info/api/v2/datastack/{truth.name}/image_sources").json() == []
    for bad in ("/info/api/v2/datastack/full/nope", "/info/api/v2/aligned_volume/nope",
                "/info/api/v2/aligned_volume/id/7"):
        r = api.get(bad)
        assert r.status_code == 404 and "message" in r.json()


def test_graphene_info(cg, truth: GraphTruth, server):
    info = cg.segmentation_info
    g = info["graph"]
    n = g["n_layers"]
    assert info["app"]["supported_api_versions"] == [0, 1]
    assert info["type"] == "segmentation" and info["data_type"] == "uint64"
    assert info["num_channels"] == 1
    assert info["data_dir"].startswith(server.cave)
    assert n == truth.meta["n_layers"]
    assert g["n_bits_for_layer_id"] == 8 and g["cv_mip"] == 0 and g["fan_out"] == 2
    assert g["chunk_size"] == truth.meta["chunk_size"]
    assert len(g["bounding_box"]) == 3
    assert sorted(g["spatial_bit_masks"], key=int) == [str(i) for i in range(1, n + 1)]
    scale = info["scales"][0]
    assert cg.base_resolution == truth.meta["resolution"]
    assert scale["size"] == truth.meta["size"] and scale["voxel_offset"] == truth.meta["voxel_offset"]
    assert {"key", "encoding", "chunk_sizes"} <= set(scale)
    # the bit masks decode the supervoxel IDs into chunks inside the grid (CloudVolume's way)
    chunks = decode_chunks(truth.sv_ids, g["spatial_bit_masks"]["1"])
    grid = -(-np.asarray(truth.meta["size"]) // np.asarray(g["chunk_size"]))
    assert np.all(chunks >= 0) and np.all(chunks < grid)


def test_whoami_and_status(api, server, truth: GraphTruth):
    who = api.get("/api/whoami").json()
    assert isinstance(who["name"], str) and who["name"] and who["groups"] == []
    st = api.status()
    assert st["ready"] and st["state"] == "ready" and st["name"] == truth.name
    assert st["n_supervoxels"] == truth.sv_ids.size
    assert st["n_edges"] >= truth.edges.shape[0]
    assert isinstance(st["n_operations"], int)
    assert st["server_url"] == server.cave  # exported as CAVELAB_SERVER_URL for kernels


@pytest.mark.parametrize(
    "path",
    ["/api/status", "/info/version", "/info/api/v2/datastacks", "/segmentation/api/v1/table/{t}/oldest_timestamp"],
)
def test_missing_authorization_is_403(server, truth: GraphTruth, path):
    r = requests.get(server.cave + path.format(t=truth.name), allow_redirects=False)
    assert r.status_code == 403
    assert r.headers["Content-Type"].startswith("application/json")
    assert "Authorization" in r.json()["message"]


def test_wrong_token_is_403(server):
    r = requests.get(f"{server.cave}/info/version", headers={"Authorization": "Bearer " + "f" * 32})
    assert r.status_code == 403


def test_no_redirects_on_caveclient_paths(api, truth: GraphTruth):
    for path in ("/info/version", f"/info/api/v2/datastack/full/{truth.name}",
                 f"/segmentation/table/{truth.name}/info", "oldest_timestamp"):
        r = api.get(path)
        assert r.status_code == 200 and not r.history
