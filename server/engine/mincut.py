"""The split algorithm: a multicut with path augmentation, as a pure function.

This reproduces the behaviour of CAVE's (PyChunkedGraph's) ``LocalMincutGraph``
on a plain integer graph, with scipy instead of graph-tool:

1. **Contract infinite edges.** Edges with affinity ``np.inf`` join the pieces of
   one supervoxel that were cut at chunk borders. Their connected components are
   contracted into one representative vertex (the minimum index), so no cut can
   ever separate them. Sources and sinks are remapped to representatives.
2. **Capacities.** Parallel edges between the same pair of representatives are
   merged (their affinities summed); capacity = affinity, scaled to ``int32``
   (see *Capacities and "infinite" edges* below).
3. **Path augmentation** (``path_augment=True``, CAVE's default). Shortest paths
   (edge length ``1 / (affinity + eps)``) are computed between all pairs of
   sources, avoiding the sink points, and between all pairs of sinks, avoiding
   the source points. If the two teams' paths share vertices, the shared vertices
   are dropped and each team must still be connected by what is left of its
   paths. Otherwise the team with the lower geometric-mean path length (the
   "winner") keeps its paths and the other team's paths are recomputed avoiding
   every vertex of the winner's paths; if that fails the roles are swapped once;
   if that fails too the paths "overlapped irreparably" and the split is refused.
   Every edge on a kept path is made uncuttable.
   With ``path_augment=False`` (CAVE's older "direct" mode) the sources are
   instead linked together, and the sinks together, by uncuttable edges.
4. **Max flow** from the source team to the sink team
   (:func:`scipy.sparse.csgraph.maximum_flow`, Dinic). The source side of the
   partition is the set of vertices reachable from the source in the residual
   graph; everything else is the sink side.
5. **Back to the input edges.** The cut is every input edge (parallel and
   fragment edges included) whose two endpoints lie on different sides.
6. **Postconditions.** The cut must be non-empty; after removing it all sources
   must lie in one connected component and all sinks in another; with
   ``disallow_isolating_cut`` a side that consists of nothing but the labelled
   path vertices is refused, unless every edge leaving it goes to a labelled
   point. In ``preview`` mode a failed postcondition sets ``illegal_split``
   instead of raising.

Capacities and "infinite" edges
-------------------------------
``maximum_flow`` needs integer capacities and works in ``int32``; during Dinic
it keeps the *residual* capacity of each arc in place (``cap[rev] += pushed``),
so a residual can reach ``c(u, v) + |flow|``.

*Finite capacities* are scaled so that their total is at most ``2**29``
(:data:`FINITE_BUDGET`): ``cap = rint(a / a_max * scale)`` with
``scale = (2**29 - m) / sum(a / a_max)`` for ``m`` merged edges, raised to 1 for
any positive affinity (so a tiny affinity, such as CAVE's fake merge edges of
``float32`` *tiny*, is still a real, cheap edge) and 0 for a zero affinity. Each
capacity is within one unit of its exact scaled value and never more than one
unit above it, so the total ``F`` stays within ``2**29``. One unit is
``u = sum(a) / (2**29 - m)`` affinity (for 200k edges of similar affinity, about
``4e-4`` of one edge's), so the cut found weighs at most ``(|C| + |C*|) * u``
more than a true minimum cut ``C*`` (``|C|``: number of cut edges; at worst
``2 * m * u``).

*Infinite edges* (the kept path edges, and the team links of direct mode) are not
given a huge number: their endpoints are **contracted** into one super-source
(all source points and their path vertices) and one super-sink. That is exactly
what an infinite capacity means for a cut (both ends always on the same side),
it cannot overflow, and it makes Dinic's level graphs shallower, hence faster.
(Had a number been used instead, ``2**30`` would be safe with this budget: the
flow value, and so ``|flow|`` on any arc — each augmentation moves an arc's flow
by at most the amount it adds to the flow value — is bounded by a finite cut,
i.e. by ``F <= 2**29``; the largest residual would be ``2**30 + 2**29 < 2**31``,
and ``2**30 > F`` keeps such edges out of every minimum cut.) With contraction
the largest residual is ``c(u, v) + F <= 2**30``.

Performance
-----------
Everything is vectorized numpy / scipy except the walk along each path's
predecessors. The max flow dominates: on 50k-vertex / 200k-edge geometric graphs
scipy's Dinic takes roughly 70-150 ms of the total (it redoes a breadth-first
search over most of the graph in every phase, and heterogeneous capacities need
many phases); the rest (pair merging, connectivity checks, Dijkstra per team
point, residual reachability, components) adds about 30-60 ms. A cut through a
homogeneous bulk (large flow value) can take several times longer.

Examples
--------
A chain with one weak link is cut at that link:

>>> edges = np.array([[0, 1], [1, 2], [2, 3]])
>>> res = min_cut(4, edges, np.array([0.9, 0.1, 0.9]), np.array([0]), np.array([3]))
>>> res.cut_edge_index.tolist(), [c.tolist() for c in res.components], res.illegal_split
([1], [[0, 1], [2, 3]], False)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, connected_components, dijkstra, maximum_flow

from cavelab.server.errors import InputError, PreconditionError

__all__ = ["FINITE_BUDGET", "CutResult", "min_cut", "scale_capacities"]

#: Upper bound on the sum of all (scaled, int32) capacities given to the max flow.
FINITE_BUDGET = 2**29

_EPS = float(np.finfo(np.float64).eps)


@dataclass
class CutResult:
    """Result of :func:`min_cut`.

    Attributes
    ----------
    cut_edge_index : np.ndarray
        ``int64`` indices into the input ``edges`` rows that must be removed: every
        input edge whose endpoints end up on different sides (parallel and
        fragment edges included), sorted. Removing exactly these disconnects the
        sides.
    components : list of np.ndarray
        Vertex index arrays (each sorted; together covering all ``n_vertices``) of
        the connected components after removing the cut edges: the component of
        the first source, then the component of the first sink (when it is a
        different one, which only an illegal preview can violate), then all
        others by size, largest first (ties: lowest vertex first).
    illegal_split : bool
        True when the cut violates the postconditions; only set in preview mode
        (otherwise an error is raised).
    """

    cut_edge_index: np.ndarray
    components: list[np.ndarray] = field(default_factory=list)
    illegal_split: bool = False


# --------------------------------------------------------------------------- helpers


def scale_capacities(affinities: np.ndarray) -> np.ndarray:
    """Scale non-negative finite affinities to ``int32`` capacities summing to ``<= FINITE_BUDGET``.

    Positive affinities map to at least 1, zero to 0. See the module docstring.

    Parameters
    ----------
    affinities : np.ndarray
        Finite, non-negative floats.

    Returns
    -------
    np.ndarray
        ``int32`` capacities, proportional to ``affinities`` up to one unit.

    Examples
    --------
    >>> caps = scale_capacities(np.array([1.0, 0.5, 0.0, 1e-300]))
    >>> caps.tolist() == [caps[0], caps[0] // 2, 0, 1] and int(caps.sum()) <= FINITE_BUDGET
    True
    """
    a = np.asarray(affinities, dtype=np.float64)
    m = a.size
    if m == 0:
        return np.zeros(0, dtype=np.int32)
    if m * 2 > FINITE_BUDGET:
        raise InputError(f"too many edges for an int32 max flow ({m}); use a smaller bounding box")
    amax = float(a.max())
    if amax <= 0:
        return np.zeros(m, dtype=np.int32)
    rel = a / amax  # in [0, 1]; dividing first avoids overflow in the sum
    scale = (FINITE_BUDGET - m) / float(rel.sum())
    caps = np.rint(rel * scale)
    caps = np.where(a > 0, np.maximum(caps, 1.0), 0.0)
    return caps.astype(np.int32)


def _as_index_array(x: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must be integer vertex indices, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False).ravel()


def _validate(
    n_vertices: int,
    edges: np.ndarray,
    affinities: np.ndarray,
    sources: np.ndarray,
    sinks: np.ndarray,
) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = int(n_vertices)
    if n < 0:
        raise InputError(f"n_vertices must be >= 0, got {n}")
    e = np.asarray(edges)
    if e.size == 0:
        e = np.zeros((0, 2), dtype=np.int64)
    if e.ndim != 2 or e.shape[1] != 2:
        raise InputError(f"edges must have shape (E, 2), got {e.shape}")
    if not np.issubdtype(e.dtype, np.integer):
        raise InputError(f"edges must hold integer vertex indices, got dtype {e.dtype}")
    e = e.astype(np.int64, copy=False)
    if e.size and (int(e.min()) < 0 or int(e.max()) >= n):
        raise InputError(f"edges refer to vertices outside 0..{n - 1}")
    a = np.asarray(affinities, dtype=np.float64).ravel()
    if a.shape[0] != e.shape[0]:
        raise InputError(f"{e.shape[0]} edges but {a.shape[0]} affinities")
    if np.isnan(a).any() or (a < 0).any():
        raise InputError("affinities must be >= 0 (or np.inf for edges that must never be cut)")
    src = _as_index_array(sources, "sources")
    snk = _as_index_array(sinks, "sinks")
    if src.size == 0 or snk.size == 0:
        raise PreconditionError(
            "A split needs at least one source and one sink point; "
            f"got {src.size} source(s) and {snk.size} sink(s)"
        )
    for name, pts in (("source", src), ("sink", snk)):
        bad = pts[(pts < 0) | (pts >= n)]
        if bad.size:
            raise PreconditionError(
                f"{name.capitalize()} point(s) {bad.tolist()} are not vertices of this graph "
                f"(valid indices are 0..{n - 1}); place the {name} points on the cell being split",
                **{f"bad_{name}s": bad.tolist()},
            )
    return n, e, a, src, snk


def _representatives(n: int, edges: np.ndarray, inf_mask: np.ndarray) -> np.ndarray:
    """Map every vertex to the minimum index of its component over infinite edges."""
    if not inf_mask.any():
        return np.arange(n, dtype=np.int64)
    ie = edges[inf_mask]
    g = sp.csr_matrix((np.ones(len(ie), dtype=np.int8), (ie[:, 0], ie[:, 1])), shape=(n, n))
    _, labels = connected_components(g, directed=True, connection="weak")
    # np.unique's first-occurrence index is the minimum vertex of each label
    _, first = np.unique(labels, return_index=True)
    return first[labels].astype(np.int64)


def _ordered_unique(x: np.ndarray) -> np.ndarray:
    """Unique values in order of first appearance."""
    _, idx = np.unique(x, return_index=True)
    return x[np.sort(idx)]


class _PairGraph:
    """Undirected pairs ``(u < v)``, parallel pairs merged, and their symmetric CSR structure.

    ``indptr``/``indices`` hold both arcs of every pair with sorted columns;
    ``arc_pair[k]`` is the pair of arc ``k`` and ``arc_row[k]`` its tail, so any
    per-pair quantity becomes a CSR matrix without re-sorting (:meth:`csr`).
    """

    def __init__(self, n: int, a: np.ndarray, b: np.ndarray, w: np.ndarray) -> None:
        keep = a != b  # self-loops can never be cut
        a, b, w = a[keep], b[keep], w[keep]
        uniq, inv = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_inverse=True)
        self.n = n
        self.u, self.v = uniq // n, uniq % n
        self.weight = np.bincount(inv, weights=w, minlength=uniq.size)
        m = uniq.size
        # Row r lists its "backward" arcs (r -> u, u < r) and then its "forward"
        # arcs (r -> v, v > r); both runs are sorted, so the row is sorted.
        cnt_f = np.bincount(self.u, minlength=n)
        cnt_b = np.bincount(self.v, minlength=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(cnt_f + cnt_b, out=indptr[1:])
        first_f = np.cumsum(cnt_f) - cnt_f  # pairs are sorted by (u, v)
        pos_f = indptr[self.u] + cnt_b[self.u] + (np.arange(m) - first_f[self.u])
        by_v = np.argsort(self.v * n + self.u)  # pairs sorted by (v, u); keys are unique
        vb = self.v[by_v]
        first_b = np.cumsum(cnt_b) - cnt_b
        pos_b = indptr[vb] + (np.arange(m) - first_b[vb])
        index_dtype = np.int32 if max(n, 2 * m) < 2**31 else np.int64
        self.indptr = indptr.astype(index_dtype)
        self.indices = np.empty(2 * m, dtype=index_dtype)
        self.indices[pos_f] = self.v
        self.indices[pos_b] = self.u[by_v]
        self.arc_pair = np.empty(2 * m, dtype=np.int64)
        self.arc_pair[pos_f] = np.arange(m)
        self.arc_pair[pos_b] = by_v
        self.arc_row = np.repeat(np.arange(n, dtype=np.int64), cnt_f + cnt_b)

    def csr(self, arc_data: np.ndarray) -> sp.csr_matrix:
        """A CSR matrix with this structure and the given per-arc data."""
        g = sp.csr_matrix((arc_data, self.indices, self.indptr), shape=(self.n, self.n), copy=False)
        g.has_canonical_format = True  # sorted, no duplicates
        return g


def _reachable(graph: sp.csr_matrix, start: int) -> np.ndarray:
    mask = np.zeros(graph.shape[0], dtype=bool)
    mask[breadth_first_order(graph, start, directed=True, return_predecessors=False)] = True
    return mask


def _keep_arcs(g: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """The arcs of ``g`` where ``keep`` is True, as a new matrix (``g``'s arrays are not touched)."""
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    indptr = kept_before[g.indptr].astype(g.indptr.dtype)
    out = sp.csr_matrix((g.data[keep], g.indices[keep], indptr), shape=g.shape)
    out.has_sorted_indices = g.has_sorted_indices
    return out


def _team_connected(team: np.ndarray, pa: np.ndarray, pb: np.ndarray) -> bool:
    """True if the path edges ``(pa, pb)`` connect all ``team`` vertices."""
    if team.size < 2:
        return True
    verts = np.unique(np.concatenate([team, pa, pb]))
    ra, rb = np.searchsorted(verts, pa), np.searchsorted(verts, pb)
    k = verts.size
    g = sp.csr_matrix((np.ones(ra.size, dtype=np.int8), (ra, rb)), shape=(k, k))
    _, labels = connected_components(g, directed=True, connection="weak")
    team_labels = labels[np.searchsorted(verts, team)]
    return bool(np.all(team_labels == team_labels[0]))


class _PathGraph:
    """Symmetric ``1 / (affinity + eps)`` distance graph over the contracted vertices."""

    def __init__(self, pairs: _PairGraph) -> None:
        self.pairs = pairs
        self.arc_length = (1.0 / (pairs.weight + _EPS))[pairs.arc_pair]

    def team_paths(
        self, team: np.ndarray, excluded: np.ndarray
    ) -> tuple[list[np.ndarray], np.ndarray] | None:
        """All-pairs shortest paths within ``team``, never passing through ``excluded`` vertices.

        Returns the paths (vertex arrays, first team member first) and their lengths,
        or None if some pair cannot be connected.
        """
        k = team.size
        if k < 2:
            return [], np.zeros(0)
        # Arcs leaving an excluded vertex get infinite length, so no path can pass
        # through it (the team vertices, the only path ends, are never excluded).
        data = self.arc_length.copy()
        data[excluded[self.pairs.arc_row]] = np.inf
        g = self.pairs.csr(data)
        paths: list[np.ndarray] = []
        lengths: list[float] = []
        d0 = np.zeros(0)
        for i in range(k - 1):
            start = int(team[i])
            if i == 0:
                dist, pred = dijkstra(g, directed=True, indices=start, return_predecessors=True)
                d0 = dist
                if not np.isfinite(d0[team]).all():
                    return None
            else:
                # Triangle inequality through team[0] bounds every distance still
                # needed, so Dijkstra can stop early.
                limit = float(d0[start] + d0[team[i + 1 :]].max()) * (1 + 1e-9)
                dist, pred = dijkstra(
                    g, directed=True, indices=start, return_predecessors=True, limit=limit
                )
                if not np.isfinite(dist[team[i + 1 :]]).all():  # rounding; cannot happen
                    dist, pred = dijkstra(g, directed=True, indices=start, return_predecessors=True)
            for j in range(i + 1, k):
                target = int(team[j])
                path = [target]
                node = target
                while node != start:
                    node = int(pred[node])
                    path.append(node)
                paths.append(np.asarray(path[::-1], dtype=np.int64))
                lengths.append(float(dist[target]))
        return paths, np.asarray(lengths)


def _path_edge_arrays(paths: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not paths:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    return np.concatenate([p[:-1] for p in paths]), np.concatenate([p[1:] for p in paths])


def _geometric_mean(x: np.ndarray) -> float:
    return float(np.exp(np.mean(np.log(x)))) if x.size else float("inf")


_OVERLAP_MESSAGE = (
    "The paths between the source points and the paths between the sink points overlapped "
    "irreparably: the points of one side cannot be joined without crossing the other side. "
    "Check that every point is on the correct side, or spread the points farther apart"
)


def _augment_paths(
    n: int, pg: _PathGraph, src: np.ndarray, snk: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """CAVE's path augmentation.

    Returns the kept path edges of the sources ``(sa, sb)`` and of the sinks
    ``(ya, yb)``: arrays of contracted vertex indices.
    """
    is_snk = np.zeros(n, dtype=bool)
    is_snk[snk] = True
    is_src = np.zeros(n, dtype=bool)
    is_src[src] = True
    rs = pg.team_paths(src, is_snk)
    ry = pg.team_paths(snk, is_src)
    if rs is None or ry is None:
        raise PreconditionError(_OVERLAP_MESSAGE, sources=src.tolist(), sinks=snk.tolist())
    paths_s, len_s = rs
    paths_y, len_y = ry
    sa, sb = _path_edge_arrays(paths_s)
    ya, yb = _path_edge_arrays(paths_y)
    shared = np.intersect1d(np.concatenate([sa, sb]), np.concatenate([ya, yb]))
    if shared.size == 0:
        return sa, sb, ya, yb
    # 1. drop the shared vertices; fine if each team is still connected
    is_shared = np.zeros(n, dtype=bool)
    is_shared[shared] = True
    ks = ~(is_shared[sa] | is_shared[sb])
    ky = ~(is_shared[ya] | is_shared[yb])
    if _team_connected(src, sa[ks], sb[ks]) and _team_connected(snk, ya[ky], yb[ky]):
        return sa[ks], sb[ks], ya[ky], yb[ky]
    # 2. the winner keeps its paths, the loser reroutes around them; 3. swap once
    sources_win = _geometric_mean(len_s) < _geometric_mean(len_y)
    for attempt_sources_win in (sources_win, not sources_win):
        winner = paths_s if attempt_sources_win else paths_y
        excl = np.zeros(n, dtype=bool)
        excl[np.concatenate(winner)] = True
        redo = pg.team_paths(snk if attempt_sources_win else src, excl)
        if redo is None:
            continue
        if attempt_sources_win:
            return (sa, sb, *_path_edge_arrays(redo[0]))
        return (*_path_edge_arrays(redo[0]), ya, yb)
    raise PreconditionError(_OVERLAP_MESSAGE, sources=src.tolist(), sinks=snk.tolist())


def _order_components(labels: np.ndarray, v_first: int, v_second: int) -> list[np.ndarray]:
    """Split vertices by label: ``v_first``'s component, ``v_second``'s, then by size (desc)."""
    _, start, inv, counts = np.unique(
        labels, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.argsort(inv, kind="stable")
    groups = np.split(order, np.cumsum(counts)[:-1])
    first, second = int(inv[v_first]), int(inv[v_second])
    rest = np.lexsort((start, -counts))  # start = the lowest vertex of each component
    rest = rest[(rest != first) & (rest != second)]
    head = [first] if first == second else [first, second]
    return [groups[lab] for lab in head + rest.tolist()]


# --------------------------------------------------------------------------- main


def min_cut(
    n_vertices: int,
    edges: np.ndarray,
    affinities: np.ndarray,
    sources: np.ndarray,
    sinks: np.ndarray,
    *,
    path_augment: bool = True,
    disallow_isolating_cut: bool = True,
    preview: bool = False,
) -> CutResult:
    """Split a cell's supervoxel graph between source and sink points (CAVE's multicut).

    Parameters
    ----------
    n_vertices : int
        Number of vertices; vertices are ``0..n_vertices-1``.
    edges : np.ndarray
        ``(E, 2)`` integer vertex indices, undirected; parallel edges allowed.
    affinities : np.ndarray
        ``(E,)`` non-negative floats; ``np.inf`` marks edges that must never be
        cut (pieces of one supervoxel split at chunk borders).
    sources, sinks : np.ndarray
        Vertex indices of the two teams of points.
    path_augment : bool, default True
        Make the shortest paths within each team uncuttable (CAVE's default);
        False links each team's points directly with uncuttable edges.
    disallow_isolating_cut : bool, default True
        Refuse a cut whose side is nothing but a team's labelled path vertices
        (the team's points in direct mode), unless every edge leaving that side
        goes to a labelled point. In path mode a team of one point has no path
        vertices (as in CAVE), so a single labelled supervoxel can be split off.
    preview : bool, default False
        Return ``illegal_split=True`` instead of raising when a postcondition
        fails (precondition errors still raise).

    Returns
    -------
    CutResult
        The cut edges (indices into ``edges``), the components after the cut and
        the ``illegal_split`` flag.

    Raises
    ------
    PreconditionError
        Sources and sinks overlap or are out of range, are not connected, the
        teams' paths overlap irreparably, or (unless ``preview``) the cut is empty,
        does not separate the teams, or only cuts off the labelled points.
    InputError
        Malformed arrays (shapes, dtypes, NaN or negative affinities).

    Examples
    --------
    Two triangles joined by two weak edges; 6 is a fragment of 5 (infinite edge):

    >>> edges = np.array([[0, 1], [1, 2], [0, 2], [2, 3], [1, 4], [3, 4], [4, 5], [3, 5], [5, 6]])
    >>> aff = np.array([0.9, 0.9, 0.9, 0.1, 0.1, 0.9, 0.9, 0.9, np.inf])
    >>> res = min_cut(7, edges, aff, sources=np.array([0, 1]), sinks=np.array([6]))
    >>> res.cut_edge_index.tolist(), [c.tolist() for c in res.components]
    ([3, 4], [[0, 1, 2], [3, 4, 5, 6]])
    """
    n, e, a, sources, sinks = _validate(n_vertices, edges, affinities, sources, sinks)

    # 1. contract infinite edges
    inf_mask = np.isinf(a)
    rep = _representatives(n, e, inf_mask)
    src = _ordered_unique(rep[sources])
    snk = _ordered_unique(rep[sinks])
    both = np.intersect1d(src, snk)
    if both.size:
        bad_src = sources[np.isin(rep[sources], both)]
        bad_snk = sinks[np.isin(rep[sinks], both)]
        same = sorted(set(bad_src.tolist()) | set(bad_snk.tolist()))
        raise PreconditionError(
            f"Sources and sinks are the same supervoxel(s) {same}; "
            "place the sink points on the other part of the cell",
            sources=bad_src.tolist(),
            sinks=bad_snk.tolist(),
        )

    # 2. merged finite edges between representatives
    fe = rep[e[~inf_mask]]
    pairs = _PairGraph(n, fe[:, 0], fe[:, 1], a[~inf_mask])
    graph = pairs.csr(np.ones(pairs.indices.size, dtype=np.int8))
    _check_connected(graph, src, snk, sources, sinks, path_augment)

    # 3. uncuttable regions: points + kept path vertices (path mode) or points (direct mode)
    if path_augment:
        sa, sb, ya, yb = _augment_paths(n, _PathGraph(pairs), src, snk)
        path_region_s = np.unique(np.concatenate([sa, sb]))
        path_region_y = np.unique(np.concatenate([ya, yb]))
        contract_s = np.union1d(src, path_region_s)
        contract_y = np.union1d(snk, path_region_y)
    else:
        path_region_s = contract_s = np.sort(src)
        path_region_y = contract_y = np.sort(snk)

    # 4. max flow between the contracted teams
    s0, t0 = int(src[0]), int(snk[0])
    cap = _flow_capacities(pairs, contract_s, contract_y, s0, t0)
    side = _source_side(cap, s0, t0, contract_s, contract_y)  # per representative

    # 5. cut = all input edges across the partition; components of the rest
    side_v = side[rep]
    cut = np.flatnonzero(side_v[e[:, 0]] != side_v[e[:, 1]]).astype(np.int64)
    labels = _post_cut_labels(pairs, side, rep, int(rep[sources[0]]), int(rep[sinks[0]]))
    components = _order_components(labels, int(sources[0]), int(sinks[0]))

    # 6. postconditions
    def fail(message: str, **details: object) -> CutResult:
        if preview:
            return CutResult(cut, components, True)
        raise PreconditionError(message, **details)

    # an empty cut cannot happen here: the preconditions guarantee a source-sink path, and the
    # separation check below would refuse it anyway (sources and sinks would share a component)
    ls, ly = np.unique(labels[sources]), np.unique(labels[sinks])
    if ls.size != 1 or ly.size != 1 or ls[0] == ly[0]:
        return fail(
            "Failed to find a cut that separated the sources from the sinks. Try points that "
            "partition the cell cleanly; a clear path between the points of each side helps",
            sources=sources.tolist(),
            sinks=sinks.tolist(),
        )
    if disallow_isolating_cut:
        labelled = np.zeros(n, dtype=bool)
        labelled[src] = True
        labelled[snk] = True
        for name, region, lab, pts in (
            ("source", path_region_s, ls[0], sources),
            ("sink", path_region_y, ly[0], sinks),
        ):
            if region.size == 0:
                continue
            in_region = np.zeros(n, dtype=bool)
            in_region[region] = True
            in_comp = labels == lab
            if not np.array_equal(in_comp, in_region[rep]):
                continue
            ce = e[cut]
            inside0, inside1 = in_comp[ce[:, 0]], in_comp[ce[:, 1]]
            outside = np.where(inside0, ce[:, 1], ce[:, 0])[inside0 != inside1]
            if not labelled[rep[outside]].all():
                return fail(
                    f"The cut would only cut off the labelled {name} points {pts.tolist()} "
                    "(and the paths between them) from the rest of the cell; add more points "
                    "along each side so the cut falls between the two parts",
                    side=name,
                    **{f"{name}s": pts.tolist()},
                )
    return CutResult(cut, components, False)


def _check_connected(
    graph: sp.csr_matrix,
    src: np.ndarray,
    snk: np.ndarray,
    sources: np.ndarray,
    sinks: np.ndarray,
    path_augment: bool,
) -> None:
    """Raise unless the teams can be split: connected to each other (and, with paths, within)."""
    from_src = _reachable(graph, int(src[0]))
    if from_src[src].all() and from_src[snk].all():
        return
    if path_augment:
        from_snk = _reachable(graph, int(snk[0]))
        linked = bool(from_src[snk].any() or from_snk[src].any())
    elif from_src[snk].any():
        linked = True
    else:  # direct mode: some source and some sink must share a component
        _, labels = connected_components(graph, directed=True, connection="strong")
        linked = np.intersect1d(labels[src], labels[snk]).size > 0
    if not linked:
        raise PreconditionError(
            "Sources and sinks are not connected in this cell's graph; nothing to split. "
            "Check that all points are on the same cell (or enlarge the bounding box)",
            sources=sources.tolist(),
            sinks=sinks.tolist(),
        )
    if not path_augment:
        return  # direct mode links each team; the postconditions judge the result
    for name, ok, pts in (
        ("source", from_src[src].all(), sources),
        ("sink", from_snk[snk].all(), sinks),
    ):
        if not ok:
            raise PreconditionError(
                f"The {name} points {pts.tolist()} are not all connected to each other in this "
                f"cell's graph; place all {name} points on one connected part of the cell",
                **{f"{name}s": pts.tolist()},
            )


def _flow_capacities(
    pairs: _PairGraph, contract_s: np.ndarray, contract_y: np.ndarray, s0: int, t0: int
) -> sp.csr_matrix:
    """Symmetric int32 capacity matrix with the team regions contracted into ``s0`` and ``t0``."""
    n = pairs.n
    arc_cap = scale_capacities(pairs.weight)[pairs.arc_pair]
    if contract_s.size == 1 and contract_y.size == 1:
        return pairs.csr(arc_cap)
    group = np.arange(n, dtype=np.int64)
    group[contract_s] = s0
    group[contract_y] = t0
    moved = group != np.arange(n)
    touch = moved[pairs.arc_row] | moved[pairs.indices]
    # arcs away from the regions keep their place; arcs touching them are re-routed
    # to s0 / t0 (parallel ones summed, internal ones dropped)
    base = pairs.csr(np.where(touch, 0, arc_cap).astype(np.int32))
    ra, rb = group[pairs.arc_row[touch]], group[pairs.indices[touch]]
    keep = ra != rb
    extra = sp.csr_matrix((arc_cap[touch][keep], (ra[keep], rb[keep])), shape=(n, n))
    cap = (base + extra).tocsr()
    cap.eliminate_zeros()
    return cap.astype(np.int32)


def _source_side(
    cap: sp.csr_matrix, s0: int, t0: int, contract_s: np.ndarray, contract_y: np.ndarray
) -> np.ndarray:
    """Max flow, then the vertices reachable from ``s0`` in the residual graph (regions expanded)."""
    flow = maximum_flow(cap, s0, t0, method="dinic").flow
    if np.array_equal(flow.indptr, cap.indptr) and np.array_equal(flow.indices, cap.indices):
        residual_data = cap.data.astype(np.int64) - flow.data
        residual = _keep_arcs(cap, residual_data > 0)
    else:  # scipy changed the structure (added arcs): plain sparse arithmetic
        residual = sp.csr_matrix(cap.astype(np.int64) - flow)
        residual = _keep_arcs(residual, residual.data > 0)
    side = _reachable(residual, s0)
    side[contract_s] = True
    side[contract_y] = False
    return side


def _post_cut_labels(
    pairs: _PairGraph, side: np.ndarray, rep: np.ndarray, s_rep: int, t_rep: int
) -> np.ndarray:
    """Component label of every vertex once the edges across ``side`` are removed."""
    n = pairs.n
    kept = side[pairs.arc_row] == side[pairs.indices]
    uncut = _keep_arcs(pairs.csr(np.ones(kept.size, dtype=np.int8)), kept)
    rep_labels = np.full(n, -1, dtype=np.int64)
    rep_labels[_reachable(uncut, s_rep)] = 0
    if rep_labels[t_rep] < 0:
        rep_labels[_reachable(uncut, t_rep)] = 1
    rest = (rep_labels < 0) & (rep == np.arange(n))  # unlabelled representatives
    if rest.any():
        idx = np.flatnonzero(rest)
        sub = uncut[idx][:, idx]
        _, sub_labels = connected_components(sub, directed=True, connection="strong")
        rep_labels[idx] = sub_labels + 2
    return rep_labels[rep]
