"""Over-segmentation of the neuron masks into supervoxels (like a watershed would).

One seed is placed at a hashed, jittered position in every cell of a regular grid; a supervoxel
is a 6-connected piece of one neuron inside one seed's Voronoi cell (computed like the neuron
masks, on the coarse grid of ``factor``). Since every voxel's nearest seed lies within about the
cell diagonal (:attr:`SeedGrid.reach`), a piece never extends further than twice that: a block
labels a halo that wide and sees every piece touching it in full.

Labels are a salted bijection of the global linear index of the supervoxel's first voxel in
raster (z, y, x) order, which every block computes identically: distinct, nonzero, random-looking
values below ``2**63``.

>>> g = SeedGrid.create(np.array([3, 8, 8]), np.array([24, 96, 96]), np.array([40., 8., 8.]),
...                     np.array([1, 1, 1]), 0)
>>> pos, sid = g.seeds_in(np.array([0, 0, 0]), np.array([24, 96, 96]))
>>> pos.shape, sid.size
((1152, 3), 1152)
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from cavelab.server.synth.edges import fold_runs, pair_keys, sum_by_key
from cavelab.server.synth.hashing import scramble63, uniform01
from cavelab.server.synth.rasterize import coarse_box, expand_coarse, nearest_feature_map

_SLAB_VOXELS = 1 << 22


@dataclass(frozen=True)
class SeedGrid:
    """Jittered seed grid (array order z, y, x)."""

    cell: np.ndarray  # int64 (3,) voxels, a multiple of factor
    size: np.ndarray  # int64 (3,) volume, voxels
    res: np.ndarray  # float64 (3,) nm
    factor: np.ndarray  # int64 (3,) coarse grid of the nearest-seed search
    salt: int

    @classmethod
    def create(
        cls, cell: np.ndarray, size: np.ndarray, res: np.ndarray, factor: np.ndarray, salt: int
    ) -> SeedGrid:
        return cls(
            np.asarray(cell, np.int64),
            np.asarray(size, np.int64),
            np.asarray(res, np.float64),
            np.asarray(factor, np.int64),
            salt,
        )

    @property
    def n_cells(self) -> np.ndarray:
        return -(-self.size // self.cell)

    @property
    def reach(self) -> np.ndarray:
        """Per-axis voxel bound of ``|v - s|`` for a voxel ``v`` whose nearest seed is ``s``.

        The seed of a voxel's own cell is within ``dmax`` (coarse metric), so the nearest one is;
        coarse cells are ``factor`` voxels wide.
        """
        step = self.res * self.factor
        dmax = float(np.linalg.norm((self.cell // self.factor - 1) * step))
        coarse = np.floor(dmax / step + 1e-9).astype(np.int64)
        return coarse * self.factor + self.factor - 1

    def seeds_in(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Seeds inside ``[lo, hi)``: positions ``(K, 3)`` (z, y, x) and global seed ids."""
        lo, hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        c_lo = lo // self.cell
        c_hi = (hi - 1) // self.cell + 1
        axes = [np.arange(c_lo[a], c_hi[a]) for a in range(3)]
        cz, cy, cx = np.meshgrid(*axes, indexing="ij")
        cells = np.stack([cz.ravel(), cy.ravel(), cx.ravel()], axis=1)
        nc = self.n_cells
        cid = (cells[:, 0] * nc[1] + cells[:, 1]) * nc[2] + cells[:, 2]
        start = cells * self.cell
        extent = np.minimum(self.cell, self.size - start)
        u = np.stack([uniform01(cid * 3 + a, self.salt) for a in range(3)], axis=1)
        pos = start + np.minimum((u * extent).astype(np.int64), extent - 1)
        keep = np.all((pos >= lo) & (pos < hi), axis=1)
        return pos[keep], cid[keep]


@dataclass
class Components:
    """Supervoxels of a region: ``ids`` per voxel (0 = background) and per-id tables."""

    ids: np.ndarray  # uint32, region shape; component id per voxel
    label: np.ndarray  # uint64 (K + 1,), label of each component id (0 -> 0)
    tree: np.ndarray  # int32 (K + 1,), tree of each component id (-1 for 0)


