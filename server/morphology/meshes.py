"""Surface meshes of level-2 nodes and of roots, computed in-process with ``zmesh``.

CAVE's meshing (PyChunkedGraph ``meshgen``) builds an "initial" mesh per L2 node from its atomic
chunk: the chunk's voxels are read with **one voxel of overlap on the high x, y, z faces**,
relabelled by L2 node, meshed with zmesh's multi-label marching cubes and simplified; the mesh of
a root is the set of its L2 nodes' meshes (neuroglancer's graphene manifest lists one fragment
per L2 node). This module does the same without storage:

* :func:`l2_meshes` - meshes of any L2 nodes, one read and one ``zmesh`` call per chunk.
  Supervoxels of the overlap slices (they belong to the neighbouring chunks) take the label of
  the node they are joined to by an *active* supervoxel edge, so a node's mesh reaches the voxel
  centres of the neighbour's first slice, where the neighbour's own mesh begins: the meshes of
  two L2 nodes of one cell meet on those planes. Meshes are open there (zmesh ``close=False``):
  the surface of a cell is the union of its L2 meshes.
* :func:`root_mesh` - the concatenation of a root's L2 meshes (cached by L2 ID: L2 nodes are
  immutable) with the duplicated vertices on the chunk planes merged.

Coordinates: global nm, voxel ``i`` spanning ``[(i + voxel_offset) * r, (i + 1 + voxel_offset) * r)``
(voxel corners, as ``rep_coord_nm``); zmesh's ``voxel_centered=True`` gives exactly that.

:meth:`Mesh.to_precomputed` writes neuroglancer's legacy single-resolution fragment
(``neuroglancer/src/datasource/precomputed/meshes.md``, "Legacy single-resolution mesh
format"): uint32le vertex count, float32le ``[n, 3]`` positions, then uint32le triangle
indices to the end of the file.

Caveats: for a historical L2 ID the overlap is labelled with the edges active now (the node's own
voxels are always right); a supervoxel of the overlap joined to two nodes of the chunk goes to one
of them. Simplification moves vertices by at most about a voxel (zmesh's default error bound),
also on the seams, so simplified neighbouring meshes may not share their seam vertices exactly.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cavelab.server.engine.meta import DatasetMeta

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.engine.segmentation import Segmentation
    from cavelab.server.engine.state import GraphState

__all__ = ["REDUCTION_FACTOR", "Mesh", "l2_meshes", "merge_vertices", "root_mesh"]

#: zmesh's triangle reduction target when simplifying (CAVE's meshing uses a large factor,
#: bounded by the error); the error bound is zmesh's default, one voxel of the resolution.
REDUCTION_FACTOR = 10


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` float32 ``(V, 3)`` nm (global), ``faces`` uint32 ``(F, 3)``."""

    vertices: np.ndarray
    faces: np.ndarray

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.uint32).reshape(-1, 3)

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    def bounds(self) -> np.ndarray:
        """``[[xmin, ymin, zmin], [xmax, ymax, zmax]]`` nm (zeros for an empty mesh)."""
        if not self.n_vertices:
            return np.zeros((2, 3), dtype=np.float64)
        return np.stack([self.vertices.min(axis=0), self.vertices.max(axis=0)]).astype(np.float64)

    def to_trimesh(self) -> Any:
        """A ``trimesh.Trimesh`` (not processed: vertices and faces as they are)."""
        import trimesh  # ImportError when trimesh is not installed

        return trimesh.Trimesh(vertices=self.vertices, faces=self.faces, process=False)

    @staticmethod
    def concatenate(meshes: Sequence[Mesh]) -> Mesh:
        """One mesh with the vertices and faces of all (face indices shifted; nothing merged)."""
        meshes = list(meshes)
        if not meshes:
            return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32))
        counts = np.array([m.n_vertices for m in meshes], dtype=np.int64)
        shift = np.concatenate([[0], np.cumsum(counts)[:-1]])
        if int(counts.sum()) >= 2**32:
            raise ValueError("too many vertices for uint32 face indices")
        faces = np.concatenate(
            [m.faces.astype(np.int64) + s for m, s in zip(meshes, shift.tolist())]
        )
        return Mesh(np.concatenate([m.vertices for m in meshes]), faces)

    def to_precomputed(self) -> bytes:
        """Neuroglancer's legacy precomputed fragment (little-endian; see the module docstring)."""
        return (
            struct.pack("<I", self.n_vertices)
            + self.vertices.astype("<f4", copy=False).tobytes()
            + self.faces.astype("<u4", copy=False).tobytes()
        )

    @classmethod
    def from_precomputed(cls, data: bytes) -> Mesh:
        """Inverse of :meth:`to_precomputed`."""
        (n,) = struct.unpack_from("<I", data, 0)
        v = np.frombuffer(data, dtype="<f4", count=3 * n, offset=4).reshape(n, 3)
        rest = len(data) - 4 - 12 * n
        if rest < 0 or rest % 12:
            raise ValueError("not a legacy precomputed mesh fragment")
        f = np.frombuffer(data, dtype="<u4", offset=4 + 12 * n).reshape(-1, 3)
        return cls(v.copy(), f.copy())


