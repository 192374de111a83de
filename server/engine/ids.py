"""Graphene node-ID bit layout, bit-compatible with PyChunkedGraph.

A node ID is a ``uint64`` holding, from the most significant bit down:

* the layer (8 bits): 1 = supervoxel, 2 = level-2 ("L2"), ``n_layers`` = root;
* the chunk coordinates x, y, z (``bits[layer]`` bits each);
* a segment ID, unique within the chunk (the remaining bits).

The number of bits per axis follows PyChunkedGraph's ``compute_bitmasks``: the
root layer gets 1 bit, every layer below one more (``n_layers - layer``, at
least 1), layer 2 at least ``spatial_bits`` (10 by default) and layer 1 the same
as layer 2. CloudVolume, caveclient and neuroglancer decode the layer as
``id >> 56`` and the chunk position with ``graph.spatial_bit_masks``.

Examples
--------
>>> layout = GrapheneLayout(n_layers=5)
>>> nid = int(layout.node_ids(2, [3], [1], [0], [7])[0])
>>> int(layout.layers(nid)), layout.chunk_coords(nid).tolist(), int(layout.segments(nid)[0])
(2, [[3, 1, 0]], 7)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

LAYER_BITS = 8
FAN_OUT = 2


def compute_layer_bits(n_layers: int, spatial_bits: int = 10) -> dict[int, int]:
    """Bits per chunk axis for every layer ``1..n_layers`` (PyChunkedGraph's rule).

    >>> compute_layer_bits(5)
    {5: 1, 4: 1, 3: 2, 2: 10, 1: 10}
    """
    if n_layers < 3:
        raise ValueError(f"n_layers must be at least 3, got {n_layers}")
    bits: dict[int, int] = {}
    for layer in range(n_layers, 1, -1):
        b = max(1, n_layers - layer)
        if layer == 2:
            if spatial_bits < b:
                raise ValueError(f"{spatial_bits} spatial bits cannot encode {n_layers} layers")
            b = max(spatial_bits, b)
        bits[layer] = b
    bits[1] = bits[2]
    return bits


def n_layers_for_grid(grid_shape: tuple[int, int, int]) -> int:
    """Layer count for an atomic-chunk grid: ``ceil(log2(max chunks per axis)) + 2``, at least 3."""
    m = max(int(g) for g in grid_shape)
    return max(3, int(math.ceil(math.log2(max(m, 1)))) + 2)


@dataclass(frozen=True)
class GrapheneLayout:
    """Encode/decode graphene node IDs for a graph with ``n_layers`` layers."""

    n_layers: int
    spatial_bits: int = 10
    bits: dict[int, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bits", compute_layer_bits(self.n_layers, self.spatial_bits))

    # -- per-layer constants -------------------------------------------------
    def segment_bits(self, layer: int) -> int:
        return 64 - LAYER_BITS - 3 * self.bits[layer]

    def max_segment(self, layer: int) -> int:
        return (1 << self.segment_bits(layer)) - 1

    def max_chunk_coord(self, layer: int) -> int:
        return (1 << self.bits[layer]) - 1

    # -- encoding ------------------------------------------------------------
    def chunk_ids(self, layer: int, x, y, z) -> np.ndarray:
        """Chunk IDs (node IDs with segment 0) for chunk coordinates at ``layer``."""
        b = self.bits[layer]
        x = np.asarray(x, dtype=np.uint64)
        y = np.asarray(y, dtype=np.uint64)
        z = np.asarray(z, dtype=np.uint64)
        if (x.size and int(x.max()) >> b) or (y.size and int(y.max()) >> b) or (
            z.size and int(z.max()) >> b
        ):
            raise ValueError(f"chunk coordinate does not fit in {b} bits at layer {layer}")
        off = self.segment_bits(layer)
        return (
            (np.uint64(layer) << np.uint64(64 - LAYER_BITS))
            | (x << np.uint64(off + 2 * b))
            | (y << np.uint64(off + b))
            | (z << np.uint64(off))
        )

    def node_ids(self, layer: int, x, y, z, segment) -> np.ndarray:
        """Node IDs from layer, chunk coordinates and segment IDs (vectorized)."""
        seg = np.asarray(segment, dtype=np.uint64)
        if seg.size and int(seg.max()) > self.max_segment(layer):
            raise ValueError(f"segment id does not fit in {self.segment_bits(layer)} bits")
        return self.chunk_ids(layer, x, y, z) | seg

    # -- decoding ------------------------------------------------------------
    @staticmethod
    def layers(ids) -> np.ndarray:
        """Layer of each ID (``id >> 56``)."""
        return (np.asarray(ids, dtype=np.uint64) >> np.uint64(64 - LAYER_BITS)).astype(np.int64)

    def chunk_coords(self, ids) -> np.ndarray:
        """``(N, 3)`` int64 chunk coordinates; IDs may mix layers."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
        layers = self.layers(ids)
        out = np.zeros((ids.size, 3), dtype=np.int64)
        if ids.size and int(layers.min()) == int(layers.max()) and int(layers[0]) in self.bits:
            b = self.bits[int(layers[0])]  # one layer (e.g. all supervoxels): no masking passes
            off = self.segment_bits(int(layers[0]))
            mask = np.uint64((1 << b) - 1)
            for axis in range(3):
                out[:, axis] = (ids >> np.uint64(off + (2 - axis) * b)) & mask
            return out
        for layer in np.unique(layers):
            layer = int(layer)
            if layer not in self.bits:
                raise ValueError(f"layer {layer} is outside 1..{self.n_layers}")
            m = layers == layer
            b = self.bits[layer]
            off = self.segment_bits(layer)
            mask = np.uint64((1 << b) - 1)
            v = ids[m]
            out[m, 0] = ((v >> np.uint64(off + 2 * b)) & mask).astype(np.int64)
            out[m, 1] = ((v >> np.uint64(off + b)) & mask).astype(np.int64)
            out[m, 2] = ((v >> np.uint64(off)) & mask).astype(np.int64)
        return out

    def segments(self, ids) -> np.ndarray:
        """Segment ID (within its chunk) of each ID."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
        layers = self.layers(ids)
        out = np.zeros(ids.size, dtype=np.uint64)
        for layer in np.unique(layers):
            layer = int(layer)
            if layer not in self.bits:
                raise ValueError(f"layer {layer} is outside 1..{self.n_layers}")
            m = layers == layer
            out[m] = ids[m] & np.uint64(self.max_segment(layer))
        return out

    # -- geometry ------------------------------------------------------------
    def edge_layers(self, coords_a: np.ndarray, coords_b: np.ndarray) -> np.ndarray:
        """PyChunkedGraph's cross-chunk edge layer for atomic chunk coordinate pairs.

        1 means both ends lie in one atomic chunk; ``L`` means the ends first share a
        chunk at layer ``L + 1``.
        """
        a = np.asarray(coords_a, dtype=np.int64)
        b = np.asarray(coords_b, dtype=np.int64)
        # the ends first share a chunk after k halvings, k = bit length of the largest coordinate XOR
        x = np.bitwise_xor(a, b).max(axis=1) if a.size else np.zeros(0, dtype=np.int64)
        return (1 + np.frexp(x.astype(np.float64))[1]).astype(np.int8)
