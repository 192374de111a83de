"""In-memory graph state: supervoxels, edges, hierarchy nodes and their time-versioned parents.

Index spaces
------------
* supervoxels: ``0..S-1`` in ascending ID order (fixed at ingest);
* edges: ``0..E-1`` (ingest edges, then edges added by merges);
* nodes of layer >= 2: ``0..N-1`` (ingest nodes sorted by ID, then nodes minted by edits).

Time travel
-----------
``children`` of a node never change. A parent is versioned: ``*_parent`` holds the current
parent and ``*_parent_ts`` the time it was set; earlier parents live in ``sv_hist`` / ``n_hist``
(:class:`~cavelab.server.engine.arrays.KeyedHistory` rows ``(key, start_ts, parent)``). A root's
lifetime is ``[n_created, n_expired)``. Edge activity is its ingest value flipped once per row of
``e_toggles`` (rows ``(edge, ts)``).

Nothing here locks; :class:`cavelab.server.engine.graph.ChunkedGraph` serialises writers and
excludes readers while :meth:`GraphState.apply` runs.
"""

from __future__ import annotations

import threading

import numpy as np

from cavelab.server.engine.arrays import GrowArray, KeyedHistory, build_csr, csr_gather, uniq
from cavelab.server.engine.delta import GraphDelta
from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.engine.timestamps import FOREVER_MS
from cavelab.server.errors import InvalidNodeError, StorageError

BASE_ARRAYS = (
    "sv_ids",
    "sv_parent",
    "sv_sizes",
    "sv_bbox",
    "sv_centroid",
    "edges",
    "affinity",
    "area",
    "active",
    "node_ids",
    "node_parent",
    "node_child_ptr",
    "node_children",
)


