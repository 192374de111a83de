"""The octree hierarchy above level 2: which nodes exist at which layer, with skip connections.

Used twice: at ingest for the whole graph, and by every edit for the L2 nodes of the cells it
touches. Both go through :func:`build_layers`, so an edited cell gets exactly the hierarchy that a
fresh ingest of the same graph would give it (node IDs aside).

Definition (equivalent to PyChunkedGraph's layer-by-layer build): the *component at layer L* of
an L2 node is its connected component over the L2 adjacency edges whose edge layer is below
``L`` (such edges never leave a layer-L chunk). A component becomes a node at layer ``L`` when it
joins two or more components of layer ``L - 1``, or when ``L`` is the root layer. A component
that equals its single child component is skipped, so the child's parent sits higher up (a skip
connection).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


@dataclass
class LayerNodes:
    """The nodes materialised at one layer. Child references point one or more layers down."""

    layer: int
    chunk: np.ndarray  # int64 (k, 3) chunk coordinates at this layer
    first_vertex: np.ndarray  # int64 (k,) one L2 vertex inside each node (for ordering)
    child_ptr: np.ndarray  # int64 (k + 1,)
    child_layer: np.ndarray  # int64 (m,): 2 = an L2 vertex, else a node of that layer
    child_ref: np.ndarray  # int64 (m,): L2 vertex index, or index into that layer's LayerNodes

    @property
    def n(self) -> int:
        return int(self.chunk.shape[0])


SMALL_GRAPH_EDGES = 20_000  # below this, label propagation beats scipy's per-call overhead


def _small_components(n: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """Min-label propagation with pointer jumping; labels ordered by each component's smallest vertex."""
    lab = np.arange(n, dtype=np.int64)
    a, b = edges[:, 0], edges[:, 1]
    while True:
        m = np.minimum(lab[a], lab[b])
        new = lab.copy()
        np.minimum.at(new, a, m)
        np.minimum.at(new, b, m)
        new = new[new]
        if np.array_equal(new, lab):
            break
        lab = new
    roots, inv = np.unique(lab, return_inverse=True)
    return int(roots.size), inv.astype(np.int64)


def components(n: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected-component labels of ``n`` vertices joined by ``(K, 2)`` edges.

    >>> components(4, np.array([[2, 3], [0, 2]]))
    (2, array([0, 1, 0, 0]))
    """
    if n == 0:
        return 0, np.zeros(0, dtype=np.int64)
    if edges.shape[0] == 0:
        return n, np.arange(n, dtype=np.int64)
    if edges.shape[0] <= SMALL_GRAPH_EDGES:
        return _small_components(n, np.asarray(edges, dtype=np.int64))
    g = sp.coo_matrix(
        (np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n)
    ).tocsr()
    k, labels = connected_components(g, directed=False)
    return int(k), labels.astype(np.int64)


def build_layers(
    vertex_chunk: np.ndarray,
    edges: np.ndarray,
    edge_layer: np.ndarray,
    n_layers: int,
) -> list[LayerNodes]:
    """Nodes of layers ``3 .. n_layers`` over L2 vertices.

    Parameters
    ----------
    vertex_chunk : (n, 3) int
        Atomic-chunk coordinates of each L2 vertex.
    edges : (K, 2) int
        L2 vertex pairs joined by an active supervoxel edge that leaves the atomic chunk.
    edge_layer : (K,) int
        PyChunkedGraph edge layer of each (>= 2).
    n_layers : int
        The root layer.

    Returns
    -------
    list of LayerNodes, index ``i`` holding layer ``i + 3``.

    Examples
    --------
    Two L2 vertices in neighbouring atomic chunks joined by a layer-2 edge, plus a lone one:

    >>> out = build_layers(np.array([[0, 0, 0], [1, 0, 0], [3, 3, 3]]),
    ...                    np.array([[0, 1]]), np.array([2]), n_layers=4)
    >>> [(x.layer, x.n) for x in out]
    [(3, 1), (4, 2)]
    """
    n = int(vertex_chunk.shape[0])
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    edge_layer = np.asarray(edge_layer, dtype=np.int64)
    vertex_chunk = np.asarray(vertex_chunk, dtype=np.int64)
    prev_labels = np.arange(n, dtype=np.int64)  # vertex -> group at layer L-1
    n_prev = n
    rep_layer = np.full(n, 2, dtype=np.int64)  # group at L-1 -> layer of its representing node
    rep_ref = np.arange(n, dtype=np.int64)
    out: list[LayerNodes] = []
    for layer in range(3, n_layers + 1):
        m = edge_layer == layer - 1
        e = prev_labels[edges[m]] if np.any(m) else np.zeros((0, 2), dtype=np.int64)
        n_groups, cc = components(n_prev, e)  # prev group -> group at this layer
        cnt = np.bincount(cc, minlength=n_groups)
        mat = (cnt >= 2) if layer < n_layers else np.ones(n_groups, dtype=bool)
        group_to_node = np.full(n_groups, -1, dtype=np.int64)
        mg = np.flatnonzero(mat)
        group_to_node[mg] = np.arange(mg.size, dtype=np.int64)
        # children: every prev group whose group is materialised, ordered by node
        p_sel = np.flatnonzero(mat[cc])
        node_of_p = group_to_node[cc[p_sel]]
        order = np.argsort(node_of_p, kind="stable")
        p_sel = p_sel[order]
        counts = np.bincount(node_of_p, minlength=mg.size)
        child_ptr = np.zeros(mg.size + 1, dtype=np.int64)
        np.cumsum(counts, out=child_ptr[1:])
        labels = cc[prev_labels]
        _, first_vertex = np.unique(labels, return_index=True)  # smallest vertex of each group
        fv = first_vertex[mg].astype(np.int64)
        out.append(
            LayerNodes(
                layer=layer,
                chunk=vertex_chunk[fv] >> (layer - 2),
                first_vertex=fv,
                child_ptr=child_ptr,
                child_layer=rep_layer[p_sel],
                child_ref=rep_ref[p_sel],
            )
        )
        # representatives of this layer's groups
        first_p = np.zeros(n_groups, dtype=np.int64)
        first_p[cc] = np.arange(n_prev, dtype=np.int64)
        new_rep_layer = rep_layer[first_p]
        new_rep_ref = rep_ref[first_p]
        new_rep_layer[mg] = layer
        new_rep_ref[mg] = np.arange(mg.size, dtype=np.int64)
        rep_layer, rep_ref = new_rep_layer, new_rep_ref
        prev_labels, n_prev = labels, n_groups
    return out


def l2_components(
    n_sv: int, edges: np.ndarray, edge_layer: np.ndarray, active: np.ndarray
) -> tuple[int, np.ndarray]:
    """L2 membership: components of supervoxels over active in-chunk (layer-1) edges."""
    m = active & (edge_layer == 1)
    return components(n_sv, np.asarray(edges)[m])


def segment_counters(chunk_ids: np.ndarray, order_key: np.ndarray) -> np.ndarray:
    """Per-chunk sequential segment IDs ``1..k`` for nodes, ordered by ``order_key`` within a chunk."""
    order = np.lexsort((order_key, chunk_ids))
    sc = chunk_ids[order]
    start = np.r_[0, np.flatnonzero(sc[1:] != sc[:-1]) + 1]
    run = np.repeat(start, np.diff(np.r_[start, sc.size]))
    seg = np.empty(chunk_ids.size, dtype=np.uint64)
    seg[order] = (np.arange(sc.size) - run + 1).astype(np.uint64)
    return seg
