"""``MeshService``: per-L2 meshes of one graph, current right after every edit.

* **L2 meshes** come from :func:`cavelab.server.morphology.meshes.l2_meshes` (zmesh, one chunk
  read per chunk, simplified with the seams kept in place). They are cached by L2 ID in a
  bounded LRU (bytes). A listener on the graph queues each edit's new L2 nodes and a worker
  thread meshes them right after the edit is acknowledged; a request for an L2 node whose mesh is
  not there yet meshes it on the spot (the worker and requests never mesh the same node twice at
  once), so an answer is never missing.
* An edit across a chunk border changes which neighbouring supervoxels belong to a node's cell
  without minting a new L2 ID; each mesh records that context and, after every edit, the worker
  re-meshes the cached L2 meshes of the new roots whose context changed
  (:func:`~cavelab.server.morphology.meshes.stale_contexts`). Requests check it too.
* **Root meshes** are stitched on demand from the root's L2 meshes (:meth:`MeshService.root_mesh`):
  the marching-cubes surface of the whole cell, closed.

Example::

    >>> svc = MeshService(cg)                      # doctest: +SKIP
    >>> m = svc.root_mesh(root)                    # doctest: +SKIP
    >>> m.vertices.shape, m.to_trimesh().is_watertight   # doctest: +SKIP
    ((5120, 3), True)
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cavelab.server.errors import InputError, InvalidNodeError
from cavelab.server.morphology.inflight import Inflight
from cavelab.server.morphology.meshes import (
    REDUCTION_FACTOR,
    Mesh,
    l2_meshes,
    merge_vertices,
    stale_contexts,
)

if TYPE_CHECKING:
    from cavelab.server.engine.delta import GraphDelta
    from cavelab.server.engine.graph import ChunkedGraph

log = logging.getLogger(__name__)

#: default bound of the L2 mesh cache
DEFAULT_MAX_BYTES = 1 << 30
#: L2 nodes per meshing call of :meth:`MeshService.mesh_all` (sorted by chunk)
MESH_ALL_BATCH = 4096


class MeshService:
    """L2 meshes of ``cg`` cached by L2 ID, refreshed by a worker after every edit.

    ``max_bytes`` bounds the cache (least recently used meshes are dropped first; they are
    recomputed when asked again). ``simplify``, ``reduction_factor`` and ``max_error`` are passed
    to :func:`~cavelab.server.morphology.meshes.l2_meshes`. ``simplify`` is off by default: zmesh's
    simplifier (``Mesher.simplify``) was seen to loop forever on some L2 meshes while holding the
    GIL, which froze the whole Jupyter server; meshes are served as marching cubes makes them.
    """

    def __init__(
        self,
        cg: ChunkedGraph,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        simplify: bool = False,
        reduction_factor: int = REDUCTION_FACTOR,
        max_error: float | None = None,
        listen: bool = True,
    ) -> None:
        self.cg = cg
        self.max_bytes = int(max_bytes)
        self.simplify = simplify
        self.reduction_factor = reduction_factor
        self.max_error = max_error
        self._store: OrderedDict[int, Mesh] = OrderedDict()
        self._bytes = 0
        self._inflight = Inflight()
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[np.ndarray, np.ndarray] | None] = queue.Queue()
        self._busy = 0
        self._viewed: OrderedDict[int, None] = OrderedDict()  # roots whose meshes were asked for
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="cavelab-meshes", daemon=True)
        self._worker.start()
        if listen:
            cg.add_listener(self._on_edit)

    # ------------------------------------------------------------------ edits
    def _on_edit(self, operation_id: int, delta: GraphDelta) -> None:
        ids = np.asarray(delta.new_ids, dtype=np.uint64)
        l2 = ids[self.cg.state.layout.layers(ids) == 2] if ids.size else ids
        roots = np.asarray(delta.new_roots, dtype=np.uint64)
        if l2.size or roots.size:
            with self._lock:
                self._busy += 1
            self._queue.put((l2, roots, np.asarray(delta.old_roots, dtype=np.uint64)))

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            l2, roots, old_roots = item
            try:
                # cached L2 meshes of the new roots whose neighbourhood changed cell (an edit
                # next to them), then one meshing call for them and the new L2 nodes (so a
                # chunk holding both is read once)
                # Only cells someone has viewed are kept meshed: an edit of cells whose meshes
                # nobody asked for, or whose result a later edit already replaced, is left for the
                # first request; so editing unviewed cells costs no meshing (zmesh holds the GIL
                # while it runs).
                with self._lock:
                    viewed = any(int(r) in self._viewed for r in old_roots.tolist())
                stale: list[int] = []
                wanted: list[np.ndarray] = []
                latest = self.cg.is_latest_roots(roots) if roots.size else np.zeros(0, dtype=bool)
                for r, is_latest in zip(roots.tolist(), np.asarray(latest, dtype=bool).tolist()):
                    if not is_latest:
                        continue
                    leaves = self.cg.get_leaves(int(r), stop_layer=2)
                    with self._lock:
                        have = {i: self._store[i] for i in leaves.tolist() if i in self._store}
                    if not (viewed or have):
                        continue
                    self._mark_viewed(int(r))
                    wanted.append(leaves)
                    stale += stale_contexts(self.cg, have)
                if wanted:
                    l2 = l2[np.isin(l2, np.concatenate(wanted))]
                else:
                    l2 = l2[:0]
                todo = np.unique(np.concatenate([l2, np.asarray(stale, dtype=np.uint64)]))
                if todo.size:
                    self._ensure(todo, force=stale)
            except Exception:  # a failed prefetch is retried on demand
                log.exception("cavelab: meshes of %d new L2 nodes failed", l2.size)
            finally:
                with self._lock:
                    self._busy -= 1

    def _mark_viewed(self, root: int, limit: int = 100_000) -> None:
        with self._lock:
            self._viewed[root] = None
            self._viewed.move_to_end(root)
            while len(self._viewed) > limit:
                self._viewed.popitem(last=False)

    def pending(self) -> int:
        """Edits whose new L2 nodes are not meshed yet (0 once every edit's nodes are done)."""
        with self._lock:
            return self._busy

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Wait until :meth:`pending` is 0 (True) or ``timeout`` s passed (False)."""
        deadline = time.monotonic() + timeout
        while self.pending():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    # ------------------------------------------------------------------ cache
    def cached(self, ids: Sequence[int]) -> list[bool]:
        """Whether each L2 ID's mesh is in the cache (without meshing anything)."""
        with self._lock:
            return [int(i) in self._store for i in ids]

    @property
    def cache_bytes(self) -> int:
        """Bytes held by the cached meshes."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._store)

    def _put(self, items: dict[int, Mesh]) -> None:
        with self._lock:
            for i, m in items.items():
                old = self._store.pop(i, None)
                if old is not None:
                    self._bytes -= old.nbytes
                self._store[i] = m
                self._bytes += m.nbytes
            while self._bytes > self.max_bytes and len(self._store) > 1:
                _, m = self._store.popitem(last=False)
                self._bytes -= m.nbytes

    def _compute(self, ids: np.ndarray) -> dict[int, Mesh]:
        return l2_meshes(
            self.cg.meta, self.cg, self.cg.segmentation, ids, simplify=self.simplify,
            reduction_factor=self.reduction_factor, max_error=self.max_error,
        )

    def _ensure(self, ids: np.ndarray, force: Sequence[int] = ()) -> dict[int, Mesh]:
        """The meshes of ``ids`` (valid L2 IDs), computing those not cached (and ``force``);
        IDs another thread is meshing are waited for, not meshed twice."""
        ids = np.unique(np.asarray(ids, dtype=np.uint64))
        forced = {int(i) for i in force}
        got: dict[int, Mesh] = {}
        with self._lock:
            for i in ids.tolist():
                m = None if i in forced else self._store.get(i)
                if m is not None:
                    self._store.move_to_end(i)
                    got[i] = m
            mine, theirs = self._inflight.claim(i for i in ids.tolist() if i not in got)
        try:
            if mine:
                new = self._compute(np.asarray(mine, dtype=np.uint64))
                self._put(new)
                got.update(new)
        finally:
            with self._lock:
                self._inflight.release(mine)
        for ev in theirs:
            ev.wait()
        left = [i for i in ids.tolist() if i not in got]
        if left:
            with self._lock:
                for i in left:
                    m = self._store.get(i)
                    if m is not None:
                        got[i] = m
            missing = [i for i in left if i not in got]
            if missing:  # another thread failed on them, or the cache dropped them: mesh here
                new = self._compute(np.asarray(missing, dtype=np.uint64))
                self._put(new)
                got.update(new)
        return got

    def _refresh_stale(self, l2: np.ndarray) -> dict[int, Mesh]:
        """The meshes of ``l2`` with every stale context re-meshed."""
        got = self._ensure(l2)
        stale = stale_contexts(self.cg, got)
        if stale:
            got.update(self._ensure(np.asarray(stale, dtype=np.uint64), force=stale))
        return got

    # --------------------------------------------------------------- validity
    def _check_l2(self, ids: np.ndarray) -> None:
        st = self.cg.state
        layers = st.layout.layers(ids)
        bad = ids[layers != 2]
        if bad.size:
            raise InvalidNodeError(
                f"not level-2 IDs: {bad[:10].tolist()} (layers {layers[layers != 2][:10].tolist()})",
                node_ids=bad[:10].tolist(),
            )
        _, found = st.node_index(ids)
        if not np.all(found):
            raise InvalidNodeError(f"not nodes of this graph: {ids[~found][:10].tolist()}", node_ids=ids[~found][:10].tolist())

    def _check_node(self, node_id: int, *, root_only: bool) -> None:
        st = self.cg.state
        n = self.cg.n_layers
        layer = int(st.layout.layers(np.array([node_id], dtype=np.uint64))[0])
        if layer == 1:
            raise InvalidNodeError(
                f"{node_id} is a supervoxel ID; meshes are by root (or node) ID: ask the root of the supervoxel first",
                node_id=int(node_id),
            )
        if root_only and layer != n:
            raise InvalidNodeError(f"{node_id} is not a root ID of this graph (layer {layer}, roots are layer {n})", node_id=int(node_id))
        if not 2 <= layer <= n:
            raise InvalidNodeError(f"{node_id} is not a node ID of this graph (layer {layer})", node_id=int(node_id))
        _, found = st.node_index(np.array([node_id], dtype=np.uint64))
        if not found[0]:
            raise InvalidNodeError(f"{node_id} is not a node of this graph", node_id=int(node_id))

    # ------------------------------------------------------------------ reads
    def l2_mesh(self, l2: int) -> Mesh:
        """The mesh of one L2 node (global nm; may be empty for a node wholly inside its cell).

        >>> svc.l2_mesh(l2_id).n_faces   # doctest: +SKIP
        312
        """
        return self.l2_meshes([l2])[int(l2)]

    def l2_meshes(self, ids: Sequence[int] | np.ndarray) -> dict[int, Mesh]:
        """``{l2 id: Mesh}`` for many L2 IDs (each current with its neighbours)."""
        arr = np.asarray(ids, dtype=np.uint64).ravel()
        self._check_l2(arr)
        return self._refresh_stale(arr)

    def leaves(self, node_id: int, *, root_only: bool = False) -> np.ndarray:
        """L2 IDs under a node (validated: a 4xx error for supervoxels and unknown IDs)."""
        node_id = int(node_id)
        self._check_node(node_id, root_only=root_only)
        return np.asarray(self.cg.get_leaves(node_id, stop_layer=2), dtype=np.uint64)

    def manifest(self, node_id: int, *, verify: bool = True) -> list[tuple[int, Mesh | None]]:
        """``[(l2 id, mesh)]`` of a node's L2 nodes; with ``verify`` only those with a surface
        (meshed now if needed), else every L2 node (mesh ``None`` when not cached)."""
        l2 = self.leaves(node_id)
        self._mark_viewed(int(node_id))
        if not verify:
            with self._lock:
                return [(i, self._store.get(i)) for i in l2.tolist()]
        got = self._refresh_stale(l2)
        return [(i, got[i]) for i in l2.tolist() if got[i].n_faces]

    def root_mesh(self, root: int) -> Mesh:
        """The mesh of a root (or any node of layer >= 2): its L2 meshes stitched (seam vertices
        merged), the closed marching-cubes surface of the cell.

        >>> svc.root_mesh(root).to_trimesh().is_watertight   # doctest: +SKIP
        True
        """
        l2 = self.leaves(root)
        self._mark_viewed(int(root))
        got = self._refresh_stale(l2)
        return merge_vertices(Mesh.concatenate([got[i] for i in l2.tolist()]))

    def mesh_all(self, progress: Callable[[int, int], Any] | None = None, batch: int = MESH_ALL_BATCH) -> dict[str, float]:
        """Mesh every current L2 node (warm-up); ``progress(done, total)`` after each batch.

        Returns ``{"n_l2", "seconds", "faces", "cache_bytes"}``. Meshes beyond ``max_bytes`` are
        dropped again (least recently used first).
        """
        t0 = time.perf_counter()
        st = self.cg.state
        l2 = np.unique(np.asarray(self.cg.get_roots(st.sv_ids, stop_layer=2), dtype=np.uint64))
        l2 = l2[l2 != 0]
        chunks = st.layout.chunk_coords(l2)
        order = np.lexsort((chunks[:, 2], chunks[:, 1], chunks[:, 0]))
        l2 = l2[order]
        faces = 0
        for s in range(0, l2.size, batch):
            part = l2[s : s + batch]
            got = self._ensure(part)
            faces += sum(m.n_faces for m in got.values())
            if progress is not None:
                progress(min(s + batch, l2.size), int(l2.size))
        return {"n_l2": int(l2.size), "seconds": time.perf_counter() - t0, "faces": int(faces), "cache_bytes": int(self._bytes)}

    def close(self) -> None:
        """Stop the worker (queued refreshes are dropped)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)


