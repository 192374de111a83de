"""The durable record of one edit: exactly what changed in the graph, replayable without recomputation.

A :class:`GraphDelta` is written to the operation log before an edit is acknowledged and applied
to memory after. Reopening a dataset replays the deltas in order, so the graph after a restart is
bit-identical to the graph before it (same node IDs, same timestamps).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field

import numpy as np

_ARRAYS = (
    "new_ids",
    "new_child_ptr",
    "new_children",
    "activate",
    "deactivate",
    "add_edges",
    "add_affinity",
    "add_area",
    "old_roots",
    "new_roots",
)


@dataclass
class GraphDelta:
    """What one operation changed. IDs are graphene uint64 node/supervoxel IDs.

    New nodes are listed bottom-up (children before parents); each new node becomes the parent
    of all its children at ``ts``. Edges are named by their supervoxel ID pairs.
    """

    ts: int
    new_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    new_child_ptr: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    new_children: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    activate: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    deactivate: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    add_edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.uint64))
    add_affinity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    add_area: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    old_roots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    new_roots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))

    def encode(self) -> bytes:
        """Compact binary form: a JSON header then the raw little-endian arrays."""
        header = {"ts": int(self.ts), "arrays": []}
        blobs = []
        for name in _ARRAYS:
            a = np.ascontiguousarray(getattr(self, name))
            b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
            header["arrays"].append([name, a.dtype.str, list(a.shape), len(b)])
            blobs.append(b)
        h = json.dumps(header, separators=(",", ":")).encode()
        return struct.pack("<I", len(h)) + h + b"".join(blobs)

    @classmethod
    def decode(cls, data: bytes) -> GraphDelta:
        (hlen,) = struct.unpack_from("<I", data, 0)
        header = json.loads(data[4 : 4 + hlen])
        pos = 4 + hlen
        kw = {}
        for name, dtype, shape, nbytes in header["arrays"]:
            kw[name] = np.frombuffer(data, dtype=np.dtype(dtype), count=int(np.prod(shape)) if shape else 1, offset=pos).reshape(shape).copy() if nbytes else np.zeros(shape, dtype=np.dtype(dtype))
            pos += nbytes
        return cls(ts=int(header["ts"]), **kw)
