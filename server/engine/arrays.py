"""Array helpers: growable arrays and vectorized CSR gathers."""

from __future__ import annotations

import numpy as np


class GrowArray:
    """A 1-D (or row-wise 2-D) numpy array that grows by doubling; ``.a`` is the live view."""

    def __init__(self, init: np.ndarray, min_capacity: int = 1024) -> None:
        init = np.asarray(init)
        cap = max(min_capacity, int(init.shape[0] * 1.25) + 16)
        self._buf = np.empty((cap,) + init.shape[1:], dtype=init.dtype)
        self._buf[: init.shape[0]] = init
        self._n = init.shape[0]

    def __len__(self) -> int:
        return self._n

    @property
    def a(self) -> np.ndarray:
        return self._buf[: self._n]

    def append(self, values: np.ndarray) -> tuple[int, int]:
        """Append rows; returns the index range ``[start, stop)`` they occupy."""
        values = np.asarray(values, dtype=self._buf.dtype)
        k = values.shape[0]
        if self._n + k > self._buf.shape[0]:
            cap = max(self._buf.shape[0] * 2, self._n + k)
            nb = np.empty((cap,) + self._buf.shape[1:], dtype=self._buf.dtype)
            nb[: self._n] = self._buf[: self._n]
            self._buf = nb
        self._buf[self._n : self._n + k] = values
        start = self._n
        self._n += k
        return start, self._n


def csr_gather(indptr: np.ndarray, data: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate ``data[indptr[r]:indptr[r+1]]`` for each row; also return each item's row position.

    >>> csr_gather(np.array([0, 2, 3]), np.array([7, 8, 9]), np.array([1, 0]))
    (array([9, 7, 8]), array([0, 1, 1]))
    """
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    lens = indptr[rows + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return data[:0], np.zeros(0, dtype=np.int64)
    owner = np.repeat(np.arange(rows.size, dtype=np.int64), lens)
    offs = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
    return data[np.repeat(starts, lens) + offs], owner


def build_csr(keys: np.ndarray, values: np.ndarray, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, data) grouping ``values`` by integer ``keys`` in ``[0, n_rows)``, stable."""
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(keys, minlength=n_rows)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr, np.asarray(values)[order]


def uniq(a: np.ndarray) -> np.ndarray:
    """Sorted unique values (sort-based: numpy 2's hash-based ``np.unique`` is many times slower
    on large-range integer arrays).

    >>> uniq(np.array([5, 1, 5, 3]))
    array([1, 3, 5])
    """
    s = np.sort(np.asarray(a).ravel())
    if s.size < 2:
        return s
    return s[np.r_[True, s[1:] != s[:-1]]]


class KeyedHistory:
    """Append-only ``(key, start_ts, value)`` rows: what each key held from each time on.

    Appends are vectorized; lookups for a set of keys at one time sort the rows once (cached
    until the next append) and then cost one pass over the rows.

    >>> h = KeyedHistory()
    >>> h.append(np.array([7, 7, 9]), np.array([10, 20, 10]), np.array([1, 2, 3]))
    >>> h.at(np.array([7, 7, 9, 8]), 15)
    (array([1, 1, 3, 0]), array([1, 1, 1, 0]))
    """

    def __init__(self) -> None:
        self._rows = GrowArray(np.zeros((0, 3), dtype=np.int64))
        self._sorted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, keys: np.ndarray, starts: np.ndarray, values: np.ndarray) -> None:
        keys = np.asarray(keys, dtype=np.int64).ravel()
        if not keys.size:
            return
        rows = np.empty((keys.size, 3), dtype=np.int64)
        rows[:, 0] = keys
        rows[:, 1] = starts
        rows[:, 2] = values
        self._rows.append(rows)
        self._sorted = None

    def _index(self) -> np.ndarray:
        if self._sorted is None:
            r = self._rows.a
            self._sorted = r[np.lexsort((r[:, 1], r[:, 0]))]
        return self._sorted

    def at(self, keys: np.ndarray, ts: int) -> tuple[np.ndarray, np.ndarray]:
        """For each key: ``(value of its last row starting at or before ts, number of such rows)``."""
        keys = np.asarray(keys, dtype=np.int64)
        if not len(self._rows) or not keys.size:
            return np.zeros(keys.size, dtype=np.int64), np.zeros(keys.size, dtype=np.int64)
        r = self._index()
        lo = np.searchsorted(r[:, 0], keys, side="left")
        hi = np.searchsorted(r[:, 0], keys, side="right")
        cs = np.zeros(r.shape[0] + 1, dtype=np.int64)
        np.cumsum(r[:, 1] <= ts, out=cs[1:])
        cnt = cs[hi] - cs[lo]
        val = np.where(cnt > 0, r[np.maximum(lo + cnt - 1, 0), 2], 0)
        return val, cnt
