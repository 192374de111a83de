"""ChunkedGraph history: lineage, past IDs, change/merge logs, operations, delta roots.

``P = segmentation/api/v1/table/{t}``. Missing ``timestamp_past``/``timestamp_future`` default
to the graph's beginning / now; unknown query parameters (e.g. caveclient's stray
``name=timestamp_future``) are ignored.
"""

from __future__ import annotations

import json
from typing import Any

from tornado.web import authenticated

from cavelab.server.engine.timestamps import ms_to_iso
from cavelab.server.errors import InputError
from cavelab.server.http import params
from cavelab.server.http.base import CavelabHandler

UNDO_KINDS = ("undo", "redo")


def frame_json(columns: dict[str, list[Any]]) -> str:
    """pandas ``DataFrame(columns).to_json()`` (column orientation), as caveclient expects."""
    import pandas as pd

    return pd.DataFrame(columns).to_json()


class LineageGraphMultipleHandler(CavelabHandler):
    """``POST P/lineage_graph_multiple``: networkx node-link JSON with key ``links``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        roots = self.body_ids("root_ids")
        past, future = self.timestamp_arg("timestamp_past"), self.timestamp_arg("timestamp_future")
        self.write_json(await self.call(cg.history().lineage_graph, roots, past, future))


class LineageGraphHandler(CavelabHandler):
    """``GET P/root/{id}/lineage_graph``: the same for one root."""

    @authenticated
    async def get(self, table: str, root_id: str) -> None:
        cg = await self.graph(table)
        root = self.path_id(root_id, "root ID")
        past, future = self.timestamp_arg("timestamp_past"), self.timestamp_arg("timestamp_future")
        self.write_json(await self.call(cg.history().lineage_graph, [root], past, future))


class PastIdMappingHandler(CavelabHandler):
    """``GET P/past_id_mapping`` (JSON body on GET): ``past_id_map`` and ``future_id_map``."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        roots = self.body_ids("root_ids")
        past, future = self.timestamp_arg("timestamp_past"), self.timestamp_arg("timestamp_future")
        out = await self.call(cg.history().past_id_mapping, roots, past, future)
        self.write_json(
            {
                "past_id_map": {k: self.ids_out(v) for k, v in out["past_id_map"].items()},
                "future_id_map": {k: self.id_out(v) for k, v in out["future_id_map"].items()},
            }
        )

    post = get


class ChangeLogHandler(CavelabHandler):
    """``GET P/root/{id}/change_log``: split/merge counts, users, operation and past IDs."""

    @authenticated
    async def get(self, table: str, root_id: str) -> None:
        cg = await self.graph(table)
        root = self.path_id(root_id, "root ID")
        filtered = self.bool_arg("filtered", True)
        self.write_json(await self.call(cg.history().change_log, root, filtered))


class MergeLogHandler(CavelabHandler):
    """``GET P/root/{id}/merge_log``: ``merge_edges`` and ``merge_edge_coords``."""

    @authenticated
    async def get(self, table: str, root_id: str) -> None:
        cg = await self.graph(table)
        root = self.path_id(root_id, "root ID")
        self.write_json(await self.call(cg.history().merge_log, root))


class TabularChangeLogManyHandler(CavelabHandler):
    """``GET P/tabular_change_log_many`` (JSON body on GET): ``{"<root>": "<DataFrame JSON>"}``."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        roots = self.body_ids("root_ids")
        filtered = self.bool_arg("filtered", True)

        def run() -> dict[str, str]:
            h = cg.history()
            return {str(int(r)): frame_json(h.tabular_change_log(int(r), filtered)) for r in roots}

        self.write_json(await self.call(run))

    post = get


class TabularChangeLogHandler(CavelabHandler):
    """``GET P/root/{id}/tabular_change_log``: one root's change log as DataFrame JSON (object)."""

    @authenticated
    async def get(self, table: str, root_id: str) -> None:
        cg = await self.graph(table)
        root = self.path_id(root_id, "root ID")
        filtered = self.bool_arg("filtered", True)

        def run() -> Any:
            return json.loads(frame_json(cg.history().tabular_change_log(root, filtered)))

        self.write_json(await self.call(run))


class OperationDetailsHandler(CavelabHandler):
    """``GET P/operation_details?operation_ids=[1, 2]``: ``{"<op>": {...}}``; 404 for unknown ops."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        values = self.get_query_arguments("operation_ids")  # repeated parameters add up
        if not values:
            raise InputError("give operation_ids=[1, 2] (or repeat operation_ids=1&operation_ids=2)")
        ops = [op for v in values for op in params.parse_id_list_text(v, "operation_ids")]
        self.write_json(await self.call(cg.history().operation_details, ops))


class UserOperationsHandler(CavelabHandler):
    """``GET P/user_operations``: operations (column JSON, ``timestamp`` in ms) in a time window.

    ``user_id`` absent or ``0`` means every user; ``include_undo``/``include_undone`` false drops
    the undo and redo operations themselves.
    """

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        user = self.arg("user_id")
        if user is not None and user.strip() in ("", "0"):
            user = None
        include = self.bool_arg("include_undone", self.bool_arg("include_undo", True))
        start, end = self.timestamp_arg("start_time"), self.timestamp_arg("end_time")
        cols = await self.call(cg.history().user_operations, user, start, end)
        if not include:
            keep = [k not in UNDO_KINDS for k in cols.get("operation_type", [])]
            cols = {c: [v for v, ok in zip(vals, keep) if ok] for c, vals in cols.items()}
        self.write_json(cols)


class DeltaRootsHandler(CavelabHandler):
    """``GET P/delta_roots``: roots that expired / appeared between the two times."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        past = self.timestamp_arg("timestamp_past")
        if past is None:
            raise InputError("timestamp_past is required (float Unix seconds)")
        future = self.timestamp_arg("timestamp_future")
        old, new = await self.call(cg.history().delta_roots, past, future)
        self.write_json({"old_roots": self.ids_out(old), "new_roots": self.ids_out(new)})


class OldestTimestampHandler(CavelabHandler):
    """``GET P/oldest_timestamp``: ``{"iso": "<ISO 8601>"}``, when the graph was created."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        self.write_json({"iso": ms_to_iso(cg.oldest_timestamp())})
