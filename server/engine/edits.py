"""Edits: plan what a merge, split, undo or redo changes, without touching the graph.

Every edit is a set of supervoxel-edge changes (edges to activate, to deactivate, new edges to add)
on the cells (roots) it touches. :func:`plan_rebuild` turns those changes into new hierarchy nodes
copy-on-write: it reuses every existing node whose children do not change, and mints new nodes
only on the changed paths up to new roots. The result is a :class:`Plan`; IDs are minted and the
plan becomes a :class:`~cavelab.server.engine.delta.GraphDelta` only at commit time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cavelab.server.engine.arrays import uniq
from cavelab.server.engine.delta import GraphDelta
from cavelab.server.engine.hierarchy import build_layers, components
from cavelab.server.engine.state import GraphState
from cavelab.server.errors import PreconditionError

FAKE_EDGE_AFFINITY = float(np.finfo(np.float32).tiny)  # CAVE's DEFAULT_AFFINITY for merge edges


@dataclass
class NewNode:
    layer: int
    chunk: np.ndarray  # (3,) chunk coordinates at this layer
    children: np.ndarray  # layer 2: supervoxel indices; else refs (>= 0: existing node index,
    #                        < 0: -(k + 1) = k-th new node of this plan)


@dataclass
class Plan:
    """What an edit will change. Indices refer to the state the plan was made on."""

    kind: str
    old_roots: np.ndarray  # node indices of the roots the edit replaces
    activate: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # edge indices
    deactivate: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    add_pairs: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))  # sv indices
    add_affinity: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    new_nodes: list[NewNode] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    def finalize(self, state: GraphState, ts: int) -> GraphDelta:
        """Mint IDs for the new nodes and build the durable delta."""
        ids = np.zeros(len(self.new_nodes), dtype=np.uint64)
        by_layer: dict[int, list[int]] = {}
        for k, n in enumerate(self.new_nodes):
            by_layer.setdefault(n.layer, []).append(k)
        for layer, ks in by_layer.items():
            ids[ks] = state.mint(layer, np.stack([self.new_nodes[k].chunk for k in ks]))
        ptr = [0]
        kids: list[np.ndarray] = []
        for n in self.new_nodes:
            if n.layer == 2:
                c = state.sv_ids[n.children]
            else:
                c = np.empty(n.children.size, dtype=np.uint64)
                old = n.children >= 0
                c[old] = state.n_id.a[n.children[old]]
                c[~old] = ids[-n.children[~old] - 1]
            kids.append(c)
            ptr.append(ptr[-1] + c.size)
        e = state.e_sv.a
        new_roots = ids[[k for k, n in enumerate(self.new_nodes) if n.layer == state.n_layers]]
        return GraphDelta(
            ts=ts,
            new_ids=ids,
            new_child_ptr=np.asarray(ptr, dtype=np.int64),
            new_children=np.concatenate(kids) if kids else np.zeros(0, np.uint64),
            activate=state.sv_ids[e[self.activate]].reshape(-1, 2),
            deactivate=state.sv_ids[e[self.deactivate]].reshape(-1, 2),
            add_edges=state.sv_ids[self.add_pairs].reshape(-1, 2),
            add_affinity=self.add_affinity.astype(np.float32),
            add_area=np.zeros(self.add_pairs.shape[0], dtype=np.float32),
            old_roots=state.n_id.a[self.old_roots],
            new_roots=new_roots,
        )


# --------------------------------------------------------------------------- helpers
def root_supervoxels(state: GraphState, roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """L2 nodes of ``roots`` and, for each of their supervoxels, the position of its L2 node."""
    l2 = np.concatenate([state.leaves(int(r), stop_layer=2)[0] for r in roots])
    l2 = uniq(l2)
    svs, owner = state.children_many(l2)
    return l2, np.stack([svs, owner], axis=1) if svs.size else np.zeros((0, 2), np.int64)


def active_edges_within(
    state: GraphState, svs: np.ndarray, ts: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Edges active (now, or at ``ts``) with both ends in ``svs`` (sorted): ``(edge idx, local pairs)``."""
    e = uniq(state.incident_edges(svs))
    act = state.e_active.a[e] if ts is None else state.edge_active_at(e, ts)
    e = e[act]
    pos = state.positions(svs, state.e_sv.a[e])
    inside = np.all(pos >= 0, axis=1)
    return e[inside], pos[inside]


