"""cavelab's own endpoints: ``<base_url>cave/api/whoami`` and ``<base_url>cave/api/status``."""

from __future__ import annotations

import os
from typing import Any

from tornado.web import authenticated

import cavelab.server.http.host as host_mod
from cavelab.server.http.base import CavelabHandler


class WhoAmIHandler(CavelabHandler):
    """``GET cave/api/whoami``: ``{"name": ..., "groups": [...]}`` of the authenticated user."""

    @authenticated
    def get(self) -> None:
        self.write_json({"name": self.user_name, "groups": self.user_groups})


class StatusHandler(CavelabHandler):
    """``GET cave/api/status``: dataset name, counts and ``n_operations``; never blocks.

    ``l2_features_warm`` tells whether the L2-feature worker has done its one-time start-up work.

    ``state`` is ``"unconfigured"``, ``"loading"``, ``"error"`` (with ``message``) or ``"ready"``.
    """

    @authenticated
    def get(self) -> None:
        self.write_json(status_document(self.host))


def status_document(host: host_mod.EngineHost) -> dict[str, Any]:
    """The status of the host's engine, without waiting for it."""
    out: dict[str, Any] = {
        "dataset_dir": host.settings.dataset_dir or None,
        "server_url": os.environ.get("CAVELAB_SERVER_URL"),  # what kernels of this server get
    }
    if not host.configured:
        out["message"] = host_mod.NO_DATASET_MESSAGE
    state, cg, exc = host.peek()
    out.update(state=state, ready=state == "ready")
    if exc is not None:
        out["message"] = f"{type(exc).__name__}: {exc}"
    if cg is None:
        return out
    st = cg.state
    out.update(
        name=cg.meta.name,
        n_layers=int(cg.meta.n_layers),
        resolution=[float(r) for r in cg.meta.resolution],
        size=[int(s) for s in cg.meta.size],
        n_supervoxels=int(st.n_supervoxels),
        n_nodes=int(st.n_nodes),
        n_edges=int(len(st.e_sv)),
        n_operations=len(cg.operations),
        open_seconds=host.open_seconds,
    )
    out["l2_features_warm"] = host.l2_features_warm()
    return out
