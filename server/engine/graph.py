"""``ChunkedGraph``: the versioned segmentation graph of one dataset, in process.

Examples
--------
>>> cg = ChunkedGraph.open("/path/to/dataset")                     # doctest: +SKIP
>>> root = cg.get_root(sv_id)                                      # doctest: +SKIP
>>> res = cg.merge([[sv_a, x, y, z], [sv_b, x, y, z]], user="me")  # doctest: +SKIP
>>> cg.get_root(sv_id, timestamp=t_before_merge) == root           # doctest: +SKIP
True

Concurrency
-----------
Readers share a readers-writer lock. An edit is *planned* under the read lock (so unrelated
edits plan concurrently), then *committed* under a single commit lock: it is re-validated (its
roots must still be current, else it is re-planned, or refused with 409 when the request named a
root that has been superseded), given an operation ID and a strictly increasing timestamp,
written durably to the operation log, and only then applied to memory under the write lock and
acknowledged. Edits on unrelated cells therefore wait on each other only for the log write and
the in-memory apply.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cavelab.server.engine import edits as _edits
from cavelab.server.engine.delta import GraphDelta
from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.engine.rwlock import RWLock
from cavelab.server.engine.state import GraphState
from cavelab.server.engine.timestamps import FOREVER_MS, Timestamp, ms_to_seconds, now_ms, to_ms
from cavelab.server.errors import (
    ConflictError,
    InputError,
    InvalidNodeError,
    NotFoundError,
    PreconditionError,
    StaleRootError,
    StorageError,
)
from cavelab.server.storage import (
    OperationLog,
    OperationRecord,
    open_array_store,
    open_operation_log,
)

log = logging.getLogger(__name__)


@dataclass
class EditResult:
    operation_id: int
    new_root_ids: list[int]
    old_root_ids: list[int]
    timestamp_ms: int

    def to_json(self) -> dict:
        return {"operation_id": self.operation_id, "new_root_ids": self.new_root_ids}


class ChunkedGraph:
    """A dataset's graph: point-in-time reads, merge/split/undo/redo, history."""

    def __init__(
        self,
        meta: DatasetMeta,
        state: GraphState,
        oplog: OperationLog,
        dataset_dir: str | Path | None = None,
        *,
        max_merge_chunk_distance: int | None = 3,
    ) -> None:
        self.meta = meta
        self.state = state
        self.oplog = oplog
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.max_merge_chunk_distance = max_merge_chunk_distance
        self._rw = RWLock()
        self._commit = threading.Lock()
        self.operations: dict[int, OperationRecord] = {}
        self._segmentation = None
        self._next_op = 1
        self._listeners: list[Callable[[int, GraphDelta], None]] = []

    # ---------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        dataset_dir: str | Path,
        *,
        storage_url: str | None = None,
        max_merge_chunk_distance: int | None = 3,
    ) -> ChunkedGraph:
        """Load a dataset directory and replay its operation log."""
        t0 = time.perf_counter()
        meta = DatasetMeta.load(dataset_dir)
        arrays = open_array_store(dataset_dir).load(GraphState.array_names())
        state = GraphState(meta, arrays)
        oplog = open_operation_log(dataset_dir, storage_url)
        cg = cls(meta, state, oplog, dataset_dir, max_merge_chunk_distance=max_merge_chunk_distance)
        n = 0
        for rec in oplog:
            state.apply(GraphDelta.decode(rec.delta), rec.operation_id)
            rec.delta = b""
            cg.operations[rec.operation_id] = rec
            n += 1
        cg._next_op = oplog.last_operation_id() + 1
        log.info(
            "opened %s: %d supervoxels, %d nodes, %d operations replayed in %.2fs",
            dataset_dir, state.n_supervoxels, state.n_nodes, n, time.perf_counter() - t0,
        )
        return cg

    def close(self) -> None:
        self.oplog.close()

    # ---------------------------------------------------------------- helpers
    @property
    def n_layers(self) -> int:
        return self.meta.n_layers

    def now(self) -> int:
        """"Now" for reads (ms): never before the newest edit, so an acknowledged edit is always seen.

        Edits made within the same millisecond get timestamps a millisecond apart, so the newest
        one can be a few ms ahead of the wall clock.
        """
        return max(now_ms(), int(self.state.last_ts))

    def _ts(self, timestamp: Timestamp) -> int:
        ts = self.now() if timestamp is None else to_ms(timestamp)
        if ts < self.meta.created_ms:
            raise InputError(
                f"timestamp {ms_to_seconds(ts)} is before this graph existed; the oldest "
                f"timestamp is {ms_to_seconds(self.meta.created_ms)}",
                oldest_timestamp=ms_to_seconds(self.meta.created_ms),
            )
        return ts

    def _ids(self, ids) -> np.ndarray:
        try:
            a = np.atleast_1d(np.asarray(ids))
            if a.dtype.kind not in "ui":
                a = a.astype(np.float64)
                if np.any(a != np.floor(a)) or np.any(a < 0):
                    raise ValueError
            elif a.dtype.kind == "i" and np.any(a < 0):
                raise ValueError
            return a.astype(np.uint64).ravel()
        except (TypeError, ValueError, OverflowError) as e:
            raise InputError(f"node IDs must be non-negative integers, got {ids!r}"[:300]) from e

    def _node(self, node_id: int, *, min_layer: int = 2) -> int:
        layer = int(self.state.layout.layers(np.uint64(node_id)))
        if layer < min_layer or layer > self.n_layers:
            raise InvalidNodeError(
                f"{node_id} is a layer-{layer} ID; expected a node of layer {min_layer}..{self.n_layers}",
                node_id=int(node_id),
            )
        return self.state.node_of(int(node_id))

    def _check_layer(self, stop_layer: int | None) -> None:
        if stop_layer is not None and not 1 <= int(stop_layer) <= self.n_layers:
            raise InputError(f"stop_layer must be between 1 and {self.n_layers}, got {stop_layer}")

    # ------------------------------------------------------------------ reads
    def get_roots(
        self,
        node_ids,
        timestamp: Timestamp = None,
        stop_layer: int | None = None,
        *,
        fail_to_zero: bool = True,
    ) -> np.ndarray:
        """Root (or ancestor at ``stop_layer``) of each ID at ``timestamp`` (inclusive; default now).

        IDs that are not nodes of the graph at that time give 0 (``fail_to_zero``) or raise.

        >>> cg.get_roots([sv1, sv2], timestamp=1717243200.0)   # doctest: +SKIP
        array([..., ...], dtype=uint64)
        """
        ids = self._ids(node_ids)
        ts = self._ts(timestamp)
        self._check_layer(stop_layer)
        st = self.state
        out = np.zeros(ids.size, dtype=np.uint64)
        with self._rw.read():
            layers = st.layout.layers(ids)
            is_sv = layers == 1
            start = np.full(ids.size, -1, dtype=np.int64)
            ok = np.zeros(ids.size, dtype=bool)
            if np.any(is_sv):
                sv, found = st.sv_index(ids[is_sv])
                pos = np.flatnonzero(is_sv)
                if stop_layer == 1:
                    out[pos[found]] = ids[is_sv][found]
                    ok[pos[found]] = True
                else:
                    start[pos[found]] = st.sv_parent_at(sv[found], ts)
            node_m = (layers >= 2) & (layers <= self.n_layers)
            if np.any(node_m):
                idx, found = st.node_index(ids[node_m])
                pos = np.flatnonzero(node_m)
                found &= st.n_created.a[idx] <= ts
                start[pos[found]] = idx[found]
            go = start >= 0
            if np.any(go):
                anc = st.climb(start[go], ts, stop_layer)
                out[go] = st.n_id.a[anc]
                ok |= go
        if not fail_to_zero and not np.all(ok):
            bad = ids[~ok][:10].tolist()
            raise InvalidNodeError(f"not nodes of this graph at that time: {bad}", node_ids=bad)
        return out

    def get_root(self, node_id: int, timestamp: Timestamp = None, stop_layer: int | None = None) -> int:
        """Root of one supervoxel or node; raises :class:`InvalidNodeError` for unknown IDs."""
        if stop_layer is None and isinstance(node_id, (int, np.integer)):
            ts = self._ts(timestamp)
            with self._rw.read():
                r = self._root_scalar(int(node_id), ts)
            if r:
                return r
        return int(self.get_roots([node_id], timestamp, stop_layer, fail_to_zero=False)[0])

    def try_get_root_now(self, node_id: int, timestamp: Timestamp = None) -> int | None:
        """:meth:`get_root` if it can run without waiting for a lock, else ``None``.

        A root lookup takes microseconds; servers call this on their event loop and fall back
        to a worker thread when an edit is being applied.
        """
        ts = self._ts(timestamp)
        if not self._rw.try_acquire_read():
            return None
        try:
            return self._root_scalar(int(node_id), ts) or None
        finally:
            self._rw.release_read()

    def _root_scalar(self, node_id: int, ts: int) -> int:
        """Scalar root lookup (0 when the ID is not a supervoxel/node at ``ts``); call under the read lock."""
        st = self.state
        if not 0 < node_id < 2**64:
            return 0
        layer = node_id >> 56
        if layer == 1:
            idx, ok = st.sv_index(np.array([node_id], dtype=np.uint64))
            if not ok[0]:
                return 0
            i = int(idx[0])
            cur = int(st.sv_parent[i]) if st.sv_parent_ts[i] <= ts else int(st.sv_parent_at(np.array([i]), ts)[0])
        elif 2 <= layer <= self.n_layers:
            n = st.id_to_new.get(node_id)
            if n is None:
                idx, ok = st.node_index(np.array([node_id], dtype=np.uint64))
                if not ok[0]:
                    return 0
                n = int(idx[0])
            if st.n_created.a[n] > ts:
                return 0
            cur = n
        else:
            return 0
        top = self.n_layers
        lay, par, pts = st.n_layer.a, st.n_parent.a, st.n_parent_ts.a
        while cur >= 0 and lay[cur] < top:
            nxt = int(par[cur]) if pts[cur] <= ts else int(st.node_parent_at(np.array([cur]), ts)[0])
            if nxt < 0:
                break
            cur = nxt
        return int(st.n_id.a[cur]) if cur >= 0 else 0

    def get_children(self, node_id: int) -> np.ndarray:
        with self._rw.read():
            n = self._node(node_id)
            c = self.state.children(n)
            if self.state.n_layer.a[n] == 2:
                return self.state.sv_ids[c].copy()
            return np.sort(self.state.n_id.a[c])

    def get_leaves(
        self, node_id: int, bounds: np.ndarray | None = None, stop_layer: int = 1
    ) -> np.ndarray:
        """Descendants of a node at ``stop_layer`` (1 = supervoxels), optionally within ``bounds``.

        ``bounds`` is ``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` in voxels; like CAVE, whole
        chunks that intersect it are kept.
        """
        self._check_layer(stop_layer)
        box = self.meta.bounds_to_chunk_box(bounds)
        with self._rw.read():
            n = self._node(node_id)
            idx, is_sv = self.state.leaves(n, int(stop_layer or 1), box)
            return self.state.sv_ids[idx] if is_sv else np.sort(self.state.n_id.a[idx])

    def get_leaves_many(
        self, node_ids, bounds: np.ndarray | None = None, stop_layer: int = 1
    ) -> dict[int, np.ndarray]:
        return {int(n): self.get_leaves(int(n), bounds, stop_layer) for n in self._ids(node_ids)}

    def _root_time(self, n: int) -> int:
        exp = int(self.state.n_expired.a[n])
        return int(self.state.n_created.a[n]) if exp != FOREVER_MS else max(
            int(self.state.n_created.a[n]), self.state.last_ts
        )

    def level2_graph(self, node_id: int, bounds: np.ndarray | None = None) -> np.ndarray:
        """``(E, 2)`` pairs of L2 IDs of a node that touch through active supervoxel edges."""
        box = self.meta.bounds_to_chunk_box(bounds)
        st = self.state
        with self._rw.read():
            n = self._node(node_id)
            l2, _ = st.leaves(n, 2, box)
            l2 = l2[st.n_layer.a[l2] == 2]
            if not l2.size:
                return np.zeros((0, 2), dtype=np.uint64)
            svs, owner = st.children_many(l2)
            order = np.argsort(svs)
            svs, owner = svs[order], owner[order]
            e, local = _edits.active_edges_within(st, svs, self._root_time(n))
            a, b = owner[local[:, 0]], owner[local[:, 1]]
            m = a != b
            pairs = np.unique(np.sort(np.stack([a[m], b[m]], axis=1), axis=1), axis=0)
            return st.n_id.a[l2][pairs].reshape(-1, 2)

    def subgraph(
        self, node_id: int, bounds: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Supervoxel edges (ID pairs), affinities and areas inside a node, optionally in ``bounds``."""
        box = self.meta.bounds_to_chunk_box(bounds)
        st = self.state
        with self._rw.read():
            n = self._node(node_id)
            svs, _ = st.leaves(n, 1, box)
            svs = np.sort(svs)
            e, local = _edits.active_edges_within(st, svs, self._root_time(n))
            return st.sv_ids[svs][local].reshape(-1, 2), st.e_aff.a[e].copy(), st.e_area.a[e].copy()

    def is_latest_roots(self, node_ids, timestamp: Timestamp = None) -> np.ndarray:
        """Whether each ID is a root that is current at ``timestamp``."""
        ids = self._ids(node_ids)
        ts = self._ts(timestamp)
        st = self.state
        with self._rw.read():
            idx, ok = st.node_index(ids)
            layers = st.layout.layers(ids)
            bad = ~ok | (layers != self.n_layers)
            if np.any(bad):
                raise InvalidNodeError(
                    f"not root IDs of this graph: {ids[bad][:10].tolist()}", node_ids=ids[bad][:10].tolist()
                )
            return (st.n_created.a[idx] <= ts) & (st.n_expired.a[idx] > ts)

    def root_timestamps(self, node_ids, latest: bool = False, timestamp: Timestamp = None) -> np.ndarray:
        """Creation time (s) of each node; with ``latest``, when it stopped being a root (or ``timestamp``)."""
        ids = self._ids(node_ids)
        ts = self._ts(timestamp)
        st = self.state
        with self._rw.read():
            idx, ok = st.node_index(ids)
            if not np.all(ok):
                raise InvalidNodeError(f"not nodes of this graph: {ids[~ok][:10].tolist()}")
            if latest:
                t = np.minimum(st.n_expired.a[idx], ts)
            else:
                t = st.n_created.a[idx]
            return t.astype(np.float64) / 1000.0

    def valid_nodes(self, node_ids, start: Timestamp = None, end: Timestamp = None) -> np.ndarray:
        """The IDs that are nodes of this graph created within ``[start, end]``."""
        ids = self._ids(node_ids)
        t0 = to_ms(start) if start is not None else 0
        t1 = to_ms(end) if end is not None else self.now()
        st = self.state
        with self._rw.read():
            idx, ok = st.node_index(ids)
            c = st.n_created.a[idx]
            ok &= (c >= t0) & (c <= t1)
            sv_m = st.layout.layers(ids) == 1
            if np.any(sv_m):
                _, f = st.sv_index(ids[sv_m])
                ok[sv_m] = f & (self.meta.created_ms >= t0) & (self.meta.created_ms <= t1)
            return ids[ok]

    def add_listener(self, fn: Callable[[int, GraphDelta], None]) -> None:
        """Call ``fn(operation_id, delta)`` after each edit is applied, before it is acknowledged.

        Listeners must be quick (e.g. queue work for a thread): they run inside the commit.
        """
        self._listeners.append(fn)

    def wait_for_commit(self) -> None:
        """Return once no edit is being committed (an edit stamped earlier is then applied)."""
        with self._commit:
            pass

    def oldest_timestamp(self) -> int:
        return int(self.meta.created_ms)

    # ------------------------------------------------------------- positions
    @property
    def segmentation(self):
        if self._segmentation is None:
            from cavelab.server.engine.segmentation import Segmentation

            if self.dataset_dir is None:
                raise NotFoundError("this graph has no segmentation volume")
            self._segmentation = Segmentation(self.dataset_dir, self.meta)
        return self._segmentation

    def supervoxel_at(self, voxel) -> int:
        """Supervoxel ID under a voxel coordinate (x, y, z; 0 = background)."""
        return self.segmentation.supervoxel_at(np.asarray(voxel, dtype=np.int64))

    def _resolve_point(self, point: Sequence[float]) -> tuple[int, list[float] | None]:
        """``[id]`` or ``[id, x_nm, y_nm, z_nm]`` -> supervoxel index (call under the read lock)."""
        st = self.state
        try:
            node_id = int(point[0])
            xyz = [float(v) for v in point[1:4]] if len(point) >= 4 else None
        except (TypeError, ValueError, IndexError) as e:
            raise InputError(f"a point must be [id, x, y, z] (nm), got {point!r}") from e
        if node_id < 0 or node_id >= 2**64:
            raise InputError(f"{node_id} is not a valid node ID")
        layer = int(st.layout.layers(np.uint64(node_id)))
        vox = None
        if xyz is not None:
            vox = self.meta.nm_to_voxel(np.asarray(xyz))
            self.meta.check_voxels_inside(vox)
        if layer == 1:
            sv, ok = st.sv_index(np.array([node_id], dtype=np.uint64))
            if not ok[0]:
                raise InvalidNodeError(f"{node_id} is not a supervoxel of this graph", node_id=node_id)
            return int(sv[0]), xyz
        n = self._node(node_id)
        if layer == self.n_layers and st.n_expired.a[n] != FOREVER_MS:
            cur = self._latest_roots_locked(n)
            raise StaleRootError(
                f"root {node_id} was superseded by an edit; its current roots are {cur}",
                current_roots={str(node_id): cur},
            )
        if st.n_expired.a[st.climb(np.array([n]), st.last_ts)[0]] != FOREVER_MS:
            raise StaleRootError(f"node {node_id} is no longer part of a current cell", node_id=node_id)
        svs, _ = st.leaves(n, 1)
        if vox is not None and self.dataset_dir is not None:
            try:
                sv_here = self.segmentation.supervoxel_at(vox)
            except (StorageError, NotFoundError):  # no volume: use the nearest centroid
                sv_here = 0
            if sv_here:
                i, ok = st.sv_index(np.array([sv_here], dtype=np.uint64))
                if ok[0] and np.isin(i[0], svs):
                    return int(i[0]), xyz
        if vox is None:
            raise InputError(f"point {point!r} names node {node_id} but no coordinate to pick a supervoxel")
        d = np.linalg.norm((st.sv_centroid[svs] - vox) * np.asarray(self.meta.resolution), axis=1)
        return int(svs[np.argmin(d)]), xyz

    def _latest_roots_locked(self, n: int) -> list[int]:
        st = self.state
        out, todo, seen = [], [n], set()
        while todo:
            x = todo.pop()
            if x in seen:
                continue
            seen.add(x)
            if st.n_expired.a[x] == FOREVER_MS:
                out.append(int(st.n_id.a[x]))
            todo.extend(st.future.get(x, []))
        return sorted(out)

    # ------------------------------------------------------------------ edits
    def _commit_plan(
        self,
        make_plan: Callable[[], tuple[_edits.Plan, dict]],
        user: str,
    ) -> EditResult:
        st = self.state
        for _attempt in range(8):
            with self._rw.read():
                plan, details = make_plan()
            with self._commit:
                if np.any(st.n_expired.a[plan.old_roots] != FOREVER_MS):
                    continue  # a concurrent edit changed these cells: plan again
                op_id = self._next_op
                ts = max(now_ms(), st.last_ts + 1)
                delta = plan.finalize(st, ts)
                details = dict(details)
                details["activated"] = np.concatenate([delta.activate, delta.add_edges]).tolist()
                details["deactivated"] = delta.deactivate.tolist()
                details["old_roots"] = delta.old_roots.tolist()
                details["roots"] = delta.new_roots.tolist()
                rec = OperationRecord(op_id, ts, user, plan.kind, details, delta.encode())
                self.oplog.append(rec)  # durable before anything is visible
                self._next_op += 1
                rec.delta = b""
                with self._rw.write():
                    st.apply(delta, op_id, edge_hint=(plan.activate, plan.deactivate))
                    self.operations[op_id] = rec
                for fn in self._listeners:
                    fn(op_id, delta)
                return EditResult(op_id, delta.new_roots.tolist(), delta.old_roots.tolist(), ts)
        raise ConflictError("the cells of this edit kept changing under concurrent edits; retry")

    def merge(self, points: Sequence[Sequence[float]], user: str = "anonymous") -> EditResult:
        """Merge the cells under two points ``[[id, x_nm, y_nm, z_nm], [id, x_nm, y_nm, z_nm]]``.

        ``id`` is a supervoxel, or a current root/node (then the supervoxel under the point is used).
        Existing inactive edges between the two cells are activated; if there are none, a new edge
        of minimal affinity joins the two supervoxels.
        """
        if not isinstance(points, (list, tuple)) or len(points) != 2:
            raise InputError("a merge needs exactly two points [[id, x, y, z], [id, x, y, z]]")

        def make():
            (a, ca), (b, cb) = (self._resolve_point(p) for p in points)
            if a == b:
                raise PreconditionError("both merge points are on the same supervoxel; a cell cannot be merged with itself")
            self._check_merge_distance(a, b)
            plan = _edits.plan_merge(self.state, a, b)
            ids = self.state.sv_ids
            details = {
                "added_edges": [[int(ids[a]), int(ids[b])]],
                "source_ids": [int(ids[a])],
                "sink_ids": [int(ids[b])],
                "source_coords": [ca] if ca else [],
                "sink_coords": [cb] if cb else [],
            }
            return plan, details

        return self._commit_plan(make, user)

    def _check_merge_distance(self, a: int, b: int) -> None:
        if self.max_merge_chunk_distance is None:
            return
        d = int(np.max(np.abs(self.state.sv_chunk[a].astype(np.int64) - self.state.sv_chunk[b])))
        if d > self.max_merge_chunk_distance:
            raise PreconditionError(
                f"the merge points are {d} chunks apart (more than {self.max_merge_chunk_distance}); "
                "long-range merges are refused to guard against accidental false merges"
            )

    def _split_points(self, sources, sinks):
        for name, pts in (("sources", sources), ("sinks", sinks)):
            if not isinstance(pts, (list, tuple)) or not pts:
                raise InputError(f"a split needs a non-empty list of {name} [[id, x, y, z], ...]")
        src = [self._resolve_point(p) for p in sources]
        snk = [self._resolve_point(p) for p in sinks]
        return src, snk

    def split(self, sources, sinks, user: str = "anonymous") -> EditResult:
        """Split a cell by min-cut between source and sink points (CAVE's multicut)."""

        def make():
            src, snk = self._split_points(sources, sinks)
            plan, _cut = _edits.plan_split(self.state, [s for s, _ in src], [s for s, _ in snk])
            ids = self.state.sv_ids
            details = {
                "removed_edges": ids[self.state.e_sv.a[plan.deactivate]].reshape(-1, 2).tolist(),
                "source_ids": [int(ids[s]) for s, _ in src],
                "sink_ids": [int(ids[s]) for s, _ in snk],
                "source_coords": [c for _, c in src if c],
                "sink_coords": [c for _, c in snk if c],
            }
            return plan, details

        return self._commit_plan(make, user)

    def split_preview(self, sources, sinks) -> dict:
        """What :meth:`split` would do, without doing it (CAVE's ``split_preview``)."""
        with self._rw.read():
            src, snk = self._split_points(sources, sinks)
            _, cut = _edits.plan_split(
                self.state, [s for s, _ in src], [s for s, _ in snk], preview=True
            )
            ids = self.state.sv_ids
            return {
                "supervoxel_connected_components": [ids[c].tolist() for c in cut.components],
                "illegal_split": bool(cut.illegal_split),
            }

    def _op(self, operation_id: int) -> OperationRecord:
        try:
            return self.operations[int(operation_id)]
        except (KeyError, TypeError, ValueError):
            raise NotFoundError(f"operation {operation_id} does not exist") from None

    def _replay_edges(self, operation_id: int, kind: str, user: str, invert: bool) -> EditResult:
        rec = self._op(operation_id)
        act = np.asarray(rec.details.get("activated", []), dtype=np.uint64).reshape(-1, 2)
        deact = np.asarray(rec.details.get("deactivated", []), dtype=np.uint64).reshape(-1, 2)
        if invert:
            act, deact = deact, act

        def make():
            st = self.state
            a = np.stack([st.sv_index(act[:, 0])[0], st.sv_index(act[:, 1])[0]], axis=1) if act.size else act.astype(np.int64)
            d = np.stack([st.sv_index(deact[:, 0])[0], st.sv_index(deact[:, 1])[0]], axis=1) if deact.size else deact.astype(np.int64)
            plan = _edits.plan_edge_changes(st, kind, a, d)
            key = "undo_operation_id" if kind == "undo" else "redo_operation_id"
            return plan, {key: int(operation_id)}

        return self._commit_plan(make, user)

    def undo(self, operation_id: int, user: str = "anonymous") -> EditResult:
        """Invert an operation's edge changes on the current graph (an undo of an undo redoes)."""
        return self._replay_edges(operation_id, "undo", user, invert=True)

    def redo(self, operation_id: int, user: str = "anonymous") -> EditResult:
        """Apply an operation's edge changes again (e.g. after it was undone)."""
        return self._replay_edges(operation_id, "redo", user, invert=False)

    # ----------------------------------------------------------------- history
    def history(self):
        from cavelab.server.engine.history import History

        return History(self)
