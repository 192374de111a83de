"""L2 cache and skeleton service routes (``<base_url>cave/l2cache/...``, ``.../skeletoncache/...``).

The engine side is :class:`cavelab.server.morphology.service.MorphologyService`; these handlers
only parse, call it in the engine pool and encode (JSON, or CAVE's gzip files for skeletons).
"""

from __future__ import annotations

import gzip
import json
from typing import Any

from tornado.web import authenticated

from cavelab.server.errors import InputError, NotFoundError
from cavelab.server.http import documents
from cavelab.server.http.base import CavelabHandler, dumps

MAX_L2_IDS = 200_000  # per attributes request
MAX_BULK_SKELETONS = 500  # per bulk request (caveclient's fetch_skeletons limit)
SKELETON_VERSIONS = (-1, 0, 1, 2, 3, 4)


class MorphologyHandler(CavelabHandler):
    async def service(self, table: str | None = None):
        cg = await self.graph(table) if table is not None else await self.engine()
        return await self.host.morphology(cg)


class TableMappingHandler(MorphologyHandler):
    """``GET l2cache/api/v1/table_mapping``: this graph has an L2 cache."""

    @authenticated
    async def get(self) -> None:
        cg = await self.engine()
        self.write_json({cg.meta.name: {"l2cache_id": cg.meta.name, "cv_path": documents.segmentation_source(self.graphene_base(), cg.meta)}})


class AttributeMetadataHandler(MorphologyHandler):
    """``GET l2cache/api/v1/attribute_metadata``: ``{name: dtype}``."""

    @authenticated
    async def get(self) -> None:
        svc = await self.service()
        self.write_json(svc.attribute_metadata())


class AttributesHandler(MorphologyHandler):
    """``POST l2cache/api/v1/table/{t}/attributes``: features of L2 IDs (``{}`` for non-L2 IDs)."""

    @authenticated
    async def post(self, table: str) -> None:
        svc = await self.service(table)
        ids = self.body_ids("l2_ids")
        if ids.size > MAX_L2_IDS:
            raise InputError(f"{ids.size} L2 IDs in one request; the limit is {MAX_L2_IDS}")
        names_arg = self.arg("attribute_names")
        names = [n for n in names_arg.split(",") if n] if names_arg else None
        # keys are the IDs as strings (also with int64_as_str): caveclient indexes by str(id)
        body = await self.call(lambda: dumps({str(k): v for k, v in svc.l2_data(ids, names).items()}))
        self.finish(body)


class SkeletonHandler(MorphologyHandler):
    """``GET skeletoncache/api/v1/{ds}/async/get_skeleton/{version}/{root}/{fmt}`` (gzip file)."""

    @authenticated
    async def get(self, datastack: str, version: str, root: str, fmt: str) -> None:
        svc = await self.service()
        _check_datastack(svc, datastack)
        _check_version(version)
        root_id = self.path_id(root, "root ID")
        data = await self.call(lambda: _encode_skeleton(svc, root_id, fmt, int(version)))
        self.finish(data, set_content_type="application/octet-stream")


class BulkSkeletonsHandler(MorphologyHandler):
    """``GET skeletoncache/api/v1/{ds}/bulk/get_skeletons/{version}/{fmt}/{gen}/{ids}``: hex gzip per root."""

    @authenticated
    async def get(self, datastack: str, version: str, fmt: str, gen: str, ids: str) -> None:
        svc = await self.service()
        _check_datastack(svc, datastack)
        _check_version(version)
        roots = [self.path_id(x, "root ID") for x in ids.split(",") if x.strip()]
        self.write_json(await self.call(lambda: _bulk(svc, roots, fmt, int(version))))


class CachedSkeletonsHandler(MorphologyHandler):
    """``POST skeletoncache/api/v1/{ds}/bulk/get_cached_skeletons/{version}/{fmt}``."""

    @authenticated
    async def post(self, datastack: str, version: str, fmt: str) -> None:
        svc = await self.service()
        _check_datastack(svc, datastack)
        _check_version(version)
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("root_ids"), list):
            raise InputError('the body must be {"root_ids": [...]}')
        roots = [self.path_id(str(x), "root ID") for x in body["root_ids"]]
        self.write_json(await self.call(lambda: _bulk(svc, roots, fmt, int(version))))


