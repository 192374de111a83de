"""L2-cache features of level-2 nodes: CAVE's ``PCGL2Cache`` attributes, computed in-process.

An L2 node is a set of supervoxels inside one atomic chunk (ingest cuts supervoxels at chunk
borders). CAVE computes its features from that chunk's voxels relabelled by L2 node
(``pcgl2cache/core/features.py``: ``calculate_features``), stores them with the types of
``pcgl2cache/core/attributes.py`` and converts two of them when serving
(``pcgl2cache/app/common.py``: ``_rescale_volume``, ``_add_offset_to_coords``). The
definitions below are those, checked against that source; ``n`` is the node's voxel count,
coordinates are voxel indices ``(x, y, z)``, ``r = (rx, ry, rz)`` is the resolution (nm/voxel).

=========================  ==============================================================
attribute                  definition (units; shape)
=========================  ==============================================================
``size_nm3``               ``n * rx * ry * rz`` (nm^3; scalar). CAVE stores ``n`` (uint32) and
                           multiplies by the voxel volume when serving.
``area_nm2``               voxel faces between the node and any other value (background or
                           another L2 node) *inside the chunk*, per axis times the face area
                           (``ry*rz`` for faces across x, ...) (nm^2; scalar). Faces on the
                           chunk's border are not counted (CAVE compares shifted copies of the
                           chunk), so Σ over a cell's L2 nodes is its surface minus the part
                           lying exactly on chunk planes. Stored uint32 by CAVE.
``chunk_intersect_count``  the node's voxels on the chunk's faces: row 0 on the low x, y, z
                           faces (index 0), row 1 on the high faces (last index of the chunk as
                           read; a chunk clipped by the volume ends at the volume) (voxels;
                           2 x 3). A voxel on an edge counts for both faces.
``pca``                    principal axes of the voxel coordinates in nm, one per **row**,
                           by decreasing variance (scikit-learn ``PCA(3).components_``;
                           unit vectors; 3 x 3). The sign of each row is fixed as scikit-learn
                           >= 1.5 does (``svd_flip(u_based_decision=False)``): its entry of
                           largest magnitude is positive (CAVE's stored signs depend on its
                           scikit-learn version). CAVE omits ``pca``/``pca_val`` for nodes under
                           :data:`PCA_MIN_SIZE_NM3` (0.01 um^3); they are computed here for all
                           nodes and :func:`cave_record` omits them like CAVE.
``pca_val``                scikit-learn ``singular_values_``: ``sqrt(eigenvalue of the scatter
                           matrix Σ (p - mean)(p - mean)^T)`` in nm, *not* variances nor standard
                           deviations (nm; 3). CAVE fits at most :data:`PCA_MAX_POINTS` randomly
                           sampled voxels, so for ``n > 10000`` its values are those of a random
                           sample: here the expected value, ``sqrt(eig * 9999 / (n - 1))``,
                           deterministic. With ``n < 3`` CAVE triplicates the points (``sqrt(3 eig)``).
``max_dt_nm``              the largest Euclidean distance transform value over the node's voxels
                           (nm; scalar): ``edt.edt(chunk relabelled by L2 node, anisotropy=r,
                           black_border=False)``, i.e. the distance to the nearest voxel of another
                           value inside the chunk, the chunk's border not being a boundary. CAVE
                           truncates every voxel's distance to whole nm (it packs it into the
                           high 32 bits of a uint64), so this is ``floor(max dt)``; stored uint16.
                           (A node filling its whole chunk has no boundary; CAVE's value is then
                           undefined, here the chunk's border counts as one.)
``mean_dt_nm``             the mean over the node's voxels of the truncated distances
                           (``mean(floor(dt))``; nm; scalar; stored float16 by CAVE).
``rep_coord_nm``           a representative point: the voxel maximising ``floor(dt) * (1 - d / max
                           d)``, ``d`` being the distance in nm from the node's centroid (so it is
                           inside the node and central); first in x-major order on ties; served
                           as ``(voxel + voxel_offset) * r`` (nm of the voxel's corner; 3).
=========================  ==============================================================

Voxel-accurate distance transforms need the voxels of the union of the node's supervoxels
(boundaries between supervoxels of one node are not object boundaries), so the features are
computed in two ways:

* **From per-supervoxel statistics** kept at ingest (``graph/sv_*.npy``, see
  :data:`cavelab.server.ingest.volume.SV_STAT_ARRAYS`), without reading voxels:
  :func:`features_from_stats` / :func:`l2_features_from_stats`. Exact for ``size_nm3``,
  ``area_nm2`` (Σ exposed faces of the supervoxels - 2 Σ faces shared by two of them),
  ``chunk_intersect_count`` and ``pca``/``pca_val`` (exact integer moments combined about a
  rounded centroid). ``rep_coord_nm`` is an approximation: of the node's supervoxels'
  representative voxels (each the supervoxel's voxel nearest to its own centroid), the one nearest
  to the node's centroid; it is inside the node. No ``max_dt_nm``/``mean_dt_nm``.
* **From voxels** (:func:`dt_features_from_voxels`): one read of the chunk, relabel by L2 node,
  one multi-label ``edt`` call; gives ``max_dt_nm``, ``mean_dt_nm`` and CAVE's exact
  ``rep_coord_nm`` (and, with ``all_features=True``, everything else too).

:func:`compute_all` computes both for every L2 node of a dataset (at ingest: ``graph/l2_*.npy``,
row ``i`` = node index ``i``: the L2 nodes are the first nodes of the ID-sorted node arrays);
:func:`features_for_nodes` does it for a few nodes (the ones an edit creates; milliseconds per
chunk); :class:`L2Features` serves features by L2 ID for a :class:`ChunkedGraph`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cavelab.server.engine.arrays import csr_gather
from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.ingest.volume import SV_STAT_ARRAYS

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph
    from cavelab.server.engine.segmentation import Segmentation
    from cavelab.server.engine.state import GraphState

log = logging.getLogger(__name__)

__all__ = [
    "ATTRIBUTES",
    "L2_ARRAYS",
    "PCA_MAX_POINTS",
    "PCA_MIN_SIZE_NM3",
    "L2Features",
    "SupervoxelStats",
    "attribute_metadata",
    "cave_record",
    "compute_all",
    "dt_features_from_voxels",
    "features_for_nodes",
    "features_from_stats",
    "l2_features_from_stats",
]

#: CAVE's attributes in its registration order: ``type`` is what CAVE's ``attribute_metadata``
#: answers (``str`` of the stored numpy scalar type), ``dtype``/``shape`` what CAVE stores,
#: ``unit`` the unit of the served value.
ATTRIBUTES: dict[str, dict[str, Any]] = {
    "size_nm3": {"type": "<class 'numpy.uint32'>", "dtype": "uint32", "shape": [], "unit": "nm^3"},
    "area_nm2": {"type": "<class 'numpy.uint32'>", "dtype": "uint32", "shape": [], "unit": "nm^2"},
    "max_dt_nm": {"type": "<class 'numpy.uint16'>", "dtype": "uint16", "shape": [], "unit": "nm"},
    "mean_dt_nm": {
        "type": "<class 'numpy.float16'>",
        "dtype": "float16",
        "shape": [],
        "unit": "nm",
    },
    "rep_coord_nm": {
        "type": "<class 'numpy.uint16'>",
        "dtype": "uint16",
        "shape": [3],
        "unit": "nm",
    },
    "chunk_intersect_count": {
        "type": "<class 'numpy.uint16'>",
        "dtype": "uint16",
        "shape": [2, 3],
        "unit": "voxels",
    },
    "pca": {"type": "<class 'numpy.float16'>", "dtype": "float16", "shape": [3, 3], "unit": "1"},
    "pca_val": {"type": "<class 'numpy.float32'>", "dtype": "float32", "shape": [3], "unit": "nm"},
}

#: CAVE computes no PCA for nodes smaller than this (0.01 um^3).
PCA_MIN_SIZE_NM3 = 1e7
#: CAVE fits the PCA on at most this many (randomly sampled) voxels.
PCA_MAX_POINTS = 10_000

#: Saved arrays (``graph/<name>.npy``, one row per L2 node) -> attribute; dtypes: size, area
#: float64; rep_coord float64 [N, 3] (nm); chunk_intersect_count int32 [N, 2, 3]; pca float32
#: [N, 3, 3]; pca_val float32 [N, 3]; max_dt, mean_dt float32 (only after the voxel pass).
L2_ARRAYS = {f"l2_{name}": name for name in ATTRIBUTES}

_SV_ARRAYS = ("sv_ids", "sv_sizes") + SV_STAT_ARRAYS
_GRAPH_DIR = "graph"


def attribute_metadata() -> dict[str, str]:
    """``GET /l2cache/api/v1/attribute_metadata``: ``{name: type}`` as CAVE answers it."""
    return {k: v["type"] for k, v in ATTRIBUTES.items()}


# =============================================================================
# Per-supervoxel statistics
# =============================================================================


@dataclass
class SupervoxelStats:
    """The per-supervoxel statistics of a dataset (``graph/sv_*.npy``), rows in supervoxel order."""

    sv_ids: np.ndarray  # uint64 [S]
    sv_sizes: np.ndarray  # int64 [S], voxels
    sv_moments: np.ndarray  # float64 [S, 9]: Σ x, y, z, xx, yy, zz, xy, xz, yz (chunk-local voxels)
    sv_faces: np.ndarray  # int32 [S, 3]: exposed faces across x, y, z inside the chunk
    sv_chunk_faces: np.ndarray  # int32 [S, 2, 3]: voxels on the chunk's low/high x, y, z faces
    sv_rep_voxel: np.ndarray  # int32 [S, 3]: voxel nearest to the centroid (incl. voxel_offset)
    sv_contacts: np.ndarray  # int64 [P, 2]: supervoxels touching inside a chunk, a < b, sorted
    sv_contact_faces: np.ndarray  # int32 [P, 3]: their shared faces across x, y, z
    _ptr: np.ndarray | None = field(default=None, init=False, repr=False)

    def contact_ptr(self) -> np.ndarray:
        """CSR offsets of ``sv_contacts`` by lower supervoxel (built once, [S + 1])."""
        if self._ptr is None:
            lo = np.ascontiguousarray(self.sv_contacts[:, 0])
            self._ptr = np.searchsorted(lo, np.arange(self.sv_ids.size + 1, dtype=lo.dtype))
        return self._ptr

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> SupervoxelStats:
        missing = [k for k in _SV_ARRAYS if k not in arrays]
        if missing:
            raise KeyError(
                f"the dataset lacks the supervoxel statistics {missing} (ingested before they "
                "existed); re-run `cavelab ingest`, or compute the features from voxels"
            )
        return cls(**{k: np.asarray(arrays[k]) for k in _SV_ARRAYS})

    @classmethod
    def load(cls, dataset_dir: str | Path, mmap: bool = False) -> SupervoxelStats:
        """From ``graph/sv_*.npy``; ``mmap`` maps the files instead of reading them."""
        return cls.from_arrays(_load_graph_arrays(dataset_dir, _SV_ARRAYS, mmap))


def _load_graph_arrays(
    dataset_dir: str | Path, names: Iterable[str], mmap: bool = False
) -> dict[str, np.ndarray]:
    """Some of the dataset's ``graph/<name>.npy`` arrays (those that exist)."""
    d = Path(dataset_dir) / _GRAPH_DIR
    mode = "r" if mmap else None
    return {n: np.load(d / f"{n}.npy", mmap_mode=mode) for n in names if (d / f"{n}.npy").exists()}