def fragment_name(l2: int, mesh: Mesh | None, meta: Any) -> str:
    """The graphene fragment file name of an L2 mesh: ``{l2}:{context}:{chunk bbox}``.

    Like PyChunkedGraph's ``{node}:0:{x0}-{x1}_{y0}-{y1}_{z0}-{z1}``, with the mesh's context
    hash instead of 0 so that a re-meshed node gets a new name.
    """
    c = np.asarray(meta.layout.chunk_coords(np.array([l2], dtype=np.uint64))[0], dtype=np.int64)
    cs = np.asarray(meta.chunk_size, dtype=np.int64)
    off = np.asarray(meta.voxel_offset, dtype=np.int64)
    lo = c * cs + off
    hi = np.minimum(lo + cs, np.asarray(meta.size, dtype=np.int64) + off)
    bbox = "_".join(f"{a}-{b}" for a, b in zip(lo.tolist(), hi.tolist()))
    ctx = mesh.context.key() if mesh is not None and mesh.context is not None else 0
    return f"{int(l2)}:{ctx:x}:{bbox}"


def parse_fragment(name: str) -> int:
    """The L2 ID of a fragment file name (:func:`fragment_name`); :class:`InputError` if malformed."""
    head = name.split(":", 1)[0].lstrip("~")
    if not head.isdigit():
        raise InputError(f"malformed mesh fragment name {name!r}; expected '<l2 id>:<context>:<bbox>'")
    v = int(head)
    if v >= 2**64:
        raise InputError(f"malformed mesh fragment name {name!r}: ID out of range")
    return v


def open_mesh_service(cg: ChunkedGraph, **kw: Any) -> MeshService:
    """The mesh service of a graph (its worker meshes each edit's new L2 nodes)."""
    return MeshService(cg, **kw)
