"""Materialization engine routes (``<base_url>cave/materialize/...``, API v2 and v3).

``M3 = materialize/api/v3/datastack/{ds}``, ``M2 = .../api/v2/...``. Versions and metadata are
JSON; queries answer an Arrow IPC stream with ``Content-Type: data.arrow`` and a
``dataframe_resolution`` header (or JSON records with ``return_pyarrow=False``), built in the
engine pool. The body format is caveclient's: every filter nested by table name.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from tornado.web import authenticated

from cavelab.server.annotations.query import OPS, Filter, QueryResult, QuerySpec
from cavelab.server.errors import InputError, NotFoundError
from cavelab.server.http.base import CavelabHandler, dumps

FILTER_KEYS = {
    "filter_in_dict": "in",
    "filter_notin_dict": "notin",
    "filter_out_dict": "notin",
    "filter_equal_dict": "equal",
    "filter_greater_dict": "greater",
    "filter_less_dict": "less",
    "filter_greater_equal_dict": "greater_equal",
    "filter_less_equal_dict": "less_equal",
    "filter_spatial_dict": "spatial",
    "filter_regex_dict": "regex",
}
OTHER_KEYS = {
    "tables", "table", "timestamp", "join_tables", "select_columns", "select_column_map",
    "offset", "limit", "suffixes", "suffix_map", "desired_resolution",
}
assert set(FILTER_KEYS.values()) <= set(OPS)


def parse_query_body(body: Any, tables: list[str]) -> tuple[QuerySpec, dict[str, Any]]:
    """caveclient's query body -> :class:`QuerySpec` (tables already resolved by the route)."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InputError("the query body must be a JSON object")
    unknown = set(body) - set(FILTER_KEYS) - OTHER_KEYS
    if unknown:
        raise InputError(f"unknown query keys {sorted(unknown)}; known: {sorted(set(FILTER_KEYS) | OTHER_KEYS)}")
    filters: list[Filter] = []
    for key, op in FILTER_KEYS.items():
        by_table = body.get(key)
        if by_table is None:
            continue
        if not isinstance(by_table, dict):
            raise InputError(f"{key} must be {{table: {{column: value}}}}, got {by_table!r}"[:300])
        for tname, cols in by_table.items():
            if tname not in tables:
                raise InputError(f"{key} names table {tname!r}, which is not in this query {tables}")
            if not isinstance(cols, dict):
                raise InputError(f"{key}[{tname!r}] must be {{column: value}}, got {cols!r}"[:300])
            for col, val in cols.items():
                if op in ("in", "notin") and not isinstance(val, list):
                    raise InputError(f"{key}[{tname!r}][{col!r}] must be a list of values, got {val!r}"[:300])
                filters.append(Filter(op, tname, str(col), val))
    spec = QuerySpec(tables=list(tables), filters=filters)
    sel = body.get("select_column_map", body.get("select_columns"))
    if sel is not None:
        if isinstance(sel, list) and all(isinstance(c, str) for c in sel):
            spec.select = sel
        elif isinstance(sel, dict) and all(isinstance(v, list) for v in sel.values()):
            for tname in sel:
                if tname not in tables:
                    raise InputError(f"select_columns names table {tname!r}, which is not in this query {tables}")
            spec.select = {k: [str(c) for c in v] for k, v in sel.items()}
        else:
            raise InputError(f"select_columns must be a list of column names or {{table: [columns]}}, got {sel!r}"[:300])
    for key in ("offset", "limit"):
        v = body.get(key)
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, int):
                raise InputError(f"{key} must be an integer, got {v!r}")
            setattr(spec, key, v)
    res = body.get("desired_resolution")
    if res is not None:
        if not isinstance(res, list) or len(res) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in res):
            raise InputError(f"desired_resolution must be [x, y, z] in nm, got {res!r}")
        spec.desired_resolution = tuple(float(x) for x in res)
    suffixes = body.get("suffix_map", body.get("suffixes"))
    if isinstance(suffixes, list):
        suffixes = dict(zip(tables, suffixes))
    if suffixes is not None:
        if not isinstance(suffixes, dict) or not all(isinstance(v, str) for v in suffixes.values()):
            raise InputError(f"suffixes must map table -> suffix, got {suffixes!r}"[:300])
        spec.suffixes = {k: (v if v == "" or v.startswith("_") else f"_{v}") for k, v in suffixes.items()}
    return spec, body