class GraphState:
    @staticmethod
    def array_names() -> tuple[str, ...]:
        """The saved arrays the state is built from (others, e.g. ``sv_moments``, stay on disk)."""
        return BASE_ARRAYS

    def __init__(self, meta: DatasetMeta, arrays: dict[str, np.ndarray]) -> None:
        missing = [k for k in BASE_ARRAYS if k not in arrays]
        if missing:
            raise StorageError(f"the dataset's graph arrays are incomplete (missing {missing}); re-run `cavelab ingest`")
        self.meta = meta
        self.layout = meta.layout
        self.n_layers = meta.n_layers
        t0 = int(meta.created_ms)
        self.created_ms = t0
        self.last_ts = t0

        # supervoxels ---------------------------------------------------------
        self.sv_ids = np.asarray(arrays["sv_ids"], dtype=np.uint64)
        s = self.sv_ids.size
        self.sv_chunk = self.layout.chunk_coords(self.sv_ids).astype(np.int32)
        self._build_sv_chunk_index()
        self.sv_parent = np.asarray(arrays["sv_parent"], dtype=np.int64).copy()
        self.sv_parent_ts = np.full(s, t0, dtype=np.int64)
        self.sv_hist = KeyedHistory()  # (sv, start, earlier parent)
        self.sv_sizes = np.asarray(arrays["sv_sizes"])
        self.sv_bbox = np.asarray(arrays["sv_bbox"])
        self.sv_centroid = np.asarray(arrays["sv_centroid"])

        # edges ---------------------------------------------------------------
        edges = np.asarray(arrays["edges"], dtype=np.int64).reshape(-1, 2)
        self.e_sv = GrowArray(edges)
        self.e_aff = GrowArray(np.asarray(arrays["affinity"], dtype=np.float32))
        self.e_area = GrowArray(np.asarray(arrays["area"], dtype=np.float32))
        self.e_layer = GrowArray(
            self.layout.edge_layers(self.sv_chunk[edges[:, 0]], self.sv_chunk[edges[:, 1]])
        )
        active = np.asarray(arrays["active"], dtype=bool)
        self.e_active = GrowArray(active.copy())
        self.e_active0 = GrowArray(active.copy())
        self.e_toggles = KeyedHistory()  # (edge, ts, 0): activity flipped at ts
        n_e = edges.shape[0]
        keys = np.concatenate([edges[:, 0], edges[:, 1]])
        vals = np.concatenate([np.arange(n_e), np.arange(n_e)])
        self.adj_ptr, self.adj_edge = build_csr(keys, vals, s)
        self.adj_extra: dict[int, list[int]] = {}

        # nodes -----------------------------------------------------------------
        node_ids = np.asarray(arrays["node_ids"], dtype=np.uint64)
        n0 = node_ids.size
        self.n_base = n0
        self.base_ids = node_ids
        self.n_id = GrowArray(node_ids)
        self.n_layer = GrowArray(self.layout.layers(node_ids).astype(np.int8))
        self.n_parent = GrowArray(np.asarray(arrays["node_parent"], dtype=np.int64))
        self.n_parent_ts = GrowArray(np.full(n0, t0, dtype=np.int64))
        self.n_created = GrowArray(np.full(n0, t0, dtype=np.int64))
        self.n_expired = GrowArray(np.full(n0, FOREVER_MS, dtype=np.int64))
        self.n_hist = KeyedHistory()  # (node, start, earlier parent)
        self.child_ptr = np.asarray(arrays["node_child_ptr"], dtype=np.int64)
        self.child_idx = np.asarray(arrays["node_children"], dtype=np.int64)
        self.new_children: dict[int, np.ndarray] = {}
        self.id_to_new: dict[int, int] = {}
        self.next_seg: dict[int, int] = {}

        self._scratch = threading.local()  # per-thread supervoxel -> position maps

        # lineage -------------------------------------------------------------
        self.former: dict[int, list[int]] = {}
        self.future: dict[int, list[int]] = {}
        self.created_by_op: dict[int, int] = {}
        self.expired_by_op: dict[int, int] = {}

    # ------------------------------------------------------------------ sizes
    @property
    def n_supervoxels(self) -> int:
        return int(self.sv_ids.size)

    @property
    def n_nodes(self) -> int:
        return len(self.n_id)

    # ------------------------------------------------------------- ID lookup
    def _build_sv_chunk_index(self) -> None:
        """Offsets for O(1) supervoxel lookups when each chunk's segments are ``1..k`` (as ingest makes them)."""
        self._sv_grid = None
        if not self.sv_ids.size:
            return
        grid = np.maximum(self.sv_chunk.max(axis=0).astype(np.int64) + 1, 1)
        c = self.sv_chunk.astype(np.int64)
        flat = (c[:, 0] * grid[1] + c[:, 1]) * grid[2] + c[:, 2]
        n_chunks = int(np.prod(grid))
        counts = np.bincount(flat, minlength=n_chunks)
        offset = np.zeros(n_chunks, dtype=np.int64)
        np.cumsum(counts[:-1], out=offset[1:])
        seg = self.layout.segments(self.sv_ids).astype(np.int64)
        if np.all(np.diff(flat) >= 0) and np.array_equal(seg, np.arange(flat.size) - offset[flat] + 1):
            self._sv_grid = grid
            self._sv_offset = offset
            self._sv_count = counts

    def sv_index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Supervoxel indices of layer-1 IDs; second value marks IDs that exist."""
        ids = np.asarray(ids, dtype=np.uint64)
        if self._sv_grid is not None:
            lay = self.layout
            b = lay.bits[1]
            off = lay.segment_bits(1)
            mask = np.uint64((1 << b) - 1)
            g = self._sv_grid
            x = ((ids >> np.uint64(off + 2 * b)) & mask).astype(np.int64)
            y = ((ids >> np.uint64(off + b)) & mask).astype(np.int64)
            z = ((ids >> np.uint64(off)) & mask).astype(np.int64)
            seg = (ids & np.uint64(lay.max_segment(1))).astype(np.int64)
            ok = ((ids >> np.uint64(56)) == 1) & (x < g[0]) & (y < g[1]) & (z < g[2])
            flat = np.where(ok, (x * g[1] + y) * g[2] + z, 0)
            ok &= (seg >= 1) & (seg <= self._sv_count[flat])
            idx = np.where(ok, self._sv_offset[flat] + seg - 1, 0)
            return idx, ok
        idx = np.searchsorted(self.sv_ids, ids)
        idx = np.minimum(idx, max(self.sv_ids.size - 1, 0))
        ok = self.sv_ids[idx] == ids if self.sv_ids.size else np.zeros(ids.shape, bool)
        return idx.astype(np.int64), ok

    def node_index(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Node indices of layer >= 2 IDs; second value marks IDs that exist."""
        ids = np.atleast_1d(np.asarray(ids, dtype=np.uint64))
        idx = np.zeros(ids.size, dtype=np.int64)
        ok = np.zeros(ids.size, dtype=bool)
        if self.n_base:
            pos = np.minimum(np.searchsorted(self.base_ids, ids), self.n_base - 1)
            hit = self.base_ids[pos] == ids
            idx[hit] = pos[hit]
            ok |= hit
        if self.id_to_new:
            for i in np.flatnonzero(~ok):
                j = self.id_to_new.get(int(ids[i]))
                if j is not None:
                    idx[i] = j
                    ok[i] = True
        return idx, ok

    def node_of(self, node_id: int) -> int:
        """Index of one node ID of layer >= 2 or raise :class:`InvalidNodeError`."""
        idx, ok = self.node_index(np.array([node_id], dtype=np.uint64))
        if not ok[0]:
            raise InvalidNodeError(f"{node_id} is not a node of this graph", node_id=int(node_id))
        return int(idx[0])

    # -------------------------------------------------------------- children
    def children(self, node: int) -> np.ndarray:
        """Children of a node: supervoxel indices for L2 nodes, node indices otherwise."""
        if node < self.n_base:
            return self.child_idx[self.child_ptr[node] : self.child_ptr[node + 1]]
        return self.new_children[node]

    def children_many(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated children of ``nodes`` and, for each child, its position in ``nodes``."""
        nodes = np.asarray(nodes, dtype=np.int64)
        base = nodes < self.n_base
        if np.all(base):
            return csr_gather(self.child_ptr, self.child_idx, nodes)
        parts, owners = [], []
        bi = np.flatnonzero(base)
        if bi.size:
            c, o = csr_gather(self.child_ptr, self.child_idx, nodes[bi])
            parts.append(c)
            owners.append(bi[o])
        for i in np.flatnonzero(~base):
            c = self.new_children[int(nodes[i])]
            parts.append(c)
            owners.append(np.full(c.size, i, dtype=np.int64))
        return np.concatenate(parts), np.concatenate(owners)

    def n_children(self, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes, dtype=np.int64)
        out = np.zeros(nodes.size, dtype=np.int64)
        base = nodes < self.n_base
        out[base] = self.child_ptr[nodes[base] + 1] - self.child_ptr[nodes[base]]
        for i in np.flatnonzero(~base):
            out[i] = self.new_children[int(nodes[i])].size
        return out

    # --------------------------------------------------------------- parents
    def sv_parent_at(self, sv: np.ndarray, ts: int) -> np.ndarray:
        sv = np.asarray(sv, dtype=np.int64)
        par = self.sv_parent[sv]
        old = np.flatnonzero(self.sv_parent_ts[sv] > ts)
        if old.size:
            val, cnt = self.sv_hist.at(sv[old], ts)
            par[old] = np.where(cnt > 0, val, -1)
        return par

    def node_parent_at(self, nodes: np.ndarray, ts: int) -> np.ndarray:
        nodes = np.asarray(nodes, dtype=np.int64)
        par = self.n_parent.a[nodes]
        old = np.flatnonzero(self.n_parent_ts.a[nodes] > ts)
        if old.size:
            val, cnt = self.n_hist.at(nodes[old], ts)
            par[old] = np.where(cnt > 0, val, -1)
        return par

    def climb(self, nodes: np.ndarray, ts: int, stop_layer: int | None = None) -> np.ndarray:
        """Ancestor of each node at ``ts``: the root, or the highest ancestor at or below ``stop_layer``."""
        cur = np.asarray(nodes, dtype=np.int64).copy()
        stop = self.n_layers if stop_layer is None else stop_layer
        layer = self.n_layer.a
        active = np.flatnonzero(layer[cur] < stop)
        while active.size:
            par = self.node_parent_at(cur[active], ts)
            ok = par >= 0
            ok[ok] = layer[par[ok]] <= stop
            cur[active[ok]] = par[ok]
            active = active[ok]
            active = active[layer[cur[active]] < stop]
        return cur

    def positions(self, svs: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Position of each supervoxel index of ``queries`` in ``svs`` (-1 where absent).

        A per-thread scratch array makes this one scatter and one gather (no sorting).
        """
        m = getattr(self._scratch, "m", None)
        if m is None or m.size != self.sv_ids.size:
            m = np.full(self.sv_ids.size, -1, dtype=np.int64)
            self._scratch.m = m
        m[svs] = np.arange(svs.size)
        try:
            return m[queries]
        finally:
            m[svs] = -1

    # ----------------------------------------------------------------- edges
    def incident_edges(self, svs: np.ndarray) -> np.ndarray:
        """Indices of every edge (active or not) touching any of ``svs``."""
        svs = np.asarray(svs, dtype=np.int64)
        e, _ = csr_gather(self.adj_ptr, self.adj_edge, svs)
        if self.adj_extra:
            extra = [self.adj_extra[int(s)] for s in svs if int(s) in self.adj_extra]
            if extra:
                e = np.concatenate([e, np.concatenate([np.asarray(x, np.int64) for x in extra])])
        return e

    def edge_active_at(self, edges: np.ndarray, ts: int) -> np.ndarray:
        edges = np.asarray(edges, dtype=np.int64)
        if ts >= self.last_ts:
            return self.e_active.a[edges].copy()
        out = self.e_active0.a[edges].copy()
        if len(self.e_toggles):
            _, flips = self.e_toggles.at(edges, ts)
            out ^= (flips % 2).astype(bool)
        return out

    def find_edges(self, pairs: np.ndarray) -> np.ndarray:
        """Edge index of each supervoxel-index pair (either order), -1 where absent."""
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        out = np.full(pairs.shape[0], -1, dtype=np.int64)
        if not pairs.shape[0]:
            return out
        e = self.incident_edges(uniq(pairs[:, 0]))
        n = np.int64(max(self.sv_ids.size, 1))
        ends = self.e_sv.a[e]
        keys = np.minimum(ends[:, 0], ends[:, 1]) * n + np.maximum(ends[:, 0], ends[:, 1])
        order = np.argsort(keys, kind="stable")
        keys, e = keys[order], e[order]
        q = np.minimum(pairs[:, 0], pairs[:, 1]) * n + np.maximum(pairs[:, 0], pairs[:, 1])
        pos = np.minimum(np.searchsorted(keys, q), max(keys.size - 1, 0))
        hit = keys[pos] == q if keys.size else np.zeros(q.size, dtype=bool)
        out[hit] = e[pos[hit]]
        return out

    # ---------------------------------------------------------------- leaves
    def leaves(
        self, node: int, stop_layer: int = 1, chunk_box: np.ndarray | None = None
    ) -> tuple[np.ndarray, bool]:
        """Descendants of ``node`` at or below ``stop_layer``.

        Returns ``(indices, are_supervoxels)``: supervoxel indices when ``stop_layer`` is 1,
        node indices otherwise. ``chunk_box`` (inclusive atomic-chunk box ``[[lo], [hi]]``)
        drops subtrees whose chunk lies outside it, as CAVE's bounding-box filter does.
        """
        frontier = np.array([node], dtype=np.int64)
        found: list[np.ndarray] = []
        layer = self.n_layer.a
        if layer[node] <= stop_layer:
            return frontier, False
        while frontier.size:
            l2 = layer[frontier] == 2
            if stop_layer == 1 and np.any(l2):
                svs, _ = self.children_many(frontier[l2])
                if chunk_box is not None and svs.size:
                    c = self.sv_chunk[svs]
                    svs = svs[np.all((c >= chunk_box[0]) & (c <= chunk_box[1]), axis=1)]
                found.append(svs)
                frontier = frontier[~l2]
                if not frontier.size:
                    break
            kids, _ = self.children_many(frontier)
            if chunk_box is not None and kids.size:
                kids = kids[self._in_chunk_box(kids, chunk_box)]
            done = layer[kids] <= stop_layer
            if stop_layer > 1:
                found.append(kids[done])
            frontier = kids[~done]
        if not found:
            return np.zeros(0, dtype=np.int64), stop_layer == 1
        return np.sort(np.concatenate(found)), stop_layer == 1

    def _in_chunk_box(self, nodes: np.ndarray, box: np.ndarray) -> np.ndarray:
        ids = self.n_id.a[nodes]
        layers = self.n_layer.a[nodes].astype(np.int64)
        c = self.layout.chunk_coords(ids)
        span = np.left_shift(1, np.maximum(layers - 2, 0))[:, None]
        lo = c * span
        hi = lo + span - 1
        return np.all((hi >= box[0]) & (lo <= box[1]), axis=1)

    # ----------------------------------------------------------------- minting
    def _base_max_segment(self, chunk_id: int, layer: int) -> int:
        hi = chunk_id + self.layout.max_segment(layer)
        k = int(np.searchsorted(self.base_ids, np.uint64(hi), side="right")) - 1
        if k >= 0 and int(self.base_ids[k]) >= chunk_id:
            return int(self.base_ids[k]) - chunk_id
        return 0

    def mint(self, layer: int, chunks: np.ndarray) -> np.ndarray:
        """New node IDs for nodes of ``layer`` in the given chunks (not yet applied)."""
        chunks = np.asarray(chunks, dtype=np.int64).reshape(-1, 3)
        cids = self.layout.chunk_ids(layer, chunks[:, 0], chunks[:, 1], chunks[:, 2])
        out = np.empty(cids.size, dtype=np.uint64)
        pending: dict[int, int] = {}
        for i, cid in enumerate(cids.tolist()):
            seg = pending.get(cid)
            if seg is None:
                seg = self.next_seg.get(cid)
                if seg is None:
                    seg = self._base_max_segment(cid, layer) + 1
            out[i] = np.uint64(cid + seg)
            pending[cid] = seg + 1
        return out

    # ------------------------------------------------------------------ apply
    def apply(
        self,
        delta: GraphDelta,
        operation_id: int,
        edge_hint: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Apply one operation's changes (also used to replay the log).

        ``edge_hint`` gives the edge indices of ``delta.activate`` / ``delta.deactivate`` when the
        caller planned them on this very state (saves looking the pairs up).
        """
        ts = int(delta.ts)
        # edges
        for k, (pairs, value) in enumerate(((delta.activate, True), (delta.deactivate, False))):
            if pairs.shape[0]:
                if edge_hint is not None:
                    idx = np.asarray(edge_hint[k], dtype=np.int64)
                else:
                    sv_a, _ = self.sv_index(pairs[:, 0])
                    sv_b, _ = self.sv_index(pairs[:, 1])
                    idx = self.find_edges(np.stack([sv_a, sv_b], axis=1))
                idx = uniq(idx[idx >= 0])
                idx = idx[self.e_active.a[idx] != value]
                self.e_active.a[idx] = value
                self.e_toggles.append(idx, np.full(idx.size, ts), np.zeros(idx.size))
        if delta.add_edges.shape[0]:
            sv_a, _ = self.sv_index(delta.add_edges[:, 0])
            sv_b, _ = self.sv_index(delta.add_edges[:, 1])
            pairs = np.stack([sv_a, sv_b], axis=1)
            start, stop = self.e_sv.append(pairs)
            self.e_aff.append(delta.add_affinity)
            self.e_area.append(delta.add_area)
            self.e_layer.append(
                self.layout.edge_layers(self.sv_chunk[pairs[:, 0]], self.sv_chunk[pairs[:, 1]])
            )
            self.e_active.append(np.ones(stop - start, dtype=bool))
            self.e_active0.append(np.zeros(stop - start, dtype=bool))
            new_e = np.arange(start, stop)
            self.e_toggles.append(new_e, np.full(new_e.size, ts), np.zeros(new_e.size))
            for k, e in enumerate(new_e.tolist()):
                for s in pairs[k].tolist():
                    self.adj_extra.setdefault(int(s), []).append(e)
        # nodes, bottom-up
        new_ids = np.asarray(delta.new_ids, dtype=np.uint64)
        if new_ids.size:
            layers = self.layout.layers(new_ids)
            start, stop = self.n_id.append(new_ids)
            idxs = np.arange(start, stop, dtype=np.int64)
            self.n_layer.append(layers.astype(np.int8))
            self.n_parent.append(np.full(new_ids.size, -1, dtype=np.int64))
            self.n_parent_ts.append(np.full(new_ids.size, ts, dtype=np.int64))
            self.n_created.append(np.full(new_ids.size, ts, dtype=np.int64))
            self.n_expired.append(np.full(new_ids.size, FOREVER_MS, dtype=np.int64))
            for nid, i in zip(new_ids.tolist(), idxs.tolist()):
                self.id_to_new[nid] = i
            segs = self.layout.segments(new_ids)
            cids = new_ids - segs
            for cid, seg in zip(cids.tolist(), segs.tolist()):
                if self.next_seg.get(cid, 0) <= seg:
                    self.next_seg[cid] = seg + 1
            ptr = delta.new_child_ptr
            for k, node in enumerate(idxs.tolist()):
                child_ids = delta.new_children[ptr[k] : ptr[k + 1]]
                if layers[k] == 2:
                    kids, ok = self.sv_index(child_ids)
                    if not np.all(ok):
                        raise InvalidNodeError(f"delta names unknown supervoxels {child_ids[~ok][:5].tolist()}")
                    self.sv_hist.append(kids, self.sv_parent_ts[kids], self.sv_parent[kids])
                    self.sv_parent[kids] = node
                    self.sv_parent_ts[kids] = ts
                else:
                    kids, ok = self.node_index(child_ids)
                    if not np.all(ok):
                        raise InvalidNodeError(f"delta names unknown nodes {child_ids[~ok][:5].tolist()}")
                    par = self.n_parent.a
                    pts = self.n_parent_ts.a
                    had = kids[par[kids] >= 0]
                    self.n_hist.append(had, pts[had], par[had])
                    par[kids] = node
                    pts[kids] = ts
                self.new_children[node] = kids.astype(np.int64)
        # lineage
        old_idx, _ = self.node_index(delta.old_roots) if delta.old_roots.size else (np.zeros(0, np.int64), None)
        new_idx, _ = self.node_index(delta.new_roots) if delta.new_roots.size else (np.zeros(0, np.int64), None)
        for o in old_idx.tolist():
            self.n_expired.a[o] = ts
            self.future[o] = new_idx.tolist()
            self.expired_by_op[o] = operation_id
        for n in new_idx.tolist():
            self.former[n] = old_idx.tolist()
            self.created_by_op[n] = operation_id
        self.last_ts = max(self.last_ts, ts)
