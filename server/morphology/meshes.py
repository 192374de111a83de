"""Surface meshes of level-2 nodes and of roots, computed in-process with ``zmesh``.

CAVE's meshing (PyChunkedGraph ``meshgen``) builds a mesh per L2 node from its atomic chunk read
with one voxel of overlap, simplified; the mesh of a root is the set of its L2 nodes' meshes
(neuroglancer's graphene manifest lists one fragment per L2 node). This module does the same
without storage, and makes the L2 meshes of a cell **fit together exactly**:

* Marching cubes works on *cubes* whose 8 corners are voxel centres. The surface of a cell is
  the marching-cubes surface of its voxel mask (every voxel whose supervoxel has the cell's root).
  Every cube is given to exactly one L2 node: the node of the first of its corners (in a fixed
  corner order) that lies in the cell. A node's mesh is the cell surface's triangles in the
  cubes it owns. All those cubes have a corner in the node's chunk, so one read of the chunk
  with **one voxel of overlap on every face** is enough, and neighbouring chunks compute the
  shared cube faces' vertices identically.
* So the L2 meshes of a cell are patches of one surface: :func:`root_mesh` concatenates them
  and merges the duplicated seam vertices (:func:`merge_vertices`), which gives the
  marching-cubes surface of the whole cell, closed also on the volume's faces.
* zmesh's simplifier keeps boundary vertices and edges fixed, so simplified L2 meshes still
  share their seams exactly (only interiors are simplified).

* :func:`l2_meshes` - meshes of any L2 nodes, one read and one ``zmesh`` call per chunk.
* :func:`root_mesh` - a root's L2 meshes (cached by L2 ID) stitched into one mesh.

An L2 node's mesh depends on which neighbouring supervoxels belong to its cell: an edit across a
chunk border changes that without minting a new L2 ID. Each mesh therefore carries its
*context* (:class:`MeshContext`: the supervoxels in contact with the node's and whether each
was in the cell); :func:`stale_contexts` tells which cached meshes an edit made stale.

Coordinates: global nm, voxel ``i`` spanning ``[(i + voxel_offset) * r, (i + 1 + voxel_offset) * r)``
(voxel corners, as ``rep_coord_nm``); vertices lie on the segments between voxel centres.

:meth:`Mesh.to_precomputed` writes neuroglancer's legacy single-resolution fragment
(``neuroglancer/src/datasource/precomputed/meshes.md``, "Legacy single-resolution mesh
format"): uint32le vertex count, float32le ``[n, 3]`` positions, then uint32le triangle
indices to the end of the file. :meth:`Mesh.to_draco` writes the Draco file neuroglancer's
graphene source decodes.

Caveats: cubes are assigned by corner, so two L2 nodes of one cell in the same chunk that touch
only diagonally both bound their shared cubes from their own side (rare, tiny). A historical L2
ID is meshed against the cells of now. Contacts are the graph's supervoxel edges, so a change of
cell of a supervoxel that touches a node only diagonally is not seen by :func:`stale_contexts`.

Example::

    >>> from cavelab.server.morphology.meshes import l2_meshes, root_mesh   # doctest: +SKIP
    >>> m = root_mesh(cg, cg.segmentation, root)                             # doctest: +SKIP
    >>> m.vertices.shape, m.faces.shape, m.to_trimesh().is_watertight        # doctest: +SKIP
    ((5120, 3), (10236, 3), True)
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from cavelab.server.engine.meta import DatasetMeta

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.engine.segmentation import Segmentation
    from cavelab.server.engine.state import GraphState

__all__ = [
    "REDUCTION_FACTOR",
    "Mesh",
    "MeshContext",
    "l2_meshes",
    "merge_vertices",
    "open_edges",
    "root_mesh",
    "stale_contexts",
]

#: zmesh's triangle reduction target when simplifying (CAVE's meshing uses a large factor,
#: bounded by the error); the error bound is zmesh's default, one voxel of the resolution.
REDUCTION_FACTOR = 10

#: "now" for the state's time-versioned parents (later than any operation timestamp)
_NOW = 2**62


@dataclass(frozen=True)
class MeshContext:
    """What an L2 mesh assumed about its neighbours: supervoxels touching the node's (graph
    edges, active or not) and whether each was in the node's cell when it was meshed."""

    neighbours: np.ndarray  # uint64 supervoxel IDs
    in_cell: np.ndarray  # bool, one per neighbour

    def key(self) -> int:
        """A short stable hash (32 bits) of the cell neighbours (changes when the context does)."""
        import zlib

        ids = np.sort(self.neighbours[self.in_cell]).astype("<u8")
        return zlib.crc32(ids.tobytes())


