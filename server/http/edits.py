"""ChunkedGraph edits: merge, split, split preview, undo and redo (``P = segmentation/api/v1/table/{t}``).

Points are ``[id, x_nm, y_nm, z_nm]``; ``id`` is a supervoxel or a current root/node. The user
recorded with each edit is the authenticated Jupyter (or JupyterHub) user. ``priority`` is
accepted and ignored.
"""

from __future__ import annotations

from typing import Any

from tornado.web import authenticated

from cavelab.server.errors import InputError
from cavelab.server.http import params
from cavelab.server.http.base import CavelabHandler


class EditHandler(CavelabHandler):
    """Shared body parsing and the edit reply."""

    def split_body(self) -> tuple[list[list[Any]], list[list[Any]]]:
        body = self.json_body()
        if not isinstance(body, dict) or "sources" not in body or "sinks" not in body:
            raise InputError(
                'a split body must be {"sources": [[id, x, y, z], ...], "sinks": [[id, x, y, z], ...]} (nm)'
            )
        sources = params.point_list(body["sources"], "sources")
        sinks = params.point_list(body["sinks"], "sinks")
        if not sources or not sinks:
            raise InputError("a split needs at least one source and one sink point")
        return sources, sinks

    def operation_id(self) -> int:
        body = self.json_body()
        if not isinstance(body, dict) or "operation_id" not in body:
            raise InputError('the body must be {"operation_id": <int>}')
        return params.parse_id(body["operation_id"], "operation_id")

    def write_edit(self, result: Any) -> None:
        self.write_json(
            {
                "operation_id": int(result.operation_id),
                "new_root_ids": self.ids_out(result.new_root_ids),
            }
        )


class MergeHandler(EditHandler):
    """``POST P/merge``: body ``[[id, x, y, z], [id, x, y, z]]`` (nm)."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        points = params.point_list(self.json_body(), "merge points")
        if len(points) != 2:
            raise InputError(
                f"a merge needs exactly two points [[id, x, y, z], [id, x, y, z]], got {len(points)}"
            )
        result = await self.call(cg.merge, points, user=self.user_name)
        self.write_edit(result)


class SplitHandler(EditHandler):
    """``POST P/split``: min-cut between ``sources`` and ``sinks``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        sources, sinks = self.split_body()
        result = await self.call(cg.split, sources, sinks, user=self.user_name)
        self.write_edit(result)


class SplitPreviewHandler(EditHandler):
    """``POST P/graph/split_preview``: the components a split would produce, without editing."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        sources, sinks = self.split_body()
        out = await self.call(cg.split_preview, sources, sinks)
        self.write_json(
            {
                "supervoxel_connected_components": [
                    self.ids_out(c) for c in out["supervoxel_connected_components"]
                ],
                "illegal_split": bool(out["illegal_split"]),
            }
        )


class UndoHandler(EditHandler):
    """``POST P/undo``: body ``{"operation_id": int}``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        op = self.operation_id()
        self.write_edit(await self.call(cg.undo, op, user=self.user_name))


class RedoHandler(EditHandler):
    """``POST P/redo``: body ``{"operation_id": int}``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        op = self.operation_id()
        self.write_edit(await self.call(cg.redo, op, user=self.user_name))