def _group_sums(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Σ of ``values`` rows (any trailing shape) per group ``0..n-1``, float64 (exact for integers)."""
    v = values.reshape(values.shape[0], int(np.prod(values.shape[1:], dtype=np.int64)))
    out = np.empty((n, v.shape[1]), dtype=np.float64)
    for j in range(v.shape[1]):
        out[:, j] = np.bincount(group, weights=v[:, j], minlength=n)
    return out.reshape((n,) + values.shape[1:])


def _internal_contacts(
    stats: SupervoxelStats, sv: np.ndarray, group: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Contacts between two supervoxels of one group: ``(group, faces [k, 3])``."""
    c = stats.sv_contacts
    n_sv = stats.sv_ids.size
    if c.shape[0] == 0 or sv.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    if sv.size * 8 > n_sv:  # many: a dense supervoxel -> group table
        g = np.full(n_sv, -1, dtype=np.int64)
        g[sv] = group
        ga, gb = g[c[:, 0]], g[c[:, 1]]
        rows = np.flatnonzero((ga == gb) & (ga >= 0))
        return ga[rows], stats.sv_contact_faces[rows].astype(np.int64)
    # few: the contacts of each supervoxel as the lower end, the other end by binary search
    o = np.argsort(sv, kind="stable")
    ssv, sg = sv[o], group[o]
    ptr = stats.contact_ptr()
    lo = ptr[ssv]
    lens = ptr[ssv + 1] - lo
    total = int(lens.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    owner = np.repeat(np.arange(ssv.size), lens)
    rows = np.repeat(lo, lens) + np.arange(total) - np.repeat(np.cumsum(lens) - lens, lens)
    b = c[rows, 1]
    pos = np.minimum(np.searchsorted(ssv, b), ssv.size - 1)
    ok = (ssv[pos] == b) & (sg[pos] == sg[owner])
    return sg[owner[ok]], stats.sv_contact_faces[rows[ok]].astype(np.int64)


def _pca(
    cnt: np.ndarray, m1: np.ndarray, m2: np.ndarray, res: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """CAVE's ``pca`` (rows = axes, decreasing) and ``pca_val`` from integer coordinate moments.

    ``cnt`` [n], ``m1`` [n, 3] (Σ x, y, z), ``m2`` [n, 6] (Σ xx, yy, zz, xy, xz, yz), voxels.
    The moments are moved (exactly, in int64) to a rounded centroid before the scatter matrix
    is formed, so nothing cancels catastrophically whatever the coordinates.
    """
    n = cnt.astype(np.int64)
    nn = np.maximum(n, 1)
    s1 = np.rint(m1).astype(np.int64)
    s2 = np.rint(m2).astype(np.int64)
    shift = np.floor_divide(2 * s1 + nn[:, None], 2 * nn[:, None])  # round(mean), integer
    c1 = s1 - n[:, None] * shift  # Σ (p - shift), |.| <= n
    ij = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
    scatter = np.empty((n.size, 3, 3), dtype=np.float64)
    for col, (i, j) in enumerate(ij):
        # Σ (p_i - s_i)(p_j - s_j), exact in int64
        m = (
            s2[:, col]
            - shift[:, i] * s1[:, j]
            - shift[:, j] * s1[:, i]
            + n * shift[:, i] * shift[:, j]
        )
        v = m.astype(np.float64) - c1[:, i].astype(np.float64) * c1[:, j] / nn
        scatter[:, i, j] = scatter[:, j, i] = v * res[i] * res[j]
    lam, vec = np.linalg.eigh(scatter)  # ascending; eigenvectors in columns
    comps = np.ascontiguousarray(np.swapaxes(vec[:, :, ::-1], 1, 2))  # rows, decreasing
    lam = np.maximum(lam[:, ::-1], 0.0)
    big = np.argmax(np.abs(comps), axis=2)
    sign = np.sign(np.take_along_axis(comps, big[:, :, None], axis=2))
    comps *= np.where(sign == 0, 1.0, sign)
    scale = np.where(
        n < 3, 3.0, np.where(n > PCA_MAX_POINTS, (PCA_MAX_POINTS - 1) / np.maximum(n - 1, 1), 1.0)
    )
    vals = np.sqrt(lam * scale[:, None])
    return comps.astype(np.float32), vals.astype(np.float32)


def _face_area(res: np.ndarray) -> np.ndarray:
    return np.array([res[1] * res[2], res[0] * res[2], res[0] * res[1]], dtype=np.float64)


def features_from_stats(
    stats: SupervoxelStats, meta: DatasetMeta, sv: np.ndarray, group: np.ndarray, n: int
) -> dict[str, np.ndarray]:
    """Features of ``n`` L2 nodes from their supervoxels' statistics (no voxel reads).

    ``sv`` (supervoxel indices) and ``group`` (their node, ``0..n-1``) list the nodes'
    supervoxels; every node must have at least one. Returns ``size_nm3``, ``area_nm2``,
    ``chunk_intersect_count``, ``pca``, ``pca_val`` (exact) and ``rep_coord_nm``
    (approximate, see the module docstring), one row per node.
    """
    return _from_stats(stats, meta, sv, group, n)[0]


def _from_stats(
    stats: SupervoxelStats, meta: DatasetMeta, sv: np.ndarray, group: np.ndarray, n: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """:func:`features_from_stats` and the nodes' centroids (chunk voxels, float64 [n, 3])."""
    sv = np.asarray(sv, dtype=np.int64)
    group = np.asarray(group, dtype=np.int64)
    res = np.asarray(meta.resolution, dtype=np.float64)
    cnt = np.bincount(group, weights=stats.sv_sizes[sv], minlength=n)
    mom = _group_sums(group, stats.sv_moments[sv], n)
    faces = _group_sums(group, stats.sv_faces[sv], n)
    ig, ifc = _internal_contacts(stats, sv, group)
    faces -= 2 * _group_sums(ig, ifc, n)
    cif = _group_sums(group, stats.sv_chunk_faces[sv], n)
    pca, pca_val = _pca(cnt, mom[:, :3], mom[:, 3:], res)

    # representative point: the supervoxels' central voxels, the one nearest the node's centroid
    first = np.full(n, -1, dtype=np.int64)
    first[group] = sv  # any supervoxel of the node: they share its chunk
    chunk = meta.layout.chunk_coords(stats.sv_ids[first]).astype(np.int64)
    origin = chunk * np.asarray(meta.chunk_size, dtype=np.int64) + np.asarray(
        meta.voxel_offset, dtype=np.int64
    )
    mu = origin + mom[:, :3] / np.maximum(cnt, 1)[:, None]
    rv = stats.sv_rep_voxel[sv].astype(np.int64)
    d2 = (((rv - mu[group]) * res) ** 2).sum(axis=1)
    best = np.full(n, np.inf)
    np.minimum.at(best, group, d2)
    cand = np.flatnonzero(d2 == best[group])
    o = np.lexsort((rv[cand, 2], rv[cand, 1], rv[cand, 0], group[cand]))
    gc = group[cand[o]]
    top = np.ones(o.size, dtype=bool)
    top[1:] = gc[1:] != gc[:-1]
    rep = np.zeros((n, 3), dtype=np.int64)
    rep[gc[top]] = rv[cand[o[top]]]
    feats = {
        "size_nm3": cnt * float(np.prod(res)),
        "area_nm2": faces @ _face_area(res),
        "rep_coord_nm": rep * res,
        "chunk_intersect_count": np.rint(cif).astype(np.int32),
        "pca": pca,
        "pca_val": pca_val,
    }
    return feats, mom[:, :3] / np.maximum(cnt, 1)[:, None]


def l2_features_from_stats(
    source: GraphState | Mapping[str, np.ndarray],
    l2_nodes: np.ndarray,
    *,
    meta: DatasetMeta | None = None,
    stats: SupervoxelStats | None = None,
) -> dict[str, np.ndarray]:
    """:func:`features_from_stats` of L2 node indices, children read from ``source``.

    ``source`` is a :class:`~cavelab.server.engine.state.GraphState` (then ``stats`` is
    required: the state does not keep them) or the dataset's arrays (``node_child_ptr``,
    ``node_children`` and the supervoxel statistics; then ``meta`` is required).
    """
    nodes = np.asarray(l2_nodes, dtype=np.int64).ravel()
    if isinstance(source, Mapping):
        if meta is None:
            raise TypeError("meta is required with an arrays source")
        stats = stats or SupervoxelStats.from_arrays(source)
        sv, owner = csr_gather(
            np.asarray(source["node_child_ptr"]), np.asarray(source["node_children"]), nodes
        )
    else:
        if stats is None:
            raise TypeError("stats is required with a GraphState source")
        meta = source.meta
        if nodes.size:
            sv, owner = source.children_many(nodes)
        else:
            sv = owner = np.zeros(0, dtype=np.int64)
    return features_from_stats(stats, meta, sv, owner, nodes.size)


# =============================================================================
# From voxels: the distance transform (and, optionally, everything else)
# =============================================================================


def _as_mapping(
    l2_of_sv: Mapping[int, int] | tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted supervoxel IDs and their L2 keys."""
    if isinstance(l2_of_sv, Mapping):
        ids = np.fromiter((int(k) for k in l2_of_sv.keys()), dtype=np.uint64, count=len(l2_of_sv))
        keys = np.fromiter((int(v) for v in l2_of_sv.values()), dtype=np.int64, count=len(l2_of_sv))
    else:
        ids = np.asarray(l2_of_sv[0], dtype=np.uint64).ravel()
        keys = np.asarray(l2_of_sv[1]).ravel()
    o = np.argsort(ids, kind="stable")
    return ids[o], keys[o]


def dt_features_from_voxels(
    seg_block: np.ndarray,
    block_origin: Sequence[int] | np.ndarray,
    l2_of_sv: Mapping[int, int] | tuple[np.ndarray, np.ndarray],
    resolution: Sequence[float] | np.ndarray,
    *,
    all_features: bool = False,
    centroids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Distance-transform features of the L2 nodes in one atomic chunk, from its voxels.

    Parameters
    ----------
    seg_block : uint64 array [x, y, z]
        Supervoxel IDs of the whole atomic chunk (the block CAVE reads).
    block_origin : (3,) int
        Voxel coordinate of ``seg_block[0, 0, 0]``, including the dataset's ``voxel_offset``.
    l2_of_sv : dict or (ids, keys)
        Supervoxel ID -> L2 key (any integers); supervoxels not listed count as background.
    resolution : (3,) float
        nm per voxel.
    all_features : bool
        Also compute ``size_nm3``, ``area_nm2``, ``chunk_intersect_count``, ``pca`` and
        ``pca_val`` from the voxels.
    centroids : float array [K, 3], optional
        The nodes' centroids in block voxels, indexed by key (keys must then be ``0..K-1``),
        if known (e.g. from the supervoxel moments: the same values); saves three passes.

    Returns
    -------
    dict
        ``l2`` (the keys present, sorted), ``n_voxels``, ``max_dt_nm``, ``mean_dt_nm`` (float32,
        truncated per voxel as CAVE does) and ``rep_coord_nm`` (float64 [m, 3], nm), one row
        per key (and the other features with ``all_features``).

    >>> seg = np.zeros((4, 3, 2), dtype=np.uint64); seg[:3] = 7; seg[3, 0] = 9
    >>> f = dt_features_from_voxels(seg, (0, 0, 0), {7: 70, 9: 90}, (4.0, 4.0, 40.0))
    >>> f["l2"].tolist(), f["n_voxels"].tolist(), f["max_dt_nm"].tolist()
    ([70, 90], [18, 2], [12.0, 4.0])
    >>> f["rep_coord_nm"].tolist()
    [[4.0, 4.0, 0.0], [12.0, 0.0, 0.0]]
    """
    import fastremap

    res = np.asarray(resolution, dtype=np.float64)
    block = np.ascontiguousarray(seg_block)
    ids, keys = _as_mapping(l2_of_sv)
    r, remap = fastremap.renumber(block, preserve_zero=True, in_place=False)
    remap.pop(0, None)
    svs = np.fromiter(remap.keys(), dtype=np.uint64, count=len(remap))
    vals = np.fromiter(remap.values(), dtype=np.int64, count=len(remap))
    if ids.size and svs.size:
        pos = np.minimum(np.searchsorted(ids, svs), ids.size - 1)
        hit = ids[pos] == svs
    else:
        pos = np.zeros(svs.size, dtype=np.int64)
        hit = np.zeros(svs.size, dtype=bool)
    present, lab_of = np.unique(keys[pos[hit]], return_inverse=True)
    m = present.size
    lut = np.zeros(int(vals.max(initial=0)) + 1, dtype=np.uint32 if m >= 2**16 - 1 else np.uint16)
    lut[vals[hit]] = lab_of.ravel() + 1
    return _dt_from_labels(lut[r], present, block_origin, res, all_features, centroids)


def _dt_from_labels(
    lab: np.ndarray,
    present: np.ndarray,
    block_origin: Sequence[int] | np.ndarray,
    res: np.ndarray,
    all_features: bool = False,
    centroids: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """:func:`dt_features_from_voxels` on a block already labelled ``1..m`` (0 = background),
    label ``i`` standing for key ``present[i - 1]`` (``centroids`` are indexed by key)."""
    import edt

    m = present.size
    out: dict[str, np.ndarray] = {
        "l2": present,
        "n_voxels": np.zeros(m, dtype=np.int64),
        "max_dt_nm": np.zeros(m, dtype=np.float32),
        "mean_dt_nm": np.zeros(m, dtype=np.float32),
        "rep_coord_nm": np.zeros((m, 3), dtype=np.float64),
    }
    if m == 0:
        if all_features:
            out.update(_empty_shape_features(0))
        return out

    # voxels grouped by label with one stable (radix, for 16-bit labels) sort: per-label
    # maxima, sums and first hits are then reductions over contiguous segments, and within a
    # label the voxels keep their x-major order (ties go to the first voxel, as CAVE's argmax)
    flat = lab.reshape(-1)
    per = np.bincount(flat, minlength=m + 1)
    fg = np.argsort(flat, kind="stable")[int(per[0]) :]
    cnt = per[1:]
    seg = np.zeros(m, dtype=np.intp)
    np.cumsum(cnt[:-1], out=seg[1:])
    lb = np.repeat(np.arange(m, dtype=np.intp), cnt)
    # a node filling the whole chunk has no boundary (infinite distances): measure to the border
    dt = edt.edt(
        lab, anisotropy=tuple(res), black_border=bool(m == 1 and fg.size == flat.size), parallel=1
    )
    dts = np.floor(dt.reshape(-1)[fg]).astype(np.float64)  # CAVE: uint64(dt)
    out["n_voxels"] = cnt.astype(np.int64)
    out["max_dt_nm"] = np.maximum.reduceat(dts, seg).astype(np.float32)
    out["mean_dt_nm"] = (np.add.reduceat(dts, seg) / cnt).astype(np.float32)

    nx, ny, nz = lab.shape
    it = np.int32 if flat.size < 2**31 else np.int64
    x, rest = np.divmod(fg.astype(it), it(ny * nz))
    y, z = np.divmod(rest, it(nz))
    xyz = (x, y, z)
    if centroids is None:
        mu = [np.add.reduceat(c.astype(np.float64), seg) / cnt for c in xyz]
    else:
        mu = list(np.asarray(centroids, dtype=np.float64)[present].T)
    d2 = np.zeros(fg.size)
    for i, (c, mu_c) in enumerate(zip(xyz, mu)):
        e = (c - mu_c[lb]) * res[i]
        d2 += e * e
    d = np.sqrt(d2)
    dmax = np.maximum.reduceat(d, seg)[lb]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(dmax > 0, 1 - d / dmax, 1.0)
    score = dts * w
    best = np.maximum.reduceat(score, seg)
    cand = np.flatnonzero(score == best[lb])
    first = np.r_[True, lb[cand[1:]] != lb[cand[:-1]]]  # the first candidate of each label
    pick = cand[first]
    origin = np.asarray(block_origin, dtype=np.int64)
    out["rep_coord_nm"] = (np.stack([x[pick], y[pick], z[pick]], axis=1) + origin) * res

    if all_features:
        out.update(_shape_features_from_labels(lab, m, lb, xyz, cnt, res))
    return out


def _empty_shape_features(m: int) -> dict[str, np.ndarray]:
    return {
        "size_nm3": np.zeros(m),
        "area_nm2": np.zeros(m),
        "chunk_intersect_count": np.zeros((m, 2, 3), dtype=np.int32),
        "pca": np.zeros((m, 3, 3), dtype=np.float32),
        "pca_val": np.zeros((m, 3), dtype=np.float32),
    }


def _shape_features_from_labels(
    lab: np.ndarray,
    m: int,
    lb: np.ndarray,
    xyz: tuple[np.ndarray, ...],
    cnt: np.ndarray,
    res: np.ndarray,
) -> dict[str, np.ndarray]:
    """size, area, chunk faces and PCA of labels ``1..m`` of a block, from its voxels."""
    faces = np.zeros((m, 3))
    cif = np.zeros((m, 2, 3), dtype=np.int32)
    for d in range(3):
        a = np.moveaxis(lab, d, 0)
        diff = a[1:] != a[:-1]
        for side in (a[1:][diff], a[:-1][diff]):
            faces[:, d] += np.bincount(side, minlength=m + 1)[1 : m + 1]
        cif[:, 0, d] = np.bincount(a[0].ravel(), minlength=m + 1)[1 : m + 1]
        cif[:, 1, d] = np.bincount(a[-1].ravel(), minlength=m + 1)[1 : m + 1]
    x, y, z = (c.astype(np.float64) for c in xyz)
    m1 = np.stack([np.bincount(lb, weights=c, minlength=m) for c in (x, y, z)], axis=1)
    m2 = np.stack(
        [
            np.bincount(lb, weights=p, minlength=m)
            for p in (x * x, y * y, z * z, x * y, x * z, y * z)
        ],
        axis=1,
    )
    pca, pca_val = _pca(cnt, m1, m2, res)
    return {
        "size_nm3": cnt * float(np.prod(res)),
        "area_nm2": faces @ _face_area(res),
        "chunk_intersect_count": cif,
        "pca": pca,
        "pca_val": pca_val,
    }


# =============================================================================
# A few nodes (what an edit creates) and every node (at ingest)
# =============================================================================


def _chunk_box(meta: DatasetMeta, chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Array-index box ``[lo, hi)`` of an atomic chunk (clipped to the volume)."""
    cs = np.asarray(meta.chunk_size, dtype=np.int64)
    lo = np.asarray(chunk, dtype=np.int64) * cs
    return lo, np.minimum(lo + cs, np.asarray(meta.size, dtype=np.int64))


def features_for_nodes(
    meta: DatasetMeta,
    stats: SupervoxelStats,
    segmentation: Segmentation | None,
    members: Sequence[np.ndarray],
    sv_bbox: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """All features of a few L2 nodes given their supervoxel indices (one array per node).

    Statistics-based features come from ``stats``; ``max_dt_nm``, ``mean_dt_nm`` and the exact
    ``rep_coord_nm`` from one read of each node's chunk (nodes sharing a chunk share the read).
    With ``sv_bbox`` (the supervoxels' voxel boxes, ``[S, 6]`` with the voxel offset) only the
    nodes' bounding box plus one voxel is read and transformed: the same values, since that ring
    holds none of the nodes' voxels and the chunk's own faces are not boundaries either way.
    Without ``segmentation`` the distance features are left out and ``rep_coord_nm`` is the
    approximate one.
    """
    n = len(members)
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    sv = (
        np.concatenate([np.asarray(m, dtype=np.int64) for m in members])
        if n
        else np.zeros(0, np.int64)
    )
    group = np.repeat(np.arange(n, dtype=np.int64), sizes)
    out, cen = _from_stats(stats, meta, sv, group, n)
    if segmentation is None or n == 0:
        return out
    out["max_dt_nm"] = np.zeros(n, dtype=np.float32)
    out["mean_dt_nm"] = np.zeros(n, dtype=np.float32)
    ids = stats.sv_ids[sv]
    chunks = meta.layout.chunk_coords(ids[np.r_[0, np.cumsum(sizes)[:-1]]]).astype(np.int64)
    offset = np.asarray(meta.voxel_offset, dtype=np.int64)
    key = (chunks[:, 0] * (1 << 21) + chunks[:, 1]) * (1 << 21) + chunks[:, 2]
    for k in np.unique(key):
        nodes = np.flatnonzero(key == k)
        lo, hi = _chunk_box(meta, chunks[nodes[0]])
        sel = np.isin(group, nodes)
        blo, bhi = lo, hi
        if sv_bbox is not None:
            bb = np.asarray(sv_bbox[sv[sel]], dtype=np.int64)
            blo = np.maximum(bb[:, :3].min(axis=0) - offset - 1, lo)
            bhi = np.minimum(bb[:, 3:].max(axis=0) - offset + 1, hi)
        block = segmentation.read_box(blo + offset, bhi + offset)
        f = dt_features_from_voxels(
            block, blo + offset, (ids[sel], group[sel]), meta.resolution, centroids=cen - (blo - lo)
        )
        out["max_dt_nm"][f["l2"]] = f["max_dt_nm"]
        out["mean_dt_nm"][f["l2"]] = f["mean_dt_nm"]
        out["rep_coord_nm"][f["l2"]] = f["rep_coord_nm"]
    return out


_DT_WORKER: dict[str, Any] = {}
_POOL_MIN_VOXELS = 64_000_000


def _dt_init(dataset_dir: str, meta_json: dict[str, Any]) -> None:
    from cavelab.server.engine.segmentation import Segmentation

    try:  # one core per worker process
        import numcodecs.blosc

        numcodecs.blosc.set_nthreads(1)
    except Exception:  # pragma: no cover - numcodecs without blosc
        pass
    meta = DatasetMeta.from_json(meta_json)
    _DT_WORKER.update(meta=meta, seg=Segmentation(dataset_dir, meta))


def _dt_chunk(task: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    lo, hi, ids, l2, cen = task  # cen: centroids (block voxels) of the nodes l2 - l2.min()
    meta: DatasetMeta = _DT_WORKER["meta"]
    block = np.asarray(_DT_WORKER["seg"].array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]])
    base = int(l2.min()) if l2.size else 0
    f = dt_features_from_voxels(
        block, lo + np.asarray(meta.voxel_offset), (ids, l2 - base), meta.resolution, centroids=cen
    )
    return f["l2"] + base, f["max_dt_nm"], f["mean_dt_nm"], f["rep_coord_nm"]


def _dt_cached_chunk(task: tuple[Any, ...]) -> tuple[np.ndarray, ...]:
    """:func:`_dt_chunk` from the ingest's segment-number copy of the chunk: segment ``s`` is the
    chunk's ``s``-th supervoxel, ``rows[s - 1]`` its L2 row (the rows of a chunk are contiguous)."""
    from cavelab.server.ingest.segcache import load_block

    cache, coord, lo, rows, cen = task
    meta: DatasetMeta = _DT_WORKER["meta"]
    block, k = load_block(cache, coord)
    if k != rows.size:
        raise ValueError(f"chunk {coord}: {k} segments in the scratch copy, {rows.size} supervoxels")
    base = int(rows.min())
    m = int(rows.max()) - base + 1
    lut = np.zeros(k + 1, dtype=np.uint16 if m < 2**16 - 1 else np.uint32)
    lut[1:] = rows - base + 1
    f = _dt_from_labels(
        lut[block],
        np.arange(m, dtype=np.int64),
        lo + np.asarray(meta.voxel_offset),
        np.asarray(meta.resolution, dtype=np.float64),
        centroids=cen,
    )
    return f["l2"] + base, f["max_dt_nm"], f["mean_dt_nm"], f["rep_coord_nm"]


def compute_all(
    dataset_dir: str | Path,
    *,
    meta: DatasetMeta | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
    dt: bool = True,
    workers: int = 1,
    progress: bool = False,
    dt_features: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Features of every L2 node of a dataset: ``({"l2_<attribute>": array}, report)``.

    Rows are node indices ``0..n_l2-1`` (the L2 nodes lead the ID-sorted node arrays). The
    statistics pass needs ``graph/sv_*.npy`` (or ``arrays``); with ``dt`` a second pass reads
    every atomic chunk of the segmentation once (``workers`` processes) for ``max_dt_nm``,
    ``mean_dt_nm`` and the exact ``rep_coord_nm``. The report has ``n_l2``, ``dt`` and the
    timings (``stats_seconds``, ``dt_seconds``). ``dt_features`` (from :func:`start_dt_pass`)
    are taken as the distance-transform features instead of a pass of this call.
    """
    t0 = time.perf_counter()
    d = Path(dataset_dir)
    meta = meta or DatasetMeta.load(d)
    need = ("sv_parent", "node_ids") + _SV_ARRAYS
    src = dict(arrays) if arrays is not None else {}
    missing = [k for k in need if k not in src]
    src.update(_load_graph_arrays(d, missing))
    stats = SupervoxelStats.from_arrays(src)
    layers = meta.layout.layers(np.asarray(src["node_ids"], dtype=np.uint64))
    n_l2 = int(np.count_nonzero(layers == 2))
    if not np.all(layers[:n_l2] == 2):
        raise ValueError("the L2 nodes must lead the node arrays (nodes sorted by ID)")
    parent = np.asarray(src["sv_parent"], dtype=np.int64)
    f, cen = _from_stats(stats, meta, np.arange(parent.size, dtype=np.int64), parent, n_l2)
    t1 = time.perf_counter()
    if dt_features is not None:
        f.update({k: np.asarray(v) for k, v in dt_features.items()})
    elif dt:
        f["max_dt_nm"] = np.zeros(n_l2, dtype=np.float32)
        f["mean_dt_nm"] = np.zeros(n_l2, dtype=np.float32)
        for l2, mx, mean, rep in _dt_pass(d, meta, stats.sv_ids, parent, cen, workers, progress):
            f["max_dt_nm"][l2] = mx
            f["mean_dt_nm"][l2] = mean
            f["rep_coord_nm"][l2] = rep
    t2 = time.perf_counter()
    out = {f"l2_{k}": v for k, v in f.items()}
    report = {
        "n_l2": n_l2,
        "dt": bool(dt or dt_features is not None),
        "stats_seconds": t1 - t0,
        "dt_seconds": t2 - t1,
        "workers": workers,
    }
    return out, report


def start_dt_pass(
    dataset_dir: str | Path,
    meta: DatasetMeta,
    sv_ids: np.ndarray,
    sv_row: np.ndarray,
    sv_sizes: np.ndarray,
    sv_moments: np.ndarray,
    n_l2: int,
    *,
    workers: int = 1,
    progress: bool = False,
    seg_cache: str | Path | None = None,
) -> Future[dict[str, np.ndarray]]:
    """Start the distance-transform features of every L2 node in the background.

    Used by ``cavelab ingest`` as soon as the segmentation is written and the L2 membership is
    known (``sv_row``: each supervoxel's L2 row, ``0..n_l2-1``), so the pass over the chunks
    runs while the hierarchy is built and saved. The future resolves to ``max_dt_nm``,
    ``mean_dt_nm`` and the exact ``rep_coord_nm`` with one row per L2 node. ``seg_cache``: the
    chunk pass's segment-number copies (read instead of the uint64 segmentation).
    """
    from concurrent.futures import ThreadPoolExecutor

    sv_row = np.asarray(sv_row, dtype=np.int64)
    cnt = np.bincount(sv_row, weights=np.asarray(sv_sizes, dtype=np.float64), minlength=n_l2)
    cen = _group_sums(sv_row, np.asarray(sv_moments)[:, :3], n_l2) / np.maximum(cnt, 1)[:, None]

    def run() -> dict[str, np.ndarray]:
        out = {
            "max_dt_nm": np.zeros(n_l2, dtype=np.float32),
            "mean_dt_nm": np.zeros(n_l2, dtype=np.float32),
            "rep_coord_nm": np.zeros((n_l2, 3), dtype=np.float64),
        }
        d = Path(dataset_dir)
        for l2, mx, mean, rep in _dt_pass(d, meta, sv_ids, sv_row, cen, workers, progress, seg_cache):
            out["max_dt_nm"][l2] = mx
            out["mean_dt_nm"][l2] = mean
            out["rep_coord_nm"][l2] = rep
        return out

    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cavelab-dt-pass")
    fut = ex.submit(run)
    ex.shutdown(wait=False)
    return fut


def _dt_pass(
    d: Path,
    meta: DatasetMeta,
    sv_ids: np.ndarray,
    parent: np.ndarray,
    centroid: np.ndarray,
    workers: int,
    progress: bool,
    seg_cache: str | Path | None = None,
) -> Iterable[tuple[np.ndarray, ...]]:
    """(l2 index, max_dt, mean_dt, rep_coord) per atomic chunk holding supervoxels; with
    ``seg_cache`` (:mod:`cavelab.server.ingest.segcache`) the chunks come from there."""
    from tqdm.auto import tqdm

    chunk = meta.layout.chunk_coords(sv_ids).astype(np.int64)
    g = np.asarray(meta.grid_shape, dtype=np.int64)
    flat = (chunk[:, 0] * g[1] + chunk[:, 1]) * g[2] + chunk[:, 2]
    starts = (
        np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]]) if flat.size else np.zeros(0, np.int64)
    )
    stops = np.r_[starts[1:], flat.size]
    tasks = []
    for a, b in zip(starts.tolist(), stops.tolist()):
        lo, hi = _chunk_box(meta, chunk[a])
        p = parent[a:b]
        cen = centroid[p.min() : p.max() + 1]
        if seg_cache is not None:
            tasks.append((str(seg_cache), tuple(chunk[a].tolist()), lo, p, cen))
        else:
            tasks.append((lo, hi, sv_ids[a:b], p, cen))
    work = _dt_cached_chunk if seg_cache is not None else _dt_chunk
    bar = tqdm(total=len(tasks), unit="chunk", desc="L2 features", disable=not progress)
    # a process pool pays off only on volumes that take seconds (its start costs ~0.3 s)
    if workers > 1 and len(tasks) > 1 and int(np.prod(meta.size)) >= _POOL_MIN_VOXELS:
        import multiprocessing

        ctx = multiprocessing.get_context(
            "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        )
        with ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)),
            mp_context=ctx,
            initializer=_dt_init,
            initargs=(str(d), meta.to_json()),
        ) as pool:
            for r in pool.map(work, tasks, chunksize=max(1, len(tasks) // (8 * workers))):
                bar.update(1)
                yield r
    else:
        _dt_init(str(d), meta.to_json())
        for t in tasks:
            bar.update(1)
            yield work(t)
    bar.close()


# =============================================================================
# Serving
# =============================================================================


def cave_record(
    features: Mapping[str, np.ndarray], i: int, names: Iterable[str] | None = None
) -> dict[str, Any]:
    """Row ``i`` of a features table as CAVE serves it (JSON-ready values, CAVE's precisions).

    Values are cast to CAVE's stored types (area uint32, max_dt uint16, mean_dt and pca float16,
    pca_val float32, chunk_intersect_count uint16); ``pca``/``pca_val`` are left out below
    :data:`PCA_MIN_SIZE_NM3` and absent attributes are skipped, as CAVE does.
    """
    rec: dict[str, Any] = {}
    small = float(features["size_nm3"][i]) < PCA_MIN_SIZE_NM3 if "size_nm3" in features else False
    for name in names or ATTRIBUTES:
        if name not in features or (small and name in ("pca", "pca_val")):
            continue
        v = np.asarray(features[name][i])
        if name in ("area_nm2", "max_dt_nm", "chunk_intersect_count"):
            v = np.clip(np.floor(v), 0, np.iinfo(ATTRIBUTES[name]["dtype"]).max).astype(np.int64)
        elif name in ("mean_dt_nm", "pca", "pca_val"):
            v = v.astype(ATTRIBUTES[name]["dtype"])
        rec[name] = v.tolist()
    return rec


_NODE_POOL: dict[str, Any] = {}


def _node_pool_init(dataset_dir: str, meta_json: dict[str, Any]) -> None:
    """The feature process: the dataset's statistics, boxes and volume, memory-mapped."""
    from cavelab.server.engine.segmentation import Segmentation

    meta = DatasetMeta.from_json(meta_json)
    arrs = _load_graph_arrays(dataset_dir, list(_SV_ARRAYS) + ["sv_bbox"], mmap=True)
    _NODE_POOL.update(
        meta=meta,
        stats=SupervoxelStats.from_arrays(arrs),
        sv_bbox=arrs["sv_bbox"],
        seg=Segmentation(dataset_dir, meta),
    )


def _node_pool_warm() -> None:
    _NODE_POOL["stats"].contact_ptr()


def _node_pool_features(members: list[np.ndarray]) -> dict[str, np.ndarray]:
    p = _NODE_POOL
    return features_for_nodes(p["meta"], p["stats"], p["seg"], members, sv_bbox=p["sv_bbox"])


class L2Features:
    """Features by L2 ID for a graph: ``features(ids) -> {attribute: rows}`` (any L2 IDs).

    Nodes that existed at ingest read the saved ``graph/l2_*.npy`` rows when they are there;
    other nodes (made by edits, or all of them when the arrays were not saved) are computed
    with :func:`features_for_nodes`: statistics plus one read of their chunk. Values are those
    of the module docstring (float; :func:`cave_record` applies CAVE's casts).
    """

    def __init__(
        self,
        meta: DatasetMeta,
        state: GraphState,
        dataset_dir: str | Path | None,
        *,
        process: bool = False,
    ) -> None:
        self.meta = meta
        self.state = state
        self.dataset_dir = Path(dataset_dir) if dataset_dir is not None else None
        self.stats: SupervoxelStats | None = None
        self.saved: dict[str, np.ndarray] = {}
        self.segmentation: Segmentation | None = None
        if self.dataset_dir is not None:  # memory-mapped: only the rows asked for are read
            arrs = _load_graph_arrays(
                self.dataset_dir, list(_SV_ARRAYS[1:]) + list(L2_ARRAYS), mmap=True
            )
            arrs["sv_ids"] = state.sv_ids
            if all(k in arrs for k in _SV_ARRAYS):
                self.stats = SupervoxelStats.from_arrays(arrs)
            self.saved = {L2_ARRAYS[k]: arrs[k] for k in L2_ARRAYS if k in arrs}
            from cavelab.server.engine.segmentation import Segmentation

            try:
                self.segmentation = Segmentation(self.dataset_dir, meta)
            except Exception:  # no volume: statistics only
                self.segmentation = None
        self.n_saved = int(self.saved["size_nm3"].shape[0]) if "size_nm3" in self.saved else 0
        self.complete = all(k in self.saved for k in ATTRIBUTES)
        # computing in a process of its own keeps the work off this process's GIL (edits, the
        # server's event loop); the statistics and the volume are memory-mapped there too
        self._pool: ProcessPoolExecutor | None = None
        if process and self.stats is not None and self.segmentation is not None:
            import multiprocessing

            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=ctx,
                initializer=_node_pool_init,
                initargs=(str(self.dataset_dir), meta.to_json()),
            )

    @classmethod
    def open(cls, cg: ChunkedGraph, *, process: bool = False) -> L2Features:
        """The features of ``cg``'s nodes; ``process=True`` computes new ones in a process of
        its own (what the server does)."""
        return cls(cg.meta, cg.state, cg.dataset_dir, process=process)

    def close(self) -> None:
        """Stop the feature process, if any."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def _nodes(self, members: list[np.ndarray]) -> dict[str, np.ndarray]:
        """:func:`features_for_nodes` of these nodes, in the feature process when there is one."""
        pool = self._pool
        if pool is not None:
            try:
                return pool.submit(_node_pool_features, members).result()
            except Exception:  # a broken or closed pool: compute here
                log.exception("cavelab: the L2-feature process failed; computing in process")
        assert self.stats is not None
        return features_for_nodes(
            self.meta, self.stats, self.segmentation, members, sv_bbox=self.state.sv_bbox
        )

    def __call__(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        return self.features(ids)

    def warm(self) -> None:
        """Do the one-time work of a first computation now: the contact index over every
        supervoxel (seconds on a large dataset), the imports, the segmentation's first read and
        the pages of the memory-mapped statistics. Called by the service's worker at open, so the
        first edit's new L2 nodes are not the ones that pay for it."""
        if self._pool is not None:
            try:
                self._pool.submit(_node_pool_warm).result()
            except Exception:
                log.exception("cavelab: the L2-feature process did not start; computing in process")
                self.close()
        if self.stats is not None and self._pool is None:
            self.stats.contact_ptr()
        ids = self.state.base_ids
        n_l2 = int(np.searchsorted(self.state.layout.layers(ids), 3))
        if n_l2:
            probe = ids[[0, n_l2 // 2, n_l2 - 1]]
            self.features(probe, use_saved=False)

    def features(self, ids: np.ndarray, *, use_saved: bool = True) -> dict[str, np.ndarray]:
        """One row per ID (L2 IDs of this graph) for every attribute available (``use_saved=False``
        computes rows even where the saved arrays hold them)."""
        ids = np.asarray(ids, dtype=np.uint64).ravel()
        idx, ok = self.state.node_index(ids)
        if not np.all(ok):
            raise KeyError(f"not nodes of this graph: {ids[~ok][:10].tolist()}")
        saved = (idx < self.n_saved) if self.complete and use_saved else np.zeros(ids.size, dtype=bool)
        todo = np.flatnonzero(~saved)
        comp: dict[str, np.ndarray] = {}
        if todo.size and self.stats is not None:
            members = [self.state.children(int(i)) for i in idx[todo]]
            comp = self._nodes(members)
        elif todo.size:
            comp = self._from_voxels_only(idx[todo])
        out: dict[str, np.ndarray] = {}
        for name in ATTRIBUTES:
            if todo.size < ids.size and name not in self.saved or todo.size and name not in comp:
                continue
            like = comp[name] if todo.size else self.saved[name]
            col = np.zeros((ids.size,) + like.shape[1:], dtype=like.dtype)
            if todo.size < ids.size:
                col[saved] = self.saved[name][idx[saved]]
            if todo.size:
                col[todo] = comp[name]
            out[name] = col
        return out

    def _from_voxels_only(self, nodes: np.ndarray) -> dict[str, np.ndarray]:
        """Every feature from voxels (datasets ingested without the supervoxel statistics)."""
        if self.segmentation is None:
            return {}
        res = np.asarray(self.meta.resolution, dtype=np.float64)
        n = nodes.size
        out = {
            "max_dt_nm": np.zeros(n, dtype=np.float32),
            "mean_dt_nm": np.zeros(n, dtype=np.float32),
            "rep_coord_nm": np.zeros((n, 3)),
            **_empty_shape_features(n),
        }
        offset = np.asarray(self.meta.voxel_offset, dtype=np.int64)
        kids = [self.state.children(int(node)) for node in nodes.tolist()]
        ids = [self.state.sv_ids[k] for k in kids]
        chunks = np.stack([self.meta.layout.chunk_coords(i[:1])[0] for i in ids]).astype(np.int64)
        key = (chunks[:, 0] * (1 << 21) + chunks[:, 1]) * (1 << 21) + chunks[:, 2]
        for k in np.unique(key):  # one read and one distance transform per chunk
            sel = np.flatnonzero(key == k)
            lo, hi = _chunk_box(self.meta, chunks[sel[0]])
            block = self.segmentation.read_box(lo + offset, hi + offset)
            sv = np.concatenate([ids[j] for j in sel])
            group = np.repeat(sel, [ids[j].size for j in sel])
            f = dt_features_from_voxels(block, lo + offset, (sv, group), res, all_features=True)
            for name in out:
                if f["l2"].size:
                    out[name][f["l2"]] = f[name]
        return out
