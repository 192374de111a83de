"""The synthetic source generator: :func:`generate`.

Pipeline: grow skeletons (:mod:`.morphology`) -> per block, neuron mask (:mod:`.rasterize`),
supervoxels (:mod:`.oversegment`), labels written to zarr and contacts counted
(:mod:`.blocks`) -> one contact graph (:mod:`.graph`) -> ground truth and errors
(:mod:`.agglomerate`) -> parquet files and ``source.json`` (:mod:`.writer`).

Blocks are independent and deterministic (hash-based randomness, halos), so they may run in any
order on any number of worker processes (``spawn``: scripts calling :func:`generate` with
``workers > 1`` need the usual ``if __name__ == "__main__":`` guard).
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from cavelab.server.synth.agglomerate import agglomerate
from cavelab.server.synth.blocks import (
    BlockContext,
    BlockResult,
    block_boxes,
    init_worker,
    run_block,
)
from cavelab.server.synth.edges import affinities
from cavelab.server.synth.graph import assemble
from cavelab.server.synth.morphology import grow_morphology
from cavelab.server.synth.oversegment import SeedGrid
from cavelab.server.synth.presets import SynthConfig, resolve_config
from cavelab.server.synth.writer import (
    create_segmentation,
    prepare_dir,
    write_source_json,
    write_tables,
)

GENERATOR = "cavelab.server.synth"


def make_context(cfg: SynthConfig, seed: int, array_path: str | None) -> BlockContext:
    """Grow the skeletons and set up everything the blocks need (deterministic in ``seed``)."""
    ss = np.random.SeedSequence(seed)
    morph_ss, _, _ = ss.spawn(3)
    grid_salt, label_salt = (int(v) for v in ss.generate_state(2, dtype=np.uint64))
    morph = grow_morphology(cfg, np.random.default_rng(morph_ss))
    grid = SeedGrid.create(
        np.asarray(cfg.sv_cell[::-1]),
        np.asarray(cfg.size[::-1]),
        np.asarray(cfg.resolution_nm[::-1]),
        np.asarray(cfg.edt_factor[::-1]),
        grid_salt,
    )
    return BlockContext(
        cfg=cfg, morph=morph, grid=grid, label_salt=label_salt, array_path=array_path
    )


def run_blocks(ctx: BlockContext, workers: int, bar: Any = None) -> list[BlockResult]:
    """Compute (and write) every block, in-process or on ``workers`` spawned processes."""
    n = len(block_boxes(ctx.cfg))
    results: list[BlockResult] = []
    if workers <= 1 or n == 1:
        init_worker(ctx)
        try:
            for i in range(n):
                results.append(run_block(i))
                if bar is not None:
                    bar.update()
        finally:
            init_worker(None)
    else:
        mp = multiprocessing.get_context("spawn")
        with mp.Pool(min(workers, n), initializer=init_worker, initargs=(ctx,)) as pool:
            for r in pool.imap_unordered(run_block, range(n)):
                results.append(r)
                if bar is not None:
                    bar.update()
    return sorted(results, key=lambda r: r.index)


def generate(
    source_dir: str | Path,
    preset: str = "small",
    *,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Generate a synthetic, neuron-like source directory (see ``docs/input_format.md``).

    Parameters
    ----------
    source_dir
        Directory to create (or an empty one).
    preset
        One of :data:`PRESETS` (``tiny``, ``small``, ``large``).
    seed
        Random seed; the output is a deterministic function of the seed and the parameters.
    progress
        Show a tqdm progress bar over the blocks.
    overwrite
        Replace the outputs of a non-empty ``source_dir`` instead of refusing.
    **overrides
        Any :class:`SynthConfig` field, e.g. ``workers=2`` or ``false_merge_rate=0.2``.

    Returns
    -------
    dict
        The content of ``source.json``.

    Raises
    ------
    ValueError
        (``InputError``) for an unknown preset or parameter, or a non-empty ``source_dir``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     info = generate(d, "tiny", seed=1, progress=False)
    >>> info["name"], info["counts"]["labels"] > 100
    ('tiny', True)
    """
    cfg = resolve_config(preset, overrides)
    source_dir = Path(source_dir)
    prepare_dir(source_dir, overwrite)
    n_blocks = len(block_boxes(cfg))
    with tqdm(total=n_blocks, desc=f"synth {cfg.name}", unit="block", disable=not progress) as bar:
        bar.set_postfix_str("skeletons")
        array_path = create_segmentation(source_dir, cfg)
        ctx = make_context(cfg, seed, array_path)
        n_trees = ctx.morph.n_trees
        bar.set_postfix_str("blocks")
        results = run_blocks(ctx, cfg.workers, bar)
        del ctx
        bar.set_postfix_str("graph")
        g = assemble(results)
        del results
        bar.set_postfix_str("errors")
        _, agg_ss, aff_ss = np.random.SeedSequence(seed).spawn(3)
        agg = agglomerate(g, cfg, np.random.default_rng(agg_ss))
        aff = affinities(
            agg.same, np.random.default_rng(aff_ss), cfg.affinity_same, cfg.affinity_diff
        )
        bar.set_postfix_str("writing")
        write_tables(
            source_dir, g.labels, g.edges, aff, g.area, agg.segment, agg.neuron, agg.errors
        )
        kinds = [e["kind"] for e in agg.errors]
        total = int(np.prod(cfg.size))
        info: dict[str, Any] = {
            "name": cfg.name,
            "generator": GENERATOR,
            "seed": int(seed),
            "suggested_chunk_size": list(cfg.chunk_size),
            "resolution_nm": list(cfg.resolution_nm),
            "size": list(cfg.size),
            "counts": {
                "labels": int(g.labels.size),
                "neurons": agg.n_neurons,
                "segments": agg.n_segments,
                "edges": int(g.edges.shape[0]),
                "errors": len(agg.errors),
                "false_merges": kinds.count("false_merge"),
                "false_splits": kinds.count("false_split"),
                "trees": int(n_trees),
                "foreground_voxels": int(g.foreground),
            },
            "foreground_fraction": round(g.foreground / total, 4),
            "config": {k: v for k, v in cfg.to_json().items() if k != "name"},
        }
        write_source_json(source_dir, info)
        bar.set_postfix_str("done")
    return info
