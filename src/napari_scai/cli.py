"""Command line: ``napari-scai view`` (GUI), ``napari-scai info`` and ``napari-scai run`` (headless)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _load(path: str | None, sample: str | None):
    from napari_scai import io
    from napari_scai.datasets import load_sample

    if sample:
        return load_sample(sample)
    if path is None:
        raise SystemExit("error: give a PATH or --sample NAME")
    return io.read(path)


def qc_summary(sdata) -> str:
    """Text QC summary: elements, image sizes, and per table cells/spots, features and counts."""
    lines = []
    for name, image in sdata.images.items():
        first = (
            image
            if not hasattr(image, "children") or not image.children
            else next(iter(image.values()))["image"]
        )
        sizes = dict(zip(first.dims, first.shape, strict=True))
        levels = len(image.children) if hasattr(image, "children") and image.children else 1
        lines.append(
            f"image  {name}: {sizes.get('c', 1)} channel(s), {sizes['y']} x {sizes['x']} px, {levels} level(s)"
        )
    for name, shapes in sdata.shapes.items():
        kind = "circles" if "radius" in shapes.columns else "polygons"
        extra = f", radius {float(shapes['radius'].median()):.1f}" if kind == "circles" else ""
        lines.append(f"shapes {name}: {len(shapes)} {kind}{extra}")
    for name, table in sdata.tables.items():
        x = table.X
        totals = np.asarray(x.sum(axis=1)).ravel()
        detected = np.asarray((x > 0).sum(axis=1)).ravel()
        lines.append(
            f"table  {name}: {table.n_obs} spots/cells x {table.n_vars} features; "
            f"median total {np.median(totals):.0f}, median features detected {np.median(detected):.0f}"
        )
        cats = [
            c for c in table.obs.columns if str(table.obs[c].dtype) == "category" and c != "region"
        ]
        for c in cats[:6]:
            lines.append(
                f"       obs['{c}']: {table.obs[c].nunique()} classes, {int(table.obs[c].isna().sum())} missing"
            )
    return "\n".join(lines)


def cmd_info(args) -> int:
    sdata = _load(args.path, args.sample)
    print(qc_summary(sdata))
    return 0


def _run_args_problem(args, sdata) -> str | None:
    """What makes this ``run`` fail at its end (existing --out, unknown columns), or None."""
    if args.out and Path(args.out).exists() and not args.overwrite:
        return f"{args.out} exists. Fix: pass --overwrite, or choose another --out"
    # ---- integration (issue 10)
    if getattr(args, "integrate", None):
        names = [t.strip() for t in args.integrate.split(",") if t.strip()]
        missing = [t for t in names if t not in sdata.tables]
        if missing:
            return (
                f"--integrate names table(s) {missing} that are not in the data; tables: "
                f"{list(sdata.tables.keys())}. Fix: pass --integrate with those names"
            )
        if args.batch_key and not any(args.batch_key in sdata.tables[t].obs for t in names):
            return (
                f"--batch-key {args.batch_key!r} is not an obs column of {names} (columns of "
                f"{names[0]!r}: {list(sdata.tables[names[0]].obs.columns)}). Fix: name one of those"
            )
        if not args.domains and not args.compare:
            return None
    # ---- end integration
    if args.table not in sdata.tables:
        return (
            f"table {args.table!r} not found; tables: {list(sdata.tables.keys())}. "
            "Fix: pass --table NAME"
        )
    obs = sdata.tables[args.table].obs
    needed = [("--compare", args.compare)]
    if args.compare and args.domains is None:
        needed.append(("--compare-pred", args.compare_pred))
    for flag, key in needed:
        if key and key not in obs.columns:
            return (
                f"{flag} {key!r} is not a column of table {args.table!r} "
                f"(columns: {list(obs.columns)}). Fix: name one of those; reference labels "
                "from a CSV can be imported in the Annotate dock or added to obs first"
            )
    return None


def cmd_run(args) -> int:
    from napari_scai import io

    sdata = _load(args.path, args.sample)
    print(qc_summary(sdata))
    problem = _run_args_problem(args, sdata)
    if problem:  # found before the model runs, not after
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.domains is not None:
        from napari_scai.tl import spatial_domains

        adata = spatial_domains(
            sdata, table=args.table, n_domains=args.domains, device=args.device, seed=args.seed
        )
        counts = adata.obs["scai_domain"].value_counts().sort_index()
        print(
            f"spatial domains ({args.domains}): "
            + ", ".join(f"{k}: {v}" for k, v in counts.items())
        )
    # ---- integration (issue 10)
    if args.integrate:
        from napari_scai.tl import integrate

        names = [t.strip() for t in args.integrate.split(",") if t.strip()]
        integrate(
            sdata,
            tables=names,
            batch_key=args.batch_key,
            spatial=args.integrate_spatial,
            n_clusters=args.integrate_clusters,
            device=args.device,
            seed=args.seed,
        )
        first = sdata.tables[names[0]]
        means = ", ".join(f"{t}: {first.obs[f'scai_weight_{t}'].mean():.3f}" for t in names)
        print(f"integrated {', '.join(names)}: mean modality weights {means}")
        if args.integrate_clusters:
            counts = first.obs["scai_joint_cluster"].value_counts().sort_index()
            print("joint clusters: " + ", ".join(f"{k}: {v}" for k, v in counts.items()))
    # ---- end integration
    if args.compare:
        from napari_scai.tl import compare

        pred = "scai_domain" if args.domains is not None else args.compare_pred
        report = compare(sdata, pred, args.compare, table=args.table)
        print(report)
    if args.out:
        out = Path(args.out)
        io.write(sdata, out, overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0


def open_viewer(
    paths: list[str], sample: str | None = None, color: str | None = None, show: bool = True
):
    """Create a napari viewer with the data drawn and the plugin's docks added; return it."""
    import napari

    from napari_scai import io
    from napari_scai.viewer import add_sdata

    sdatas = [_load(None, sample)] if sample else []
    for p in paths:
        kwargs = {"require_spatial": True} if io.detect_format(p) == "h5ad" else {}
        sdatas.append(io.read(p, **kwargs))
    viewer = napari.Viewer(title="napari-scai", show=show)
    for sdata in sdatas:
        key = color or next(
            (
                k
                for t in sdata.tables.values()
                for k in ("scai_domain", "layer_manual", "scai_annotation")
                if k in t.obs
            ),
            None,
        )
        add_sdata(viewer, sdata, color_by=key)
    docks = [
        viewer.window.add_plugin_dock_widget("napari-scai", name, tabify=True)[0]
        for name in dock_widget_names()
    ]
    if docks:
        from qtpy.QtCore import QTimer

        QTimer.singleShot(
            0, docks[0].raise_
        )  # the overlay tab in front, once the docks are laid out
    spots = [ly for ly in viewer.layers if ly._type_string == "points"]
    if spots:
        viewer.layers.selection.active = spots[0]
    return viewer


