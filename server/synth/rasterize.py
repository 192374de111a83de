"""Neuron masks: which tree (if any) each voxel of a region belongs to.

A voxel belongs to the tree of its nearest skeleton point if it lies within that point's radius
(Euclidean, nm, full resolution), else to a soma sphere containing it, else to the background
(extracellular space). The nearest point is found with an exact Euclidean feature transform
(``scipy.ndimage.distance_transform_edt(..., return_indices=True)``) on a grid ``factor`` times
coarser than the voxels (``(1, 1, 1)``: the voxels themselves; a coarse cell holding several
points keeps the thinnest). The search region carries a halo of ``max_radius_nm`` (see
:func:`tree_halo`): any point that can own a voxel lies within it, and the transform breaks ties
between equidistant points by relative position only, so the answer does not depend on where the
region starts or ends (blocks agree on their overlaps).

>>> from cavelab.server.synth.presets import PRESETS
>>> from cavelab.server.synth.morphology import grow_morphology
>>> m = grow_morphology(PRESETS["tiny"], np.random.default_rng(0))
>>> res, one = np.array([40.0, 8.0, 8.0]), np.array([1, 1, 1])
>>> lab = assign_trees(m, res, one, np.array([0, 0, 0]), np.array([24, 96, 96]),
...                    np.array([0, 0, 0]), np.array([24, 96, 96]))
>>> lab.shape, int(lab.min())
((24, 96, 96), -1)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from cavelab.server.synth.morphology import Morphology

_SLAB_VOXELS = 1 << 22  # voxels processed at once when gathering (bounds temporaries)


def coarse_box(lo: np.ndarray, hi: np.ndarray, factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The coarse cells ``[clo, chi)`` covering the voxel box ``[lo, hi)``."""
    return lo // factor, -(-hi // factor)


