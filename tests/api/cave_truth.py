"""Independent truth for the API tests, computed from the dataset files on disk with networkx.

Nothing here asks the server. :class:`GraphTruth` reads ``graph/sv_ids.npy``, ``edges.npy``,
``active.npy`` (and affinities, areas, centroids) plus ``dataset.json``; :class:`Ledger` keeps a
networkx model of the active supervoxel edges that the tests' own edits change, with a snapshot
per edit so that any past timestamp can be checked.
"""

from __future__ import annotations

import bisect
import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import networkx as nx
import numpy as np

LAYER_BITS = 8


def decode_chunks(ids: np.ndarray, bits: int) -> np.ndarray:
    """Chunk coordinates of layer-1/2 IDs from the graphene bit layout (CloudVolume's decoding)."""
    ids = np.asarray(ids, dtype=np.uint64)
    seg = 64 - LAYER_BITS - 3 * bits
    mask = np.uint64(2**bits - 1)
    x = (ids >> np.uint64(seg + 2 * bits)) & mask
    y = (ids >> np.uint64(seg + bits)) & mask
    z = (ids >> np.uint64(seg)) & mask
    return np.stack([x, y, z], axis=1).astype(np.int64)


def layer_of(ids) -> np.ndarray:
    return (np.asarray(ids, dtype=np.uint64) >> np.uint64(64 - LAYER_BITS)).astype(np.int64)


@dataclass
class GraphTruth:
    """The ingested base graph, read straight from the dataset directory."""

    dataset_dir: Path
    meta: dict
    sv_ids: np.ndarray  # uint64 [S]
    edges: np.ndarray  # [E, 2] supervoxel IDs (not indices)
    active: np.ndarray  # bool [E]
    affinity: np.ndarray
    area: np.ndarray
    centroid: np.ndarray  # [S, 3] voxels
    edge_index: dict[tuple[int, int], int] = field(default_factory=dict)

    @classmethod
    def load(cls, dataset_dir: str | Path) -> GraphTruth:
        d = Path(dataset_dir)
        g = d / "graph"
        sv_ids = np.load(g / "sv_ids.npy").astype(np.uint64)
        idx = np.load(g / "edges.npy").astype(np.int64).reshape(-1, 2)
        edges = sv_ids[idx]
        t = cls(
            dataset_dir=d,
            meta=json.loads((d / "dataset.json").read_text()),
            sv_ids=sv_ids,
            edges=edges,
            active=np.load(g / "active.npy").astype(bool),
            affinity=np.load(g / "affinity.npy"),
            area=np.load(g / "area.npy"),
            centroid=np.load(g / "sv_centroid.npy"),
        )
        t.edge_index = {_key(a, b): i for i, (a, b) in enumerate(edges.tolist())}
        return t

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def resolution(self) -> np.ndarray:
        return np.asarray(self.meta["resolution"], dtype=float)

    @property
    def chunk_size(self) -> np.ndarray:
        return np.asarray(self.meta["chunk_size"], dtype=np.int64)

    @property
    def created_s(self) -> float:
        return self.meta["created_ms"] / 1000.0

    def base_graph(self) -> nx.Graph:
        G = nx.Graph()
        G.add_nodes_from(int(s) for s in self.sv_ids)
        G.add_edges_from(self.edges[self.active].tolist())
        return G

    def nm(self, sv: int) -> list[float]:
        """A point inside the volume for a supervoxel (its centroid, nm)."""
        i = int(np.searchsorted(self.sv_ids, np.uint64(sv)))
        vox = np.floor(self.centroid[i]) + 0.5
        return (vox * self.resolution).tolist()

    def voxel(self, sv: int) -> np.ndarray:
        i = int(np.searchsorted(self.sv_ids, np.uint64(sv)))
        return np.floor(self.centroid[i]) + 0.5


def _key(a: int, b: int) -> tuple[int, int]:
    a, b = int(a), int(b)
    return (a, b) if a < b else (b, a)


@dataclass
class Snapshot:
    t_ms: int
    graph: nx.Graph


class Ledger:
    """Model of the current active edges, updated by the tests' own edits, with history."""

    def __init__(self, truth: GraphTruth) -> None:
        self.truth = truth
        self.graph = truth.base_graph()
        self.snapshots: list[Snapshot] = [Snapshot(truth.meta["created_ms"], self.graph.copy())]
        self.effects: dict[int, tuple[set, set]] = {}  # op id -> (added, removed) edges
        self.users: dict[int, str] = {}
        self.kinds: dict[int, str] = {}

    # ----------------------------------------------------------------- queries
    def components(self, at_ms: int | None = None) -> list[set[int]]:
        return [set(c) for c in nx.connected_components(self.at(at_ms))]

    def at(self, at_ms: int | None) -> nx.Graph:
        if at_ms is None:
            return self.graph
        k = bisect.bisect_right([s.t_ms for s in self.snapshots], at_ms) - 1
        assert k >= 0, "timestamp before the dataset"
        return self.snapshots[k].graph

    def component_of(self, sv: int, at_ms: int | None = None) -> set[int]:
        return set(nx.node_connected_component(self.at(at_ms), int(sv)))

    # ------------------------------------------------------------------- edits
    def merge_edges(self, a: int, b: int) -> set[tuple[int, int]]:
        """CAVE merge semantics: activate every inactive edge between the two cells, else add a-b."""
        ca, cb = self.component_of(a), self.component_of(b)
        out = set()
        for u, v in self.truth.edges.tolist():
            if (u in ca and v in cb) or (u in cb and v in ca):
                out.add(_key(u, v))
        return out or {_key(a, b)}

    def record(self, op_id: int, t_ms: int, added: set, removed: set, kind: str, user: str) -> None:
        self.graph.add_edges_from(added)
        self.graph.remove_edges_from([e for e in removed if self.graph.has_edge(*e)])
        self.effects[op_id] = (set(added), set(removed))
        self.kinds[op_id] = kind
        self.users[op_id] = user
        self.snapshots.append(Snapshot(t_ms, self.graph.copy()))

    def undo_effect(self, op_id: int) -> tuple[set, set]:
        added, removed = self.effects[op_id]
        return set(removed), set(added)

    def redo_effect(self, op_id: int) -> tuple[set, set]:
        return self.effects[op_id]