def plan_rebuild(
    state: GraphState,
    plan: Plan,
    pre: tuple[np.ndarray, np.ndarray] | None = None,
) -> Plan:
    """Fill ``plan.new_nodes``: the copy-on-write hierarchy of ``plan.old_roots`` after its edge changes.

    ``pre`` may pass :func:`root_supervoxels` of ``plan.old_roots`` when the caller has it.
    """
    l2, sv_owner = pre if pre is not None else root_supervoxels(state, plan.old_roots)
    svs_unsorted = sv_owner[:, 0]
    order = np.argsort(svs_unsorted)
    svs = svs_unsorted[order]
    sv_l2 = sv_owner[order, 1]  # position in l2 of each sorted sv
    n_sv = svs.size

    # edge states after the change
    e = uniq(state.incident_edges(svs))
    act = state.e_active.a[e].copy()
    act[np.isin(e, plan.activate)] = True
    act[np.isin(e, plan.deactivate)] = False
    e = e[act]
    pos = state.positions(svs, state.e_sv.a[e])
    inside = np.all(pos >= 0, axis=1)
    if not np.all(inside):
        bad = e[~inside][:3]
        raise RuntimeError(f"graph invariant broken: active edges {bad.tolist()} leave the edited cells")
    pairs = pos
    elayer = state.e_layer.a[e].astype(np.int64)
    if plan.add_pairs.shape[0]:
        ap = np.searchsorted(svs, plan.add_pairs)
        pairs = np.concatenate([pairs, ap])
        elayer = np.concatenate(
            [
                elayer,
                state.layout.edge_layers(
                    state.sv_chunk[plan.add_pairs[:, 0]], state.sv_chunk[plan.add_pairs[:, 1]]
                ).astype(np.int64),
            ]
        )

    # level 2: recompute only the L2 nodes touched by changed in-chunk edges
    changed = np.concatenate([plan.activate, plan.deactivate]).astype(np.int64)
    ch_pairs = state.e_sv.a[changed] if changed.size else np.zeros((0, 2), np.int64)
    ch_layer = state.e_layer.a[changed] if changed.size else np.zeros(0, np.int8)
    if plan.add_pairs.shape[0]:
        ch_pairs = np.concatenate([ch_pairs, plan.add_pairs])
        ch_layer = np.concatenate(
            [ch_layer, state.layout.edge_layers(state.sv_chunk[plan.add_pairs[:, 0]], state.sv_chunk[plan.add_pairs[:, 1]])]
        )
    in_chunk = ch_pairs[ch_layer == 1]
    affected_l2 = uniq(sv_l2[np.searchsorted(svs, in_chunk.ravel())]) if in_chunk.size else np.zeros(0, np.int64)
    l2_is_affected = np.zeros(l2.size, dtype=bool)
    l2_is_affected[affected_l2] = True

    # vertex numbering: kept L2 nodes first, then the recomputed groups
    kept = np.flatnonzero(~l2_is_affected)
    vert_of_sv = np.full(n_sv, -1, dtype=np.int64)
    kept_pos = np.full(l2.size, -1, dtype=np.int64)
    kept_pos[kept] = np.arange(kept.size)
    m_kept = ~l2_is_affected[sv_l2]
    vert_of_sv[m_kept] = kept_pos[sv_l2[m_kept]]
    vertex_ref: list[int] = l2[kept].tolist()  # >= 0 existing node index, < 0 new node
    new_nodes: list[NewNode] = []
    if affected_l2.size:
        aff_sv = np.flatnonzero(l2_is_affected[sv_l2])  # local sv positions
        local = np.full(n_sv, -1, dtype=np.int64)
        local[aff_sv] = np.arange(aff_sv.size)
        m = (elayer == 1) & (local[pairs[:, 0]] >= 0) & (local[pairs[:, 1]] >= 0)
        k, lab = components(aff_sv.size, local[pairs[m]])
        old_of = sv_l2[aff_sv]
        l2_sizes = np.bincount(sv_l2, minlength=l2.size)
        for g in range(k):
            members = aff_sv[lab == g]
            owners = uniq(old_of[lab == g])
            if owners.size == 1 and l2_sizes[owners[0]] == members.size:
                ref = int(l2[owners[0]])  # unchanged L2 node
            else:
                new_nodes.append(
                    NewNode(2, state.sv_chunk[svs[members[0]]].astype(np.int64), np.sort(svs[members]))
                )
                ref = -len(new_nodes)
            vert_of_sv[members] = len(vertex_ref)
            vertex_ref.append(ref)
    vertex_ref_a = np.asarray(vertex_ref, dtype=np.int64)
    _, first_sv = np.unique(vert_of_sv, return_index=True)
    vertex_chunk = state.sv_chunk[svs[first_sv]].astype(np.int64)

    cross = elayer >= 2
    vpairs = vert_of_sv[pairs[cross]]
    vl = elayer[cross]
    keep = vpairs[:, 0] != vpairs[:, 1]
    layers_out = build_layers(vertex_chunk, vpairs[keep], vl[keep], state.n_layers)

    # resolve layer by layer, reusing nodes whose children are unchanged
    resolved: dict[int, np.ndarray] = {2: vertex_ref_a}
    n_layer = state.n_layer.a
    for ln in layers_out:
        refs = np.empty(ln.child_ref.size, dtype=np.int64)
        for cl in uniq(ln.child_layer):
            m = ln.child_layer == cl
            refs[m] = resolved[int(cl)][ln.child_ref[m]]
        out = np.empty(ln.n, dtype=np.int64)
        if ln.n:
            # reuse an existing node when all children are old, share it as parent, and are all
            # of its children (vectorized over the layer's nodes)
            counts = np.diff(ln.child_ptr)
            starts = ln.child_ptr[:-1]
            owner = np.repeat(np.arange(ln.n), counts)
            any_new = np.bincount(owner, weights=(refs < 0), minlength=ln.n) > 0
            par = np.where(refs >= 0, state.n_parent.a[np.maximum(refs, 0)], -2)
            pmin = np.minimum.reduceat(par, starts)
            pmax = np.maximum.reduceat(par, starts)
            reuse = (~any_new) & (pmin == pmax) & (pmin >= 0)
            if ln.layer == state.n_layers:
                reuse[:] = False  # every edit mints new roots
            cand = np.flatnonzero(reuse)
            ok = n_layer[pmin[cand]] == ln.layer
            ok &= state.n_children(pmin[cand]) == counts[cand]
            reuse[cand[~ok]] = False
            out[reuse] = pmin[reuse]
            for i in np.flatnonzero(~reuse).tolist():
                kids = refs[ln.child_ptr[i] : ln.child_ptr[i + 1]]
                new_nodes.append(NewNode(ln.layer, ln.chunk[i], kids.copy()))
                out[i] = -len(new_nodes)
        resolved[ln.layer] = out
    plan.new_nodes = new_nodes
    return plan


