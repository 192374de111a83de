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
chunk border (or next to the node in its chunk) changes that without minting a new L2 ID. Each
mesh therefore carries its *context* (:class:`MeshContext`: every supervoxel within one voxel of
the node's voxels, 26-neighbourhood, that is not the node's own, and whether each was in the
cell); a marching cube's corners are such neighbours, so the mesh changes only if one of them
changed cell, and :func:`stale_contexts` tells exactly which cached meshes an edit made stale.

Coordinates: global nm, voxel ``i`` spanning ``[(i + voxel_offset) * r, (i + 1 + voxel_offset) * r)``
(voxel corners, as ``rep_coord_nm``); vertices lie on the segments between voxel centres.

:meth:`Mesh.to_precomputed` writes neuroglancer's legacy single-resolution fragment
(``neuroglancer/src/datasource/precomputed/meshes.md``, "Legacy single-resolution mesh
format"): uint32le vertex count, float32le ``[n, 3]`` positions, then uint32le triangle
indices to the end of the file. :meth:`Mesh.to_draco` writes the Draco file neuroglancer's
graphene source decodes.

Caveats: cubes are assigned by corner, so two L2 nodes of one cell in the same chunk that touch
only diagonally both bound their shared cubes from their own side (rare, tiny). A historical L2
ID is meshed against the cells of now.

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
    """What an L2 mesh assumed about its neighbours: the supervoxels within one voxel of the
    node's voxels (26-neighbourhood, not the node's own) and whether each was in the node's cell
    when it was meshed."""

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


def _cube_owner(cubes: np.ndarray, cell: np.ndarray, node: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Node label (``node``, -1 none) of each cube's first corner whose ``cell`` label is ``q``
    (one ``q`` per cube, or one for all).

    ``cubes``: ``(T, 3)`` low corners in block voxels (may be -1 or ``shape - 1``: padding).
    """
    owner = np.full(cubes.shape[0], -1, dtype=np.int64)
    if not cubes.shape[0]:
        return owner
    # pad one voxel on every side (no cell, no node) so that every corner is inside
    cp = np.pad(cell, 1).ravel()
    npd = np.pad(node, 1, constant_values=-1).ravel()
    sy, sz = cell.shape[1] + 2, cell.shape[2] + 2
    c = cubes + 1
    base = (c[:, 0] * sy + c[:, 1]) * sz + c[:, 2]
    qq = np.broadcast_to(np.asarray(q, dtype=cp.dtype), base.shape)
    todo = np.arange(base.size)
    for dx, dy, dz in _CORNERS.tolist():
        if not todo.size:
            break
        p = base[todo] + ((dx * sy + dy) * sz + dz)
        hit = cp[p] == qq[todo]
        owner[todo[hit]] = npd[p[hit]]
        todo = todo[~hit]
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
    every face) and one ``zmesh`` pass for all the asked nodes of that chunk; each node gets the
    triangles of its cell's surface in the cubes it owns (module docstring; ownership is decided
    for all triangles of the block at once), so the meshes of a cell's L2 nodes meet exactly.
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
    del block
    n_lab = int(max(remap.values(), default=0)) + 1
    lab_ids = np.zeros(n_lab, dtype=np.uint64)
    if remap:
        lab_ids[np.fromiter(remap.values(), np.int64, len(remap))] = np.fromiter(remap.keys(), np.uint64, len(remap))
    with lock:  # cells of now: the block's supervoxels and the nodes' own, at one instant
        sidx, found = state.sv_index(lab_ids)
        found[0] = False
        lab_root = np.full(n_lab, -1, dtype=np.int64)
        lab_root[found] = _roots_of_svs(state, sidx[found])
        own_root = _roots_of_svs(state, my_svs)
    # local node (0..k-1, position in ``nodes``) of each block label; -1: none of these nodes
    k = int(nodes.size)
    node_of_j = np.full(int(ids.size), -1, dtype=np.int64)
    node_of_j[nodes] = np.arange(k)
    lab_node = np.full(n_lab, -1, dtype=np.int32)
    if my_svs.size:
        o = np.argsort(my_svs)
        ss = my_svs[o]
        p = np.minimum(np.searchsorted(ss, sidx), ss.size - 1)
        hit = found & (ss[p] == sidx)
        lab_node[hit] = node_of_j[my_owner[o[p[hit]]]]
    # the cells to mesh: the roots of the nodes' own supervoxels
    cells = np.unique(own_root[own_root >= 0])
    lab_cell = np.zeros(n_lab, dtype=np.uint32)
    if cells.size:
        cpos = np.minimum(np.searchsorted(cells, lab_root), cells.size - 1)
        inc = (lab_root >= 0) & (cells[cpos] == lab_root)
        lab_cell[inc] = (cpos[inc] + 1).astype(np.uint32)
    r = r.astype(np.int32, copy=False) if r.dtype.itemsize > 4 else r
    cell = lab_cell[r]
    node = lab_node[r]
    boxes = None
    if sv_bbox is not None and my_svs.size:  # each node's voxels' box, in block voxels
        loc = node_of_j[my_owner]
        boxes = np.zeros((k, 6), dtype=np.int64)
        boxes[:, :3] = np.iinfo(np.int64).max
        np.minimum.at(boxes[:, :3], loc, bb[:, :3] - offset - blo)
        np.maximum.at(boxes[:, 3:], loc, bb[:, 3:] - offset - blo)
    contexts = _contexts(node, r, k, n_lab, lab_ids, lab_root, own_root, node_of_j[my_owner], boxes)
    shape = np.asarray(cell.shape, dtype=np.int64)
    at_lo = blo == 0  # block faces on the volume's faces: the padding cubes there are kept
    at_hi = bhi == size
    origin = blo + offset
    mesher.mesh(cell, close=True)
    verts, faces, tri_q, nv = [], [], [], 0
    for q in (int(x) for x in mesher.ids()):
        zm = mesher.get(q, normals=False, voxel_centered=True)
        mesher.erase(q)
        f = np.asarray(zm.faces, dtype=np.int64).reshape(-1, 3)
        if not f.size:
            continue
        verts.append(np.asarray(zm.vertices, dtype=np.float64).reshape(-1, 3))
        faces.append(f + nv)
        tri_q.append(np.full(f.shape[0], q, dtype=np.uint32))
        nv += verts[-1].shape[0]
    mesher.clear()
    out: dict[int, Mesh] = {}
    if faces:
        v = np.concatenate(verts) / res - 1.0  # block voxel units (close=True pads one voxel)
        f = np.concatenate(faces)
        tq = np.concatenate(tri_q)
        cubes = np.floor(v[f].min(axis=1) - 0.5).astype(np.int64)
        keep = np.all((cubes >= 0) | at_lo, axis=1) & np.all((cubes <= shape - 2) | at_hi, axis=1)
        f, tq, cubes = f[keep], tq[keep], cubes[keep]
        tri_owner = _cube_owner(cubes, cell, node, tq)
        vg = (v + origin) * res
        sel = tri_owner >= 0
        f, tq, tri_owner = f[sel], tq[sel], tri_owner[sel]
        order = np.argsort(tri_owner, kind="stable")
        so = tri_owner[order]
        starts = np.flatnonzero(np.r_[True, so[1:] != so[:-1]]) if so.size else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], so.size]
        for s, e in zip(starts.tolist(), ends.tolist()):
            loc = int(so[s])
            rows = order[s:e]
            pv, pf = _submesh(vg, f[rows])
            mesh = Mesh(pv, pf)
            qs = tq[rows]
            if qs.min() != qs.max():  # a node in two cells (historical IDs): join its patches
                mesh = merge_vertices(mesh)
            if simplify and mesh.n_faces:
                sm = mesher.simplify(
                    zmesh.Mesh(mesh.vertices, mesh.faces, None),
                    reduction_factor=int(reduction_factor),
                    max_error=max_error,
                    compute_normals=False,
                )
                mesh = Mesh(np.asarray(sm.vertices), np.asarray(sm.faces))
            j = int(nodes[loc])
            mesh.context = contexts[loc]
            out[int(ids[j])] = mesh
    for loc, j in enumerate(nodes.tolist()):
        if int(ids[j]) not in out:
            out[int(ids[j])] = _empty(contexts[loc])
    return out


def _contexts(
    node: np.ndarray,
    r: np.ndarray,
    k: int,
    n_lab: int,
    lab_ids: np.ndarray,
    lab_root: np.ndarray,
    own_root: np.ndarray,
    own_loc: np.ndarray,
    boxes: np.ndarray | None,
) -> list[MeshContext]:
    """Each local node's context: the supervoxels of the block within one voxel (26-neighbourhood)
    of the node's voxels that are not the node's own, and whether each is in the node's cell.

    A marching cube has its 8 corners within one voxel of each other, so a node's triangles (the
    cubes it owns and their shapes) depend on exactly these supervoxels' cells. ``boxes``:
    ``(k, 6)`` block-voxel boxes of the nodes' voxels (lo, hi exclusive), or None (whole block)."""
    from scipy import ndimage

    shape = np.asarray(node.shape, dtype=np.int64)
    ball = np.ones((3, 3, 3), dtype=bool)
    out = []
    for i in range(k):
        if boxes is None:
            lo, hi = np.zeros(3, np.int64), shape
        else:
            lo = np.maximum(boxes[i, :3] - 1, 0)
            hi = np.minimum(boxes[i, 3:] + 1, shape)
        box = tuple(slice(a, b) for a, b in zip(lo.tolist(), hi.tolist()))
        mask = node[box] == i
        ring = ndimage.binary_dilation(mask, structure=ball) & ~mask
        lb = np.unique(r[box][ring]).astype(np.int64)
        lb = lb[lb != 0]
        mine = np.unique(own_root[(own_loc == i) & (own_root >= 0)])
        out.append(MeshContext(lab_ids[lb].astype(np.uint64), np.isin(lab_root[lb], mine)))
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
    key -= key.min(axis=0)
    if int(key.max()) < 1 << 21:  # pack the three coordinates into one integer: a 1-d unique
        flat = (key[:, 0] << 42) | (key[:, 1] << 21) | key[:, 2]
        _, first, inv = np.unique(flat, return_index=True, return_inverse=True)
    else:
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