def partition_matches(svs: np.ndarray, roots: np.ndarray, components: list[set[int]]) -> None:
    """Assert that ``roots`` (per supervoxel) induce exactly the given components."""
    root_of = dict(zip((int(s) for s in svs), (int(r) for r in roots)))
    seen: dict[int, int] = {}
    for i, comp in enumerate(components):
        rs = {root_of[s] for s in comp}
        assert len(rs) == 1, f"component {i} ({len(comp)} svs) spans roots {sorted(rs)[:5]}"
        r = rs.pop()
        assert r not in seen, f"root {r} covers two components"
        assert r != 0
        seen[r] = i


def ms(t: dt.datetime) -> int:
    """Integer ms of an aware datetime (the engine's clock resolution)."""
    return int(np.floor(t.timestamp() * 1000 + 1e-6))


def iso_ms(text: str) -> int:
    return ms(dt.datetime.fromisoformat(text))


class Editor:
    """Edits through caveclient (and raw HTTP for redo), each recorded in the :class:`Ledger`.

    The expected edge changes of merges come from the truth (CAVE semantics); those of splits
    are the ``removed_edges`` the server reports, which the tests check independently.
    """

    def __init__(self, cg, api, truth: GraphTruth, ledger: Ledger) -> None:
        self.cg, self.api, self.truth, self.ledger = cg, api, truth, ledger

    def details(self, op: int) -> dict:
        return self.cg.get_operation_details([op])[str(op)]

    def merge(self, a: int, b: int) -> tuple[int, list[int]]:
        expected = self.ledger.merge_edges(a, b)
        r = self.cg.do_merge(
            [a, b], [self.truth.voxel(a), self.truth.voxel(b)], resolution=tuple(self.truth.resolution)
        )
        op = int(r["operation_id"])
        d = self.details(op)
        self.ledger.record(op, iso_ms(d["timestamp"]), expected, set(), "merge", d["user"])
        return op, [int(x) for x in r["new_root_ids"]]

    def split(self, sources: list[int], sinks: list[int], root: int) -> tuple[int, list[int], set]:
        src = [self.truth.nm(s) for s in sources]
        snk = [self.truth.nm(s) for s in sinks]
        op, new = self.cg.execute_split(src, snk, root, source_supervoxels=sources, sink_supervoxels=sinks)
        d = self.details(int(op))
        removed = {_key(a, b) for a, b in d["removed_edges"]}
        self.ledger.record(int(op), iso_ms(d["timestamp"]), set(), removed, "split", d["user"])
        return int(op), [int(x) for x in new], removed

    def undo(self, target: int) -> tuple[int, list[int]]:
        r = self.cg.undo_operation(target)
        op = int(r["operation_id"])
        d = self.details(op)
        added, removed = self.ledger.undo_effect(target)
        self.ledger.record(op, iso_ms(d["timestamp"]), added, removed, "undo", d["user"])
        return op, [int(x) for x in r["new_root_ids"]]

    def redo(self, target: int) -> tuple[int, list[int]]:
        resp = self.api.post("redo", params={"priority": "False"}, json={"operation_id": target})
        assert resp.status_code == 200, resp.text
        r = resp.json()
        op = int(r["operation_id"])
        d = self.details(op)
        added, removed = self.ledger.redo_effect(target)
        self.ledger.record(op, iso_ms(d["timestamp"]), added, removed, "redo", d["user"])
        return op, [int(x) for x in r["new_root_ids"]]


def in_chunk_pair(truth: GraphTruth, ledger: Ledger, min_cell: int = 0) -> tuple[int, int]:
    """Two touching supervoxels of different cells in one atomic chunk (an inactive edge): merging
    them makes a new L2 node. Both cells have more than ``min_cell`` supervoxels."""
    g = ledger.at(None)
    bits = int(truth.meta["spatial_bits"])
    for a, b in truth.edges.tolist():
        if g.has_edge(a, b) or ledger.component_of(a) == ledger.component_of(b):
            continue
        ca, cb = decode_chunks(np.array([a, b], dtype=np.uint64), bits).tolist()
        if ca == cb and min(len(ledger.component_of(a)), len(ledger.component_of(b))) > min_cell:
            return a, b
    raise AssertionError("no inactive in-chunk edge between two cells")
