"""JSON documents describing the dataset: datastack info, aligned volume and graphene ``info``.

One cavelab server serves one dataset, so the datastack, the aligned volume and the PCG table all
carry the dataset's name. ``cave_url`` is this server's absolute CAVE URL as the client reached it
(e.g. ``http://127.0.0.1:8888/cave``, no trailing slash); caveclient appends ``/segmentation`` etc.
"""

from __future__ import annotations

from typing import Any

from cavelab.server.engine.ids import FAN_OUT, LAYER_BITS
from cavelab.server.engine.meta import DatasetMeta

ALIGNED_VOLUME_ID = 1
PCG_API_VERSIONS = [0, 1]  # indices into CloudVolume's ['1.0', 'v1']
LEAVES_BOUNDING_BOX = [2048, 2048, 512]  # PyChunkedGraph's graph.bounding_box


def segmentation_source(graphene_base: str, meta: DatasetMeta) -> str:
    """``graphene://<base>/segmentation/table/<name>`` (last segment = the PCG table).

    ``graphene_base`` is the host's root URL when the server runs at "/" (CloudVolume can only
    parse graphene URLs without a path prefix), else this server's CAVE URL.
    """
    return f"graphene://{graphene_base}/segmentation/table/{meta.name}"


def data_dir(cave_url: str, meta: DatasetMeta) -> str:
    """Where the precomputed supervoxel volume is (to be) served, over HTTP from this server."""
    return f"{cave_url}/precomputed/{meta.name}"


MESH_DIR = "graphene_meshes"  # PyChunkedGraph's default mesh directory under data_dir


def mesh_info() -> dict[str, Any]:
    """``{data_dir}/{MESH_DIR}/info``: neuroglancer's graphene "legacy" mesh source.

    With a ``sharding`` entry neuroglancer fetches each manifest fragment that does not start
    with ``~`` from ``{data_dir}/{mesh}/dynamic/{fragment}`` and decodes it as Draco; cavelab only
    lists such (dynamic) fragments, so the sharding parameters themselves are never used.
    """
    shard = {
        "@type": "neuroglancer_uint64_sharded_v1",
        "hash": "murmurhash3_x86_128",
        "preshift_bits": 0,
        "shard_bits": 0,
        "minishard_bits": 0,
        "minishard_index_encoding": "gzip",
        "data_encoding": "raw",
    }
    return {"@type": "neuroglancer_legacy_mesh", "mip": 0, "sharding": {"2": shard}}


def precomputed_info(meta: DatasetMeta) -> dict[str, Any]:
    """``{data_dir}/info``: the supervoxel volume as a neuroglancer precomputed volume (raw)."""
    return {
        "@type": "neuroglancer_multiscale_volume",
        "data_type": "uint64",
        "num_channels": 1,
        "type": "segmentation",
        "scales": _scales(meta),
    }


def _scales(meta: DatasetMeta) -> list[dict[str, Any]]:
    return [
        {
            "chunk_sizes": [[int(c) for c in meta.chunk_size]],
            "encoding": "raw",
            "key": _scale_key(meta.resolution),
            "resolution": [float(r) for r in meta.resolution],
            "size": [int(s) for s in meta.size],
            "voxel_offset": [int(v) for v in meta.voxel_offset],
        }
    ]


def aligned_volume(meta: DatasetMeta) -> dict[str, Any]:
    """The aligned-volume record (``id`` and ``name`` are required by caveclient)."""
    return {
        "id": ALIGNED_VOLUME_ID,
        "name": meta.name,
        "display_name": meta.name,
        "description": f"cavelab dataset {meta.name}",
        "image_source": None,
    }


def datastack_info(
    cave_url: str,
    meta: DatasetMeta,
    synapse_table: str | None = None,
    soma_table: str | None = None,
    graphene_base: str | None = None,
) -> dict[str, Any]:
    """The full datastack document of ``GET /info/api/v2/datastack/full/{ds}``."""
    rx, ry, rz = (float(r) for r in meta.resolution)
    return {
        "aligned_volume": aligned_volume(meta),
        "segmentation_source": segmentation_source(graphene_base or cave_url, meta),
        "local_server": cave_url,
        "synapse_table": synapse_table,
        "soma_table": soma_table,
        "viewer_site": None,
        "skeleton_source": None,
        "analysis_database": None,
        "description": f"cavelab dataset {meta.name}",
        "proofreading_status_table": None,
        "cell_identification_table": None,
        "proofreading_review_table": None,
        "synapse_segmentation_source": None,
        "viewer_resolution_x": rx,
        "viewer_resolution_y": ry,
        "viewer_resolution_z": rz,
    }


def _scale_key(resolution: tuple[float, float, float]) -> str:
    return "_".join(str(int(r)) if float(r).is_integer() else str(r) for r in resolution)


def graphene_info(cave_url: str, meta: DatasetMeta) -> dict[str, Any]:
    """PyChunkedGraph's graphene ``info`` (CloudVolume / Neuroglancer read it)."""
    return {
        "app": {"supported_api_versions": list(PCG_API_VERSIONS)},
        "chunks_start_at_voxel_offset": True,
        "data_dir": data_dir(cave_url, meta),
        "data_type": "uint64",
        "graph": {
            "bounding_box": list(LEAVES_BOUNDING_BOX),
            "chunk_size": [int(c) for c in meta.chunk_size],
            "cv_mip": 0,
            "fan_out": FAN_OUT,
            "n_bits_for_layer_id": LAYER_BITS,
            "n_layers": int(meta.n_layers),
            "spatial_bit_masks": {str(k): int(v) for k, v in sorted(meta.layout.bits.items())},
        },
        "mesh": MESH_DIR,
        "num_channels": 1,
        "scales": _scales(meta),
        "type": "segmentation",
    }
