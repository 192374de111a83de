"""ChunkedGraph reads (``<base_url>cave/segmentation/...``, PyChunkedGraph API v1).

``P = segmentation/api/v1/table/{t}``. Each handler parses, makes one engine call in the pool (a single
root lookup is answered on the loop when the read lock is free), and serialises; IDs become strings when ``int64_as_str`` is true.
"""

from __future__ import annotations

import numpy as np
from tornado.web import authenticated

from cavelab.server.http import documents, params
from cavelab.server.http.base import CavelabHandler, encode_ids


class GraphInfoHandler(CavelabHandler):
    """``GET segmentation/table/{t}/info``: the graphene info (CloudVolume, Neuroglancer)."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        self.write_json(documents.graphene_info(self.cave_url(), cg.meta))


class RootHandler(CavelabHandler):
    """``GET P/node/{id}/root``: ``{"root_id": id}`` (``timestamp``, ``stop_layer``)."""

    @authenticated
    async def get(self, table: str, node_id: str) -> None:
        cg = await self.graph(table)
        node = self.path_id(node_id)
        ts, stop = self.timestamp_arg(), self.int_arg("stop_layer")
        # microseconds of work: answered on the loop when no edit holds the lock, else in the pool
        root = cg.try_get_root_now(node, ts) if stop is None else None
        if root is None:
            root = await self.call(cg.get_root, node, ts, stop)
        self.write_json({"root_id": self.id_out(root)})


class RootsBinaryHandler(CavelabHandler):
    """``POST P/roots_binary``: raw uint64 in, raw uint64 out (0 for unknown IDs)."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        ids = params.parse_uint64_body(self.request.body)
        ts, stop = self.timestamp_arg(), self.int_arg("stop_layer")
        if not ids.size:
            self.write_binary(b"")
            return
        roots = await self.call(cg.get_roots, ids, ts, stop)
        self.write_binary(np.asarray(roots, dtype="<u8").tobytes())


class RootsHandler(CavelabHandler):
    """``POST P/roots``: JSON ``{"node_ids": [...]}`` -> ``{"root_ids": [...]}``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        ids = self.body_ids("node_ids")
        ts, stop = self.timestamp_arg(), self.int_arg("stop_layer")
        roots = await self.call(cg.get_roots, ids, ts, stop) if ids.size else ids
        self.write_json({"root_ids": self.ids_out(roots)})


class LeavesHandler(CavelabHandler):
    """``GET P/node/{id}/leaves``: ``{"leaf_ids": [...]}`` (``bounds``, ``stop_layer``)."""

    @authenticated
    async def get(self, table: str, node_id: str) -> None:
        cg = await self.graph(table)
        node = self.path_id(node_id)
        bounds, stop = self.bounds_arg(), self.int_arg("stop_layer", 1)
        await self.reply_from_pool(
            cg.get_leaves, node, bounds, stop, build=lambda r, s: {"leaf_ids": encode_ids(r, s)}
        )


class LeavesManyHandler(CavelabHandler):
    """``POST P/node/leaves_many``: ``{"<node>": [leaves], ...}``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        ids = self.body_ids("node_ids")
        bounds, stop = self.bounds_arg(), self.int_arg("stop_layer", 1)
        await self.reply_from_pool(
            cg.get_leaves_many, ids, bounds, stop,
            build=lambda r, s: {str(k): encode_ids(v, s) for k, v in r.items()},
        )


class ChildrenHandler(CavelabHandler):
    """``GET P/node/{id}/children``: ``{"children_ids": [...]}``."""

    @authenticated
    async def get(self, table: str, node_id: str) -> None:
        cg = await self.graph(table)
        children = await self.call(cg.get_children, self.path_id(node_id))
        self.write_json({"children_ids": self.ids_out(children)})


class IsLatestRootsHandler(CavelabHandler):
    """``POST P/is_latest_roots``: ``{"is_latest": [bool, ...]}``."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        ids = self.body_ids("node_ids")
        ts = self.timestamp_arg()
        latest = await self.call(cg.is_latest_roots, ids, ts) if ids.size else []
        self.write_json({"is_latest": [bool(x) for x in latest]})


class RootTimestampsHandler(CavelabHandler):
    """``POST P/root_timestamps``: creation (or, with ``latest``, expiry) time in float seconds."""

    @authenticated
    async def post(self, table: str) -> None:
        cg = await self.graph(table)
        ids = self.body_ids("node_ids")
        latest, ts = self.bool_arg("latest", False), self.timestamp_arg()
        times = await self.call(cg.root_timestamps, ids, latest, ts) if ids.size else []
        self.write_json({"timestamp": [float(t) for t in times]})


class ValidNodesHandler(CavelabHandler):
    """``GET P/valid_nodes`` (JSON body on GET): ``{"valid_roots": [ids that exist]}``."""

    @authenticated
    async def get(self, table: str) -> None:
        cg = await self.graph(table)
        ids = self.body_ids("node_ids")
        start, end = self.timestamp_arg("start_timestamp"), self.timestamp_arg("end_timestamp")
        valid = await self.call(cg.valid_nodes, ids, start, end) if ids.size else ids
        self.write_json({"valid_roots": self.ids_out(valid)})

    post = get


class Level2GraphHandler(CavelabHandler):
    """``GET P/node/{id}/lvl2_graph``: ``{"edge_graph": [[l2a, l2b], ...]}`` + ``Used-Bounds``."""

    @authenticated
    async def get(self, table: str, node_id: str) -> None:
        cg = await self.graph(table)
        node, bounds = self.path_id(node_id), self.bounds_arg()
        self.set_header("Used-Bounds", "true" if bounds is not None else "false")
        await self.reply_from_pool(
            cg.level2_graph, node, bounds,
            build=lambda r, s: {"edge_graph": encode_ids(np.asarray(r).reshape(-1, 2), s)},
        )


class SubgraphHandler(CavelabHandler):
    """``GET P/node/{id}/subgraph``: supervoxel edge pairs, affinities and areas."""

    @authenticated
    async def get(self, table: str, node_id: str) -> None:
        cg = await self.graph(table)
        node, bounds = self.path_id(node_id), self.bounds_arg()
        await self.reply_from_pool(
            cg.subgraph, node, bounds,
            build=lambda r, s: {
                "nodes": encode_ids(np.asarray(r[0]).reshape(-1, 2), s),
                "affinities": np.asarray(r[1], dtype=np.float64).tolist(),
                "areas": np.asarray(r[2], dtype=np.float64).tolist(),
            },
        )
