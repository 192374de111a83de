"""Contact counting and edge affinities.

:func:`count_contacts` is an equivalent of :func:`cavelab.server.ingest.contacts.face_contacts`
(same pairs, same face counts) for blocks whose labels fit in 32 bits; it packs each pair into one
uint64 key and folds runs before sorting, which is ~8x faster on big blocks (the tests check it
against ``face_contacts`` and a brute-force count). Contacts across block borders use
``slab_contacts`` from ingest directly.

>>> b = np.array([[[1, 2]], [[1, 3]]], dtype=np.uint32)
>>> p, c = count_contacts(b)
>>> p.tolist(), c.tolist()
([[1, 2], [1, 3], [2, 3]], [1, 1, 1])
"""

from __future__ import annotations

import numpy as np

_SHIFT = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)


def fold_runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fold consecutive equal keys: ``(keys, counts)``."""
    if not keys.size:
        return keys, np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    counts = np.diff(np.append(starts, keys.size))
    return keys[starts], counts


def sum_by_key(keys: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique keys and the summed counts of each."""
    if not keys.size:
        return keys, np.zeros(0, np.int64)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    counts = counts[order]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    return keys[starts], np.add.reduceat(counts, starts).astype(np.int64)


def pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """uint64 keys ``min << 32 | max`` of the differing, nonzero (uint32) label pairs."""
    m = (a != b) & (a != 0) & (b != 0)
    a = a[m].astype(np.uint64)
    b = b[m].astype(np.uint64)
    return (np.minimum(a, b) << _SHIFT) | np.maximum(a, b)


def contact_keys(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unsorted, not yet unique ``(keys, counts)`` of the face contacts inside a uint32 block."""
    keys, counts = [], []
    for axis in range(3):
        n = block.shape[axis]
        if n < 2:
            continue
        lo = block[(slice(None),) * axis + (slice(0, n - 1),)]
        hi = block[(slice(None),) * axis + (slice(1, n),)]
        k, c = fold_runs(pair_keys(lo, hi))
        keys.append(k)
        counts.append(c)
    if not keys:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(keys), np.concatenate(counts)


def split_keys(keys: np.ndarray) -> np.ndarray:
    """``(K, 2)`` uint64 pairs of packed keys."""
    return np.stack([keys >> _SHIFT, keys & _LOW], axis=1)


def count_contacts(block: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-face contacts inside a block of labels below ``2**32``.

    Returns ``(pairs, counts)`` exactly like ``face_contacts``: ``pairs`` ``(K, 2)`` uint64 with
    ``pairs[:, 0] < pairs[:, 1]``, sorted, and the number of shared faces of each pair.
    """
    if block.size and int(block.max()) >= 1 << 32:
        raise ValueError("count_contacts needs labels below 2**32")
    k, c = sum_by_key(*contact_keys(block.astype(np.uint32, copy=False)))
    return split_keys(k), c


def affinities(
    same: np.ndarray,
    rng: np.random.Generator,
    same_range: tuple[float, float],
    diff_range: tuple[float, float],
) -> np.ndarray:
    """Noisy affinities: Beta(5, 2) in ``same_range`` within a neuron, Beta(2, 5) in ``diff_range`` between.

    >>> a = affinities(np.array([True, False]), np.random.default_rng(0), (0.6, 1.0), (0.0, 0.45))
    >>> bool(a[0] >= 0.6 and a[1] <= 0.45)
    True
    """
    a = np.empty(same.size, dtype=np.float64)
    k = int(np.count_nonzero(same))
    a[same] = same_range[0] + (same_range[1] - same_range[0]) * rng.beta(5.0, 2.0, k)
    a[~same] = diff_range[0] + (diff_range[1] - diff_range[0]) * rng.beta(2.0, 5.0, same.size - k)
    return np.clip(a, 0.0, 1.0).astype(np.float32)
