"""The ``cavelab`` command line.

::

    cavelab generate SOURCE --preset small          # a synthetic neuron-like source dataset
    cavelab ingest SOURCE DATASET_DIR               # source -> versioned graph dataset
    cavelab serve DATASET_DIR [--lab] [--port N]    # Jupyter server with the CAVE API at /cave
    cavelab demo [DIR]                              # generate + ingest 'small', open JupyterLab
    cavelab info DATASET_DIR                        # what a dataset holds
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from cavelab.server.errors import CavelabError


def _cmd_generate(a: argparse.Namespace) -> int:
    from cavelab.server.synth import generate

    info = generate(a.source, preset=a.preset, seed=a.seed, overwrite=a.overwrite, progress=not a.quiet)
    print(json.dumps(info, indent=2, default=str))
    return 0


def _cmd_ingest(a: argparse.Namespace) -> int:
    from cavelab.server.ingest.pipeline import ingest

    report = ingest(
        a.source,
        a.dataset_dir,
        chunk_size=tuple(a.chunk_size) if a.chunk_size else None,
        threshold=a.threshold,
        name=a.name,
        overwrite=a.overwrite,
        progress=not a.quiet,
        workers=a.workers,
        l2_features=a.l2_features,
    )
    keep = ("n_supervoxels", "n_edges", "n_nodes", "n_roots", "n_layers", "total_seconds", "supervoxels_per_second", "warnings")
    print(json.dumps({k: report.get(k) for k in keep if k in report}, indent=2, default=str))
    print(f"dataset written to {a.dataset_dir}; serve it with `cavelab serve {a.dataset_dir}`")
    return 0


def _cmd_serve(a: argparse.Namespace) -> int:
    from cavelab.server.serve import serve

    return int(serve(a.dataset_dir, port=a.port, token=a.token, lab=a.lab, ip=a.ip, open_browser=a.browser) or 0)


def starter_notebooks() -> list[Path]:
    """The example notebooks: from the source checkout, or from ``<prefix>/share/cavelab``."""
    here = Path(__file__).resolve().parent.parent / "notebooks"
    shared = Path(sys.prefix) / "share" / "cavelab" / "notebooks"
    for d in (here, shared):
        if d.is_dir() and list(d.glob("*.ipynb")):
            return sorted(d.glob("*.ipynb"))
    return []


def _cmd_demo(a: argparse.Namespace) -> int:
    from cavelab.server.ingest.pipeline import ingest
    from cavelab.server.serve import serve
    from cavelab.server.synth import generate

    root = Path(a.dir).resolve()
    src = root / "source"
    ds = root / "small"
    if not (ds / "dataset.json").exists():
        print(f"generating the 'small' synthetic dataset in {src} ...")
        generate(src, preset="small", seed=0, overwrite=True)
        print(f"ingesting it into {ds} ...")
        report = ingest(src, ds, overwrite=True)
        print(f"ingested {report['n_supervoxels']} supervoxels in {report['total_seconds']:.1f}s")
    nb_dir = root / "notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    for nb in starter_notebooks():
        if not (nb_dir / nb.name).exists():
            shutil.copy(nb, nb_dir / nb.name)
    return int(
        serve(ds, port=a.port, token=a.token, lab=True, ip=a.ip, open_browser=a.browser, root_dir=nb_dir) or 0
    )


def _cmd_info(a: argparse.Namespace) -> int:
    from cavelab.server.engine.meta import DatasetMeta

    meta = DatasetMeta.load(a.dataset_dir)
    out = meta.to_json()
    rep = Path(a.dataset_dir) / "ingest_report.json"
    if rep.exists():
        out["ingest_report"] = json.loads(rep.read_text())
    print(json.dumps(out, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cavelab", description="CAVE made Jupyter-native.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a synthetic neuron-like source dataset")
    g.add_argument("source", help="output directory (the ingest input format)")
    g.add_argument("--preset", default="small", help="tiny | small | large (default: small)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=_cmd_generate)

    i = sub.add_parser("ingest", help="build a versioned graph dataset from a source directory")
    i.add_argument("source", help="source directory (see docs/input_format.md)")
    i.add_argument("dataset_dir")
    i.add_argument("--chunk-size", type=int, nargs=3, metavar=("X", "Y", "Z"), help="atomic chunk size in voxels")
    i.add_argument("--threshold", type=float, help="agglomerate by affinity >= T instead of components.parquet")
    i.add_argument("--name", help="datastack / table name (default: from source.json or the folder name)")
    i.add_argument("--workers", type=int, default=2)
    i.add_argument("--overwrite", action="store_true")
    i.add_argument("--quiet", action="store_true")
    i.add_argument(
        "--l2-features",
        choices=("none", "stats", "all"),
        default="all",
        help="L2-cache features computed now: all (default; incl. distance transforms, a pass over "
        "the written chunks while the hierarchy is built), stats (no voxel reads), none (computed "
        "on first request)",
    )
    i.set_defaults(func=_cmd_ingest)

    for name, fn, helptext in (
        ("serve", _cmd_serve, "start a Jupyter server hosting a dataset's CAVE API at /cave"),
        ("demo", _cmd_demo, "generate + ingest the small dataset and open JupyterLab"),
    ):
        s = sub.add_parser(name, help=helptext)
        if name == "serve":
            s.add_argument("dataset_dir")
            s.add_argument("--lab", action="store_true", help="start JupyterLab instead of a bare server")
        else:
            s.add_argument("dir", nargs="?", default="cavelab-demo", help="working directory (default ./cavelab-demo)")
        s.add_argument("--port", type=int, default=8888)
        s.add_argument("--token", help="server token (default: a random 32-hex token)")
        s.add_argument("--ip", default="127.0.0.1")
        s.add_argument("--browser", action="store_true", help="open a web browser")
        s.set_defaults(func=fn)

    n = sub.add_parser("info", help="describe a dataset")
    n.add_argument("dataset_dir")
    n.set_defaults(func=_cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CavelabError as e:
        print(f"cavelab {args.command}: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
