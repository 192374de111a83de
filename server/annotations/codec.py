"""Columns <-> Arrow IPC bytes: the payload of annotation log records and version files.

A column dict holds numpy arrays; ``(n, 3)`` point arrays travel as three ``<name>.x/.y/.z``
float64 columns, strings as Arrow strings. Buffers are ZSTD-compressed.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_AXES = ("x", "y", "z")


def to_arrow(columns: dict[str, np.ndarray]) -> pa.Table:
    arrays, names = [], []
    for name, a in columns.items():
        a = np.asarray(a)
        if a.ndim == 2:
            for k, ax in enumerate(_AXES):
                arrays.append(pa.array(np.ascontiguousarray(a[:, k])))
                names.append(f"{name}.{ax}")
        elif a.dtype == object:
            arrays.append(pa.array(a.tolist(), type=pa.string()))
            names.append(name)
        else:
            arrays.append(pa.array(a))
            names.append(name)
    return pa.table(arrays, names=names)


def from_arrow(table: pa.Table) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    names = table.column_names
    i = 0
    while i < len(names):
        name = names[i]
        if name.endswith(".x") and i + 2 < len(names) + 0 and names[i + 1 : i + 3] == [
            name[:-2] + ".y",
            name[:-2] + ".z",
        ]:
            out[name[:-2]] = np.stack(
                [table.column(names[i + k]).to_numpy(zero_copy_only=False) for k in range(3)], axis=1
            ).astype(np.float64)
            i += 3
            continue
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = np.array(col.to_pylist(), dtype=object)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
        i += 1
    return out


def encode(columns: dict[str, np.ndarray]) -> bytes:
    """Arrow IPC stream bytes of the columns (ZSTD)."""
    table = to_arrow(columns)
    sink = pa.BufferOutputStream()
    opts = pa.ipc.IpcWriteOptions(compression="zstd")
    with pa.ipc.new_stream(sink, table.schema, options=opts) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def decode(data: bytes) -> dict[str, np.ndarray]:
    if not data:
        return {}
    with pa.ipc.open_stream(pa.py_buffer(data)) as r:
        return from_arrow(r.read_all())