def supervoxels(
    trees: np.ndarray,
    lo: np.ndarray,
    grid: SeedGrid,
    seed_lo: np.ndarray,
    seed_hi: np.ndarray,
    label_salt: int,
) -> Components:
    """Cut the neuron mask ``trees`` (region starting at voxel ``lo``) into supervoxels.

    Parameters
    ----------
    trees
        int32 tree index per voxel, ``-1`` = background.
    lo
        Global voxel position (z, y, x) of ``trees[0, 0, 0]``.
    grid
        The seed grid.
    seed_lo, seed_hi
        Region searched for seeds: the region of ``trees`` grown by ``grid.reach`` (clipped).
    label_salt
        Salt of the label bijection (from the dataset seed).

    Returns
    -------
    Components
        Per-voxel component ids and their labels / trees. Components cut by the region border
        are incomplete; only those within ``2 * grid.reach + 1`` of the border can be.
    """
    lo = np.asarray(lo, np.int64)
    seed_lo, seed_hi = np.asarray(seed_lo, np.int64), np.asarray(seed_hi, np.int64)
    shape = trees.shape
    f = grid.factor
    clo, chi = coarse_box(seed_lo, seed_hi, f)
    pos, _sid = grid.seeds_in(clo * f, np.minimum(chi * f, grid.size))
    # cells are unions of coarse cells, so seeds sit in distinct coarse cells
    near = nearest_feature_map(pos // f - clo, tuple(int(v) for v in chi - clo), grid.res * f)
    key = np.zeros(shape, dtype=np.uint64)
    zs = max(1, _SLAB_VOXELS // max(1, shape[1] * shape[2]))
    for z0 in range(0, shape[0], zs):
        z1 = min(z0 + zs, shape[0])
        slo = np.array([lo[0] + z0, lo[1], lo[2]])
        shi = np.array([lo[0] + z1, lo[1] + shape[1], lo[2] + shape[2]])
        s = expand_coarse(near, f, clo, slo, shi).astype(np.uint64)
        t = trees[z0:z1]
        k = ((t.astype(np.int64) + 1).astype(np.uint64) << np.uint64(32)) | s
        key[z0:z1] = np.where(t >= 0, k, np.uint64(0))
    del near

    ids = cc3d.connected_components(key, connectivity=6, out_dtype=np.uint32)
    del key
    flat = ids.ravel()
    n = int(flat.max()) if flat.size else 0
    # cc3d numbers components in order of first appearance in raster order
    run = np.maximum.accumulate(flat)
    first = np.flatnonzero(flat[1:] > run[:-1]) + 1
    if flat.size and flat[0] > 0:
        first = np.concatenate([[0], first])
    if first.size != n or (n and not np.array_equal(flat[first], np.arange(1, n + 1))):
        raise RuntimeError("cc3d did not number components in raster order")
    fz, fy, fx = np.unravel_index(first, shape)
    size = grid.size
    glin = ((fz + lo[0]) * size[1] + (fy + lo[1])) * size[2] + (fx + lo[2])
    label = np.zeros(n + 1, dtype=np.uint64)
    label[1:] = scramble63(glin.astype(np.uint64) + np.uint64(1), label_salt)
    tree = np.full(n + 1, -1, dtype=np.int32)
    tree[1:] = trees.ravel()[first]
    return Components(ids=ids, label=label, tree=tree)


def absorb_small(comp: Components, min_voxels: int) -> np.ndarray:
    """Merge slivers into a neighbour: the component id each component id ends up in.

    Cutting neurons along seed cells leaves slivers where a neuron's border clips a cell. Each
    component smaller than ``min_voxels`` joins the large (``>= min_voxels``) component of the
    same tree it shares the most voxel faces with (ties: the smaller label); slivers with no
    such neighbour stay. Only complete components (and their complete neighbours) give the
    same answer in every block, hence the ``4 * reach + 3`` supervoxel halo.
    """
    ids = comp.ids
    n = comp.label.size
    target = np.arange(n, dtype=np.int64)
    if min_voxels <= 1 or n <= 1:
        return target
    sizes = np.bincount(ids.ravel(), minlength=n)
    small = sizes < min_voxels
    small[0] = False
    if not small.any():
        return target
    svox = small[ids]
    keys, counts = [], []
    for axis in range(3):
        m = ids.shape[axis]
        if m < 2:
            continue
        lo = (slice(None),) * axis + (slice(0, m - 1),)
        hi = (slice(None),) * axis + (slice(1, m),)
        sel = svox[lo] | svox[hi]
        a, b = ids[lo][sel], ids[hi][sel]
        k, c = fold_runs(pair_keys(a, b))
        keys.append(k)
        counts.append(c)
    k, c = sum_by_key(np.concatenate(keys), np.concatenate(counts))
    x, y = (k >> np.uint64(32)).astype(np.int64), (k & np.uint64(0xFFFFFFFF)).astype(np.int64)
    same = comp.tree[x] == comp.tree[y]
    fwd = same & small[x] & ~small[y]
    bwd = same & small[y] & ~small[x]
    s = np.concatenate([x[fwd], y[bwd]])
    o = np.concatenate([y[fwd], x[bwd]])
    c = np.concatenate([c[fwd], c[bwd]])
    if not s.size:
        return target
    order = np.lexsort((comp.label[o], -c, s))
    s, o = s[order], o[order]
    first = np.concatenate([[True], s[1:] != s[:-1]])
    target[s[first]] = o[first]
    return target
