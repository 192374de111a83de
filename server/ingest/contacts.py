"""Voxel-face contacts between labels: the basis of every supervoxel edge.

Both the synthetic generator (to write ``edges.parquet``) and ingest (to tie
chunk-cut pieces and to place source edges between touching pieces) use these.
"""

from __future__ import annotations

import numpy as np


def _count_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique unordered pairs of differing, nonzero labels with their multiplicity."""
    a = a.ravel()
    b = b.ravel()
    m = (a != b) & (a != 0) & (b != 0)
    if not np.any(m):
        return np.zeros((0, 2), dtype=np.uint64), np.zeros(0, dtype=np.int64)
    a = a[m].astype(np.uint64)
    b = b[m].astype(np.uint64)
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    pairs = np.stack([lo, hi], axis=1)
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    return uniq, counts.astype(np.int64)


def merge_pair_counts(
    parts: list[tuple[np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sum the counts of identical pairs across several ``(pairs, counts)`` results."""
    parts = [p for p in parts if p[0].shape[0]]
    if not parts:
        return np.zeros((0, 2), dtype=np.uint64), np.zeros(0, dtype=np.int64)
    pairs = np.concatenate([p[0] for p in parts])
    counts = np.concatenate([p[1] for p in parts])
    uniq, inv = np.unique(pairs, axis=0, return_inverse=True)
    return uniq, np.bincount(inv.ravel(), weights=counts, minlength=uniq.shape[0]).astype(np.int64)


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
        lo = np.take(block, np.arange(block.shape[axis] - 1), axis=axis)
        hi = np.take(block, np.arange(1, block.shape[axis]), axis=axis)
        parts.append(_count_pairs(lo, hi))
    return merge_pair_counts(parts)


def slab_contacts(slab_a: np.ndarray, slab_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Contacts between two facing one-voxel slabs (same shape) of adjacent blocks."""
    if slab_a.shape != slab_b.shape:
        raise ValueError(f"slabs differ in shape: {slab_a.shape} vs {slab_b.shape}")
    return _count_pairs(slab_a, slab_b)