def dock_widget_names() -> list[str]:
    """Display names of the plugin's dock widgets, as napari.yaml declares them."""
    import npe2

    manifest = npe2.PluginManager.instance().get_manifest("napari-scai")
    return [w.display_name for w in manifest.contributions.widgets or []]


def cmd_view(args) -> int:  # pragma: no cover - blocks in the Qt event loop
    import napari

    open_viewer(args.paths, args.sample, args.color)
    napari.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-scai", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    view = sub.add_parser(
        "view", help="open data (or a bundled sample) in napari with the plugin's widgets"
    )
    view.add_argument("paths", nargs="*", help="Space Ranger outs/, .zarr, .h5ad or .h5")
    view.add_argument("--sample", choices=["dlpfc_151673"], help="open a bundled sample")
    view.add_argument("--color", help="obs column or gene to colour spots/cells by")
    view.set_defaults(func=cmd_view)

    info = sub.add_parser("info", help="print a QC summary of a dataset")
    info.add_argument("path", nargs="?")
    info.add_argument("--sample", choices=["dlpfc_151673"])
    info.set_defaults(func=cmd_info)

    run = sub.add_parser(
        "run", help="headless pipeline: QC summary, optional models, write a .zarr"
    )
    run.add_argument("path", nargs="?")
    run.add_argument("--sample", choices=["dlpfc_151673"])
    run.add_argument("--out", help="SpatialData .zarr to write with the results")
    run.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    run.add_argument("--table", default="rna", help="table to analyse (default: rna)")
    run.add_argument("--domains", type=int, metavar="K", help="find K spatial domains (GNN)")
    run.add_argument("--compare", metavar="KEY", help="compare the predicted domains with obs[KEY]")
    run.add_argument(
        "--compare-pred",
        default="scai_domain",
        help="predicted column for --compare without --domains",
    )
    # ---- integration (issue 10)
    run.add_argument(
        "--integrate",
        metavar="TABLES",
        help="integrate these tables (comma-separated, e.g. rna,protein) into one embedding",
    )
    run.add_argument("--batch-key", metavar="COL", help="obs column with batches to remove")
    run.add_argument(
        "--integrate-clusters", type=int, metavar="K", help="cluster the joint embedding into K"
    )
    run.add_argument(
        "--integrate-spatial", action="store_true", help="use the spatial graph when integrating"
    )
    # ---- end integration
    run.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run.add_argument("--seed", type=int, default=0)
    run.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    import warnings

    from napari_scai.io import ReadError

    # Library deprecation chatter is not for the command line user.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning)

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ReadError, FileExistsError, KeyError) as err:
        print(f"error: {err.args[0] if isinstance(err, KeyError) else err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
