"""cavelab.server: the engine, storage, ingest and the Jupyter server extension.

This module stays import-light: kernels that import ``cavelab.server.engine`` must not pay for
tornado or jupyter_server. The extension hooks import the HTTP layer lazily.
"""

from __future__ import annotations

from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "cavelab.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from cavelab.server.extension import load_extension

    load_extension(serverapp)
