"""Mesh routes: neuroglancer's graphene meshes and the precomputed volume under ``data_dir``.

* ``GET|POST meshing/api/v1/table/{t}/manifest/{id}:{lod}`` (``verify``, ``prepend_seg_ids``,
  ``return_seg_ids``): ``{"fragments": [...]}``, one per L2 node of the node with a surface,
  PyChunkedGraph's answer; with ``prepend_seg_ids`` each entry is ``~{l2}:{fragment}``
  (neuroglancer keys its fragment cache by the part before the first ``:``).
* ``GET precomputed/{ds}/graphene_meshes/info``: a ``neuroglancer_legacy_mesh`` with
  ``sharding``, so neuroglancer reads the fragments from ``.../dynamic/{fragment}``;
* ``GET precomputed/{ds}/graphene_meshes/dynamic/{fragment}``: the L2 mesh, Draco-encoded (nm).
* ``GET precomputed/{ds}/info`` and ``precomputed/{ds}/{key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}``:
  the supervoxel volume as raw precomputed chunks (little-endian uint64, x fastest).

The engine side is :class:`cavelab.server.morphology.mesh_service.MeshService`; these handlers
parse, call it in the engine pool and encode.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from tornado.web import authenticated

from cavelab.server.errors import InputError, NotFoundError
from cavelab.server.http import documents
from cavelab.server.http.base import CavelabHandler

_CHUNK = re.compile(r"^(\d+)-(\d+)_(\d+)-(\d+)_(\d+)-(\d+)$")


class MeshingHandler(CavelabHandler):
    async def service(self, cg: Any) -> Any:
        return await self.host.meshes(cg)

    async def dataset(self, name: str) -> Any:
        cg = await self.engine()
        if name != cg.meta.name:
            raise NotFoundError(f"unknown dataset {name!r}; this server serves {cg.meta.name!r}", dataset=name)
        return cg


class ManifestHandler(MeshingHandler):
    """``GET|POST meshing/api/v1/table/{t}/manifest/{id}:{lod}``: the node's mesh fragments."""

    @authenticated
    async def get(self, table: str, node_id: str, lod: str) -> None:
        cg = await self.graph(table)
        node = self.path_id(node_id, "node ID")
        if not lod.isdigit():
            raise InputError(f"the level of detail must be a non-negative integer, got {lod!r}")
        verify = self.bool_arg("verify", False)
        prepend = self.bool_arg("prepend_seg_ids", False)
        return_ids = self.bool_arg("return_seg_ids", False)
        svc = await self.service(cg)

        def build() -> dict[str, Any]:
            from cavelab.server.morphology.mesh_service import fragment_name

            rows = svc.manifest(node, verify=verify)
            names = [fragment_name(i, m, cg.meta) for i, m in rows]
            frags = [f"~{i}:{n}" for (i, _), n in zip(rows, names)] if prepend else names
            out: dict[str, Any] = {"fragments": frags}
            if return_ids:
                out["seg_ids"] = [int(i) for i, _ in rows]
            return out

        self.write_json(await self.call(build))

    post = get


class MeshInfoHandler(MeshingHandler):
    """``GET precomputed/{ds}/graphene_meshes/info``."""

    @authenticated
    async def get(self, name: str) -> None:
        await self.dataset(name)
        self.write_json(documents.mesh_info())


class FragmentHandler(MeshingHandler):
    """``GET precomputed/{ds}/graphene_meshes/dynamic/{fragment}``: one L2 mesh (Draco)."""

    @authenticated
    async def get(self, name: str, fragment: str) -> None:
        from cavelab.server.morphology.mesh_service import parse_fragment

        cg = await self.dataset(name)
        l2 = parse_fragment(fragment)
        svc = await self.service(cg)

        def encode() -> bytes:
            m = svc.l2_mesh(l2)
            if not m.n_faces:
                raise NotFoundError(f"L2 node {l2} has no surface of its own (it lies inside its cell)", node_id=l2)
            return m.to_draco()

        data = await self.call(encode)
        self.finish(data, set_content_type="application/octet-stream")


class VolumeInfoHandler(MeshingHandler):
    """``GET precomputed/{ds}/info``: the supervoxel volume's precomputed info."""

    @authenticated
    async def get(self, name: str) -> None:
        cg = await self.dataset(name)
        self.write_json(documents.precomputed_info(cg.meta))


class VolumeChunkHandler(MeshingHandler):
    """``GET precomputed/{ds}/{key}/{x0}-{x1}_{y0}-{y1}_{z0}-{z1}``: a raw chunk of supervoxel IDs."""

    @authenticated
    async def get(self, name: str, key: str, box: str) -> None:
        cg = await self.dataset(name)
        meta = cg.meta
        if key != documents._scale_key(meta.resolution):
            raise NotFoundError(f"unknown scale {key!r}; the volume has {documents._scale_key(meta.resolution)!r}")
        m = _CHUNK.match(box)
        if m is None:
            raise InputError(f"malformed chunk name {box!r}; expected x0-x1_y0-y1_z0-z1")
        v = np.array([int(x) for x in m.groups()], dtype=np.int64).reshape(3, 2)
        lo, hi = v[:, 0], v[:, 1]
        off = np.asarray(meta.voxel_offset, dtype=np.int64)
        end = off + np.asarray(meta.size, dtype=np.int64)
        cs = np.asarray(meta.chunk_size, dtype=np.int64)
        if np.any(lo < off) or np.any(hi > end) or np.any(hi <= lo) or np.any((lo - off) % cs) or np.any(hi - lo > cs):
            raise InputError(f"chunk {box!r} is not a chunk of the volume (chunks of {cs.tolist()} from {off.tolist()} to {end.tolist()})")

        def read() -> bytes:
            block = cg.segmentation.read_box(lo, hi)
            return np.asarray(block, dtype="<u8").tobytes(order="F")

        self.finish(await self.call(read), set_content_type="application/octet-stream")


_T = r"(?P<table>[^/]+)"
_DS = r"(?P<name>[^/]+)"
MESHING_GRAPHENE_ROUTES: list[tuple[str, type]] = [
    (f"meshing/api/v1/table/{_T}/manifest/(?P<node_id>[^/:]+):(?P<lod>[^/]+)", ManifestHandler),
]
"""Routes under the graphene base (also at the host root when the server runs at "/")."""

MESHING_ROUTES: list[tuple[str, type]] = [
    *MESHING_GRAPHENE_ROUTES,
    (f"precomputed/{_DS}/{documents.MESH_DIR}/info", MeshInfoHandler),
    (f"precomputed/{_DS}/{documents.MESH_DIR}/dynamic/(?P<fragment>[^/]+)", FragmentHandler),
    (f"precomputed/{_DS}/info", VolumeInfoHandler),
    (f"precomputed/{_DS}/(?P<key>[^/]+)/(?P<box>[^/]+)", VolumeChunkHandler),
]