def _check_current(state: GraphState, roots: np.ndarray) -> None:
    from cavelab.server.engine.timestamps import FOREVER_MS

    if np.any(state.n_expired.a[roots] != FOREVER_MS):
        raise RuntimeError("internal: planned on a root that is no longer current")


def plan_merge(state: GraphState, sv_a: int, sv_b: int) -> Plan:
    """Merge the cells of two supervoxels (CAVE semantics: activate existing edges, else add one)."""
    ra, rb = (int(r) for r in state.climb(state.sv_parent[[sv_a, sv_b]], state.last_ts))
    if ra == rb:
        raise PreconditionError(
            f"supervoxels {int(state.sv_ids[sv_a])} and {int(state.sv_ids[sv_b])} already belong to "
            f"the same cell {int(state.n_id.a[ra])}; a cell cannot be merged with itself",
            root_id=int(state.n_id.a[ra]),
        )
    _check_current(state, np.array([ra, rb]))
    l2_a, owner_a = root_supervoxels(state, np.array([ra]))
    l2_b, owner_b = root_supervoxels(state, np.array([rb]))
    pre = (
        np.concatenate([l2_a, l2_b]),
        np.concatenate([owner_a, owner_b + np.array([0, l2_a.size])]),
    )
    svs_b = np.sort(owner_b[:, 0])
    e = uniq(state.incident_edges(owner_a[:, 0]))
    e = e[~state.e_active.a[e]]
    hit = np.any(state.positions(svs_b, state.e_sv.a[e]) >= 0, axis=1)
    activate = e[hit]
    plan = Plan(kind="merge", old_roots=np.array([ra, rb], dtype=np.int64))
    if activate.size:
        plan.activate = activate
    else:
        plan.add_pairs = np.array([[min(sv_a, sv_b), max(sv_a, sv_b)]], dtype=np.int64)
        plan.add_affinity = np.array([FAKE_EDGE_AFFINITY], dtype=np.float32)
    return plan_rebuild(state, plan, pre)


def plan_edge_changes(
    state: GraphState, kind: str, activate_pairs: np.ndarray, deactivate_pairs: np.ndarray
) -> Plan:
    """Plan an undo/redo: set the listed supervoxel-index edges to active / inactive."""
    act = state.find_edges(activate_pairs) if activate_pairs.size else np.zeros(0, np.int64)
    deact = state.find_edges(deactivate_pairs) if deactivate_pairs.size else np.zeros(0, np.int64)
    act = act[act >= 0]
    deact = deact[deact >= 0]
    act = act[~state.e_active.a[act]]
    deact = deact[state.e_active.a[deact]]
    if not act.size and not deact.size:
        raise PreconditionError(
            "the edges of that operation are already in the state this would produce; nothing to do"
        )
    ends = state.e_sv.a[np.concatenate([act, deact])].ravel()
    roots = uniq(state.climb(state.sv_parent[ends], state.last_ts))
    _check_current(state, roots)
    plan = Plan(kind=kind, old_roots=roots, activate=act, deactivate=deact)
    return plan_rebuild(state, plan)


