"""Voxel-face contacts between labels: the basis of every supervoxel edge.

Both the synthetic generator (to write ``edges.parquet``) and ingest (to tie
chunk-cut pieces and to place source edges between touching pieces) use these.

Pairs are counted through single integer keys (``lo * n + hi`` over the sorted
distinct labels involved) instead of ``np.unique(..., axis=0)``, which sorts rows
and is several times slower.
"""

from __future__ import annotations

import numpy as np

_EMPTY_PAIRS = (np.zeros((0, 2), dtype=np.uint64), np.zeros(0, dtype=np.int64))


def _sum_pairs(
    lo: np.ndarray, hi: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct ``(lo, hi)`` rows (uint64), sorted lexicographically, with summed weights.

    ``weights=None`` counts the rows.
    """
    lo = lo.astype(np.uint64, copy=False)
    hi = hi.astype(np.uint64, copy=False)
    top = int(max(lo.max(), hi.max()))
    if top < 2**32:  # both fit in 32 bits: pack directly (order = lexicographic)
        keys = (lo << np.uint64(32)) | hi
        decode = None
    else:  # index into the sorted distinct labels first
        u, inv = np.unique(np.concatenate([lo, hi]), return_inverse=True)
        inv = inv.ravel().astype(np.uint64)
        n = np.uint64(u.size)
        keys = inv[: lo.size] * n + inv[lo.size :]
        decode = (u, n)
    if weights is None:
        ks = np.sort(keys)
        starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
        sums = np.diff(np.append(starts, ks.size)).astype(np.int64)
    else:
        order = np.argsort(keys, kind="stable")
        ks = keys[order]
        starts = np.flatnonzero(np.concatenate([[True], ks[1:] != ks[:-1]]))
        sums = np.add.reduceat(np.asarray(weights)[order], starts).astype(np.int64)
    uk = ks[starts]
    if decode is None:
        pairs = np.stack([uk >> np.uint64(32), uk & np.uint64(0xFFFFFFFF)], axis=1)
    else:
        u, n = decode
        pairs = np.stack([u[uk // n], u[uk % n]], axis=1)
    return pairs.astype(np.uint64), sums


def _count_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique unordered pairs of differing, nonzero labels with their multiplicity."""
    a = a.ravel()
    b = b.ravel()
    m = (a != b) & (a != 0) & (b != 0)
    if not np.any(m):
        return _EMPTY_PAIRS[0].copy(), _EMPTY_PAIRS[1].copy()
    a = a[m].astype(np.uint64)
    b = b[m].astype(np.uint64)
    return _sum_pairs(np.minimum(a, b), np.maximum(a, b), None)


def merge_pair_counts(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the counts of identical pairs across several ``(pairs, counts)`` results."""
    parts = [p for p in parts if p[0].shape[0]]
    if not parts:
        return _EMPTY_PAIRS[0].copy(), _EMPTY_PAIRS[1].copy()
    pairs = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    return _sum_pairs(pairs[:, 0], pairs[:, 1], counts)


def face_contacts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contacts inside one 3-D label block (faces along all three axes).

    Returns ``(pairs, counts)``: ``pairs`` is ``(K, 2)`` uint64 with ``pairs[:, 0] < pairs[:, 1]``
    and ``counts`` the number of shared voxel faces. Label 0 (background) never touches.

    >>> b = np.array([[[1, 2]], [[1, 3]]])
    >>> face_contacts(b)[0].tolist(), face_contacts(b)[1].tolist()
    ([[1, 2], [1, 3], [2, 3]], [1, 1, 1])
    """
    parts = []
    for axis in range(3):
        if block.shape[axis] < 2:
            continue
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, block.shape[axis] - 1)
        hi[axis] = slice(1, block.shape[axis])
        parts.append(_count_pairs(block[tuple(lo)], block[tuple(hi)]))
    return merge_pair_counts(parts)


def slab_contacts(slab_a: np.ndarray, slab_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contacts between two facing one-voxel slabs (same shape) of adjacent blocks."""
    if slab_a.shape != slab_b.shape:
        raise ValueError(f"slabs differ in shape: {slab_a.shape} vs {slab_b.shape}")
    return _count_pairs(slab_a, slab_b)
