"""Ground truth and the automated agglomeration with injected errors.

* **Ground truth**: a neuron is a connected piece (through supervoxel contacts) of one tree; a
  tree that cropping cuts apart counts as several neurons, so the error-free agglomeration is
  exactly the ground truth and every difference is a listed error.
* **False split**: a neuron is cut into 2..``max_split_parts`` connected segments (graph Voronoi
  regions around far-apart supervoxels).
* **False merge**: two touching neurons (at least ``min_merge_area`` shared faces) become one
  segment. A neuron takes part in at most one error.

>>> import numpy as np
>>> from cavelab.server.synth.graph import LabelGraph
>>> from cavelab.server.synth.presets import PRESETS
>>> g = LabelGraph(np.arange(4, dtype=np.uint64), np.array([0, 0, 1, 1], np.int32),
...                np.ones(4, np.int64), np.array([[0, 1], [1, 2], [2, 3]]), np.array([5, 5, 5]), 4)
>>> a = agglomerate(g, PRESETS["tiny"].replace(false_merge_rate=0, false_split_rate=0),
...                 np.random.default_rng(0))
>>> len(set(a.neuron.tolist())), a.same.tolist(), len(a.errors)
(2, [True, False, True], 0)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from cavelab.server.synth.graph import LabelGraph
from cavelab.server.synth.presets import SynthConfig


@dataclass
class Agglomeration:
    neuron: np.ndarray  # uint64 (N,) ground-truth neuron of each label
    segment: np.ndarray  # uint64 (N,) segment of each label (with errors)
    same: np.ndarray  # bool (E,) both ends of the edge in one neuron
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_neurons(self) -> int:
        return int(np.unique(self.neuron).size)

    @property
    def n_segments(self) -> int:
        return int(np.unique(self.segment).size)


def random_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random uint64 ids in ``[2**40, 2**62)``."""
    ids = rng.integers(1 << 40, 1 << 62, size=n, dtype=np.uint64)
    while np.unique(ids).size < n:
        _, first = np.unique(ids, return_index=True)
        dup = np.setdiff1d(np.arange(n), first)
        ids[dup] = rng.integers(1 << 40, 1 << 62, size=dup.size, dtype=np.uint64)
    return ids


def _graph(n: int, a: np.ndarray, b: np.ndarray) -> sparse.csr_matrix:
    data = np.ones(a.size, dtype=np.int8)
    return sparse.coo_matrix((data, (a.astype(np.int32), b.astype(np.int32))), shape=(n, n)).tocsr()


def _sorted_graph(n: int, a: np.ndarray, b: np.ndarray) -> sparse.csr_matrix:
    """CSR graph of edges already sorted by ``a`` (no conversion copies)."""
    indptr = np.searchsorted(a, np.arange(n + 1)).astype(np.int64)
    return sparse.csr_matrix(
        (np.ones(a.size, dtype=np.int8), b.astype(np.int32), indptr), shape=(n, n)
    )


def _n_errors(rate: float, n_eligible: int) -> int:
    if rate <= 0 or n_eligible == 0:
        return 0
    return max(1, int(round(rate * n_eligible)))


def _split_parts(
    nodes_n: int, ea: np.ndarray, eb: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Part index (0..k-1) of each node of a connected graph: BFS regions of far-apart seeds."""
    g = _graph(nodes_n, ea, eb)
    start = int(rng.integers(nodes_n))
    d = csgraph.shortest_path(g, directed=False, unweighted=True, indices=start)
    seeds = [int(np.argmax(d))]
    mind = csgraph.shortest_path(g, directed=False, unweighted=True, indices=seeds[0])
    for _ in range(k - 1):
        s = int(np.argmax(mind))
        if mind[s] <= 0:
            break
        seeds.append(s)
        mind = np.minimum(
            mind, csgraph.shortest_path(g, directed=False, unweighted=True, indices=s)
        )
    _, _, src = csgraph.dijkstra(
        g, directed=False, unweighted=True, indices=seeds, min_only=True, return_predecessors=True
    )
    lookup = np.full(nodes_n, -1, dtype=np.int64)
    lookup[seeds] = np.arange(len(seeds))
    return lookup[src]


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, unique_keys, starts)``: ``order`` sorts ``keys``; groups start at ``starts``."""
    order = np.argsort(keys, kind="stable")
    ks = keys[order]
    starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]])) if ks.size else ks[:0]
    return order, ks[starts], starts