def tree_halo(max_radius_nm: float, res: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Voxels (per axis) to search beyond a region for skeleton points that may own its voxels.

    A voxel and its coarse cell's center are at most ``delta`` apart, so a coarse feature
    farther than ``max_radius + 2 * delta`` from a voxel's cell cannot own the voxel.
    """
    delta = float(np.linalg.norm((factor - 1) * res / 2.0))
    cells = np.ceil((max_radius_nm + 2 * delta) / (res * factor) - 1e-9).astype(np.int64) + 1
    return cells * factor


def _sq(d: np.ndarray, res: float) -> np.ndarray:
    """``(d * res) ** 2`` in float32 (exact for the distances that matter, < 2**24 nm^2)."""
    f = d.astype(np.float32)
    f *= np.float32(res)
    f *= f
    return f


def expand_coarse(
    coarse: np.ndarray, factor: np.ndarray, clo: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Full-resolution values over voxels ``[lo, hi)`` of an array of coarse cells from ``clo``.

    >>> expand_coarse(np.array([[[1, 2]]]), np.array([1, 1, 2]), np.zeros(3, int),
    ...               np.array([0, 0, 1]), np.array([1, 1, 4])).tolist()
    [[[1, 2, 2]]]
    """
    a = lo // factor - clo
    b = (hi - 1) // factor - clo + 1
    sub = coarse[a[0] : b[0], a[1] : b[1], a[2] : b[2]]
    for axis in range(3):
        if factor[axis] > 1:
            sub = np.repeat(sub, int(factor[axis]), axis=axis)
    off = lo - (lo // factor) * factor
    return sub[
        off[0] : off[0] + hi[0] - lo[0],
        off[1] : off[1] + hi[1] - lo[1],
        off[2] : off[2] + hi[2] - lo[2],
    ]


def _points_in_box(m: Morphology, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Indices of the skeleton points inside ``[lo, hi)`` (points are sorted by z)."""
    a, b = np.searchsorted(m.points[:, 0], [lo[0], hi[0]])
    yx = m.points[a:b, 1:]
    sel = np.all((yx >= lo[1:]) & (yx < hi[1:]), axis=1)
    return a + np.flatnonzero(sel)


def nearest_feature_map(
    features: np.ndarray, shape: tuple[int, ...], sampling: np.ndarray
) -> np.ndarray:
    """Index (into ``features``) of the nearest feature of every cell of a grid.

    ``features`` are distinct ``(K, 3)`` cell coordinates, ``K >= 1``; returns int32 ``shape``.
    """
    mask = np.ones(shape, dtype=bool)
    mask[tuple(features.T)] = False
    fid = np.zeros(shape, dtype=np.int32)
    fid[tuple(features.T)] = np.arange(features.shape[0], dtype=np.int32)
    ft = ndi.distance_transform_edt(
        mask,
        sampling=tuple(float(s) for s in sampling),
        return_distances=False,
        return_indices=True,
    )
    del mask
    return fid[ft[0], ft[1], ft[2]]


def assign_trees(
    m: Morphology,
    res: np.ndarray,
    factor: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    out_lo: np.ndarray,
    out_hi: np.ndarray,
) -> np.ndarray:
    """Tree index of every voxel of ``[out_lo, out_hi)``, ``-1`` for background.

    Parameters
    ----------
    m
        The rasterized skeletons.
    res
        Voxel size in nm, z, y, x.
    factor
        Coarse grid factor (z, y, x) of the nearest-point search.
    lo, hi
        The region searched for skeleton points (z, y, x voxels); must contain ``[out_lo, out_hi)``
        grown by :func:`tree_halo` (clipped to the volume) for block-independent results.
    out_lo, out_hi
        The region to label.

    Returns
    -------
    numpy.ndarray
        int32 array of shape ``out_hi - out_lo``.
    """
    factor = np.asarray(factor, np.int64)
    clo, chi = coarse_box(np.asarray(lo, np.int64), np.asarray(hi, np.int64), factor)
    out_lo, out_hi = np.asarray(out_lo, np.int64), np.asarray(out_hi, np.int64)
    out_shape = tuple(int(v) for v in out_hi - out_lo)
    out = np.full(out_shape, -1, dtype=np.int32)

    idx = _points_in_box(m, clo * factor, chi * factor)
    if idx.size:
        cshape = tuple(int(v) for v in chi - clo)
        cp = m.points[idx] // factor - clo
        # one point per coarse cell: the thinnest (then lowest tree, then first)
        clin = np.ravel_multi_index(tuple(cp.T), cshape)
        order = np.lexsort((m.tree[idx], m.radius[idx], clin))
        head = np.concatenate([[True], clin[order][1:] != clin[order][:-1]])
        keep = order[head]
        rep, cp = idx[keep], cp[keep]
        near = nearest_feature_map(cp, cshape, res * factor)
        # attributes of each coarse cell's nearest point
        coarse = [m.points[rep, a].astype(np.int32)[near] for a in range(3)]
        coarse.append((m.radius[rep].astype(np.float64) ** 2).astype(np.float32)[near])
        coarse.append(m.tree[rep][near])
        del near
        gy = np.arange(out_lo[1], out_hi[1], dtype=np.int32)[None, :, None]
        gx = np.arange(out_lo[2], out_hi[2], dtype=np.int32)[None, None, :]
        zs = max(1, _SLAB_VOXELS // max(1, out_shape[1] * out_shape[2]))
        for z0 in range(0, out_shape[0], zs):
            z1 = min(z0 + zs, out_shape[0])
            slo = np.array([out_lo[0] + z0, out_lo[1], out_lo[2]])
            shi = np.array([out_lo[0] + z1, out_hi[1], out_hi[2]])
            pz, py, px, r2, tr = (expand_coarse(c, factor, clo, slo, shi) for c in coarse)
            gz = np.arange(slo[0], shi[0], dtype=np.int32)[:, None, None]
            d2 = _sq((pz - gz), res[0])
            d2 += _sq((py - gy), res[1])
            d2 += _sq((px - gx), res[2])
            out[z0:z1] = np.where(d2 <= r2, tr, -1)

    _add_somas(m, res, out, out_lo, out_hi)
    return out


def _add_somas(
    m: Morphology, res: np.ndarray, out: np.ndarray, out_lo: np.ndarray, out_hi: np.ndarray
) -> None:
    """Background voxels inside a soma sphere join the soma's tree (in place)."""
    for c, r, t in zip(m.soma_center, m.soma_radius, m.soma_tree):
        vlo = np.maximum(np.floor((c - r) / res - 0.5).astype(np.int64), out_lo)
        vhi = np.minimum(np.ceil((c + r) / res - 0.5).astype(np.int64) + 1, out_hi)
        if np.any(vhi <= vlo):
            continue
        ax = [((np.arange(vlo[a], vhi[a]) + 0.5) * res[a] - c[a]) ** 2 for a in range(3)]
        d2 = ax[0][:, None, None] + ax[1][None, :, None] + ax[2][None, None, :]
        sl = tuple(slice(int(vlo[a] - out_lo[a]), int(vhi[a] - out_lo[a])) for a in range(3))
        sub = out[sl]
        sub[(d2 <= r * r) & (sub < 0)] = t
