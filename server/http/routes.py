"""The route table: every cavelab/CAVE route under ``<base_url>cave/``.

``setup_handlers(web_app, base_url)`` registers them in one group. Paths never end with a
slash and nothing redirects (caveclient treats any redirect as an auth failure).
"""

from __future__ import annotations

from typing import Any

from jupyter_server.utils import url_path_join

from cavelab.server.http import (
    annotation,
    edits,
    history,
    info,
    materialize,
    meshing,
    morphology,
    segmentation,
    status,
)
from cavelab.server.http.base import PREFIX
from cavelab.server.http.versions import version_routes

_T = r"(?P<table>[^/]+)"
_ID = r"(?P<node_id>[^/]+)"
_ROOT = r"(?P<root_id>[^/]+)"
P = f"segmentation/api/v1/table/{_T}"

# (path relative to <base_url>cave/, handler) -- the chunkedgraph (PCG API v1) routes
SEGMENTATION_ROUTES: list[tuple[str, type]] = [
    (f"segmentation/table/{_T}/info", segmentation.GraphInfoHandler),
    # reads
    (f"{P}/node/{_ID}/root", segmentation.RootHandler),
    (f"{P}/roots_binary", segmentation.RootsBinaryHandler),
    (f"{P}/roots", segmentation.RootsHandler),
    (f"{P}/node/leaves_many", segmentation.LeavesManyHandler),
    (f"{P}/node/{_ID}/leaves", segmentation.LeavesHandler),
    (f"{P}/node/{_ID}/children", segmentation.ChildrenHandler),
    (f"{P}/node/{_ID}/lvl2_graph", segmentation.Level2GraphHandler),
    (f"{P}/node/{_ID}/subgraph", segmentation.SubgraphHandler),
    (f"{P}/is_latest_roots", segmentation.IsLatestRootsHandler),
    (f"{P}/root_timestamps", segmentation.RootTimestampsHandler),
    (f"{P}/valid_nodes", segmentation.ValidNodesHandler),
    # edits
    (f"{P}/merge", edits.MergeHandler),
    (f"{P}/split", edits.SplitHandler),
    (f"{P}/graph/split_preview", edits.SplitPreviewHandler),
    (f"{P}/undo", edits.UndoHandler),
    (f"{P}/redo", edits.RedoHandler),
    # history
    (f"{P}/operation_details", history.OperationDetailsHandler),
    (f"{P}/user_operations", history.UserOperationsHandler),
    (f"{P}/lineage_graph_multiple", history.LineageGraphMultipleHandler),
    (f"{P}/root/{_ROOT}/lineage_graph", history.LineageGraphHandler),
    (f"{P}/past_id_mapping", history.PastIdMappingHandler),
    (f"{P}/root/{_ROOT}/change_log", history.ChangeLogHandler),
    (f"{P}/root/{_ROOT}/merge_log", history.MergeLogHandler),
    (f"{P}/root/{_ROOT}/tabular_change_log", history.TabularChangeLogHandler),
    (f"{P}/tabular_change_log_many", history.TabularChangeLogManyHandler),
    (f"{P}/delta_roots", history.DeltaRootsHandler),
    (f"{P}/oldest_timestamp", history.OldestTimestampHandler),
]

CAVELAB_ROUTES: list[tuple[str, type]] = [
    ("api/whoami", status.WhoAmIHandler),
    ("api/status", status.StatusHandler),
]


def route_table() -> list[tuple[str, type, dict[str, Any]]]:
    """Every route as ``(relative path regex, handler class, initialize kwargs)``."""
    rows: list[tuple[str, type, dict[str, Any]]] = []
    rows += [(p, h, {}) for p, h in CAVELAB_ROUTES]
    rows += version_routes()
    rows += [(p, h, {}) for p, h in info.INFO_ROUTES]
    rows += [(p, h, {}) for p, h in SEGMENTATION_ROUTES]
    rows += [(p, h, {}) for p, h in materialize.MATERIALIZE_ROUTES]
    rows += [(p, h, {}) for p, h in annotation.ANNOTATION_ROUTES]
    rows += [(p, h, {}) for p, h in morphology.MORPHOLOGY_ROUTES]
    rows += [(p, h, {}) for p, h in meshing.MESHING_ROUTES]
    return rows


def setup_handlers(web_app: Any, base_url: str) -> list[str]:
    """Register every route under ``<base_url>cave/``; returns the full path patterns."""
    handlers = []
    for path, handler, kwargs in route_table():
        pattern = url_path_join(base_url, PREFIX, path)
        handlers.append((pattern, handler, kwargs) if kwargs else (pattern, handler))
    if base_url.rstrip("/") == "":
        # CloudVolume's graphene reader (caveclient's skeleton client, neuroglancer tools) only
        # understands ``<host>/segmentation/...`` at the root of the host: on a server at "/"
        # the graph routes are also served there (under JupyterHub's /user/<name>/ they cannot be)
        for path, handler in [*SEGMENTATION_ROUTES, *meshing.MESHING_GRAPHENE_ROUTES]:
            handlers.append((url_path_join("/", path), handler))
    web_app.add_handlers(".*$", handlers)
    return [h[0] for h in handlers]
