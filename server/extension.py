"""The Jupyter server extension: one in-process engine and CAVE's REST API under ``<base_url>cave/``.

``load_extension(serverapp)`` is called (lazily) by ``cavelab.server._load_jupyter_server_extension``.
It reads :class:`CavelabConfig`, starts opening the dataset in a background thread, mounts the
routes of :mod:`cavelab.server.http.routes` and exports ``CAVELAB_SERVER_URL`` and
``CAVELAB_TOKEN`` so kernels started by this server can reach it with caveclient::

    jupyter server --CavelabConfig.dataset_dir=/data/my_dataset
    # in a kernel:
    CAVEclient("<name>", server_address=os.environ["CAVELAB_SERVER_URL"],
               auth_token=os.environ["CAVELAB_TOKEN"])
"""

from __future__ import annotations

import atexit
import os
from typing import Any

from traitlets import Float, Int, Unicode, default
from traitlets.config import Configurable

from cavelab.server.http.host import EngineHost, HostSettings

SETTINGS_KEY = "cavelab"


class CavelabConfig(Configurable):
    """cavelab server settings (``c.CavelabConfig.<name>`` or ``--CavelabConfig.<name>=...``)."""

    dataset_dir = Unicode(
        help="The cavelab dataset directory to serve (default: $CAVELAB_DATASET). Empty: the "
        "extension loads but the CAVE routes answer 404."
    ).tag(config=True)

    storage_url = Unicode(
        None,
        allow_none=True,
        help="Operation-log backend URL (sqlite:///path or postgresql://...); default: the "
        "SQLite log inside the dataset directory.",
    ).tag(config=True)

    max_merge_chunk_distance = Int(
        3,
        allow_none=True,
        help="Refuse merges whose points are more than this many chunks apart (Chebyshev). "
        "None or a negative value disables the check.",
    ).tag(config=True)

    executor_workers = Int(
        4, help="Threads that run engine calls (only a lock-free single root lookup runs on the IOLoop)."
    ).tag(config=True)

    row_limit = Int(
        1_000_000,
        help="Largest number of rows one annotation query may return; bigger results are refused "
        "with a message (page with limit/offset), never cut silently.",
    ).tag(config=True)

    version_interval_hours = Float(
        0.0,
        help="Create a materialized version this often (hours; 0 = only on demand). Versions "
        "store only what changed since the previous one.",
    ).tag(config=True)

    version_lifetime_days = Float(
        7.0, help="Days a scheduled or on-demand version lives before it expires (CAVE: 7)."
    ).tag(config=True)

    synapse_table = Unicode(
        "synapses", help="The datastack's synapse table (caveclient's synapse_query default)."
    ).tag(config=True)

    soma_table = Unicode(
        "nuclei", allow_none=True, help="The datastack's soma/nucleus table (datastack info)."
    ).tag(config=True)

    @default("dataset_dir")
    def _default_dataset_dir(self) -> str:
        return os.environ.get("CAVELAB_DATASET", "")

    def host_settings(self) -> HostSettings:
        """Plain values for the engine host (no traitlets past this point)."""
        distance = self.max_merge_chunk_distance
        return HostSettings(
            dataset_dir=os.path.abspath(os.path.expanduser(self.dataset_dir)) if self.dataset_dir else "",
            storage_url=self.storage_url or None,
            max_merge_chunk_distance=None if distance is None or distance < 0 else int(distance),
            executor_workers=max(1, int(self.executor_workers)),
            row_limit=max(1, int(self.row_limit)),
            version_interval_hours=max(0.0, float(self.version_interval_hours)),
            version_lifetime_days=float(self.version_lifetime_days),
            synapse_table=self.synapse_table or None,
            soma_table=self.soma_table or None,
        )


def server_token(serverapp: Any) -> str:
    """The token kernels should use: the JupyterHub API token under a hub, else the server token."""
    hub = os.environ.get("JUPYTERHUB_API_TOKEN")
    if hub:
        return hub
    idp = getattr(serverapp, "identity_provider", None)
    token = getattr(idp, "token", None) or getattr(serverapp, "token", None)
    return str(token or "")


def export_environment(serverapp: Any) -> None:
    """Set ``CAVELAB_SERVER_URL`` (= connection url + ``cave``) and ``CAVELAB_TOKEN`` for kernels."""
    from jupyter_server.utils import url_path_join

    try:
        url = url_path_join(serverapp.connection_url, "cave")
    except Exception:  # no URL yet (e.g. a unix socket); kernels fall back to discovery
        return
    os.environ["CAVELAB_SERVER_URL"] = url.rstrip("/")
    token = server_token(serverapp)
    if token:
        os.environ["CAVELAB_TOKEN"] = token


def load_extension(serverapp: Any) -> EngineHost:
    """Create the engine host, start opening the dataset, mount the routes, export the env."""
    from tornado.ioloop import IOLoop

    from cavelab.server.http.routes import setup_handlers

    config = CavelabConfig(parent=serverapp, config=serverapp.config)
    host = EngineHost(config.host_settings())
    web_app = serverapp.web_app
    web_app.settings[SETTINGS_KEY] = host
    host.start()
    base_url = web_app.settings.get("base_url", "/")
    setup_handlers(web_app, base_url)
    export_environment(serverapp)
    if host.configured:  # kernels can read the dataset's files (e.g. supervoxel_map.parquet)
        os.environ["CAVELAB_DATASET"] = str(host.settings.dataset_dir)
    # the port is final only once the server listens: export again when the loop runs
    IOLoop.current().add_callback(export_environment, serverapp)
    atexit.register(host.close)
    host.schedule_versions()
    if host.configured:
        serverapp.log.info("cavelab: serving %s under %scave/", host.settings.dataset_dir, base_url)
    else:
        serverapp.log.warning(
            "cavelab: no dataset configured (set c.CavelabConfig.dataset_dir or $CAVELAB_DATASET); "
            "the CAVE routes under %scave/ answer 404",
            base_url,
        )
    return host
