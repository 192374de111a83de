"""``MorphologyService``: L2 features and skeletons of one graph, current right after every edit.

* **L2 features** (CAVE's L2 cache attributes) of every level-2 node come from
  :mod:`cavelab.server.morphology.l2features`. Features are kept per L2 ID; an L2 ID is immutable
  (its supervoxels never change), so a value never goes stale. Edits create new L2 nodes: a
  listener on the graph queues them and a worker thread computes their features right after the
  edit is acknowledged (well within a second); a request for an L2 ID whose features are not
  there yet computes them on the spot, so an answer is never missing or stale.
* **Skeletons** come from the L2 graph of a root with the nodes' ``rep_coord_nm`` and
  ``max_dt_nm`` (:func:`~cavelab.server.morphology.skeleton.skeletonize_graph`). Root IDs are
  immutable too, so skeletons are cached by root; an edit mints new roots, whose skeletons are
  built on first request.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from cavelab.server.errors import InputError, InvalidNodeError
from cavelab.server.morphology.inflight import Inflight
from cavelab.server.morphology.skeleton import Skeleton, skeletonize_graph

if TYPE_CHECKING:
    from cavelab.server.engine.delta import GraphDelta
    from cavelab.server.engine.graph import ChunkedGraph

log = logging.getLogger(__name__)

FeaturesFn = Callable[[np.ndarray], dict[str, np.ndarray]]
"""``L2 IDs -> {attribute: array with one row per ID}``."""


class MorphologyService:
    """L2 features and skeletons of ``cg`` (see the module docstring)."""

    def __init__(
        self,
        cg: ChunkedGraph,
        features_fn: FeaturesFn,
        attributes: dict[str, dict[str, Any]],
        *,
        record: Callable[[dict[str, np.ndarray], int], dict[str, Any]] | None = None,
        skeleton_cache: int = 2048,
    ) -> None:
        self.cg = cg
        self._features_fn = features_fn
        self.attributes = attributes
        self._record = record or _plain_record
        self._store: dict[int, dict[str, Any]] = {}
        self._inflight = Inflight()
        self._lock = threading.Lock()
        self._skeletons: OrderedDict[int, Skeleton] = OrderedDict()
        self._skeleton_cache = skeleton_cache
        self._queue: queue.Queue[np.ndarray | None] = queue.Queue()
        self.warmed = threading.Event()
        """Set once the worker has done the one-time work of a first computation (see ``warm``)."""
        self._worker = threading.Thread(target=self._work, name="cavelab-l2features", daemon=True)
        self._worker.start()
        cg.add_listener(self._on_edit)

    # ------------------------------------------------------------ L2 features
    def attribute_metadata(self) -> dict[str, str]:
        """``{attribute: type}`` as CAVE's ``attribute_metadata`` answers."""
        return {k: str(v.get("type", "")) for k, v in self.attributes.items()}

    def _on_edit(self, operation_id: int, delta: GraphDelta) -> None:
        ids = np.asarray(delta.new_ids, dtype=np.uint64)
        l2 = ids[self.cg.state.layout.layers(ids) == 2] if ids.size else ids
        if l2.size:
            self._queue.put(l2)

    def _work(self) -> None:
        warm = getattr(self._features_fn, "warm", None)
        try:
            if warm is not None:
                warm()
        except Exception:  # not fatal: the first request pays instead
            log.exception("cavelab: warming the L2 features failed")
        finally:
            self.warmed.set()
        while True:
            ids = self._queue.get()
            if ids is None:
                return
            try:
                # nodes a later edit already replaced are left for a request (if one ever comes):
                # at a burst of edits the worker then only does the work that lasts
                roots = np.asarray(self.cg.get_roots(ids), dtype=np.uint64)
                live = roots != 0
                live[live] = np.asarray(self.cg.is_latest_roots(roots[live]), dtype=bool)
                if np.any(live):
                    self._ensure(ids[live])
            except Exception:  # a failed prefetch is retried on demand
                log.exception("cavelab: L2 features of %d new nodes failed", ids.size)

    def cached(self, ids: Sequence[int]) -> list[bool]:
        """Whether each L2 ID's features are already computed (without computing them)."""
        with self._lock:
            return [int(i) in self._store for i in ids]

    def pending(self) -> int:
        """L2 batches queued for feature computation (0 once every edit's nodes are done)."""
        return self._queue.qsize()

    def _ensure(self, ids: np.ndarray) -> None:
        """Compute the features of the IDs not stored yet; IDs another thread is computing are
        waited for, not computed twice (the edit worker and requests often ask for the same)."""
        with self._lock:
            mine, theirs = self._inflight.claim(i for i in ids.tolist() if i not in self._store)
        try:
            if mine:
                todo = np.asarray(mine, dtype=np.uint64)
                feats = self._features_fn(todo)
                rows = [self._record(feats, k) for k in range(todo.size)]
                with self._lock:
                    for i, row in zip(mine, rows):
                        self._store[i] = row
        finally:
            with self._lock:
                self._inflight.release(mine)
        for ev in theirs:
            ev.wait()
        with self._lock:
            left = [i for i in ids.tolist() if i not in self._store]
        if left:  # another thread failed on them: compute here (raises if it fails again)
            self._ensure(np.asarray(left, dtype=np.uint64))

    def l2_data(self, ids: np.ndarray, names: Sequence[str] | None = None) -> dict[int, dict[str, Any]]:
        """``{l2 id: {attribute: value}}``; IDs that are not L2 nodes of this graph map to ``{}``."""
        if names is not None:
            unknown = sorted(set(names) - set(self.attributes))
            if unknown:
                raise InputError(f"unknown L2 attributes {unknown}; attributes: {sorted(self.attributes)}")
        ids = np.asarray(ids, dtype=np.uint64)
        valid = self._valid_l2(ids)
        self._ensure(np.unique(ids[valid]))
        out: dict[int, dict[str, Any]] = {}
        with self._lock:
            for i, ok in zip(ids.tolist(), valid.tolist()):
                row = self._store.get(i) if ok else None
                out[i] = {} if row is None else ({k: row[k] for k in names} if names else dict(row))
        return out

    def _valid_l2(self, ids: np.ndarray) -> np.ndarray:
        st = self.cg.state
        ok = st.layout.layers(ids) == 2
        if np.any(ok):
            _, found = st.node_index(ids[ok])
            ok[np.flatnonzero(ok)[~found]] = False
        return ok

    def features_array(self, ids: np.ndarray, name: str) -> np.ndarray:
        """One attribute for many L2 IDs (all valid) as an array."""
        ids = np.asarray(ids, dtype=np.uint64)
        self._ensure(np.unique(ids))
        with self._lock:
            return np.asarray([self._store[i][name] for i in ids.tolist()], dtype=np.float64)

    # --------------------------------------------------------------- skeletons
    def valid_roots(self, roots: Sequence[int]) -> list[bool]:
        """Which IDs are roots of this graph (current or past)."""
        ids = np.asarray(roots, dtype=np.uint64)
        if not ids.size:
            return []
        st = self.cg.state
        ok = st.layout.layers(ids) == self.cg.n_layers
        if np.any(ok):
            _, found = st.node_index(ids[ok])
            ok[np.flatnonzero(ok)[~found]] = False
        return ok.tolist()

    def skeleton(self, root: int) -> Skeleton:
        """The skeleton of a root (cached: a root's L2 graph never changes)."""
        root = int(root)
        with self._lock:
            hit = self._skeletons.get(root)
            if hit is not None:
                self._skeletons.move_to_end(root)
                return hit
        if not self.valid_roots([root])[0]:
            raise InvalidNodeError(f"{root} is not a root ID of this graph", node_id=root)
        l2 = np.asarray(self.cg.get_leaves(root, stop_layer=2), dtype=np.uint64)
        edges = np.asarray(self.cg.level2_graph(root), dtype=np.uint64).reshape(-1, 2)
        coords = self.features_array(l2, "rep_coord_nm") if l2.size else np.zeros((0, 3))
        radii = self.features_array(l2, "max_dt_nm") if l2.size else None
        sk = skeletonize_graph(l2, coords.reshape(-1, 3), edges, radii)
        sk.meta["root_id"] = root
        with self._lock:
            self._skeletons[root] = sk
            while len(self._skeletons) > self._skeleton_cache:
                self._skeletons.popitem(last=False)
        return sk

    def summaries(self, roots: Sequence[int]) -> list[dict[str, Any]]:
        """Volume, surface area, cable length and bounding box of many roots in one call.

        ``volume_nm3`` is exact (the sum of the L2 nodes' voxel volumes); ``area_nm2`` is the sum
        of the L2 nodes' areas, which (as CAVE's L2 areas) leave out faces lying on atomic-chunk
        planes; ``bbox_nm`` is ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` of its voxels.
        """
        roots = [int(r) for r in roots]
        ok = self.valid_roots(roots)
        bad = [r for r, v in zip(roots, ok) if not v]
        if bad:
            raise InvalidNodeError(f"not root IDs of this graph: {bad[:10]}", node_ids=bad[:10])
        res = np.asarray(self.cg.meta.resolution, dtype=np.float64)
        out = []
        for r in roots:
            l2 = np.asarray(self.cg.get_leaves(r, stop_layer=2), dtype=np.uint64)
            svs = np.asarray(self.cg.get_leaves(r), dtype=np.uint64)
            idx, _ = self.cg.state.sv_index(svs)
            bb = self.cg.state.sv_bbox[idx]
            out.append(
                {
                    "root_id": r,
                    "volume_nm3": float(self.features_array(l2, "size_nm3").sum()),
                    "area_nm2": float(self.features_array(l2, "area_nm2").sum()),
                    "cable_length_nm": float(self.skeleton(r).cable_length()),
                    "bbox_nm": [(bb[:, :3].min(axis=0) * res).tolist(), (bb[:, 3:].max(axis=0) * res).tolist()],
                    "n_l2": int(l2.size),
                    "n_supervoxels": int(svs.size),
                }
            )
        return out

    def close(self) -> None:
        self._queue.put(None)
        close = getattr(self._features_fn, "close", None)
        if close is not None:
            close()


def _plain_record(feats: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    return {k: np.asarray(v)[i].tolist() for k, v in feats.items()}


def open_service(cg: ChunkedGraph) -> MorphologyService:
    """The service of a graph with CAVE's L2 attributes (see :mod:`.l2features`)."""
    from cavelab.server.morphology.l2features import ATTRIBUTES, L2Features, cave_record

    return MorphologyService(cg, L2Features.open(cg, process=True), ATTRIBUTES, record=cave_record)
