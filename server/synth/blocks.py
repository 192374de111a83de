"""One generation block: neuron mask -> supervoxels -> labels, contacts and label table.

A block labels its core plus halos (see :func:`halos`) and keeps only the core; the halo
makes every result identical to what a single whole-volume pass would give. Contacts are counted
inside the core and across its three upper faces (against the first voxel layer of the next
block, which the halo also labels), so every face of the volume is counted exactly once.

Workers receive a :class:`BlockContext` once and then only block indices.

>>> from cavelab.server.synth.presets import PRESETS
>>> [lo.tolist() for lo, hi in block_boxes(PRESETS["large"])][:2]
[[0, 0, 0], [0, 0, 512]]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cavelab.server.ingest.contacts import slab_contacts
from cavelab.server.synth.edges import contact_keys, split_keys, sum_by_key
from cavelab.server.synth.morphology import Morphology
from cavelab.server.synth.oversegment import SeedGrid, absorb_small, supervoxels
from cavelab.server.synth.presets import SynthConfig
from cavelab.server.synth.rasterize import assign_trees, tree_halo


@dataclass
class BlockContext:
    """Everything a worker needs, sent once per worker."""

    cfg: SynthConfig
    morph: Morphology
    grid: SeedGrid
    label_salt: int
    array_path: str | None  # the zarr array to write, None = do not write


@dataclass
class BlockResult:
    """What one block reports back (all labels are source labels)."""

    index: int
    labels: np.ndarray  # uint64 (n,) labels present in the core (unsorted)
    tree: np.ndarray  # int32 (n,)
    voxels: np.ndarray  # int64 (n,) voxels of each label inside the core
    ref_labels: np.ndarray  # uint64 (m,) sorted: the labels the pairs refer to
    pairs: np.ndarray  # int32 (k, 2) indices into ref_labels, ref[p0] < ref[p1]
    counts: np.ndarray  # int32 (k,) shared faces
    foreground: int  # foreground voxels in the core


def _zyx(v: tuple[Any, ...]) -> np.ndarray:
    return np.asarray(v[::-1])


def block_boxes(cfg: SynthConfig) -> list[tuple[np.ndarray, np.ndarray]]:
    """Core boxes ``(lo, hi)`` (z, y, x voxels) of all blocks, in raster order."""
    size, block = _zyx(cfg.size).astype(np.int64), _zyx(cfg.block_size).astype(np.int64)
    n = -(-size // block)
    out = []
    for bz in range(n[0]):
        for by in range(n[1]):
            for bx in range(n[2]):
                lo = np.array([bz, by, bx]) * block
                out.append((lo, np.minimum(lo + block, size)))
    return out


def halos(cfg: SynthConfig, grid: SeedGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-axis halos (z, y, x voxels): supervoxel region, seed search, skeleton search.

    A seed-cell piece spans at most ``2 * reach`` voxels per axis, so with a supervoxel region of
    ``4 * reach + 3`` around the core every piece touching the core or its upper neighbour layer,
    and every neighbour of such a piece (needed to absorb slivers), lies fully inside. Seeds are
    searched one reach further and skeleton points ``max_radius_nm`` further than that region.
    """
    res = _zyx(cfg.resolution_nm).astype(np.float64)
    factor = _zyx(cfg.edt_factor).astype(np.int64)
    h_sv = 4 * grid.reach + 3
    return h_sv, grid.reach, tree_halo(cfg.max_radius_nm, res, factor)


def compute_block(
    ctx: BlockContext, lo: np.ndarray, hi: np.ndarray, index: int = 0
) -> tuple[np.ndarray, BlockResult]:
    """Labels of the core ``[lo, hi)`` and the block's :class:`BlockResult`."""
    cfg, grid = ctx.cfg, ctx.grid
    size = _zyx(cfg.size).astype(np.int64)
    res = _zyx(cfg.resolution_nm).astype(np.float64)
    h_sv, h_seed, h_tree = halos(cfg, grid)
    sv_lo, sv_hi = np.maximum(lo - h_sv, 0), np.minimum(hi + h_sv, size)
    t_lo, t_hi = np.maximum(sv_lo - h_tree, 0), np.minimum(sv_hi + h_tree, size)
    s_lo, s_hi = np.maximum(sv_lo - h_seed, 0), np.minimum(sv_hi + h_seed, size)

    factor = _zyx(cfg.edt_factor).astype(np.int64)
    trees = assign_trees(ctx.morph, res, factor, t_lo, t_hi, sv_lo, sv_hi)
    comp = supervoxels(trees, sv_lo, grid, s_lo, s_hi, ctx.label_salt)
    o = lo - sv_lo
    core_sl = tuple(slice(int(o[a]), int(o[a] + hi[a] - lo[a])) for a in range(3))
    foreground = int(np.count_nonzero(trees[core_sl] >= 0))
    del trees
    merged = absorb_small(comp, cfg.min_supervoxel_voxels).astype(np.uint32)
    core = merged[comp.ids[core_sl]]

    vox = np.bincount(core.ravel(), minlength=comp.label.size)
    present = np.flatnonzero(vox[1:]) + 1

    keys, counts = contact_keys(core)
    kparts, cparts = [keys], [counts]
    for a in range(3):
        if hi[a] >= size[a]:
            continue
        last = [slice(None)] * 3
        last[a] = slice(core.shape[a] - 1, core.shape[a])
        nxt = list(core_sl)
        nxt[a] = slice(int(o[a] + hi[a] - lo[a]), int(o[a] + hi[a] - lo[a] + 1))
        p, c = slab_contacts(core[tuple(last)], merged[comp.ids[tuple(nxt)]])
        kparts.append((p[:, 0] << np.uint64(32)) | p[:, 1])
        cparts.append(c)
    keys, counts = sum_by_key(np.concatenate(kparts), np.concatenate(cparts))
    ids = split_keys(keys).astype(np.int64)
    la, lb = comp.label[ids[:, 0]], comp.label[ids[:, 1]]
    la, lb = np.minimum(la, lb), np.maximum(la, lb)
    ref, inv = np.unique(np.concatenate([la, lb]), return_inverse=True)
    pairs = inv.reshape(2, -1).T.astype(np.int32)

    labels = comp.label[core]
    result = BlockResult(
        index=index,
        labels=comp.label[present],
        tree=comp.tree[present],
        voxels=vox[present].astype(np.int64),
        ref_labels=ref,
        pairs=pairs,
        counts=counts.astype(np.int32),
        foreground=foreground,
    )
    return labels, result


# -- worker side -----------------------------------------------------------------------
_CTX: BlockContext | None = None
_ARRAY: Any = None


def init_worker(ctx: BlockContext | None) -> None:
    """Pool initializer: keep the context, open the output array lazily."""
    global _CTX, _ARRAY
    _CTX = ctx
    _ARRAY = None


def run_block(index: int) -> BlockResult:
    """Compute block ``index`` of the worker's context and write its labels."""
    global _ARRAY
    ctx = _CTX
    if ctx is None:
        raise RuntimeError("init_worker was not called")
    lo, hi = block_boxes(ctx.cfg)[index]
    labels, result = compute_block(ctx, lo, hi, index)
    if ctx.array_path is not None:
        if _ARRAY is None:
            import zarr

            _ARRAY = zarr.open_array(ctx.array_path, mode="r+")
        _ARRAY[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = labels
    return result
