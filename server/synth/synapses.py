"""Synthetic synapses for a dataset: contacts between different cells, sampled uniformly.

A synapse is a pair of face-adjacent voxels ``p`` (pre) and ``q`` (post) whose supervoxels
differ, are non-zero and belong to different cells at ingest. Every contact of a storage chunk
is kept with a probability estimated from a pilot of random chunks, then exactly ``n`` are drawn;
rows stay in chunk order, so a bulk insert reads each segmentation chunk about once.

>>> df = synthetic_synapses("DATASET", 10_000)         # doctest: +SKIP
>>> bulk_insert(client, "synapses", df[SYNAPSE_COLUMNS])  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

SYNAPSE_COLUMNS = [
    *(f"{pt}_position_{ax}" for pt in ("pre_pt", "post_pt", "ctr_pt") for ax in "xyz"),
    "size",
]


@dataclass
class IngestRoots:
    """Root at ingest of every supervoxel, from the dataset's graph arrays."""

    sv_sorted: np.ndarray  # supervoxel IDs, sorted
    root_sorted: np.ndarray  # root ID of each of them

    @classmethod
    def load(cls, dataset_dir: str | Path) -> IngestRoots:
        g = Path(dataset_dir) / "graph"
        sv_ids = np.load(g / "sv_ids.npy")
        sv_parent = np.load(g / "sv_parent.npy").astype(np.int64)
        node_ids = np.load(g / "node_ids.npy")
        node_parent = np.load(g / "node_parent.npy").astype(np.int64)
        top = np.arange(node_ids.size, dtype=np.int64)
        while True:  # one step per layer: every node's highest ancestor
            par = node_parent[top]
            up = par >= 0
            if not up.any():
                break
            top[up] = par[up]
        roots = np.where(sv_parent >= 0, node_ids[top[np.maximum(sv_parent, 0)]], sv_ids)
        order = np.argsort(sv_ids, kind="stable")
        return cls(sv_ids[order], roots[order].astype(np.uint64))

    def of(self, svs: np.ndarray) -> np.ndarray:
        i = np.minimum(np.searchsorted(self.sv_sorted, svs), self.sv_sorted.size - 1)
        if not np.array_equal(self.sv_sorted[i], svs):
            raise ValueError("a segmentation supervoxel is missing from the graph arrays")
        return self.root_sorted[i]


def chunk_contacts(block: np.ndarray, roots: IngestRoots) -> tuple[np.ndarray, ...]:
    """Face-adjacent voxel pairs of a block between different non-zero supervoxels of different cells.

    Returns ``(p, axis, sv_p, sv_q)``: local voxel ``p`` (``(n, 3)``), the axis of the neighbour
    ``q = p + e_axis`` and both supervoxels.
    """
    ps, axes, sps, sqs = [], [], [], []
    for ax in range(3):
        lo, hi = [slice(None)] * 3, [slice(None)] * 3
        lo[ax], hi[ax] = slice(0, -1), slice(1, None)
        a, b = block[tuple(lo)], block[tuple(hi)]
        idx = np.nonzero((a != b) & (a != 0) & (b != 0))
        sa, sb = a[idx], b[idx]
        diff = roots.of(sa) != roots.of(sb)
        ps.append(np.stack(idx, axis=1)[diff].astype(np.int32))
        axes.append(np.full(int(diff.sum()), ax, dtype=np.int8))
        sps.append(sa[diff])
        sqs.append(sb[diff])
    return np.concatenate(ps), np.concatenate(axes), np.concatenate(sps), np.concatenate(sqs)


def chunk_origins(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[int, int, int]]:
    """Origins of the storage chunks (x, y, z), in z, y, x chunk order."""
    gx, gy, gz = (-(-s // c) for s, c in zip(shape, chunks))
    return [
        (cx * chunks[0], cy * chunks[1], cz * chunks[2])
        for cz in range(gz)
        for cy in range(gy)
        for cx in range(gx)
    ]


def synthetic_synapses(dataset_dir: str | Path, n: int, seed: int = 0, progress: bool = True) -> pd.DataFrame:
    """``n`` synapses (see the module docstring), positions in voxels at the dataset resolution.

    Columns: :data:`SYNAPSE_COLUMNS` (what a ``synapse`` table takes) plus ``pre_sv``/``post_sv``
    and the cells at ingest ``pre_root0``/``post_root0`` (for checking answers; not uploaded).
    """
    import zarr

    from cavelab.server.engine.meta import DatasetMeta

    ds = Path(dataset_dir)
    meta = DatasetMeta.load(ds)
    arr = zarr.open_array(str(ds / meta.segmentation_path), mode="r")
    roots = IngestRoots.load(ds)
    rng = np.random.default_rng(seed)
    origins = chunk_origins(arr.shape, arr.chunks)

    def read(o: tuple[int, int, int]) -> np.ndarray:
        return np.asarray(arr[tuple(slice(a, a + c) for a, c in zip(o, arr.chunks))])

    pilot = rng.choice(len(origins), size=min(len(origins), 64), replace=False)
    est = np.mean([chunk_contacts(read(origins[i]), roots)[0].shape[0] for i in pilot]) * len(origins)
    rate = min(1.0, 1.4 * n / max(est, 1.0))
    parts: list[tuple[np.ndarray, ...]] = []
    total = 0
    for o in tqdm(origins, desc="synapses", unit="chunk", disable=not progress):
        p, ax, sp, sq = chunk_contacts(read(o), roots)
        total += p.shape[0]
        keep = rng.random(p.shape[0]) < rate
        parts.append((p[keep] + np.asarray(o, dtype=np.int32), ax[keep], sp[keep], sq[keep]))
    p, ax, sp, sq = (np.concatenate([x[k] for x in parts]) for k in range(4))
    if p.shape[0] < n:
        raise ValueError(f"only {p.shape[0]:,} of {total:,} contacts were kept for {n:,} synapses")
    pick = np.sort(rng.choice(p.shape[0], size=n, replace=False))  # sorted: chunk order kept
    p, ax, sp, sq = p[pick], ax[pick], sp[pick], sq[pick]
    q = p.copy()
    q[np.arange(n), ax] += 1
    swap = rng.random(n) < 0.5  # orientation: pre is either voxel of the contact
    off = np.asarray(meta.voxel_offset, dtype=np.int32)
    pre, post = np.where(swap[:, None], q, p) + off, np.where(swap[:, None], p, q) + off
    pre_sv, post_sv = np.where(swap, sq, sp), np.where(swap, sp, sq)
    out: dict[str, np.ndarray] = {}
    for name, pts in (("pre_pt", pre), ("post_pt", post), ("ctr_pt", pre)):
        for k, axn in enumerate("xyz"):
            out[f"{name}_position_{axn}"] = pts[:, k]
    out["size"] = rng.integers(20, 2000, size=n, dtype=np.int64)
    out["pre_sv"], out["post_sv"] = pre_sv, post_sv
    out["pre_root0"], out["post_root0"] = roots.of(pre_sv), roots.of(post_sv)
    df = pd.DataFrame(out)
    df.attrs["contacts_total"] = int(total)
    return df
