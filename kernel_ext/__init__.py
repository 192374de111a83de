"""IPython extension connecting a notebook kernel to the cavelab engine of its Jupyter server.

>>> %load_ext cavelab.kernel_ext          # doctest: +SKIP
cavelab: `client` is a CAVEclient for datastack 'small' at http://127.0.0.1:8888/cave

The server exports ``CAVELAB_SERVER_URL`` and ``CAVELAB_TOKEN`` into the environment of the
kernels it starts; :func:`connect` reads them (or explicit arguments) and returns an unmodified
``caveclient.CAVEclient`` bound to the server's datastack.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["connect", "load_ipython_extension", "unload_ipython_extension"]


def connect(
    server_url: str | None = None, token: str | None = None, datastack: str | None = None
) -> Any:
    """A ``CAVEclient`` for the cavelab server (defaults from the kernel's environment)."""
    import requests
    from caveclient import CAVEclient

    server_url = (server_url or os.environ.get("CAVELAB_SERVER_URL", "")).rstrip("/")
    token = token or os.environ.get("CAVELAB_TOKEN")
    if not server_url or not token:
        raise RuntimeError(
            "no cavelab server known: start the notebook from `cavelab serve DATASET` / `cavelab demo`, "
            "or pass server_url= and token="
        )
    if datastack is None:
        r = requests.get(
            f"{server_url}/info/api/v2/datastacks", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        r.raise_for_status()
        names = r.json()
        if not names:
            raise RuntimeError(f"the cavelab server at {server_url} serves no dataset yet")
        datastack = names[0]
    return CAVEclient(datastack, server_address=server_url, auth_token=token, write_server_cache=False)


def load_ipython_extension(ipython: Any) -> None:
    client = connect()
    ipython.push({"client": client})
    print(f"cavelab: `client` is a CAVEclient for datastack {client.datastack_name!r} at {client.server_address}")


def unload_ipython_extension(ipython: Any) -> None:
    ipython.drop_by_id({"client": ipython.user_ns.get("client")})
