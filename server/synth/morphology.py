"""Neuron-like skeletons: branching persistent random walks, tapering radii, somas.

Each *tree* is one neuron as it appears in the volume: either a soma placed inside the volume
with neurites leaving it, or a neurite passing through (its cell body lies outside), grown both
ways from a random point, that branches. Tips walk with direction persistence, taper, branch and end at
random, glide around foreign somas, and stop when they leave the volume, so every tree is
connected inside the volume. Trees are added until the tube volume reaches ``density`` times the
volume, which packs neurites so densely that they touch.

Tubes may overlap (the rasterizer splits overlaps between the nearest skeletons), but skeleton
*axes* of different trees never cross: an occupancy grid of ~32 nm cells records which tree's
axis passed where, and a tip about to enter another tree's cell turns (up to three tries) or
ends. Crossing axes would cut one of the two neurites apart.

Everything here works in nm, array order z, y, x. The output is rasterized: face-connected voxel
paths along the skeletons, one skeleton point per voxel.

>>> from cavelab.server.synth.presets import PRESETS
>>> m = grow_morphology(PRESETS["tiny"], np.random.default_rng(0))
>>> m.points.shape[1], m.n_trees > 1
(3, True)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cavelab.server.synth.presets import SynthConfig


@dataclass
class Morphology:
    """Rasterized skeletons of all trees (voxel coordinates z, y, x)."""

    points: np.ndarray  # int32 (P, 3) voxel z, y, x; unique, sorted by linear voxel index
    radius: np.ndarray  # float32 (P,) tube radius, nm
    tree: np.ndarray  # int32 (P,) tree index
    soma_center: np.ndarray  # float64 (S, 3) nm, z, y, x (voxel v has its center at (v + .5) * res)
    soma_radius: np.ndarray  # float64 (S,) nm
    soma_tree: np.ndarray  # int32 (S,)
    n_trees: int
    tube_volume_nm3: float  # sum of pi r^2 step over points inside the volume (+ somas)


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _random_unit(rng: np.random.Generator, n: int) -> np.ndarray:
    return _unit(rng.normal(size=(n, 3)))


class _Grower:
    """Vectorized growth of many tips at once."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.rng = rng
        self.res = np.asarray(cfg.resolution_nm[::-1], dtype=np.float64)
        self.size = np.asarray(cfg.size[::-1], dtype=np.int64)
        self.ext = self.size * self.res
        step_um = cfg.step_nm / 1000.0
        self.step = cfg.step_nm
        self.p_branch = 1.0 - np.exp(-cfg.branch_per_um * step_um)
        self.p_stop = 1.0 - np.exp(-cfg.stop_per_um * step_um)
        self.taper = cfg.taper_per_um**step_um
        self.turn = cfg.turn_per_sqrt_um * np.sqrt(step_um)
        self.max_steps = int(4 * np.linalg.norm(self.ext) / self.step) + 16
        self.soma_c = np.zeros((0, 3))
        self.soma_r = np.zeros(0)
        self.soma_t = np.zeros(0, dtype=np.int64)
        self.occ_cell = np.maximum(np.round(32.0 / self.res), 1).astype(np.int64)
        self.occ = np.zeros(tuple(-(-self.size // self.occ_cell)), dtype=np.int32)

    # -- somas -----------------------------------------------------------
    def place_somas(self) -> None:
        cfg, rng = self.cfg, self.rng
        cs, rs = [], []
        for _ in range(cfg.n_somas):
            for _try in range(200):
                r = rng.uniform(*cfg.soma_radius_nm)
                lo = np.minimum(r, self.ext / 2)
                c = rng.uniform(lo, self.ext - lo)
                if all(
                    np.linalg.norm(c - c2) > r + r2 + 2 * cfg.max_radius_nm
                    for c2, r2 in zip(cs, rs)
                ):
                    cs.append(c)
                    rs.append(r)
                    break
        self.soma_c = np.asarray(cs, dtype=np.float64).reshape(-1, 3)
        self.soma_r = np.asarray(rs, dtype=np.float64)
        self.soma_t = np.arange(len(rs), dtype=np.int64)

    def soma_tips(self) -> tuple[np.ndarray, ...]:
        cfg, rng = self.cfg, self.rng
        pos, dirs, rad, tree = [], [], [], []
        for t, (c, r) in enumerate(zip(self.soma_c, self.soma_r)):
            n = int(rng.integers(cfg.dendrites_per_soma[0], cfg.dendrites_per_soma[1] + 1))
            d = _random_unit(rng, n)
            pos.append(c + d * r * 0.5)
            dirs.append(d)
            radii = rng.uniform(cfg.radius_nm[1], cfg.max_radius_nm, n)
            radii[0] = cfg.min_radius_nm * 1.2  # the axon
            rad.append(radii)
            tree.append(np.full(n, t))
        if not pos:
            return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64)
        return np.concatenate(pos), np.concatenate(dirs), np.concatenate(rad), np.concatenate(tree)

    # -- neurites passing through ---------------------------------------------
    def through_tips(self, first_tree: int, n: int) -> tuple[np.ndarray, ...]:
        """``n`` trees that pass through the volume: two opposite tips from a random point.

        A neurite whose cell body lies outside the volume crosses it; growing both ways from a
        uniformly placed point fills the interior as densely as the faces.
        """
        rng, ext = self.rng, self.ext
        pos = rng.uniform(0, 1, size=(n, 3)) * ext
        d = _random_unit(rng, n)
        ok = np.ones(n, dtype=bool)
        for c, r in zip(self.soma_c, self.soma_r):
            ok &= np.linalg.norm(pos - c, axis=1) > r + self.cfg.max_radius_nm
        rad = rng.uniform(*self.cfg.radius_nm, size=n)
        tree = first_tree + np.arange(n)
        pos, d, rad, tree = pos[ok], d[ok], rad[ok], tree[ok]
        return (
            np.concatenate([pos, pos]),
            np.concatenate([d, -d]),
            np.concatenate([rad, rad]),
            np.concatenate([tree, tree]),
        )

    # -- growth -----------------------------------------------------------------
    def _claim(self, a: np.ndarray, b: np.ndarray, tree: np.ndarray) -> tuple[np.ndarray, ...]:
        """Voxel paths of segments ``a -> b``; the segments that would cross a foreign axis.

        Returns ``(lin, owner, bad)``: path voxels, their segment, and a per-segment flag.
        Occupancy cells taken by another tree, or wanted by several trees in this call (the
        lowest tree wins), make a segment bad. Good segments' cells are claimed.
        """
        lin, owner, vox = segment_voxels(a, b, self.res, self.size)
        v = vox // self.occ_cell
        cell = (v[:, 0] * self.occ.shape[1] + v[:, 1]) * self.occ.shape[2] + v[:, 2]
        mine = (tree[owner] + 1).astype(np.int32)
        occ = self.occ.ravel()
        cur = occ[cell]
        bad_claim = (cur != 0) & (cur != mine)
        free = np.flatnonzero(cur == 0)
        if free.size:
            fc, fm = cell[free], mine[free]
            occ[fc] = np.iinfo(np.int32).max
            np.minimum.at(occ, fc, fm)
            bad_claim[free[occ[fc] != fm]] = True
            occ[fc] = 0
        bad = np.zeros(len(a), dtype=bool)
        bad[owner[bad_claim]] = True
        ok = ~bad[owner]
        occ[cell[ok]] = mine[ok]
        return lin, owner, bad

    def grow(
        self, pos: np.ndarray, dirs: np.ndarray, rad: np.ndarray, tree: np.ndarray, budget: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Walk all tips until they leave the volume, stop or get stuck.

        Returns the skeleton voxels (linear index, radius, tree; repeats allowed) and the tube
        volume grown. Growth stops early once the tube volume exceeds ``budget`` (nm^3).
        """
        cfg, rng = self.cfg, self.rng
        out_l, out_r, out_t = [], [], []
        vol = 0.0
        branch_min = 1.5 * cfg.min_radius_nm
        for _ in range(self.max_steps):
            if not len(pos) or vol > budget:
                break
            dirs = _unit(dirs + rng.normal(size=dirs.shape) * self.turn)
            start = pos
            new = pos.copy()
            keep = np.zeros(len(pos), dtype=bool)
            pending = np.arange(len(pos))
            for attempt in range(4):
                if attempt:
                    dirs[pending] = _unit(dirs[pending] + rng.normal(size=(pending.size, 3)))
                p = start[pending] + dirs[pending] * self.step
                d = dirs[pending]
                self._deflect(p, d, rad[pending], tree[pending])
                dirs[pending] = d
                inside = np.all((p >= 0) & (p < self.ext), axis=1)
                pending, p = pending[inside], p[inside]
                if not pending.size:
                    break
                lin, owner, bad = self._claim(start[pending], p, tree[pending])
                okl = ~bad[owner]
                out_l.append(lin[okl])
                out_r.append(rad[pending][owner[okl]])
                out_t.append(tree[pending][owner[okl]])
                good = pending[~bad]
                new[good] = p[~bad]
                keep[good] = True
                pending = pending[bad]
                if not pending.size:
                    break
            pos, dirs, rad, tree = new[keep], dirs[keep], rad[keep], tree[keep]
            rad = np.maximum(rad * self.taper, cfg.min_radius_nm)
            vol += float(np.sum(rad.astype(np.float64) ** 2)) * np.pi * self.step
            alive = rng.random(len(pos)) >= self.p_stop
            pos, dirs, rad, tree = pos[alive], dirs[alive], rad[alive], tree[alive]
            br = np.flatnonzero((rng.random(len(pos)) < self.p_branch) & (rad >= branch_min))
            if br.size:
                perp = _unit(np.cross(dirs[br], _random_unit(rng, br.size)))
                ang = rng.uniform(0.4, 1.2, size=(br.size, 1))
                nd = _unit(np.cos(ang) * dirs[br] + np.sin(ang) * perp)
                child_r = np.maximum(rad[br] * rng.uniform(0.6, 0.85, br.size), cfg.min_radius_nm)
                rad = rad.copy()
                rad[br] = np.maximum(rad[br] * 0.9, cfg.min_radius_nm)
                pos = np.concatenate([pos, pos[br]])
                dirs = np.concatenate([dirs, nd])
                rad = np.concatenate([rad, child_r])
                tree = np.concatenate([tree, tree[br]])
        if not out_l:
            return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64), 0.0
        return (
            np.concatenate(out_l),
            np.concatenate(out_r).astype(np.float32),
            np.concatenate(out_t),
            vol,
        )

    def _deflect(
        self, pos: np.ndarray, dirs: np.ndarray, rad: np.ndarray, tree: np.ndarray
    ) -> None:
        """Tips that enter a foreign soma glide along its surface (in place)."""
        for c, r, t in zip(self.soma_c, self.soma_r, self.soma_t):
            d = pos - c
            dist = np.linalg.norm(d, axis=1)
            hit = np.flatnonzero((dist < r + rad) & (tree != t))
            if not hit.size:
                continue
            n = d[hit] / np.maximum(dist[hit], 1e-9)[:, None]
            pos[hit] = c + n * (r + rad[hit])[:, None]
            v = dirs[hit]
            v = v - np.minimum(np.sum(v * n, axis=1), 0.0)[:, None] * n
            bad = np.linalg.norm(v, axis=1) < 1e-6
            if np.any(bad):
                v[bad] = np.cross(n[bad], _random_unit(self.rng, int(bad.sum())))
            dirs[hit] = _unit(v)


def segment_voxels(
    a: np.ndarray, b: np.ndarray, res: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels of each segment ``a[i] -> b[i]`` (nm) as a face-connected (6-connected) path.

    Returns ``(lin, owner, vox)``: linear voxel indices (z, y, x order), the segment of each and
    the ``(M, 3)`` voxel coordinates, in path order; a voxel may repeat (not consecutively).

    >>> lin, owner, vox = segment_voxels(np.array([[0., 0, 0]]), np.array([[40., 8, 8]]),
    ...                                  np.array([40., 8, 8]), np.array([4, 4, 4]))
    >>> vox.tolist(), owner.tolist()
    ([[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]], [0, 0, 0, 0])
    """
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.int64)
    va, vb = a / res, b / res
    k = np.ceil(np.max(np.abs(vb - va), axis=1)).astype(np.int64) + 1
    seg = np.repeat(np.arange(len(a)), k)
    first = np.concatenate([[0], np.cumsum(k)[:-1]])
    t = (np.arange(seg.size) - first[seg]) / np.maximum(k[seg] - 1, 1)
    vox = np.floor(va[seg] + (vb - va)[seg] * t[:, None]).astype(np.int64)
    vox = np.clip(vox, 0, size - 1)
    prev = np.empty_like(vox)
    prev[1:] = vox[:-1]
    prev[first] = vox[first]
    # consecutive samples differ by <= 1 per axis; step one axis at a time:
    # (z, y, x) -> (z', y, x) -> (z', y', x) -> (z', y', x')
    p1 = np.stack([vox[:, 0], prev[:, 1], prev[:, 2]], axis=1)
    p2 = np.stack([vox[:, 0], vox[:, 1], prev[:, 2]], axis=1)
    pts = np.stack([p1, p2, vox], axis=1).reshape(-1, 3)
    owner = np.repeat(seg, 3)
    lin = (pts[:, 0] * size[1] + pts[:, 1]) * size[2] + pts[:, 2]
    keep = np.concatenate([[True], (lin[1:] != lin[:-1]) | (owner[1:] != owner[:-1])])
    return lin[keep], owner[keep], pts[keep]


def _dedupe_voxels(lin: np.ndarray, rad: np.ndarray, tree: np.ndarray) -> tuple[np.ndarray, ...]:
    """One point per voxel, sorted by voxel: the thinnest radius of that voxel.

    Axes of different trees never share a voxel (the occupancy grid), so only revisits by one
    tree collide here.
    """
    if not lin.size:
        return lin, rad, tree
    rq = np.minimum(np.round(rad.astype(np.float64) * 64), 65535).astype(np.uint64)
    order = np.argsort((lin.astype(np.uint64) << np.uint64(16)) | rq)
    lin = lin[order]
    head = np.concatenate([[True], lin[1:] != lin[:-1]])
    keep = order[head]
    return lin[head], rad[keep], tree[keep]


def grow_morphology(cfg: SynthConfig, rng: np.random.Generator) -> Morphology:
    """Grow trees until the target density (or ``max_trees``) is reached, then rasterize.

    Every segment between consecutive skeleton positions becomes a face-connected voxel path,
    so each tree's skeleton stays connected; paths of different trees never share a voxel.

    Parameters
    ----------
    cfg
        Generator parameters.
    rng
        Random generator; the result depends only on its state.

    Returns
    -------
    Morphology
        Skeleton points (one per voxel), radii, tree indices and somas.
    """
    g = _Grower(cfg, rng)
    g.place_somas()
    volume = float(np.prod(g.ext))
    target = cfg.density * volume

    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    acc = float(np.sum(4.0 / 3.0 * np.pi * g.soma_r**3))
    n_trees = len(g.soma_r)
    tips = g.soma_tips()
    per_tree = None
    while True:
        if len(tips[0]):
            budget = max(1.5 * (target - acc), 0.05 * target)
            lin, rr, t, got = g.grow(*tips, budget=budget)
            if len(lin):
                parts.append(_dedupe_voxels(lin, rr, t))
            acc += got
            n_new = len(np.unique(t))
            if n_new:
                est = got / n_new
                per_tree = est if per_tree is None else 0.5 * (per_tree + est)
        if acc >= target or n_trees >= cfg.max_trees:
            break
        if per_tree is None:
            n = 4
        else:
            n = int(np.ceil(0.7 * (target - acc) / max(per_tree, 1.0))) + 1
        n = int(min(n, 4096, cfg.max_trees - n_trees))
        tips = g.through_tips(n_trees, n)
        n_trees += n

    if parts:
        lin, r, t = _dedupe_voxels(*(np.concatenate(x) for x in zip(*parts)))
    else:
        lin, r, t = np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    vox = np.stack(np.unravel_index(lin, tuple(g.size)), axis=1)

    # compact tree ids: trees with points or a soma
    used = np.unique(np.concatenate([t, g.soma_t]))
    remap = np.full(max(n_trees, 1), -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    return Morphology(
        points=vox.astype(np.int32),
        radius=r.astype(np.float32),
        tree=remap[t].astype(np.int32),
        soma_center=g.soma_c,
        soma_radius=g.soma_r,
        soma_tree=remap[g.soma_t].astype(np.int32),
        n_trees=int(used.size),
        tube_volume_nm3=acc,
    )