def _empty() -> Mesh:
    return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32))


def _state_and_lock(state_or_graph: Any) -> tuple[GraphState, Any]:
    state = getattr(state_or_graph, "state", state_or_graph)
    rw = getattr(state_or_graph, "_rw", None)
    return state, (rw.read() if rw is not None else contextlib.nullcontext())


def _labels_of(
    state: GraphState, idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Supervoxel IDs labelled by node position: the nodes' own and the joined outside ones.

    Returns ``(own_sv_ids, own_pos, ext_sv_ids, ext_pos)``; ``*_pos`` index ``idx``.
    """
    svs, owner = state.children_many(idx)
    svs = np.asarray(svs, dtype=np.int64)
    owner = np.asarray(owner, dtype=np.int64)
    if not svs.size:
        z = np.zeros(0, dtype=np.int64)
        return np.zeros(0, np.uint64), z, np.zeros(0, np.uint64), z
    e = np.unique(state.incident_edges(svs))
    e = e[state.e_active.a[e]]
    ends = np.asarray(state.e_sv.a[e], dtype=np.int64).reshape(-1, 2)
    pos = state.positions(svs, ends)  # -1: not one of the nodes' supervoxels
    own = np.where(pos >= 0, owner[np.maximum(pos, 0)], -1)
    ext_sv, ext_pos = [], []
    # an active edge from a node's supervoxel to one that is not the same node's: it crosses a
    # chunk border (inside a chunk, active edges join supervoxels of one L2 node)
    for a, b in ((0, 1), (1, 0)):
        m = (own[:, a] >= 0) & (own[:, b] != own[:, a])
        ext_sv.append(ends[m, b])
        ext_pos.append(own[m, a])
    xs = np.concatenate(ext_sv)
    xp = np.concatenate(ext_pos)
    if xs.size:
        pairs = np.unique(np.stack([xs, xp], axis=1), axis=0)
        xs, xp = pairs[:, 0], pairs[:, 1]
    return state.sv_ids[svs], owner, state.sv_ids[xs], xp


def _relabel(block: np.ndarray, ids: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``block`` (supervoxel IDs) -> ``labels`` (1-based, uint32), 0 for IDs not in ``ids``."""
    import fastremap

    r, remap = fastremap.renumber(np.ascontiguousarray(block), preserve_zero=True, in_place=False)
    remap.pop(0, None)
    svs = np.fromiter(remap.keys(), dtype=np.uint64, count=len(remap))
    vals = np.fromiter(remap.values(), dtype=np.int64, count=len(remap))
    lut = np.zeros(int(vals.max(initial=0)) + 1, dtype=np.uint32)
    if ids.size and svs.size:
        o = np.argsort(ids, kind="stable")
        sid, slab = ids[o], labels[o]
        p = np.minimum(np.searchsorted(sid, svs), sid.size - 1)
        hit = sid[p] == svs
        lut[vals[hit]] = slab[p[hit]]
    return lut[r]


def l2_meshes(
    meta: DatasetMeta,
    state_or_graph: GraphState | ChunkedGraph,
    segmentation: Segmentation,
    l2_ids: np.ndarray,
    *,
    simplify: bool = True,
    reduction_factor: int = REDUCTION_FACTOR,
    max_error: float | None = None,
    close: bool = False,
) -> dict[int, Mesh]:
    """Meshes of L2 nodes, ``{l2_id: Mesh}`` (global nm; an empty mesh for a node with no voxels).

    One read of each chunk (plus one voxel on its high faces) and one ``zmesh`` pass for all the
    asked nodes of that chunk. ``simplify`` applies zmesh's quadric simplification
    (``reduction_factor``; ``max_error`` nm, zmesh's default of one voxel when ``None``).
    ``close`` closes the meshes on the block's faces (then each is watertight, but two nodes'
    meshes overlap by the caps instead of meeting).
    """
    import zmesh

    ids = np.unique(np.asarray(l2_ids, dtype=np.uint64).ravel())
    out: dict[int, Mesh] = {}
    if not ids.size:
        return out
    state, lock = _state_and_lock(state_or_graph)
    with lock:
        idx, ok = state.node_index(ids)
        if not np.all(ok):
            raise KeyError(f"not nodes of this graph: {ids[~ok][:10].tolist()}")
        layers = meta.layout.layers(ids)
        if np.any(layers != 2):
            raise ValueError(f"not L2 IDs: {ids[layers != 2][:10].tolist()}")
        own_ids, own_pos, ext_ids, ext_pos = _labels_of(state, idx)
    res = np.asarray(meta.resolution, dtype=np.float64)
    cs = np.asarray(meta.chunk_size, dtype=np.int64)
    size = np.asarray(meta.size, dtype=np.int64)
    offset = np.asarray(meta.voxel_offset, dtype=np.int64)
    chunks = meta.layout.chunk_coords(ids).astype(np.int64)
    key = (chunks[:, 0] * (1 << 21) + chunks[:, 1]) * (1 << 21) + chunks[:, 2]
    kind = {"reduction_factor": int(reduction_factor) if simplify else 0}
    if simplify and max_error is not None:
        kind["max_error"] = float(max_error)
    mesher = zmesh.Mesher(tuple(float(r) for r in res))
    for k in np.unique(key):
        nodes = np.flatnonzero(key == k)
        lo = chunks[nodes[0]] * cs
        hi = np.minimum(lo + cs + 1, size)  # + one voxel on the high faces
        block = segmentation.read_box(lo + offset, hi + offset)
        # labels 1..m by position in `nodes`; the nodes' own supervoxels take precedence
        local = np.full(ids.size, 0, dtype=np.int64)
        local[nodes] = np.arange(1, nodes.size + 1)
        xm = local[ext_pos] > 0
        om = local[own_pos] > 0
        lab = _relabel(
            block,
            np.concatenate([ext_ids[xm], own_ids[om]]),
            np.concatenate([local[ext_pos[xm]], local[own_pos[om]]]),
        )
        # an outside supervoxel joined to several nodes of the chunk takes the first one's label
        mesher.mesh(lab, close=close)
        origin = (lo + offset) * res
        present = set(int(x) for x in mesher.ids())
        for j, node in enumerate(nodes.tolist(), start=1):
            if j not in present:
                out[int(ids[node])] = _empty()
                continue
            m = mesher.get(j, normals=False, voxel_centered=True, **kind)
            mesher.erase(j)
            v = np.asarray(m.vertices, dtype=np.float64) + origin
            out[int(ids[node])] = Mesh(v.astype(np.float32), np.asarray(m.faces))
        mesher.clear()
    return out


def merge_vertices(mesh: Mesh, quantum: float | None = None) -> Mesh:
    """Merge vertices equal after rounding to ``quantum`` nm; drop the faces that collapse.

    ``quantum`` defaults to 1/64 nm (zmesh's unsimplified vertices lie on a half-voxel grid).
    """
    if not mesh.n_vertices:
        return mesh
    q = 1.0 / 64 if quantum is None else float(quantum)
    key = np.rint(mesh.vertices.astype(np.float64) / q).astype(np.int64)
    _, first, inv = np.unique(key, axis=0, return_index=True, return_inverse=True)
    inv = inv.ravel()
    f = inv[mesh.faces.astype(np.int64)]
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
    return Mesh(mesh.vertices[first], f[keep])


def root_mesh(
    graph: ChunkedGraph,
    segmentation: Segmentation,
    root: int,
    cache: dict[int, Mesh] | None = None,
    *,
    simplify: bool = True,
) -> Mesh:
    """The mesh of a node (usually a root): its L2 meshes concatenated, seams merged.

    ``cache`` (``{l2_id: Mesh}``, filled here) saves recomputing L2 meshes: L2 IDs are immutable.
    It must hold meshes made with the same ``simplify``.
    """
    cache = {} if cache is None else cache
    l2 = np.asarray(graph.get_leaves(int(root), stop_layer=2), dtype=np.uint64)
    todo = np.array([x for x in l2.tolist() if int(x) not in cache], dtype=np.uint64)
    if todo.size:
        cache.update(l2_meshes(graph.meta, graph, segmentation, todo, simplify=simplify))
    return merge_vertices(Mesh.concatenate([cache[int(x)] for x in l2.tolist()]))