@dataclass
class Mesh:
    """A triangle mesh: ``vertices`` float32 ``(V, 3)`` nm (global), ``faces`` uint32 ``(F, 3)``."""

    vertices: np.ndarray
    faces: np.ndarray
    context: MeshContext | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.uint32).reshape(-1, 3)

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (what a cache counts)."""
        n = self.vertices.nbytes + self.faces.nbytes
        if self.context is not None:
            n += self.context.neighbours.nbytes + self.context.in_cell.nbytes
        return int(n)

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
        """A ``trimesh.Trimesh`` (not processed: vertices and faces as they are).

        trimesh is optional: an ``ImportError`` says how to get it.

        >>> root_mesh(cg, cg.segmentation, root).to_trimesh().volume   # doctest: +SKIP
        1.23e9
        """
        try:
            import trimesh
        except ImportError as e:  # optional dependency
            raise ImportError("Mesh.to_trimesh needs trimesh: pip install trimesh") from e

        return trimesh.Trimesh(vertices=self.vertices, faces=self.faces, process=False)

    def to_draco(self, quantization_bits: int = 16) -> bytes:
        """Draco-encoded mesh (what neuroglancer's graphene mesh source decodes; positions in nm).

        >>> Mesh.from_draco(m.to_draco()).n_faces == m.n_faces   # doctest: +SKIP
        True
        """
        import DracoPy

        if not self.n_faces:
            return b""
        return bytes(
            DracoPy.encode(self.vertices, self.faces, quantization_bits=int(quantization_bits),
                           compression_level=1, preserve_order=False)
        )

    @classmethod
    def from_draco(cls, data: bytes) -> Mesh:
        """Inverse of :meth:`to_draco` (positions come back quantized)."""
        if not data:
            return _empty()
        import DracoPy

        d = DracoPy.decode(data)
        return cls(np.asarray(d.points), np.asarray(d.faces))

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


def _empty(context: MeshContext | None = None) -> Mesh:
    return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint32), context=context)


def _state_and_lock(state_or_graph: Any) -> tuple[GraphState, Any]:
    state = getattr(state_or_graph, "state", state_or_graph)
    rw = getattr(state_or_graph, "_rw", None)
    return state, (rw.read() if rw is not None else contextlib.nullcontext())


def _roots_of_svs(state: GraphState, sv_idx: np.ndarray) -> np.ndarray:
    """Current root node index of supervoxel indices (-1 when a supervoxel has no parent)."""
    sv_idx = np.asarray(sv_idx, dtype=np.int64)
    out = np.full(sv_idx.size, -1, dtype=np.int64)
    if not sv_idx.size:
        return out
    par = state.sv_parent_at(sv_idx, _NOW)
    ok = par >= 0
    if np.any(ok):
        out[ok] = state.climb(par[ok], _NOW)
    return out


# corner offsets of a cube in the fixed order that decides its owner (the first corner in the cell)
_CORNERS = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=np.int64
)


def _cube_owner(cubes: np.ndarray, cell: np.ndarray, node: np.ndarray, q: int) -> np.ndarray:
    """Node label (``node``, -1 none) of each cube's first corner whose ``cell`` label is ``q``.

    ``cubes``: ``(T, 3)`` low corners in block voxels (may be -1 or ``shape - 1``: padding).
    """
    shape = np.asarray(cell.shape, dtype=np.int64)
    owner = np.full(cubes.shape[0], -1, dtype=np.int64)
    done = np.zeros(cubes.shape[0], dtype=bool)
    for off in _CORNERS:
        p = cubes + off
        inb = np.all((p >= 0) & (p < shape), axis=1) & ~done
        if not np.any(inb):
            continue
        i = np.flatnonzero(inb)
        pi = p[i]
        hit = cell[pi[:, 0], pi[:, 1], pi[:, 2]] == q
        j = i[hit]
        owner[j] = node[pi[hit, 0], pi[hit, 1], pi[hit, 2]]
        done[j] = True
    return owner


def _submesh(v: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    used, inv = np.unique(f.ravel(), return_inverse=True)
    return v[used], inv.reshape(-1, 3)


def l2_meshes(
    meta: DatasetMeta,
    state_or_graph: GraphState | ChunkedGraph,
    segmentation: Segmentation,
    l2_ids: np.ndarray,
    *,
    simplify: bool = True,
    reduction_factor: int = REDUCTION_FACTOR,
    max_error: float | None = None,
) -> dict[int, Mesh]:
    """Meshes of L2 nodes, ``{l2_id: Mesh}`` (global nm; an empty mesh for a node with no surface).

    One read per chunk (the asked nodes' voxels' box in the chunk, with one voxel of overlap on
    every face) and one ``zmesh`` pass for all the asked nodes of that chunk; each node gets the triangles of its cell's surface in the
    cubes it owns (module docstring), so the meshes of a cell's L2 nodes meet exactly.
    ``simplify`` applies zmesh's quadric simplification (``reduction_factor``; ``max_error`` nm,
    default the finest voxel size), which keeps the seams (boundary vertices) in place.
    Each mesh's ``context`` records its neighbours (see :func:`stale_contexts`).

    >>> ms = l2_meshes(cg.meta, cg, cg.segmentation, cg.get_leaves(root, stop_layer=2))  # doctest: +SKIP
    >>> sum(m.n_faces for m in ms.values())                                          # doctest: +SKIP
    1532
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
        svs, owner = state.children_many(idx)  # children never change: read once
        svs = np.asarray(svs, dtype=np.int64)
        owner = np.asarray(owner, dtype=np.int64)
    if np.unique(svs).size < svs.size:  # a historical and a current node share supervoxels
        for i in ids.tolist():
            out.update(
                l2_meshes(meta, state_or_graph, segmentation, np.array([i], np.uint64), simplify=simplify,
                          reduction_factor=reduction_factor, max_error=max_error)
            )
        return out
    res = np.asarray(meta.resolution, dtype=np.float64)
    cs = np.asarray(meta.chunk_size, dtype=np.int64)
    size = np.asarray(meta.size, dtype=np.int64)
    offset = np.asarray(meta.voxel_offset, dtype=np.int64)
    err = float(np.min(res)) if max_error is None else float(max_error)
    chunks = meta.layout.chunk_coords(ids).astype(np.int64)
    key = (chunks[:, 0] * (1 << 21) + chunks[:, 1]) * (1 << 21) + chunks[:, 2]
    mesher = zmesh.Mesher(tuple(float(r) for r in res))
    for k in np.unique(key):
        nodes = np.flatnonzero(key == k)
        out.update(
            _mesh_chunk(state, lock_of(state_or_graph), segmentation, ids, nodes, svs, owner, chunks[nodes[0]],
                        cs, size, offset, res, mesher, simplify, reduction_factor, err)
        )
    return out