class SkeletonsExistHandler(MorphologyHandler):
    """``POST skeletoncache/api/v1/{ds}/precomputed/skeleton/exists``: skeletons are made on demand."""

    @authenticated
    async def post(self, datastack: str) -> None:
        svc = await self.service()
        _check_datastack(svc, datastack)
        body = self.json_body() or {}
        roots = body.get("root_ids") if isinstance(body, dict) else None
        if not isinstance(roots, list):
            raise InputError('the body must be {"root_ids": [...]}')
        ok = await self.call(svc.valid_roots, [int(r) for r in roots])
        self.write_json({str(r): bool(v) for r, v in zip(roots, ok)})


class SummaryHandler(MorphologyHandler):
    """``POST cave/api/morphology/{ds}/summary`` ``{"root_ids": [...]}``: volume, area, cable, bbox."""

    @authenticated
    async def post(self, datastack: str) -> None:
        svc = await self.service()
        _check_datastack(svc, datastack)
        roots = self.body_ids("root_ids")
        if roots.size > MAX_BULK_SKELETONS:
            raise InputError(f"{roots.size} roots in one request; the limit is {MAX_BULK_SKELETONS}")
        self.write_json(await self.call(svc.summaries, roots.tolist()))


class RootMeshHandler(MorphologyHandler):
    """``GET cave/api/morphology/{ds}/mesh/{root}``: the stitched (closed) mesh of a root in
    neuroglancer's legacy precomputed format (uint32 vertex count, float32 nm vertices, uint32
    triangles); ``cavelab.kernel_ext.root_mesh`` reads it into numpy arrays."""

    @authenticated
    async def get(self, datastack: str, root: str) -> None:
        svc = await self.service()
        _check_datastack(svc, datastack)
        root_id = self.path_id(root, "root ID")
        meshes = await self.host.meshes(svc.cg)
        mesh = await self.call(meshes.root_mesh, root_id)
        self.write_binary(mesh.to_precomputed())


def _check_datastack(svc: Any, datastack: str) -> None:
    if datastack != svc.cg.meta.name:
        raise NotFoundError(f"unknown datastack {datastack!r}; this server serves {svc.cg.meta.name!r}")


def _check_version(version: str) -> None:
    try:
        v = int(version)
    except ValueError as e:
        raise InputError(f"skeleton version must be an integer, got {version!r}") from e
    if v not in SKELETON_VERSIONS:
        raise InputError(f"unknown skeleton version {v}; versions: {list(SKELETON_VERSIONS)}")


def _encode_skeleton(svc: Any, root: int, fmt: str, version: int) -> bytes:
    sk = svc.skeleton(root)
    if fmt in ("flatdict", "dict", "json"):
        d = sk.to_dict()
        d.setdefault("meta", {}).update({"root_id": int(root), "skeleton_version": version})
        text = json.dumps(d, separators=(",", ":"))
    elif fmt in ("swccompressed", "swc"):
        text = sk.to_swc()
    else:
        raise InputError(f"unknown skeleton format {fmt!r}; use flatdict or swccompressed")
    return gzip.compress(text.encode(), compresslevel=5)


def _bulk(svc: Any, roots: list[int], fmt: str, version: int) -> dict[str, str]:
    if len(roots) > MAX_BULK_SKELETONS:
        raise InputError(f"{len(roots)} roots in one request; the limit is {MAX_BULK_SKELETONS}")
    valid = svc.valid_roots(roots)
    out: dict[str, str] = {}
    for r, ok in zip(roots, valid):
        out[str(r)] = _encode_skeleton(svc, r, fmt, version).hex() if ok else "invalid_rid"
    return out


_T = r"(?P<table>[^/]+)"
_DS = r"(?P<datastack>[^/]+)"
_V = r"(?P<version>-?\d+)"
S = f"skeletoncache/api/v1/{_DS}"

MORPHOLOGY_ROUTES: list[tuple[str, type]] = [
    ("l2cache/api/v1/table_mapping", TableMappingHandler),
    ("l2cache/api/v1/attribute_metadata", AttributeMetadataHandler),
    (f"l2cache/api/v1/table/{_T}/attributes", AttributesHandler),
    (f"{S}/async/get_skeleton/{_V}/(?P<root>[^/]+)/(?P<fmt>[^/]+)", SkeletonHandler),
    (f"{S}/bulk/get_skeletons/{_V}/(?P<fmt>[^/]+)/(?P<gen>[^/]+)/(?P<ids>[^/]+)", BulkSkeletonsHandler),
    (f"{S}/bulk/get_cached_skeletons/{_V}/(?P<fmt>[^/]+)", CachedSkeletonsHandler),
    (f"{S}/precomputed/skeleton/exists", SkeletonsExistHandler),
    (f"api/morphology/{_DS}/summary", SummaryHandler),
    (f"api/morphology/{_DS}/mesh/(?P<root>[^/]+)", RootMeshHandler),
]
