"""Synthetic, neuron-like source datasets for cavelab (``cavelab generate``).

Writes a source directory in the ingest input format (``docs/input_format.md``): an OME-Zarr
supervoxel volume of branching, densely packed neurites, the supervoxel contact graph with noisy
affinities, an automated agglomeration with injected false merges and false splits, and the ground
truth.

>>> from cavelab.server.synth import PRESETS, generate
>>> sorted(PRESETS)
['large', 'small', 'tiny']
>>> info = generate("/tmp/cavelab_tiny_src", "tiny", progress=False, overwrite=True)  # doctest: +SKIP
"""

from __future__ import annotations

from cavelab.server.synth.generate import generate
from cavelab.server.synth.presets import PRESETS, SynthConfig

__all__ = ["PRESETS", "SynthConfig", "generate"]
