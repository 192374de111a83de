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

__all__ = [
    "root_mesh",
    "bulk_insert",
    "connect",
    "create_version",
    "load_ipython_extension",
    "unload_ipython_extension",
]


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


def _post(client: Any, path: str, **kw: Any) -> Any:
    import requests

    url = f"{client.server_address.rstrip('/')}/{path}"
    r = requests.post(url, headers={"Authorization": f"Bearer {client.auth.token}"}, timeout=3600, **kw)
    _raise_for(r)
    return r.json()


def _raise_for(r: Any) -> None:
    """Raise ``requests.HTTPError`` with the server's message for a failed response."""
    import requests

    if not r.ok:
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        raise requests.HTTPError(f"{r.status_code}: {message}", response=r)


def bulk_insert(client: Any, table: str, frame: Any, batch_rows: int = 1_000_000, progress: bool = True) -> Any:
    """Insert a DataFrame / Arrow table / Parquet file of annotations in a few requests.

    Columns are flat, as query results have them: ``pre_pt_position`` (a column of ``[x, y, z]``)
    or ``pre_pt_position_x/_y/_z``, plus the schema's other fields. Each batch is one Parquet
    request to cavelab's bulk route; within a batch every row is inserted or none. Returns the new
    annotation IDs (a numpy array).

    >>> ids = bulk_insert(client, "synapses", df)          # doctest: +SKIP
    """
    import io

    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm

    if isinstance(frame, (str, os.PathLike)):
        frame = pq.read_table(frame)
    if isinstance(frame, pd.DataFrame):
        frame = pa.Table.from_pandas(frame, preserve_index=False)
    av = client.info.get_aligned_volume_info()["name"]
    ids = []
    with tqdm(total=frame.num_rows, unit="rows", disable=not progress, desc=f"insert {table}") as bar:
        for start in range(0, frame.num_rows, int(batch_rows)):
            part = frame.slice(start, int(batch_rows))
            buf = io.BytesIO()
            pq.write_table(part, buf)
            out = _post(client, f"api/annotation/{av}/table/{table}/bulk", data=buf.getvalue())
            ids.append(np.arange(out["first_id"], out["last_id"] + 1, dtype=np.int64))
            bar.update(part.num_rows)
    return np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)


def create_version(client: Any, keep_forever: bool = False, lifetime_days: float | None = None) -> dict:
    """Materialize a version now; returns its metadata (``version``, ``time_stamp``, ``bytes``).

    >>> v = create_version(client, keep_forever=True)["version"]   # doctest: +SKIP
    >>> client.materialize.query_table("synapses", materialization_version=v)   # doctest: +SKIP
    """
    body: dict[str, Any] = {"keep_forever": bool(keep_forever)}
    if lifetime_days is not None:
        body["lifetime_days"] = float(lifetime_days)
    return _post(client, f"api/materialize/{client.datastack_name}/version", json=body)


def root_mesh(client: Any, root_id: int) -> Any:
    """The closed surface mesh of a root from the hosting server, stitched from its L2 meshes.

    Returns a :class:`cavelab.server.morphology.meshes.Mesh`: ``vertices`` (float32 ``[V, 3]``,
    nm) and ``faces`` (uint32 ``[F, 3]``) as numpy arrays; ``.to_trimesh()`` if trimesh is
    installed.

    >>> mesh = root_mesh(client, root)                       # doctest: +SKIP
    >>> mesh.vertices.shape, mesh.faces.shape                # doctest: +SKIP
    ((5210, 3), (10416, 3))
    """
    import requests

    from cavelab.server.morphology.meshes import Mesh

    url = f"{client.server_address.rstrip('/')}/api/morphology/{client.datastack_name}/mesh/{int(root_id)}"
    r = requests.get(url, headers={"Authorization": f"Bearer {client.auth.token}"}, timeout=3600)
    _raise_for(r)
    return Mesh.from_precomputed(r.content)


def load_ipython_extension(ipython: Any) -> None:
    client = connect()
    ipython.push({"client": client})
    print(f"cavelab: `client` is a CAVEclient for datastack {client.datastack_name!r} at {client.server_address}")


def unload_ipython_extension(ipython: Any) -> None:
    ipython.drop_by_id({"client": ipython.user_ns.get("client")})
