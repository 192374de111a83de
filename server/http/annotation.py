"""Annotation engine and schema routes.

``A = annotation/api/v2/aligned_volume/{av}``: table CRUD and annotation CRUD, as caveclient's
``client.annotation`` calls them; ``schema/api/v2/...``: the schema registry. cavelab adds one
route of its own, ``POST cave/api/annotation/{av}/table/{t}/bulk``, which takes a whole
Parquet file or Arrow IPC stream in one request (the bulk path: no per-row HTTP, no 10,000-row cap).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tornado.web import authenticated

from cavelab.server.annotations import schemas
from cavelab.server.errors import InputError, NotFoundError
from cavelab.server.http.base import CavelabHandler

INSERT_LIMIT = 10_000  # rows per JSON request, as CAVE (the bulk route has no cap)


class AnnotationHandler(CavelabHandler):
    async def ann(self, aligned_volume: str):
        cg = await self.engine()
        if aligned_volume != cg.meta.name:
            raise NotFoundError(
                f"unknown aligned volume {aligned_volume!r}; this server serves {cg.meta.name!r}"
            )
        return await self.host.annotations()

    def body_dict(self) -> dict[str, Any]:
        body = self.json_body()
        if not isinstance(body, dict):
            raise InputError("the body must be a JSON object")
        return body

    def annotations_body(self) -> list[dict[str, Any]]:
        rows = self.body_dict().get("annotations")
        if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
            raise InputError('the body must be {"annotations": [{...}, ...]} with at least one annotation')
        if len(rows) > INSERT_LIMIT:
            raise InputError(
                f"{len(rows)} annotations in one request; the limit is {INSERT_LIMIT} (caveclient's "
                "stage_annotations batches for you; or use cavelab's bulk route for millions)"
            )
        return rows


class TablesHandler(AnnotationHandler):
    """``GET/POST/PUT A/table``: list, create, update metadata."""

    @authenticated
    async def get(self, aligned_volume: str) -> None:
        ann = await self.ann(aligned_volume)
        self.write_json(ann.table_names())

    @authenticated
    async def post(self, aligned_volume: str) -> None:
        ann = await self.ann(aligned_volume)
        body = self.body_dict()
        md = body.get("metadata") or {}
        if not isinstance(md, dict):
            raise InputError("metadata must be an object")
        for key in ("schema_type", "table_name"):
            if not isinstance(body.get(key), str):
                raise InputError(f"creating a table needs {key!r} (a string)")
        tmd = md.get("table_metadata") or {}
        try:
            res = [md["voxel_resolution_x"], md["voxel_resolution_y"], md["voxel_resolution_z"]]
        except KeyError as e:
            raise InputError(f"metadata needs {e.args[0]!r}") from e
        await self.call(
            ann.create_table,
            body["table_name"],
            body["schema_type"],
            md.get("description") or "",
            res,
            user=self.user_name,
            groups=self.user_groups,
            read_permission=md.get("read_permission", "PUBLIC"),
            write_permission=md.get("write_permission", "PRIVATE"),
            reference_table=tmd.get("reference_table"),
            track_target_id_updates=bool(tmd.get("track_target_id_updates") or False),
            notice_text=md.get("notice_text"),
            flat_segmentation_source=md.get("flat_segmentation_source"),
        )
        self.write_json(f"Table {body['table_name']} created", status=200)

    @authenticated
    async def put(self, aligned_volume: str) -> None:
        ann = await self.ann(aligned_volume)
        body = self.body_dict()
        name, md = body.get("table_name"), body.get("metadata")
        if not isinstance(name, str) or not isinstance(md, dict):
            raise InputError('the body must be {"table_name": ..., "metadata": {...}}')
        doc = await self.call(ann.update_table_metadata, name, md, user=self.user_name, groups=self.user_groups)
        self.write_json(doc)


class TableHandler(AnnotationHandler):
    """``GET/DELETE A/table/{t}``."""

    @authenticated
    async def get(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        self.write_json(ann.table_metadata(table, self.user_name, self.user_groups))

    @authenticated
    async def delete(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        await self.call(ann.delete_table, table, user=self.user_name, groups=self.user_groups)
        self.write_json(True)


class CountHandler(AnnotationHandler):
    """``GET A/table/{t}/count``: annotations alive now."""

    @authenticated
    async def get(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        self.write_json(await self.call(ann.count, table, user=self.user_name, groups=self.user_groups))


class AnnotationsHandler(AnnotationHandler):
    """``GET/POST/PUT/DELETE A/table/{t}/annotations``."""

    @authenticated
    async def get(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        raw = self.arg("annotation_ids")
        if not raw:
            raise InputError("give annotation_ids=1,2,3")
        try:
            ids = [int(x) for x in raw.replace("[", "").replace("]", "").split(",") if x.strip()]
        except ValueError as e:
            raise InputError(f"annotation_ids must be comma-separated integers, got {raw!r}") from e
        out = await self.call(ann.get_annotations, table, ids, user=self.user_name, groups=self.user_groups)
        self.write_json(out)

    @authenticated
    async def post(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        rows = self.annotations_body()
        ids = await self.call(ann.insert, table, rows, user=self.user_name, groups=self.user_groups)
        self.write_json([int(i) for i in ids])

    @authenticated
    async def put(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        rows = self.annotations_body()
        mapping = await self.call(ann.update, table, rows, user=self.user_name, groups=self.user_groups)
        self.write_json({str(k): int(v) for k, v in mapping.items()})

    @authenticated
    async def delete(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        ids = self.body_dict().get("annotation_ids")
        if not isinstance(ids, list):
            raise InputError('the body must be {"annotation_ids": [1, 2, ...]}')
        out = await self.call(ann.delete, table, ids, user=self.user_name, groups=self.user_groups)
        self.write_json(out)


class BulkHandler(AnnotationHandler):
    """``POST cave/api/annotation/{av}/table/{t}/bulk``: a Parquet file or Arrow IPC stream body.

    Flat columns as in query results (``pre_pt_position`` as a list column or split
    ``pre_pt_position_x/_y/_z``). All rows are inserted or none. Answers ``{"n": rows,
    "first_id": id, "last_id": id}``.
    """

    @authenticated
    async def post(self, aligned_volume: str, table: str) -> None:
        ann = await self.ann(aligned_volume)
        body = self.request.body

        def work() -> Any:
            frame = _read_table(body)
            return ann.insert(table, frame=frame, user=self.user_name, groups=self.user_groups)

        ids = await self.call(work)
        self.write_json({"n": int(ids.size), "first_id": int(ids[0]), "last_id": int(ids[-1])})


def _read_table(data: bytes) -> pa.Table:
    if not data:
        raise InputError("the bulk body is empty: send a Parquet file or an Arrow IPC stream")
    try:
        if data[:4] == b"PAR1":
            return pq.read_table(pa.BufferReader(data))
        with pa.ipc.open_stream(pa.py_buffer(data)) as r:
            return r.read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"the bulk body is not a Parquet file or Arrow IPC stream: {e}") from e


# ------------------------------------------------------------------------- schema
class SchemaTypesHandler(CavelabHandler):
    """``GET schema/api/v2/type``: schema names."""

    @authenticated
    def get(self) -> None:
        self.require_dataset()
        self.write_json(schemas.schema_names())


class SchemaTypeHandler(CavelabHandler):
    """``GET schema/api/v2/type/{name}``: one JSON schema."""

    @authenticated
    def get(self, name: str) -> None:
        self.require_dataset()
        self.write_json(schemas.get_schema(name).jsonschema())


class SchemaMultiHandler(CavelabHandler):
    """``POST schema/api/v2/types?schema_names=a,b``: ``{name: schema}``."""

    @authenticated
    def post(self) -> None:
        self.require_dataset()
        names = [n for n in (self.arg("schema_names") or "").split(",") if n]
        if not names:
            raise InputError("give schema_names=a,b")
        self.write_json({n: schemas.get_schema(n).jsonschema() for n in names})


class SchemaAllHandler(CavelabHandler):
    """``GET schema/api/v2/types_all``: every schema."""

    @authenticated
    def get(self) -> None:
        self.require_dataset()
        self.write_json(schemas.all_jsonschemas())


_AV = r"(?P<aligned_volume>[^/]+)"
_TB = r"(?P<table>[^/]+)"
A = f"annotation/api/v2/aligned_volume/{_AV}"

ANNOTATION_ROUTES: list[tuple[str, type]] = [
    (f"{A}/table", TablesHandler),
    (f"{A}/table/{_TB}", TableHandler),
    (f"{A}/table/{_TB}/count", CountHandler),
    (f"{A}/table/{_TB}/annotations", AnnotationsHandler),
    (f"api/annotation/{_AV}/table/{_TB}/bulk", BulkHandler),
    ("schema/api/v2/type", SchemaTypesHandler),
    ("schema/api/v2/type/(?P<name>[^/]+)", SchemaTypeHandler),
    ("schema/api/v2/types", SchemaMultiHandler),
    ("schema/api/v2/types_all", SchemaAllHandler),
]
