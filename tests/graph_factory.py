"""Small random supervoxel graphs written straight to a dataset dir (no volume), for engine tests.

The truth in engine tests comes from networkx over the same edge list, never from the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cavelab.server.engine.meta import DatasetMeta
from cavelab.server.engine.timestamps import now_ms
from cavelab.server.ingest.pipeline import write_dataset
from cavelab.server.ingest.types import SupervoxelGraph

if TYPE_CHECKING:
    from cavelab.server.engine.graph import ChunkedGraph


def random_graph(
    dataset_dir: str | Path,
    *,
    seed: int = 0,
    grid: tuple[int, int, int] = (4, 4, 2),
    sv_per_chunk: int = 12,
    chunk_size: tuple[int, int, int] = (32, 32, 8),
    p_active: float = 0.7,
    created_ms: int | None = None,
) -> tuple[DatasetMeta, SupervoxelGraph]:
    rng = np.random.default_rng(seed)
    size = tuple(g * c for g, c in zip(grid, chunk_size))
    n_layers = DatasetMeta.layers_for(size, chunk_size)
    meta = DatasetMeta(
        name=f"rand{seed}",
        resolution=(8.0, 8.0, 40.0),
        size=size,
        chunk_size=chunk_size,
        n_layers=n_layers,
        created_ms=created_ms or now_ms() - 10_000,
    )
    layout = meta.layout
    coords = np.array([(x, y, z) for x in range(grid[0]) for y in range(grid[1]) for z in range(grid[2])])
    counts = rng.integers(sv_per_chunk // 2, sv_per_chunk + 1, size=len(coords))
    chunk_of = np.repeat(np.arange(len(coords)), counts)
    seg = np.concatenate([np.arange(1, c + 1) for c in counts])
    ids = layout.node_ids(1, coords[chunk_of, 0], coords[chunk_of, 1], coords[chunk_of, 2], seg)
    order = np.argsort(ids)
    ids, chunk_of = ids[order], chunk_of[order]
    s = ids.size
    # positions inside the chunk
    cs = np.asarray(chunk_size)
    pos = coords[chunk_of] * cs + rng.uniform(0, 1, size=(s, 3)) * cs
    # edges: within a chunk and to face-adjacent chunks, between nearby supervoxels
    edges = set()
    for i in range(s):
        d = np.linalg.norm((pos - pos[i]) / cs, axis=1)
        near = np.argsort(d)[1:5]
        for j in near:
            if d[j] < 0.9:
                edges.add((min(i, int(j)), max(i, int(j))))
    edges = np.array(sorted(edges), dtype=np.int64).reshape(-1, 2)
    aff = rng.uniform(0.05, 1.0, size=len(edges)).astype(np.float32)
    active = rng.uniform(size=len(edges)) < p_active
    g = SupervoxelGraph(
        sv_ids=ids,
        sv_labels=np.arange(1, s + 1, dtype=np.uint64),
        sv_sizes=np.ones(s, dtype=np.int64),
        sv_bbox=np.concatenate([np.floor(pos), np.floor(pos) + 1], axis=1).astype(np.int32),
        sv_centroid=pos.astype(np.float32),
        edges=edges,
        affinity=aff,
        area=np.ones(len(edges), dtype=np.float32),
        active=active,
    )
    write_dataset(dataset_dir, meta, g)
    return meta, g


def in_chunk_merge(cg: ChunkedGraph) -> tuple[int, int]:
    """Two supervoxels of different cells in one atomic chunk joined by an inactive edge.

    Merging them makes a new level-2 node (tests of L2 features and meshes after edits).
    """
    st = cg.state
    e = np.flatnonzero(~st.e_active.a)
    a, b = st.e_sv.a[e].T
    same_chunk = np.all(st.sv_chunk[a] == st.sv_chunk[b], axis=1)
    roots = cg.get_roots(st.sv_ids)
    for k in np.flatnonzero(same_chunk):
        if roots[a[k]] != roots[b[k]]:
            return int(st.sv_ids[a[k]]), int(st.sv_ids[b[k]])
    raise AssertionError("no in-chunk merge candidate")