def lock_of(state_or_graph: Any) -> Any:
    """A fresh read-lock context of the graph (a no-op for a bare state)."""
    return _state_and_lock(state_or_graph)[1]


def _mesh_chunk(
    state: GraphState,
    lock: Any,
    segmentation: Segmentation,
    ids: np.ndarray,
    nodes: np.ndarray,
    svs: np.ndarray,
    owner: np.ndarray,
    chunk: np.ndarray,
    cs: np.ndarray,
    size: np.ndarray,
    offset: np.ndarray,
    res: np.ndarray,
    mesher: Any,
    simplify: bool,
    reduction_factor: int,
    max_error: float,
) -> dict[int, Mesh]:
    import fastremap
    import zmesh

    mine = np.isin(owner, nodes)
    my_svs, my_owner = svs[mine], owner[mine]
    lo_c = chunk * cs
    hi_c = np.minimum(lo_c + cs, size)
    sv_bbox = getattr(state, "sv_bbox", None)
    if sv_bbox is not None and my_svs.size:  # only the nodes' voxels' box (plus one voxel) matters
        bb = np.asarray(sv_bbox[my_svs], dtype=np.int64)
        lo_c = np.maximum(lo_c, bb[:, :3].min(axis=0) - offset)
        hi_c = np.minimum(hi_c, bb[:, 3:].max(axis=0) - offset)
    blo = np.maximum(lo_c - 1, 0)
    bhi = np.minimum(hi_c + 1, size)
    block = segmentation.read_box(blo + offset, bhi + offset)
    r, remap = fastremap.renumber(np.ascontiguousarray(block), preserve_zero=True, in_place=False)
    n_lab = int(max(remap.values(), default=0)) + 1
    lab_ids = np.zeros(n_lab, dtype=np.uint64)
    if remap:
        lab_ids[np.fromiter(remap.values(), np.int64, len(remap))] = np.fromiter(remap.keys(), np.uint64, len(remap))
    with lock:  # cells of now: the block's supervoxels and the nodes' neighbours, at one instant
        sidx, found = state.sv_index(lab_ids)
        found[0] = False
        lab_root = np.full(n_lab, -1, dtype=np.int64)
        lab_root[found] = _roots_of_svs(state, sidx[found])
        own_root = _roots_of_svs(state, my_svs)
        e = np.unique(state.incident_edges(my_svs))
        ends = np.asarray(state.e_sv.a[e], dtype=np.int64).reshape(-1, 2)
        pos = state.positions(my_svs, ends)
        nb_owner, nb_sv = [], []
        for a, b in ((0, 1), (1, 0)):
            m = pos[:, a] >= 0
            oa = my_owner[pos[m, a]]
            ob = np.where(pos[m, b] >= 0, my_owner[np.maximum(pos[m, b], 0)], -1)
            keep = ob != oa
            nb_owner.append(oa[keep])
            nb_sv.append(ends[m, b][keep])
        nb_owner_a = np.concatenate(nb_owner)
        nb_sv_a = np.concatenate(nb_sv)
        if nb_sv_a.size:
            pairs = np.unique(np.stack([nb_owner_a, nb_sv_a], axis=1), axis=0)
            nb_owner_a, nb_sv_a = pairs[:, 0], pairs[:, 1]
        nb_root = _roots_of_svs(state, nb_sv_a)
        nb_ids = state.sv_ids[nb_sv_a]
    # node label of each block label (-1: not one of these nodes' supervoxels)
    lab_node = np.full(n_lab, -1, dtype=np.int64)
    if my_svs.size:
        o = np.argsort(my_svs)
        ss = my_svs[o]
        p = np.minimum(np.searchsorted(ss, sidx), ss.size - 1)
        hit = found & (ss[p] == sidx)
        lab_node[hit] = my_owner[o[p[hit]]]
    # the cells to mesh: the roots of the nodes' own supervoxels
    cells = np.unique(own_root[own_root >= 0])
    lab_cell = np.zeros(n_lab, dtype=np.uint32)
    if cells.size:
        cpos = np.searchsorted(cells, lab_root)
        cpos = np.minimum(cpos, cells.size - 1)
        inc = (lab_root >= 0) & (cells[cpos] == lab_root)
        lab_cell[inc] = (cpos[inc] + 1).astype(np.uint32)
    cell = lab_cell[r]
    node = lab_node[r]
    node_cells = {int(j): set(np.unique(own_root[my_owner == j]).tolist()) for j in nodes.tolist()}
    contexts = {}
    for j in nodes.tolist():
        m = nb_owner_a == j
        rc = np.asarray(sorted(node_cells[j]), dtype=np.int64)
        contexts[j] = MeshContext(nb_ids[m].astype(np.uint64), np.isin(nb_root[m], rc))
    pieces: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {j: [] for j in nodes.tolist()}
    shape = np.asarray(cell.shape, dtype=np.int64)
    at_lo = blo == 0  # block faces on the volume's faces: the padding cubes there are kept
    at_hi = bhi == size
    origin = blo + offset
    mesher.mesh(cell, close=True)
    for q in (int(x) for x in mesher.ids()):
        zm = mesher.get(q, normals=False, voxel_centered=True)
        mesher.erase(q)
        v = np.asarray(zm.vertices, dtype=np.float64) / res - 1.0  # block voxel units (padding)
        f = np.asarray(zm.faces, dtype=np.int64)
        if not f.size:
            continue
        cubes = np.floor(v[f].min(axis=1) - 0.5).astype(np.int64)
        keep = np.all((cubes >= 0) | at_lo, axis=1) & np.all((cubes <= shape - 2) | at_hi, axis=1)
        tri_owner = np.full(f.shape[0], -1, dtype=np.int64)
        tri_owner[keep] = _cube_owner(cubes[keep], cell, node, q)
        vg = (v + origin) * res
        for j in np.unique(tri_owner[tri_owner >= 0]).tolist():
            if j in pieces:
                pieces[j].append(_submesh(vg, f[tri_owner == j]))
    mesher.clear()
    out: dict[int, Mesh] = {}
    for j, parts in pieces.items():
        if not parts:
            out[int(ids[j])] = _empty(contexts[j])
            continue
        mesh = merge_vertices(Mesh.concatenate([Mesh(pv, pf) for pv, pf in parts]))
        if simplify and mesh.n_faces:
            sm = mesher.simplify(
                zmesh.Mesh(mesh.vertices, mesh.faces, None),
                reduction_factor=int(reduction_factor),
                max_error=max_error,
                compute_normals=False,
            )
            mesh = Mesh(np.asarray(sm.vertices), np.asarray(sm.faces))
        mesh.context = contexts[j]
        out[int(ids[j])] = mesh
    return out


