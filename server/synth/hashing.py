"""Counter-based randomness: values that depend only on (seed, index), never on block order.

Everything a block computes must come out the same whichever block (or worker) computes it, so
per-voxel and per-cell randomness is a hash of global indices instead of an RNG stream.

>>> splitmix64(np.arange(3, dtype=np.uint64)).dtype
dtype('uint64')
>>> int(scramble63(np.array([0], dtype=np.uint64), salt=7)[0])
0
"""

from __future__ import annotations

import numpy as np

_M63 = np.uint64((1 << 63) - 1)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer applied to ``x + golden`` (uint64 in, uint64 out)."""
    z = np.asarray(x, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform01(x: np.ndarray, salt: int) -> np.ndarray:
    """Uniform floats in ``[0, 1)`` indexed by ``x`` (any integer array)."""
    h = splitmix64(np.asarray(x, dtype=np.uint64) ^ splitmix64(np.array([salt], dtype=np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def scramble63(x: np.ndarray, salt: int) -> np.ndarray:
    """A salted bijection of ``[0, 2**63)`` onto itself that maps only 0 to 0.

    Used to turn unique nonzero integers (voxel indices) into distinct, random-looking labels
    below ``2**63`` (safe for int64 consumers).
    """
    mult = (int(splitmix64(np.array([salt], dtype=np.uint64))[0]) & ((1 << 63) - 1)) | 1
    z = (np.asarray(x, dtype=np.uint64) * np.uint64(mult)) & _M63
    z = z ^ (z >> np.uint64(29))
    z = (z * np.uint64(0xBF58476D1CE4E5B9)) & _M63
    z = z ^ (z >> np.uint64(32))
    z = (z * np.uint64(0x94D049BB133111EB)) & _M63
    return z ^ (z >> np.uint64(29))
