"""History queries over a :class:`~cavelab.server.engine.graph.ChunkedGraph`: lineage, past and
latest IDs, delta roots, change logs, merge logs and operation details.

Lineage is the graph of roots linked old -> new by the operation that replaced them. A root's
lifetime is ``[created, expired)``; "latest at T" means ``created <= T < expired``. Every query
below is derived from those two facts, so ``latest roots`` and ``is latest`` always agree.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

import numpy as np

from cavelab.server.engine.timestamps import FOREVER_MS, Timestamp, ms_to_iso, ms_to_seconds, to_ms
from cavelab.server.errors import InvalidNodeError

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph


class History:
    """History queries; construct with :meth:`ChunkedGraph.history`."""

    def __init__(self, cg: ChunkedGraph) -> None:
        self.cg = cg
        self.st = cg.state

    # ----------------------------------------------------------------- helpers
    def _roots(self, root_ids) -> list[int]:
        ids = self.cg._ids(root_ids)
        idx, ok = self.st.node_index(ids)
        layers = self.st.layout.layers(ids)
        bad = ~ok | (layers != self.cg.n_layers)
        if np.any(bad):
            raise InvalidNodeError(f"not root IDs of this graph: {ids[bad][:10].tolist()}")
        return idx.tolist()

    def _id(self, n: int) -> int:
        return int(self.st.n_id.a[n])

    def _created(self, n: int) -> int:
        return int(self.st.n_created.a[n])

    def _expired(self, n: int) -> int:
        return int(self.st.n_expired.a[n])

    def _replaced_by(self, n: int, ts: int) -> bool:
        """Whether root ``n`` was superseded at or before ``ts`` (a current root never is)."""
        e = self._expired(n)
        return e != FOREVER_MS and e <= ts

    def _walk(self, starts: list[int], t_past: int, t_future: int) -> tuple[set[int], set[tuple[int, int]]]:
        """Roots reachable from ``starts`` within the window, and old -> new links between them."""
        nodes: set[int] = set(starts)
        links: set[tuple[int, int]] = set()
        q = deque(starts)
        seen_f: set[int] = set()
        while q:  # future: follow a root while it was replaced by t_future
            x = q.popleft()
            if x in seen_f:
                continue
            seen_f.add(x)
            if self._replaced_by(x, t_future):
                for y in self.st.future.get(x, []):
                    links.add((x, y))
                    nodes.add(y)
                    q.append(y)
        q = deque(starts)
        seen_p: set[int] = set()
        while q:  # past: follow a root's predecessors while it was created after t_past
            x = q.popleft()
            if x in seen_p:
                continue
            seen_p.add(x)
            if self._created(x) > t_past:
                for y in self.st.former.get(x, []):
                    links.add((y, x))
                    nodes.add(y)
                    q.append(y)
        return nodes, links

    # ----------------------------------------------------------------- lineage
    def lineage_graph(
        self, root_ids, timestamp_past: Timestamp = None, timestamp_future: Timestamp = None
    ) -> dict[str, Any]:
        """networkx node-link JSON (key ``links``) of the lineage of ``root_ids`` in a time window."""
        t_past = to_ms(timestamp_past) if timestamp_past is not None else 0
        t_future = to_ms(timestamp_future) if timestamp_future is not None else FOREVER_MS
        with self.cg._rw.read():
            starts = self._roots(root_ids)
            nodes, links = self._walk(starts, t_past, t_future)
            out_nodes = [
                {
                    "id": self._id(n),
                    "timestamp": ms_to_seconds(self._created(n)),
                    "operation_id": self.st.created_by_op.get(n),
                }
                for n in sorted(nodes, key=lambda n: (self._created(n), self._id(n)))
            ]
            out_links = [{"source": self._id(a), "target": self._id(b)} for a, b in sorted(links)]
        return {"directed": True, "multigraph": False, "graph": {}, "nodes": out_nodes, "links": out_links}

    def latest_roots(self, root_id: int, timestamp: Timestamp = None) -> np.ndarray:
        """Roots current at ``timestamp`` that descend from (or, for an earlier time, precede) ``root_id``."""
        t = to_ms(timestamp) if timestamp is not None else self.cg.now()
        with self.cg._rw.read():
            (r,) = self._roots([root_id])
            if self._created(r) <= t:
                nodes, _ = self._walk([r], self._created(r), t)
            else:
                nodes, _ = self._walk([r], t, self._created(r))
            out = [n for n in nodes if self._created(n) <= t < self._expired(n)]
            return np.array(sorted(self._id(n) for n in out), dtype=np.uint64)

    def past_id_mapping(
        self, root_ids, timestamp_past: Timestamp = None, timestamp_future: Timestamp = None
    ) -> dict[str, Any]:
        """For each root, the roots it came from that were current at ``timestamp_past``; and for
        each such past root, the root it became by ``timestamp_future`` when that lineage is a
        clean chain of merges (no split)."""
        t_past = to_ms(timestamp_past) if timestamp_past is not None else self.cg.meta.created_ms
        t_future = to_ms(timestamp_future) if timestamp_future is not None else FOREVER_MS
        past_map: dict[str, list[int]] = {}
        future_map: dict[str, int] = {}
        with self.cg._rw.read():
            for r in self._roots(root_ids):
                out, seen, q = set(), set(), deque([r])
                while q:
                    x = q.popleft()
                    if x in seen:
                        continue
                    seen.add(x)
                    if self._created(x) <= t_past:
                        out.add(x)
                    else:
                        q.extend(self.st.former.get(x, []))
                past_map[str(self._id(r))] = sorted(self._id(x) for x in out)
                for p in out:
                    x, clean = p, True
                    while self._replaced_by(x, t_future):
                        nxt = self.st.future.get(x, [])
                        if len(nxt) != 1:
                            clean = False
                            break
                        x = nxt[0]
                    if clean:
                        future_map[str(self._id(p))] = self._id(x)
        return {"past_id_map": past_map, "future_id_map": future_map}

    def delta_roots(self, timestamp_past: Timestamp, timestamp_future: Timestamp = None) -> tuple[np.ndarray, np.ndarray]:
        """Roots that stopped being current between the two times, and roots that became current."""
        t0 = to_ms(timestamp_past)
        t1 = to_ms(timestamp_future) if timestamp_future is not None else self.cg.now()
        old, new = set(), set()
        with self.cg._rw.read():
            for rec in list(self.cg.operations.values()):
                if t0 < rec.ts <= t1:
                    for rid in rec.details.get("old_roots", []) + rec.details.get("roots", []):
                        n = self.st.node_of(int(rid))
                        c, e = self._created(n), self._expired(n)
                        if c <= t0 < e <= t1:
                            old.add(int(rid))
                        if t0 < c <= t1 < e:
                            new.add(int(rid))
        return np.array(sorted(old), dtype=np.uint64), np.array(sorted(new), dtype=np.uint64)

    # -------------------------------------------------------------- change logs
    def _lineage_ops(self, root: int) -> list[int]:
        """Operations that created the root or any of its ancestors, oldest first."""
        ops, seen, q = set(), set(), deque([root])
        while q:
            x = q.popleft()
            if x in seen:
                continue
            seen.add(x)
            op = self.st.created_by_op.get(x)
            if op is not None:
                ops.add(op)
            q.extend(self.st.former.get(x, []))
        return sorted(ops)

    def _undone(self, op_ids: list[int]) -> set[int]:
        """Operations among ``op_ids`` whose effect is currently reverted, plus the undo/redo ops."""
        state: dict[int, bool] = {}  # target op -> is undone
        helpers = set()
        for op in op_ids:
            rec = self.cg.operations[op]
            if rec.kind == "undo":
                helpers.add(op)
                state[rec.details["undo_operation_id"]] = True
            elif rec.kind == "redo":
                helpers.add(op)
                state[rec.details["redo_operation_id"]] = False
        return helpers | {op for op, undone in state.items() if undone}

    def _is_merge(self, rec) -> bool:
        return len(rec.details.get("roots", [])) < len(rec.details.get("old_roots", [])) or (
            rec.kind == "merge"
        )

    def change_log(self, root_id: int, filtered: bool = True) -> dict[str, Any]:
        with self.cg._rw.read():
            (r,) = self._roots([root_id])
            ops = self._lineage_ops(r)
            if filtered:
                skip = self._undone(ops)
                ops = [o for o in ops if o not in skip]
            n_splits = n_mergers = 0
            users: dict[str, dict[str, int]] = {}
            for op in ops:
                rec = self.cg.operations[op]
                key = "n_mergers" if self._is_merge(rec) else "n_splits"
                u = users.setdefault(rec.user, {"n_splits": 0, "n_mergers": 0})
                u[key] += 1
                if key == "n_mergers":
                    n_mergers += 1
                else:
                    n_splits += 1
            past = self.past_id_mapping([root_id], timestamp_past=ms_to_seconds(self.cg.meta.created_ms))
        return {
            "n_splits": n_splits,
            "n_mergers": n_mergers,
            "user_info": users,
            "operations_ids": ops,
            "past_ids": past["past_id_map"][str(int(root_id))],
        }

    def tabular_change_log(self, root_id: int, filtered: bool = True) -> dict[str, list]:
        """Column-oriented change log (CAVE's ``tabular_change_log`` columns)."""
        with self.cg._rw.read():
            (r,) = self._roots([root_id])
            ops = self._lineage_ops(r)
            skip = self._undone(ops)
            cols: dict[str, list] = {
                k: []
                for k in (
                    "operation_id", "timestamp", "user_id", "before_root_ids", "after_root_ids",
                    "is_merge", "user_name", "user_affiliation",
                )
            }
            if not filtered:
                cols["in_neuron"] = []
                cols["is_relevant"] = []
            for op in ops:
                if filtered and op in skip:
                    continue
                rec = self.cg.operations[op]
                cols["operation_id"].append(op)
                cols["timestamp"].append(rec.ts)
                cols["user_id"].append(rec.user)
                cols["before_root_ids"].append(rec.details.get("old_roots", []))
                cols["after_root_ids"].append(rec.details.get("roots", []))
                cols["is_merge"].append(self._is_merge(rec))
                cols["user_name"].append(rec.user)
                cols["user_affiliation"].append("")
                if not filtered:
                    cols["in_neuron"].append(True)
                    cols["is_relevant"].append(op not in skip)
        return cols

    def merge_log(self, root_id: int) -> dict[str, list]:
        edges, coords = [], []
        with self.cg._rw.read():
            (r,) = self._roots([root_id])
            for op in self._lineage_ops(r):
                rec = self.cg.operations[op]
                if rec.kind != "merge":
                    continue
                edges.append(rec.details.get("added_edges", []))
                res = np.asarray(self.cg.meta.resolution)
                c = [
                    [(np.asarray(p) / res).tolist()] if p else []
                    for p in (rec.details.get("source_coords") or [None])[:1]
                    + (rec.details.get("sink_coords") or [None])[:1]
                ]
                coords.append(c)
        return {"merge_edges": edges, "merge_edge_coords": coords}

    def operation_details(self, operation_ids) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for op in operation_ids:
            with self.cg._rw.read():
                rec = self.cg._op(int(op))
            d = {
                k: v
                for k, v in rec.details.items()
                if k not in ("activated", "deactivated")
            }
            d.update(
                {
                    "operation_id": rec.operation_id,
                    "operation_type": rec.kind,
                    "timestamp": ms_to_iso(rec.ts),
                    "operation_ts": ms_to_iso(rec.ts),
                    "operation_status": rec.status,
                    "operation_exception": "",
                    "user": rec.user,
                }
            )
            out[str(rec.operation_id)] = d
        return out

    def user_operations(self, user: str | None = None, start: Timestamp = None, end: Timestamp = None) -> dict[str, list]:
        t0 = to_ms(start) if start is not None else 0
        t1 = to_ms(end) if end is not None else FOREVER_MS
        cols: dict[str, list] = {"operation_id": [], "timestamp": [], "user_id": [], "operation_type": []}
        with self.cg._rw.read():
            recs = sorted(self.cg.operations.values(), key=lambda r: r.operation_id)
        for rec in recs:
            if (user is None or rec.user == user) and t0 <= rec.ts <= t1:
                cols["operation_id"].append(rec.operation_id)
                cols["timestamp"].append(rec.ts)
                cols["user_id"].append(rec.user)
                cols["operation_type"].append(rec.kind)
        return cols