LOCAL_CUT_MIN_SUPERVOXELS = 4000  # cells bigger than this are first cut inside a box around the points
LOCAL_CUT_PAD_NM = (1920.0, 1920.0, 960.0)  # CAVE pads by (240, 240, 24) voxels at 8x8x40 nm


def _local_cut(state, svs, local, aff, src_l, snk_l, kw) -> np.ndarray | None:
    """CAVE's local multicut: cut only the supervoxels in a padded box around the points.

    Returns indices into ``local`` of the edges to remove, or ``None`` when the local cut fails or
    does not separate the points in the whole cell (the caller then cuts the whole cell).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from cavelab.server.engine.mincut import min_cut

    res = np.asarray(state.meta.resolution, dtype=np.float64)
    pad = np.asarray(LOCAL_CUT_PAD_NM) / res
    pts = state.sv_centroid[svs[np.concatenate([src_l, snk_l])]].astype(np.float64)
    lo, hi = pts.min(axis=0) - pad, pts.max(axis=0) + pad
    bb = state.sv_bbox[svs]
    inside = np.all((bb[:, :3] <= hi) & (bb[:, 3:] >= lo), axis=1)
    if inside.sum() >= 0.7 * svs.size:
        return None  # not worth it
    sub = np.flatnonzero(inside)
    pos = np.full(svs.size, -1, dtype=np.int64)
    pos[sub] = np.arange(sub.size)
    em = np.flatnonzero((pos[local[:, 0]] >= 0) & (pos[local[:, 1]] >= 0))
    try:
        cut = min_cut(sub.size, pos[local[em]], aff[em], pos[src_l], pos[snk_l], **kw)
    except PreconditionError:
        return None
    removed = em[cut.cut_edge_index]
    keep = np.ones(local.shape[0], dtype=bool)
    keep[removed] = False
    k = local[keep]
    n = svs.size
    _, lab = connected_components(
        coo_matrix((np.ones(k.shape[0], np.int8), (k[:, 0], k[:, 1])), shape=(n, n)), directed=False
    )
    if np.intersect1d(lab[src_l], lab[snk_l]).size:
        return None  # the cell stays connected around the box
    return removed


def plan_split(
    state: GraphState,
    sources: np.ndarray,
    sinks: np.ndarray,
    *,
    preview: bool = False,
    path_augment: bool = True,
    disallow_isolating_cut: bool = True,
):
    """Min-cut split of one cell between source and sink supervoxels.

    Returns ``(plan, cut)`` where ``cut`` is the :class:`~cavelab.server.engine.mincut.CutResult`
    in supervoxel indices; with ``preview`` the plan is ``None`` (nothing is rebuilt).
    """
    from cavelab.server.engine.mincut import min_cut

    sources = uniq(np.asarray(sources, dtype=np.int64))
    sinks = uniq(np.asarray(sinks, dtype=np.int64))
    if not sources.size or not sinks.size:
        raise PreconditionError("a split needs at least one source and one sink point")
    both = np.intersect1d(sources, sinks)
    if both.size:
        raise PreconditionError(
            f"sources and sinks share supervoxel(s) {state.sv_ids[both].tolist()}; "
            "place the sink points on the other part of the cell"
        )
    roots = state.climb(state.sv_parent[np.concatenate([sources, sinks])], state.last_ts)
    if uniq(roots).size != 1:
        raise PreconditionError(
            "sources and sinks belong to different cells "
            f"{sorted(set(state.n_id.a[roots].tolist()))}; all points of a split must lie on one cell"
        )
    r = int(roots[0])
    _check_current(state, np.array([r]))
    pre = root_supervoxels(state, np.array([r]))
    svs = np.sort(pre[1][:, 0])
    e, local = active_edges_within(state, svs)
    aff = state.e_aff.a[e].astype(np.float64)
    src_l, snk_l = np.searchsorted(svs, sources), np.searchsorted(svs, sinks)
    kw = dict(path_augment=path_augment, disallow_isolating_cut=disallow_isolating_cut)

    cut_edges = None
    if not preview and svs.size > LOCAL_CUT_MIN_SUPERVOXELS:
        cut_edges = _local_cut(state, svs, local, aff, src_l, snk_l, kw)
    if cut_edges is None:
        cut = min_cut(svs.size, local, aff, src_l, snk_l, preview=preview, **kw)
        cut.components = [svs[c] for c in cut.components]
        cut_edges = e[cut.cut_edge_index]
        cut.cut_edge_index = cut_edges
        if preview:
            return None, cut
    else:
        cut = None
        cut_edges = e[cut_edges]
    plan = Plan(kind="split", old_roots=np.array([r], dtype=np.int64), deactivate=cut_edges)
    return plan_rebuild(state, plan, pre), cut
