"""Skeletons from the level-2 graph, the way CAVE's ``pcg_skel`` and skeleton service make them.

A pure module (numpy, scipy; pandas only for :meth:`Skeleton.to_navis`): no HTTP and no engine
imports. The input is a level-2 (L2) graph: the L2 IDs of one root, their representative points
(``rep_coord_nm`` from the L2 cache) and the L2 adjacency (``lvl2_graph``). The output is a rooted
tree whose vertices are a subset of the L2 nodes, like ``pcg_skel.pcg_skeleton`` (which runs
MeshParty's TEASAR, ``skeletonize.skeletonize_mesh``, on a "mesh" made of the rep-coord vertices
and the L2 edges).

Algorithm (TEASAR on a graph, as MeshParty's ``mesh_teasar``)
------------------------------------------------------------
* Edge weights are the Euclidean lengths between the nodes' points (nm).
* Root: the node nearest (Euclidean) to ``root_point_nm``; without a root point, the far-point
  heuristic of MeshParty (``find_far_points``: start at node 0, bounce to the graph-farthest node
  until the distance stops growing; the root is the start of the last bounce).
* Loop: take the valid (not yet invalidated) node farthest from the root along the graph; add the
  shortest graph path from it to the nearest node already on the skeleton; invalidate every node
  within ``invalidation_d`` **graph** distance of the new path (MeshParty runs a bounded,
  multi-source Dijkstra from the path). Repeat until no valid node is left.
* ``mesh_to_skel_map``: each input node maps to the skeleton vertex nearest to it along the graph
  (what MeshParty's per-path ``min_only`` Dijkstra bookkeeping amounts to).
* Zero-length skeleton edges (coincident points) are collapsed into the parent vertex, as
  MeshParty's ``remove_zero_length_edges=True`` (pcg_skel's setting) does.

Deviations from pcg_skel / MeshParty (deliberate, documented)
-------------------------------------------------------------
* With a root point, TEASAR starts from the node nearest to it (MeshParty's
  ``skeletonize_components`` soma mode); ``skeletonize_mesh`` as pcg_skel calls it runs TEASAR
  from the far-point root and then reroots at the nearest *skeleton vertex*. Here the root is
  always the input node nearest to the root point.
* ``collapse_soma``: nodes within ``collapse_radius`` (Euclidean) of the root point that are
  connected to the root node through such nodes (MeshParty's ``soma_via_sphere`` connectivity
  rule, applied to graph nodes) are merged into the root vertex *before* TEASAR: they are not
  TEASAR targets, branches start at the soma boundary with an edge to the root, and all of them
  map to the root. MeshParty instead collapses skeleton vertices afterwards into a new vertex
  placed exactly at the soma point; here the root stays an input node, so ``vertices`` is always
  ``coords_nm[selected]``.
* Disconnected input: MeshParty skeletonizes each component separately and returns a forest
  (pcg_skel's inputs are connected in practice). Here components are first joined by "bridge"
  edges between their closest points (an approximately minimal spanning set of inter-component
  links: k-nearest-neighbour candidates, then exact nearest-point joins for what is left), so
  the result is always one tree that spans every input node. ``meta["n_components"]`` and
  ``meta["n_bridge_edges"]`` record it.
* A single node gives a one-vertex skeleton (pcg_skel duplicates the vertex and adds a fake
  L2 ID 0 to make a zero-length edge).
* ``radius``: mean of ``radii_nm`` over the nodes mapped to each vertex (NaNs ignored; vertices
  without a value get the smallest radius present, as MeshParty's ``_remove_nan_radius``). With no
  radii, 1.0 nm everywhere: the skeleton service's placeholder (``np.ones``) when it has none.
  (The service's v4 radius is ``r_eff`` per segment from L2 volumes; pass e.g. ``max_dt_nm``.)
* Missing points (NaN rows in ``coords_nm``) are filled like pcg_skel's ``fix_nan_verts_mesh``
  (mean of the neighbours' points, up to 10 rounds); any still missing get the mean of the
  known points.

Formats (checked against the sources)
-------------------------------------
* ``to_dict`` is the skeleton service's ``flatdict`` (``SkeletonService._skeleton_to_flatdict``):
  ``meta`` (``_skeleton_metadata_to_json`` keys + ``skeleton_version``), ``edges``,
  ``mesh_to_skel_map``, ``root``, ``vertices``, ``radius``, ``compartment``, ``lvl2_ids``.
* ``to_swc`` follows ``SkeletonIO.export_to_swc`` / ``_build_swc_array`` of the service: columns
  ``id type x y z radius parent`` separated by single spaces, no header, coordinates **and**
  radius divided by ``xyz_scaling=1000`` (nm -> **µm**), formatted ``%i %i %.3f %.3f %.3f %.3f %i``,
  nodes in cover-path order (each path root-first), root parent ``-1``. The service numbers nodes
  from 0; here ids are 1-based by default (standard SWC); ``id_base=0`` gives the service's text
  byte for byte (checked against its ``_build_swc_array`` on a MeshParty skeleton).

Examples
--------
>>> import numpy as np
>>> ids = np.array([10, 11, 12, 13], dtype=np.uint64)
>>> pts = np.array([[0, 0, 0], [500, 0, 0], [1000, 0, 0], [1500, 0, 0]], dtype=float)
>>> eds = np.array([[10, 11], [11, 12], [12, 13]], dtype=np.uint64)
>>> sk = skeletonize_graph(ids, pts, eds, root_point_nm=np.array([0.0, 0.0, 0.0]))
>>> sk.root, len(sk.vertices), float(sk.cable_length())
(0, 4, 1500.0)
>>> sk.parents().tolist()
[-1, 0, 1, 2]
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph
from scipy.spatial import cKDTree

__all__ = [
    "DEFAULT_COLLAPSE_RADIUS",
    "DEFAULT_INVALIDATION_D",
    "SKELETON_VERSION",
    "Skeleton",
    "skeletonize_graph",
]

#: pcg_skel 1.x defaults (``pcg_skel/pcg_skel.py``: ``DEFAULT_INVALIDATION_D = 7500``,
#: ``DEFAULT_COLLAPSE_RADIUS = 7500.0``), in nm.
DEFAULT_INVALIDATION_D = 7500.0
DEFAULT_COLLAPSE_RADIUS = 7500.0
#: Skeleton format version the skeleton service's ``flatdict`` carries by default (v4 has L2 IDs).
SKELETON_VERSION = 4

# Compartment codes of the skeleton service (``service.py``: default 3, axon 2, soma 1).
SOMA_COMPARTMENT = 1
AXON_COMPARTMENT = 2
DEFAULT_COMPARTMENT = 3

_SWC_XYZ_SCALING = 1000.0  # nm -> µm, SkeletonIO.export_to_swc(xyz_scaling=1000)
_MIN_EDGE_WEIGHT = 1e-6  # nm: keeps zero-length edges as real (tiny) edges for Dijkstra
_NAN_ROUNDS = 10  # pcg_skel's nan_rounds default

# Keys of the skeleton service's flatdict ``meta`` (SkeletonService._skeleton_metadata_to_json).
_SERVICE_META_KEYS = (
    "root_id",
    "soma_pt_x",
    "soma_pt_y",
    "soma_pt_z",
    "soma_radius",
    "collapse_soma",
    "collapse_function",
    "invalidation_d",
    "smooth_vertices",
    "compute_radius",
    "shape_function",
    "smooth_iterations",
    "smooth_neighborhood",
    "smooth_r",
    "cc_vertex_thresh",
    "remove_zero_length_edges",
    "collapse_params",
    "timestamp",
    "skeleton_type",
    "meta",
)


@dataclass
class Skeleton:
    """A rooted skeleton tree over a subset of the level-2 nodes.

    Attributes
    ----------
    vertices : (V, 3) float64, nm.
    edges : (V-1, 2) int64, ``[child, parent]`` rows (MeshParty's orientation).
    radius : (V,) float64, nm.
    root : vertex index of the root.
    mesh_to_skel_map : (N,) int64, the skeleton vertex of each input node (``node_ids`` order).
    node_ids : (N,) uint64, the input L2 IDs (the service's ``lvl2_ids``).
    meta : parameters used; MeshParty's ``SkeletonMetadata`` keys plus ``root_point``,
        ``collapse_radius``, ``mesh_index`` (input node index of each vertex), ``n_components``,
        ``n_bridge_edges``, ``n_nan_filled``, ``skeleton_version``.

    Examples
    --------
    >>> import numpy as np
    >>> sk = skeletonize_graph(np.array([1, 2], dtype=np.uint64),
    ...                        np.array([[0.0, 0, 0], [0, 0, 400]]),
    ...                        np.array([[1, 2]], dtype=np.uint64))
    >>> sk.edges.tolist(), sk.root, sk.to_dict()["lvl2_ids"]
    ([[1, 0]], 0, [1, 2])
    """

    vertices: np.ndarray
    edges: np.ndarray
    radius: np.ndarray
    root: int
    mesh_to_skel_map: np.ndarray
    node_ids: np.ndarray
    meta: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ topology
    @property
    def n_vertices(self) -> int:
        """Number of skeleton vertices."""
        return int(len(self.vertices))

    def parents(self) -> np.ndarray:
        """Parent vertex index of every vertex, ``-1`` at the root.

        >>> import numpy as np
        >>> Skeleton(np.zeros((3, 3)), np.array([[1, 0], [2, 1]]), np.ones(3), 0,
        ...          np.arange(3), np.arange(3, dtype=np.uint64)).parents().tolist()
        [-1, 0, 1]
        """
        par = np.full(self.n_vertices, -1, dtype=np.int64)
        if len(self.edges):
            e = np.asarray(self.edges, dtype=np.int64)
            par[e[:, 0]] = e[:, 1]
        return par

    def cable_length(self) -> float:
        """Total length of the skeleton edges (nm).

        >>> import numpy as np
        >>> Skeleton(np.array([[0.0, 0, 0], [3, 4, 0]]), np.array([[1, 0]]), np.ones(2), 0,
        ...          np.arange(2), np.arange(2, dtype=np.uint64)).cable_length()
        5.0
        """
        if len(self.edges) == 0:
            return 0.0
        e = np.asarray(self.edges, dtype=np.int64)
        d = self.vertices[e[:, 0]] - self.vertices[e[:, 1]]
        return float(np.sqrt((d * d).sum(axis=1)).sum())

    def end_points(self) -> np.ndarray:
        """Vertices without children (the root is excluded unless it is the only vertex)."""
        n_children = np.bincount(self.parents()[self.parents() >= 0], minlength=self.n_vertices)
        ends = np.flatnonzero(n_children == 0)
        if self.n_vertices > 1:
            ends = ends[ends != self.root]
        return ends

    def branch_points(self) -> np.ndarray:
        """Vertices with two or more children."""
        par = self.parents()
        return np.flatnonzero(np.bincount(par[par >= 0], minlength=self.n_vertices) >= 2)

    def distance_to_root(self) -> np.ndarray:
        """Path length (nm) from each vertex to the root along the skeleton."""
        order = self._topological_order()
        par = self.parents()
        dist = np.zeros(self.n_vertices, dtype=np.float64)
        seg = np.zeros(self.n_vertices, dtype=np.float64)
        nonroot = par >= 0
        seg[nonroot] = np.linalg.norm(self.vertices[nonroot] - self.vertices[par[nonroot]], axis=1)
        for v in order[1:]:
            dist[v] = dist[par[v]] + seg[v]
        return dist

    def _topological_order(self) -> np.ndarray:
        """Vertices in breadth-first order from the root (parents before children)."""
        if self.n_vertices <= 1:
            return np.arange(self.n_vertices, dtype=np.int64)
        par = self.parents()
        child = np.flatnonzero(par >= 0)
        g = sparse.csr_matrix(
            (np.ones(len(child)), (par[child], child)), shape=(self.n_vertices,) * 2
        )
        return csgraph.breadth_first_order(g, self.root, directed=True, return_predecessors=False)

    def _cover_path_order(self) -> np.ndarray:
        """Vertex order used by the service's SWC writer.

        MeshParty's ``cover_paths``: from each end point, most distal first, walk rootward until
        a vertex already seen; the SWC concatenates these paths each reversed (root side first).
        """
        if self.n_vertices <= 1:
            return np.arange(self.n_vertices, dtype=np.int64)
        par = self.parents()
        dtr = self.distance_to_root()
        ends = self.end_points()
        ends = ends[np.argsort(dtr[ends], kind="stable")[::-1]]
        seen = np.zeros(self.n_vertices, dtype=bool)
        chunks: list[np.ndarray] = []
        for ep in ends.tolist():
            path = []
            v = ep
            while v >= 0 and not seen[v]:
                path.append(v)
                v = par[v]
            # MeshParty marks the whole path to the root as seen; the part already seen is a
            # prefix of an earlier path, so only the new vertices matter.
            seen[path] = True
            chunks.append(np.asarray(path[::-1], dtype=np.int64))
        order = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        if len(order) != self.n_vertices:  # defensive: a vertex missed by the cover paths
            missing = np.setdiff1d(self._topological_order(), order)
            order = np.concatenate([order, missing])
        return order

    # ------------------------------------------------------------------ properties
    def compartment(self) -> np.ndarray:
        """Skeleton-service compartment codes: 3 (dendrite/default), 1 (soma) at the root.

        The root is labelled soma only when a root point (soma position) was given; without one
        the root is a far tip and everything is 3. Axon labels (2) need synapses (not here).
        """
        comp = np.full(self.n_vertices, DEFAULT_COMPARTMENT, dtype=np.int64)
        if self.meta.get("root_point") is not None and self.n_vertices:
            comp[self.root] = SOMA_COMPARTMENT
        return comp

    # ------------------------------------------------------------------ exports
    def to_swc(self, node_types: np.ndarray | None = None, *, id_base: int = 1) -> str:
        """SWC text: ``id type x y z radius parent`` per line, coordinates and radius in µm.

        Mirrors the skeleton service's writer (``SkeletonIO.export_to_swc``, ``xyz_scaling=1000``;
        format ``%i %i %.3f %.3f %.3f %.3f %i``; no header; cover-path node order; root parent
        ``-1``). ``node_types`` defaults to :meth:`compartment`. Node ids start at ``id_base``
        (1, standard SWC; the service writes 0-based ids, use ``id_base=0`` for that).

        >>> import numpy as np
        >>> sk = Skeleton(np.array([[0.0, 0, 0], [1000, 0, 0]]), np.array([[1, 0]]),
        ...               np.array([500.0, 250.0]), 0, np.arange(2), np.arange(2, dtype=np.uint64))
        >>> print(sk.to_swc(), end="")
        1 3 0.000 0.000 0.000 0.500 -1
        2 3 1.000 0.000 0.000 0.250 1
        """
        order = self._cover_path_order()
        new_id = np.empty(self.n_vertices, dtype=np.int64)
        new_id[order] = np.arange(self.n_vertices, dtype=np.int64) + int(id_base)
        par = self.parents()[order]
        par_id = np.where(par >= 0, new_id[np.maximum(par, 0)], -1)
        types = self.compartment() if node_types is None else np.asarray(node_types)
        if types.shape != (self.n_vertices,):
            raise ValueError(f"node_types must have shape ({self.n_vertices},)")
        data = np.column_stack(
            [
                new_id[order].astype(np.float64),
                types[order].astype(np.float64),
                self.vertices[order] / _SWC_XYZ_SCALING,
                np.asarray(self.radius, dtype=np.float64)[order] / _SWC_XYZ_SCALING,
                par_id.astype(np.float64),
            ]
        )
        buf = io.StringIO()
        np.savetxt(buf, data, delimiter=" ", fmt=["%i", "%i", "%.3f", "%.3f", "%.3f", "%.3f", "%i"])
        return buf.getvalue()

    def to_dict(self) -> dict[str, Any]:
        """The skeleton service's ``flatdict`` (what ``get_skeleton(..., output_format="dict")``
        decodes), with plain lists so it serialises to JSON as-is.

        Keys: ``meta``, ``edges``, ``mesh_to_skel_map``, ``root``, ``vertices``, ``radius``,
        ``compartment``, ``lvl2_ids``.

        >>> import numpy as np
        >>> d = skeletonize_graph(np.array([5], dtype=np.uint64), np.zeros((1, 3)),
        ...                       np.zeros((0, 2), dtype=np.uint64)).to_dict()
        >>> sorted(d), d["meta"]["skeleton_version"]
        (['compartment', 'edges', 'lvl2_ids', 'mesh_to_skel_map', 'meta', 'radius', 'root', 'vertices'], 4)
        """
        meta = {k: _jsonable(self.meta.get(k)) for k in _SERVICE_META_KEYS}
        if meta["meta"] is None:
            meta["meta"] = {"datastack": None, "space": "l2cache"}
        meta["skeleton_version"] = int(self.meta.get("skeleton_version", SKELETON_VERSION))
        return {
            "meta": meta,
            "edges": np.asarray(self.edges, dtype=np.int64).reshape(-1, 2).tolist(),
            "mesh_to_skel_map": np.asarray(self.mesh_to_skel_map, dtype=np.int64).tolist(),
            "root": int(self.root),
            "vertices": np.asarray(self.vertices, dtype=np.float64).reshape(-1, 3).tolist(),
            "radius": np.asarray(self.radius, dtype=np.float64).tolist(),
            "compartment": self.compartment().tolist(),
            "lvl2_ids": [int(x) for x in np.asarray(self.node_ids, dtype=np.uint64)],
        }

    def to_meshparty_like(self) -> dict[str, Any]:
        """Keyword arguments for ``meshparty.skeleton.Skeleton(**d)``.

        ``vertices``, ``edges``, ``root``, ``radius``, ``mesh_to_skel_map``, ``mesh_index`` (input
        node index of each vertex), ``vertex_properties`` (``radius``, ``compartment``) and
        ``meta`` (``SkeletonMetadata`` keys only).

        >>> import numpy as np
        >>> sorted(skeletonize_graph(np.array([5], dtype=np.uint64), np.zeros((1, 3)),
        ...                          np.zeros((0, 2), dtype=np.uint64)).to_meshparty_like())
        ['edges', 'mesh_index', 'mesh_to_skel_map', 'meta', 'radius', 'root', 'vertex_properties', 'vertices']
        """
        mesh_index = self.meta.get("mesh_index")
        meta = {k: self.meta.get(k) for k in _SERVICE_META_KEYS if self.meta.get(k) is not None}
        return {
            "vertices": np.asarray(self.vertices, dtype=np.float64),
            "edges": np.asarray(self.edges, dtype=np.int64).reshape(-1, 2),
            "root": int(self.root),
            "radius": np.asarray(self.radius, dtype=np.float64),
            "mesh_to_skel_map": np.asarray(self.mesh_to_skel_map, dtype=np.int64),
            "mesh_index": None if mesh_index is None else np.asarray(mesh_index, dtype=np.int64),
            "vertex_properties": {
                "radius": np.asarray(self.radius, dtype=np.float64),
                "compartment": self.compartment(),
            },
            "meta": meta,
        }

    def to_navis(self) -> Any:
        """A ``navis.TreeNeuron`` (units nm; node ids are vertex indices, root parent -1).

        Raises ImportError if navis is not installed (it is not a dependency of cavelab).
        """
        try:
            import navis
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "Skeleton.to_navis() needs the optional package 'navis' "
                "(pip install navis); it is not a cavelab dependency."
            ) from exc
        import pandas as pd

        nodes = pd.DataFrame(
            {
                "node_id": np.arange(self.n_vertices, dtype=np.int64),
                "parent_id": self.parents(),
                "x": self.vertices[:, 0],
                "y": self.vertices[:, 1],
                "z": self.vertices[:, 2],
                "radius": np.asarray(self.radius, dtype=np.float64),
                "label": self.compartment(),
            }
        )
        kwargs: dict[str, Any] = {"units": "nm"}
        if self.meta.get("root_id") is not None:
            kwargs["id"] = int(self.meta["root_id"])
        return navis.TreeNeuron(nodes, **kwargs)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


# ---------------------------------------------------------------------- graph helpers
def _index_edges(node_ids: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Map (E, 2) ID pairs to node indices; drop self loops and duplicates; rows (lo, hi)."""
    n = len(node_ids)
    if edges.size == 0 or n == 0:
        return np.zeros((0, 2), dtype=np.int64)
    sorter = np.argsort(node_ids, kind="stable")
    sorted_ids = node_ids[sorter]
    flat = edges.reshape(-1)
    pos = np.searchsorted(sorted_ids, flat)
    pos_c = np.minimum(pos, n - 1)
    if not np.array_equal(sorted_ids[pos_c], flat):
        bad = flat[sorted_ids[pos_c] != flat]
        raise ValueError(f"edges reference IDs not in node_ids, e.g. {int(bad[0])}")
    e = sorter[pos_c].reshape(-1, 2).astype(np.int64)
    e = e[e[:, 0] != e[:, 1]]
    if len(e) == 0:
        return e
    e = np.sort(e, axis=1)
    key = np.unique(e[:, 0] * np.int64(n) + e[:, 1])
    return np.column_stack([key // n, key % n])


def _fill_nan_points(coords: np.ndarray, e: np.ndarray) -> int:
    """Fill NaN rows in place like pcg_skel's ``fix_nan_verts_mesh``; return how many were NaN."""
    bad = np.isnan(coords).any(axis=1)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return 0
    n = len(coords)
    coords[bad] = np.nan
    adj = sparse.csr_matrix(
        (np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)
    )
    for _ in range(_NAN_ROUNDS):
        bad = np.isnan(coords[:, 0])
        if not bad.any():
            break
        known = (~bad).astype(np.float64)
        vals = np.where(bad[:, None], 0.0, coords)
        cnt = adj @ known
        sums = adj @ vals
        fix = bad & (cnt > 0)
        if not fix.any():
            break
        new = sums[fix] / cnt[fix, None]
        # pcg_skel nudges a point fixed from a single neighbour by +1 nm in z (no coincident points)
        new[:, 2] += (cnt[fix] == 1).astype(np.float64)
        coords[fix] = new
    bad = np.isnan(coords[:, 0])
    if bad.any():
        coords[bad] = coords[~bad].mean(axis=0) if (~bad).any() else 0.0
    return n_bad


def _bridge_components(coords: np.ndarray, labels: np.ndarray, n_comp: int) -> np.ndarray:
    """Edges (i, j) joining the graph components through their closest points.

    First a spanning forest over components from k-nearest-neighbour candidate pairs (cheap,
    exact for nearby components); then, while several groups remain, the smallest group is
    joined to its nearest outside point (exact).
    """
    n = len(coords)
    out: list[np.ndarray] = []
    k = int(min(n, 9))
    tree = cKDTree(coords)
    dist, nbr = tree.query(coords, k=k)
    dist = dist.reshape(n, k)
    nbr = nbr.reshape(n, k)
    src = np.repeat(np.arange(n), k)
    dst = nbr.reshape(-1)
    dd = dist.reshape(-1)
    cross = labels[src] != labels[dst]
    group = labels.copy()
    n_groups = n_comp
    if cross.any():
        src, dst, dd = src[cross], dst[cross], dd[cross]
        la, lb = labels[src], labels[dst]
        lo, hi = np.minimum(la, lb), np.maximum(la, lb)
        order = np.lexsort((dd, hi, lo))
        key = lo[order] * np.int64(n_comp) + hi[order]
        first = order[np.r_[True, key[1:] != key[:-1]]]
        # weights must be > 0 for csgraph (explicit zeros are dropped by some scipy versions)
        w = dd[first] + 1.0
        cg = sparse.coo_matrix((w, (lo[first], hi[first])), shape=(n_comp, n_comp)).tocsr()
        mst = csgraph.minimum_spanning_tree(cg).tocoo()
        pair_to_edge = {
            (int(a), int(b)): (int(s), int(t))
            for a, b, s, t in zip(lo[first], hi[first], src[first], dst[first])
        }
        for a, b in zip(mst.row.tolist(), mst.col.tolist()):
            key_ab = (min(a, b), max(a, b))
            out.append(np.array(pair_to_edge[key_ab], dtype=np.int64))
        comp_graph = sparse.coo_matrix(
            (np.ones(len(mst.row)), (mst.row, mst.col)), shape=(n_comp, n_comp)
        )
        n_groups, glabels = csgraph.connected_components(comp_graph, directed=False)
        group = glabels[labels]
    while n_groups > 1:
        sizes = np.bincount(group, minlength=n_groups)
        g = int(np.argmin(sizes))
        inside = np.flatnonzero(group == g)
        outside = np.flatnonzero(group != g)
        d, j = cKDTree(coords[outside]).query(coords[inside], k=1)
        i_best = int(np.argmin(d))
        a, b = int(inside[i_best]), int(outside[j[i_best]])
        out.append(np.array([a, b], dtype=np.int64))
        g2 = group[b]
        group[group == g] = g2
        _, group = np.unique(group, return_inverse=True)
        n_groups -= 1
    return np.vstack(out) if out else np.zeros((0, 2), dtype=np.int64)


def _far_point_root(graph: sparse.csr_matrix, start: int) -> tuple[int, np.ndarray, np.ndarray]:
    """MeshParty's ``find_far_points_graph``: bounce to the farthest node until no gain.

    Returns (root, distances from root, predecessors from root).
    """
    a = int(start)
    b = a
    d_best = 0.0
    ds, pred = csgraph.dijkstra(graph, directed=True, indices=a, return_predecessors=True)
    ds_best, pred_best = ds, pred
    while True:
        bn = int(np.argmax(ds))
        if ds[bn] > d_best:
            b, a, d_best = a, bn, float(ds[bn])
            ds_best, pred_best = ds, pred
            ds, pred = csgraph.dijkstra(graph, directed=True, indices=a, return_predecessors=True)
        else:
            break
    return b, ds_best, pred_best


# ---------------------------------------------------------------------- main entry
def skeletonize_graph(
    node_ids: np.ndarray,
    coords_nm: np.ndarray,
    edges: np.ndarray,
    radii_nm: np.ndarray | None = None,
    *,
    root_point_nm: np.ndarray | None = None,
    invalidation_d: float = DEFAULT_INVALIDATION_D,
    collapse_soma: bool = False,
    collapse_radius: float = DEFAULT_COLLAPSE_RADIUS,
) -> Skeleton:
    """Skeletonize a level-2 graph with TEASAR (pcg_skel / MeshParty semantics).

    Parameters
    ----------
    node_ids : (N,) uint64 L2 IDs (unique).
    coords_nm : (N, 3) representative points in nm (``rep_coord_nm``); NaN rows are filled.
    edges : (E, 2) pairs of L2 IDs (the ``lvl2_graph``); may be empty or disconnected.
    radii_nm : optional (N,) per-node radius (e.g. ``max_dt_nm``); vertex radius = mean of the
        radii of the nodes mapped to it.
    root_point_nm : optional soma position (nm); the root is the nearest input node.
    invalidation_d : TEASAR invalidation distance along the graph (nm). pcg_skel default 7500.
    collapse_soma : merge nodes within ``collapse_radius`` of ``root_point_nm`` into the root.
    collapse_radius : soma collapse radius (nm). pcg_skel default 7500.

    Returns
    -------
    Skeleton

    Examples
    --------
    >>> import numpy as np
    >>> ids = np.arange(1, 6, dtype=np.uint64)
    >>> pts = np.array([[0, 0, 0], [1000, 0, 0], [2000, 0, 0], [2000, 1000, 0], [2000, -1000, 0]],
    ...                dtype=float)
    >>> eds = np.array([[1, 2], [2, 3], [3, 4], [3, 5]], dtype=np.uint64)
    >>> sk = skeletonize_graph(ids, pts, eds, root_point_nm=np.zeros(3), invalidation_d=100.0)
    >>> len(sk.vertices), sk.root, len(sk.end_points())
    (5, 0, 2)
    """
    t0 = time.perf_counter()
    node_ids = np.asarray(node_ids).astype(np.uint64, copy=False).reshape(-1)
    n = len(node_ids)
    coords = np.array(coords_nm, dtype=np.float64).reshape(-1, 3)
    if len(coords) != n:
        raise ValueError(f"coords_nm has {len(coords)} rows for {n} node_ids")
    if n == 0:
        raise ValueError("cannot skeletonize an empty graph")
    if len(np.unique(node_ids)) != n:
        raise ValueError("node_ids must be unique")
    if invalidation_d <= 0:
        raise ValueError("invalidation_d must be > 0")
    edges_arr = np.asarray(edges)
    if edges_arr.size:
        edges_arr = edges_arr.astype(np.uint64, copy=False).reshape(-1, 2)
    e = _index_edges(node_ids, edges_arr)
    n_nan = _fill_nan_points(coords, e)

    radii: np.ndarray | None = None
    if radii_nm is not None:
        radii = np.asarray(radii_nm, dtype=np.float64).reshape(-1)
        if len(radii) != n:
            raise ValueError(f"radii_nm has {len(radii)} values for {n} node_ids")

    root_pt: np.ndarray | None = None
    if root_point_nm is not None:
        root_pt = np.asarray(root_point_nm, dtype=np.float64).reshape(3)

    # -- connect components -------------------------------------------------------------
    n_comp = 1
    n_bridge = 0
    if n > 1:
        adj0 = sparse.coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        n_comp, labels = csgraph.connected_components(adj0, directed=False)
        if n_comp > 1:
            bridges = _bridge_components(coords, labels, n_comp)
            n_bridge = len(bridges)
            e = np.vstack([e, bridges])

    # -- weighted graph (stored symmetric, so Dijkstra runs with directed=True: no per-call
    #    transpose that directed=False would cost) ----------------------------------------
    w = np.linalg.norm(coords[e[:, 0]] - coords[e[:, 1]], axis=1)
    w = np.maximum(w, _MIN_EDGE_WEIGHT)
    graph = sparse.csr_matrix(
        (np.r_[w, w], (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n)
    )

    # -- root and soma set ----------------------------------------------------------------
    soma = np.zeros(n, dtype=bool)
    if root_pt is not None:
        d_root_pt = np.linalg.norm(coords - root_pt, axis=1)
        root = int(np.argmin(d_root_pt))
        soma[root] = True
        if collapse_soma and n > 1:
            close = d_root_pt < collapse_radius
            close[root] = True
            idx = np.flatnonzero(close)
            sub = graph[idx][:, idx]
            _, lab = csgraph.connected_components(sub, directed=False)
            soma[idx[lab == lab[np.searchsorted(idx, root)]]] = True
        soma_idx = np.flatnonzero(soma)
        root_ds, root_pred = csgraph.dijkstra(
            graph, directed=True, indices=soma_idx, return_predecessors=True, min_only=True
        )[:2]
    elif n > 1:
        root, root_ds, root_pred = _far_point_root(graph, 0)
        soma[root] = True
    else:
        root = 0
        soma[0] = True
        root_ds = np.zeros(1)
        root_pred = np.full(1, -9999)

    # -- TEASAR ---------------------------------------------------------------------------
    visited = soma.copy()
    valid = ~soma
    parent = np.full(n, -1, dtype=np.int64)  # skeleton parent (node index) of each path node
    neg = np.full(n, -np.inf)
    lim_slack = 1e-9
    n_paths = 0
    while valid.any():
        target = int(np.argmax(np.where(valid, root_ds, neg)))
        # the first visited node on the shortest-path-tree route bounds the search radius
        v = target
        while not visited[v]:
            v = int(root_pred[v])
        max_len = root_ds[target] - root_ds[v]
        ds, pred_t = csgraph.dijkstra(
            graph,
            directed=True,
            indices=target,
            limit=max_len * (1 + lim_slack) + _MIN_EDGE_WEIGHT,
            return_predecessors=True,
        )
        cand = np.where(visited, ds, np.inf)
        branch = int(np.argmin(cand))
        if not np.isfinite(cand[branch]):  # numerically impossible; fall back to the tree route
            branch, pred_t = v, None
        # path target -> ... -> branch, stopped at the first visited node
        path = [target]
        if pred_t is None:
            u = int(root_pred[target])
            while True:
                path.append(u)
                if visited[u]:
                    break
                u = int(root_pred[u])
        else:
            back = [branch]
            u = branch
            while u != target:
                u = int(pred_t[u])
                back.append(u)
            back.reverse()  # target ... branch
            path = [back[0]]
            for u in back[1:]:
                path.append(u)
                if visited[u]:
                    break
        p = np.asarray(path, dtype=np.int64)
        end = int(p[-1])
        parent[p[:-1]] = p[1:]
        if soma[end] and end != root:
            parent[p[-2]] = root  # branches leave the collapsed soma straight from the root
        visited[p] = True
        dm = csgraph.dijkstra(graph, directed=True, indices=p, limit=invalidation_d, min_only=True)
        valid &= ~np.isfinite(dm)
        n_paths += 1

    # -- skeleton vertices ------------------------------------------------------------------
    is_vertex = visited & ~(soma & (np.arange(n) != root))
    # collapse zero-length edges into the parent (MeshParty remove_zero_length_edges)
    rep = np.arange(n, dtype=np.int64)
    child = np.flatnonzero(is_vertex & (parent >= 0))
    if len(child):
        seg = np.linalg.norm(coords[child] - coords[parent[child]], axis=1)
        zl = child[seg == 0]
        if len(zl):
            rep[zl] = parent[zl]
            while True:
                nxt = rep[rep]
                if np.array_equal(nxt, rep):
                    break
                rep = nxt
            is_vertex[zl] = False
    sel = np.flatnonzero(is_vertex)
    vid = np.full(n, -1, dtype=np.int64)
    vid[sel] = np.arange(len(sel))
    child = sel[sel != root]
    skel_edges = np.column_stack([vid[child], vid[rep[parent[child]]]]).astype(np.int64)
    skel_edges = skel_edges.reshape(-1, 2)

    # -- mesh_to_skel_map: nearest skeleton vertex along the graph ---------------------------
    if n > 1:
        src_nodes = np.flatnonzero(visited)
        _, _, sources = csgraph.dijkstra(
            graph,
            directed=True,
            indices=src_nodes,
            min_only=True,
            return_predecessors=True,
        )
        near = sources.astype(np.int64)
        near[soma] = root
        owner = np.where(soma, root, rep)  # soma nodes -> root; zero-length -> parent
        m2s = vid[owner[near]]
    else:
        m2s = np.zeros(1, dtype=np.int64)

    # -- radius -------------------------------------------------------------------------------
    n_v = len(sel)
    if radii is None:
        radius = np.ones(n_v, dtype=np.float64)
    else:
        ok = np.isfinite(radii)
        cnt = np.bincount(m2s[ok], minlength=n_v).astype(np.float64)
        tot = np.bincount(m2s[ok], weights=radii[ok], minlength=n_v)
        with np.errstate(invalid="ignore", divide="ignore"):
            radius = tot / cnt
        if np.isnan(radius).any():
            radius[np.isnan(radius)] = np.nanmin(radius) if np.isfinite(radius).any() else 1.0

    meta: dict[str, Any] = {
        # MeshParty SkeletonMetadata / skeleton-service flatdict meta keys
        "root_id": None,
        "soma_pt_x": None if root_pt is None else float(root_pt[0]),
        "soma_pt_y": None if root_pt is None else float(root_pt[1]),
        "soma_pt_z": None if root_pt is None else float(root_pt[2]),
        "soma_radius": float(collapse_radius),
        "collapse_soma": bool(collapse_soma),
        "collapse_function": "sphere",
        "invalidation_d": float(invalidation_d),
        "smooth_vertices": False,
        "compute_radius": False,
        "shape_function": "single",
        "smooth_iterations": 12,
        "smooth_neighborhood": 2,
        "smooth_r": 0.1,
        "cc_vertex_thresh": 0,
        "remove_zero_length_edges": True,
        "collapse_params": {},
        "timestamp": time.time(),
        "skeleton_type": "pcg_skel",
        "meta": {"datastack": None, "space": "l2cache"},
        # cavelab extras
        "skeleton_version": SKELETON_VERSION,
        "root_point": None if root_pt is None else root_pt.tolist(),
        "collapse_radius": float(collapse_radius),
        "mesh_index": sel.tolist(),
        "n_components": int(n_comp),
        "n_bridge_edges": int(n_bridge),
        "n_soma_nodes": int(soma.sum()) if collapse_soma else 0,
        "n_nan_filled": int(n_nan),
        "n_paths": int(n_paths),
        "elapsed_s": time.perf_counter() - t0,
    }
    return Skeleton(
        vertices=coords[sel].copy(),
        edges=skel_edges,
        radius=radius.astype(np.float64),
        root=int(vid[root]),
        mesh_to_skel_map=m2s.astype(np.int64),
        node_ids=node_ids.copy(),
        meta=meta,
    )