def agglomerate(g: LabelGraph, cfg: SynthConfig, rng: np.random.Generator) -> Agglomeration:
    """Ground-truth neurons and the erroneous agglomeration of the labels of ``g``.

    Parameters
    ----------
    g
        Labels, their trees and contacts (edges sorted, as :func:`assemble` makes them).
    cfg
        Error rates and thresholds.
    rng
        Random generator (choice of errors, ids).

    Returns
    -------
    Agglomeration
        Neuron and segment id of every label, the within-neuron flag of every edge, and one
        dict per injected error.
    """
    n = g.labels.size
    e0, e1 = g.edges[:, 0], g.edges[:, 1]
    same = g.tree[e0] == g.tree[e1]
    si = np.flatnonzero(same)
    n_pieces, piece = csgraph.connected_components(
        _sorted_graph(n, e0[si], e1[si]), directed=True, connection="weak"
    )
    piece = piece.astype(np.int64)
    sizes = np.bincount(piece, minlength=n_pieces)
    eligible = np.flatnonzero(sizes >= cfg.min_error_supervoxels)
    neuron_ids = random_ids(rng, n_pieces)

    seg_of_piece = np.arange(n_pieces)
    n_seg = n_pieces
    used = np.zeros(n_pieces, dtype=bool)
    split_info: list[tuple[int, np.ndarray, np.ndarray, list[int], tuple[int, int, int]]] = []

    # -- false splits ------------------------------------------------------------------
    n_split = min(_n_errors(cfg.false_split_rate, eligible.size), eligible.size)
    if n_split:
        chosen = np.sort(rng.choice(eligible, size=n_split, replace=False))
        flag = np.zeros(n_pieces, dtype=bool)
        flag[chosen] = True
        cn = np.flatnonzero(flag[piece])  # labels of the chosen neurons, ascending
        norder, nkeys, nstarts = _group(piece[cn])
        nstarts = np.append(nstarts, cn.size)
        ce = si[flag[piece[e0[si]]]]  # their internal edges
        eorder, ekeys, estarts = _group(piece[e0[ce]])
        estarts = np.append(estarts, ce.size)
        for gi, p in enumerate(nkeys):
            nodes = cn[norder[nstarts[gi] : nstarts[gi + 1]]]  # ascending label indices
            j = int(np.searchsorted(ekeys, p))
            if j >= ekeys.size or ekeys[j] != p:
                continue
            eidx = ce[eorder[estarts[j] : estarts[j + 1]]]
            la = np.searchsorted(nodes, e0[eidx])
            lb = np.searchsorted(nodes, e1[eidx])
            k = int(min(rng.integers(2, cfg.max_split_parts + 1), nodes.size))
            part = _split_parts(nodes.size, la, lb, k, rng)
            k = int(part.max()) + 1
            if k < 2:
                continue
            new = [int(p)] + list(range(n_seg, n_seg + k - 1))
            n_seg += k - 1
            cut = eidx[part[la] != part[lb]]
            best = int(cut[np.argmax(g.area[cut])])
            rep = (int(e0[best]), int(e1[best]), int(g.area[cut].sum()))
            split_info.append((int(p), nodes, np.asarray(new)[part], new, rep))
            used[p] = True

    # -- false merges ------------------------------------------------------------------
    n_merge_target = _n_errors(cfg.false_merge_rate, eligible.size)
    merges: list[tuple[int, int, tuple[int, int, int]]] = []
    if n_merge_target:
        xi = np.flatnonzero(~same)
        pa, pb = piece[e0[xi]], piece[e1[xi]]
        key = np.minimum(pa, pb) * n_pieces + np.maximum(pa, pb)
        del pa, pb
        korder, ukey, kstarts = _group(key)
        del key
        uarea = np.add.reduceat(g.area[xi[korder]], kstarts) if kstarts.size else kstarts
        kstarts = np.append(kstarts, korder.size)
        ulo, uhi = ukey // n_pieces, ukey % n_pieces
        elig = np.zeros(n_pieces, dtype=bool)
        elig[eligible] = True
        cand = np.flatnonzero(
            elig[ulo] & elig[uhi] & ~used[ulo] & ~used[uhi] & (uarea >= cfg.min_merge_area)
        )
        for c in rng.permutation(cand):
            if len(merges) >= n_merge_target:
                break
            a, b = int(ulo[c]), int(uhi[c])
            if used[a] or used[b]:
                continue
            used[a] = used[b] = True
            group = xi[korder[kstarts[c] : kstarts[c + 1]]]
            best = int(group[np.argmax(g.area[group])])
            merges.append((a, b, (int(e0[best]), int(e1[best]), int(uarea[c]))))
            seg_of_piece[b] = a

    seg = seg_of_piece[piece]
    for _p, nodes, split_seg, _new, _rep in split_info:
        seg[nodes] = split_seg
    segment_ids = random_ids(rng, n_seg)
    labels = g.labels
    errors: list[dict[str, Any]] = []
    for p, nodes, _seg, new, (s1, s2, area) in split_info:
        errors.append(
            {
                "kind": "false_split",
                "neurons": [int(neuron_ids[p])],
                "segments": [int(segment_ids[s]) for s in new],
                "sv1": int(labels[s1]),
                "sv2": int(labels[s2]),
                "area": area,
                "n_supervoxels": int(nodes.size),
            }
        )
    for a, b, (s1, s2, area) in merges:
        errors.append(
            {
                "kind": "false_merge",
                "neurons": [int(neuron_ids[a]), int(neuron_ids[b])],
                "segments": [int(segment_ids[a])],
                "sv1": int(labels[s1]),
                "sv2": int(labels[s2]),
                "area": area,
                "n_supervoxels": int(sizes[a] + sizes[b]),
            }
        )
    for i, e in enumerate(errors):
        e["error_id"] = i
    return Agglomeration(
        neuron=neuron_ids[piece], segment=segment_ids[seg], same=same, errors=errors
    )