class MaterializeHandler(CavelabHandler):
    """Shared lookups of the materialize routes."""

    async def ann(self, datastack: str):
        cg = await self.engine()
        if datastack != cg.meta.name:
            raise NotFoundError(f"unknown datastack {datastack!r}; this server serves {cg.meta.name!r}")
        return await self.host.annotations()

    def version_arg(self, version: str) -> int:
        try:
            return int(version)
        except ValueError as e:
            raise InputError(f"version must be an integer, got {version!r}") from e

    async def answer_query(self, run) -> None:
        """Run a query in the pool and send Arrow (``data.arrow``) or JSON records."""
        as_arrow = self.bool_arg("return_pyarrow", True) or self.bool_arg("arrow_format", False)
        if self.arg("random_sample") is not None:
            raise InputError("random_sample is not supported by cavelab; page with limit/offset instead")
        zstd = "zstd" in (self.request.headers.get("Accept-Encoding") or "")

        def work() -> tuple[QueryResult, bytes]:
            result: QueryResult = run()
            if as_arrow:
                return result, _ipc_stream(result.table, zstd)
            return result, dumps(_records(result.table)).encode()

        result, payload = await self.call(work)
        self.set_header("dataframe_resolution", ", ".join(str(float(r)) for r in result.resolution))
        for w in result.warnings:
            self.add_header("Warning", w)
        self.finish(payload, set_content_type="data.arrow" if as_arrow else "application/json")


COMPRESS_ABOVE = 8 << 20  # bytes: smaller answers go uncompressed (cheaper on both ends)


def _ipc_stream(table: pa.Table, zstd: bool) -> bytes:
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression="zstd" if zstd and table.nbytes > COMPRESS_ABOVE else None)
    with pa.ipc.new_stream(sink, table.schema, options=opts) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _records(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for r in rows:
        for k, v in r.items():
            if hasattr(v, "isoformat"):
                r[k] = v.isoformat()
    return rows


# ----------------------------------------------------------------------- versions
class VersionsHandler(MaterializeHandler):
    """``GET M3/versions`` (and M2): version numbers (``expired=True`` includes expired ones)."""

    @authenticated
    async def get(self, datastack: str) -> None:
        ann = await self.ann(datastack)
        self.write_json(ann.version_numbers(expired=self.bool_arg("expired", False)))


class VersionHandler(MaterializeHandler):
    """``GET M3/version/{v}``: one version's metadata."""

    @authenticated
    async def get(self, datastack: str, version: str) -> None:
        ann = await self.ann(datastack)
        self.write_json(ann._version(self.version_arg(version)).wire(datastack))


class VersionsMetadataHandler(MaterializeHandler):
    """``GET M3/metadata``: every version's metadata."""

    @authenticated
    async def get(self, datastack: str) -> None:
        ann = await self.ann(datastack)
        nums = ann.version_numbers(expired=self.bool_arg("expired", False))
        self.write_json([ann.versions[n].wire(datastack) for n in nums])


class VersionTablesHandler(MaterializeHandler):
    """``GET M2/version/{v}/tables``: tables present at the version."""

    @authenticated
    async def get(self, datastack: str, version: str) -> None:
        ann = await self.ann(datastack)
        v = ann._version(self.version_arg(version))
        self.write_json(ann.table_names(at=v.time_stamp))


class TableCountHandler(MaterializeHandler):
    """``GET M2/version/{v}/table/{t}/count``: rows of the table at the version."""

    @authenticated
    async def get(self, datastack: str, version: str, table: str) -> None:
        ann = await self.ann(datastack)
        v = self.version_arg(version)
        n = await self.call(ann.count, table, version=v, user=self.user_name, groups=self.user_groups)
        self.write_json(n)


class TableMetadataHandler(MaterializeHandler):
    """``GET M3/version/{v}/table/{t}/metadata``."""

    @authenticated
    async def get(self, datastack: str, version: str, table: str) -> None:
        ann = await self.ann(datastack)
        v = ann._version(self.version_arg(version))
        doc = ann.table_metadata(table, self.user_name, self.user_groups)
        doc["analysisversion_id"] = v.version
        self.write_json(doc)


class TablesMetadataHandler(MaterializeHandler):
    """``GET M3/version/{v}/tables/metadata``: metadata of every readable table."""

    @authenticated
    async def get(self, datastack: str, version: str) -> None:
        ann = await self.ann(datastack)
        ann._version(self.version_arg(version))
        out = []
        for name in ann.table_names():
            if ann.tables[name].meta.may_read(self.user_name, self.user_groups):
                out.append(ann.table_metadata(name))
        self.write_json(out)


class ViewsHandler(MaterializeHandler):
    """``GET M3/version/{v}/views`` and ``.../views/schemas``: no views (``{}``)."""

    @authenticated
    async def get(self, datastack: str, version: str) -> None:
        ann = await self.ann(datastack)
        ann._version(self.version_arg(version))
        self.write_json({})


class CreateVersionHandler(MaterializeHandler):
    """``POST cave/api/materialize/{ds}/version``: make a version now (cavelab's own route).

    Body (all optional): ``{"timestamp": seconds, "keep_forever": bool, "lifetime_days": float}``.
    """

    @authenticated
    async def post(self, datastack: str) -> None:
        ann = await self.ann(datastack)
        body = self.json_body() or {}
        if not isinstance(body, dict):
            raise InputError("the body must be a JSON object")
        v = await self.call(
            ann.create_version,
            body.get("timestamp"),
            lifetime_days=body.get("lifetime_days"),
            keep_forever=bool(body.get("keep_forever", False)),
            user=self.user_name,
        )
        self.write_json(v.wire(datastack) | {"bytes": v.bytes})


# ------------------------------------------------------------------------ queries
class TableQueryHandler(MaterializeHandler):
    """``POST M3/version/{v}/table/{t}/query``: one table at a version."""

    @authenticated
    async def post(self, datastack: str, version: str, table: str) -> None:
        ann = await self.ann(datastack)
        v = self.version_arg(version)
        spec, _ = parse_query_body(self.json_body(), [table])
        spec.count = self.bool_arg("count", False)
        user, groups = self.user_name, self.user_groups
        await self.answer_query(lambda: ann.query(spec, version=v, user=user, groups=groups))


class JoinQueryHandler(MaterializeHandler):
    """``POST M3/version/{v}/query``: joins (``tables: [[t1, c1], [t2, c2], ...]``)."""

    @authenticated
    async def post(self, datastack: str, version: str) -> None:
        ann = await self.ann(datastack)
        v = self.version_arg(version)
        body = self.json_body() or {}
        pairs = body.get("tables") if isinstance(body, dict) else None
        if not isinstance(pairs, list) or not pairs or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
        ):
            raise InputError(f"a join query needs tables: [[table, column], [table, column], ...], got {pairs!r}"[:300])
        tables = [p[0] for p in pairs]
        spec, _ = parse_query_body(body, tables)
        spec.joins = [(pairs[0][0], pairs[0][1], p[0], p[1]) for p in pairs[1:]]
        spec.count = self.bool_arg("count", False)
        user, groups = self.user_name, self.user_groups
        await self.answer_query(lambda: ann.query(spec, version=v, user=user, groups=groups))


