"""Gather the block results into one label table and one contact graph.

>>> import numpy as np
>>> from cavelab.server.synth.blocks import BlockResult
>>> r = BlockResult(0, np.array([9, 5], np.uint64), np.array([0, 1], np.int32),
...                 np.array([3, 4]), np.array([5, 9], np.uint64), np.array([[0, 1]], np.int32),
...                 np.array([2], np.int32), 7)
>>> g = assemble([r])
>>> g.labels.tolist(), g.edges.tolist(), g.area.tolist()
([5, 9], [[0, 1]], [2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cavelab.server.synth.blocks import BlockResult


@dataclass
class LabelGraph:
    """All labels (sorted) with their tree, and the contact edges between them."""

    labels: np.ndarray  # uint64 (N,) sorted
    tree: np.ndarray  # int32 (N,)
    voxels: np.ndarray  # int64 (N,)
    edges: np.ndarray  # int32 (E, 2) label indices, edges[:, 0] < edges[:, 1], sorted, unique
    area: np.ndarray  # int32 (E,) shared voxel faces
    foreground: int


def assemble(results: Sequence[BlockResult]) -> LabelGraph:
    """Merge per-block label tables and contacts (a label may span several blocks)."""
    results = sorted(results, key=lambda r: r.index)
    all_labels = np.concatenate([r.labels for r in results])
    all_tree = np.concatenate([r.tree for r in results])
    all_vox = np.concatenate([r.voxels for r in results])
    labels, inv = np.unique(all_labels, return_inverse=True)
    inv = inv.ravel()
    tree = np.full(labels.size, -1, dtype=np.int32)
    tree[inv] = all_tree
    if not np.array_equal(tree[inv], all_tree):
        raise RuntimeError("blocks disagree on the neuron of a label")
    voxels = np.bincount(inv, weights=all_vox, minlength=labels.size).astype(np.int64)
    del all_labels, all_tree, all_vox, inv

    n = np.int64(labels.size)
    total = sum(r.pairs.shape[0] for r in results)
    keys = np.empty(total, dtype=np.int64)
    counts = np.empty(total, dtype=np.int32)
    pos = 0
    for r in results:
        m = r.pairs.shape[0]
        if not m:
            continue
        g = np.searchsorted(labels, r.ref_labels)
        if np.any(g >= labels.size) or not np.array_equal(labels[g], r.ref_labels):
            raise RuntimeError(f"block {r.index} reports contacts of labels no block contains")
        keys[pos : pos + m] = g[r.pairs[:, 0]] * n + g[r.pairs[:, 1]]
        counts[pos : pos + m] = r.counts
        pos += m
        r.pairs = r.counts = r.ref_labels = None  # type: ignore[assignment]  # free early
    order = np.argsort(keys)
    keys = keys[order]
    counts = counts[order]
    del order
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if total else keys
    area = np.add.reduceat(counts, starts) if total else counts
    del counts
    keys = keys[starts]
    del starts
    edges = np.empty((keys.size, 2), dtype=np.int32 if n < 2**31 else np.int64)
    edges[:, 0] = keys // n
    edges[:, 1] = keys % n
    del keys
    return LabelGraph(
        labels=labels,
        tree=tree,
        voxels=voxels,
        edges=edges,
        area=area,
        foreground=int(sum(r.foreground for r in results)),
    )