def stale_contexts(state_or_graph: GraphState | ChunkedGraph, meshes: dict[int, Mesh]) -> list[int]:
    """L2 IDs of ``meshes`` whose context changed: a neighbouring supervoxel joined or left the
    node's cell since it was meshed (an edit across a chunk border), so the mesh must be redone.

    >>> stale_contexts(cg, {l2: mesh})   # doctest: +SKIP
    []
    """
    items = [(int(k), m.context) for k, m in meshes.items() if m.context is not None]
    if not items:
        return []
    state, lock = _state_and_lock(state_or_graph)
    l2 = np.array([k for k, _ in items], dtype=np.uint64)
    nb = np.concatenate([c.neighbours for _, c in items]).astype(np.uint64)
    was = np.concatenate([c.in_cell for _, c in items])
    who = np.repeat(np.arange(len(items)), [c.neighbours.size for _, c in items])
    with lock:
        nidx, ok = state.node_index(l2)
        root = np.full(l2.size, -1, dtype=np.int64)
        root[ok] = state.climb(nidx[ok], _NOW)
        sidx, found = state.sv_index(nb)
        nroot = np.full(nb.size, -2, dtype=np.int64)
        nroot[found] = _roots_of_svs(state, sidx[found])
    now = nroot == root[who]
    bad = np.unique(who[now != was])
    return [int(l2[i]) for i in bad.tolist()]


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


def open_edges(mesh: Mesh) -> int:
    """Number of edges used by exactly one face (0 for a closed mesh)."""
    if not mesh.n_faces:
        return 0
    e = np.sort(mesh.faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2).astype(np.int64), axis=1)
    _, cnt = np.unique(e, axis=0, return_counts=True)
    return int((cnt == 1).sum())


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

    >>> m = root_mesh(cg, cg.segmentation, root)   # doctest: +SKIP
    >>> open_edges(m)                              # doctest: +SKIP
    0
    """
    cache = {} if cache is None else cache
    l2 = np.asarray(graph.get_leaves(int(root), stop_layer=2), dtype=np.uint64)
    todo = np.array([x for x in l2.tolist() if int(x) not in cache], dtype=np.uint64)
    if todo.size:
        cache.update(l2_meshes(graph.meta, graph, segmentation, todo, simplify=simplify))
    return merge_vertices(Mesh.concatenate([cache[int(x)] for x in l2.tolist()]))