class LiveQueryHandler(MaterializeHandler):
    """``POST M3/query``: the live query at ``timestamp`` (exact, no version involved)."""

    @authenticated
    async def post(self, datastack: str) -> None:
        ann = await self.ann(datastack)
        body = self.json_body()
        if not isinstance(body, dict) or not isinstance(body.get("table"), str):
            raise InputError("a live query needs {\"table\": name, \"timestamp\": ISO time, ...}")
        joins = body.get("join_tables") or []
        if not isinstance(joins, list) or not all(
            isinstance(j, list) and len(j) == 4 and all(isinstance(x, str) for x in j) for j in joins
        ):
            raise InputError(f"join_tables must be [[table1, column1, table2, column2], ...], got {joins!r}"[:300])
        tables = [body["table"]]
        for a, _, b, _ in joins:
            tables += [t for t in (a, b) if t not in tables]
        spec, _ = parse_query_body(body, tables)
        spec.joins = [tuple(j) for j in joins]
        spec.count = self.bool_arg("count", False)
        ts = body.get("timestamp")
        strict = not self.bool_arg("allow_invalid_root_ids", False)
        user, groups = self.user_name, self.user_groups
        await self.answer_query(
            lambda: ann.query(spec, ts, user=user, groups=groups, strict_roots=strict)
        )


_DS = r"(?P<datastack>[^/]+)"
_V = r"(?P<version>[^/]+)"
_TB = r"(?P<table>[^/]+)"
M3 = f"materialize/api/v3/datastack/{_DS}"
M2 = f"materialize/api/v2/datastack/{_DS}"

MATERIALIZE_ROUTES: list[tuple[str, type]] = []
for _M in (M3, M2):
    MATERIALIZE_ROUTES += [
        (f"{_M}/versions", VersionsHandler),
        (f"{_M}/version/{_V}", VersionHandler),
        (f"{_M}/metadata", VersionsMetadataHandler),
        (f"{_M}/version/{_V}/tables", VersionTablesHandler),
        (f"{_M}/version/{_V}/tables/metadata", TablesMetadataHandler),
        (f"{_M}/version/{_V}/table/{_TB}/count", TableCountHandler),
        (f"{_M}/version/{_V}/table/{_TB}/metadata", TableMetadataHandler),
        (f"{_M}/version/{_V}/table/{_TB}/query", TableQueryHandler),
        (f"{_M}/version/{_V}/query", JoinQueryHandler),
        (f"{_M}/version/{_V}/views", ViewsHandler),
        (f"{_M}/version/{_V}/views/schemas", ViewsHandler),
        (f"{_M}/query", LiveQueryHandler),
    ]
MATERIALIZE_ROUTES.append((f"api/materialize/{_DS}/version", CreateVersionHandler))
