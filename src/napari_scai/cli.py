"""Command line: ``napari-scai view`` (GUI), ``napari-scai info`` and ``napari-scai run`` (headless)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import numpy as np


def _load(path: str | None, sample: str | None):
    from napari_scai import io
    from napari_scai.datasets import load_sample

    if sample:
        return load_sample(sample)
    if path is None:
        raise ValueError("give a PATH or --sample NAME")
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
    if getattr(args, "transfer_from", None) and not args.labels:  # --- domains2 (issue 11)
        return "--transfer-from needs --labels COL (the reference's label column)"
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
        if (
            args.domains is None
            and not args.compare
            and not getattr(args, "transfer_from", None)
            and not getattr(args, "communication", False)
        ):
            return None
    # ---- end integration
    if args.table is None:
        if (
            args.domains is None
            and not args.compare
            and not getattr(args, "transfer_from", None)
            and not getattr(args, "communication", False)
        ):
            return None  # nothing is analysed: any table (protein-only, ATAC-only) is fine
        args.table = "rna"
    if args.table not in sdata.tables:
        return (
            f"table {args.table!r} not found; tables: {list(sdata.tables.keys())}. "
            "Fix: pass --table NAME"
        )
    obs = sdata.tables[args.table].obs
    needed = [("--compare", args.compare)]
    if args.compare and args.domains is None:
        needed.append(("--compare-pred", args.compare_pred))
    # --- cell-cell communication (issue 9) ---
    if getattr(args, "groupby", None) and not getattr(args, "communication", False):
        return "--groupby is used with --communication. Fix: add --communication"
    if getattr(args, "communication", False) and args.groupby:
        needed.append(("--groupby", args.groupby))
    # --- end cell-cell communication ---
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

        with TerminalProgress("spatial domains") as bar:
            spatial_domains(
                sdata,
                table=args.table,
                n_domains=args.domains,
                device=args.device,
                seed=args.seed,
                progress=bar,
                **_epochs(args),
            )
        adata = sdata.tables[args.table]
        counts = adata.obs["scai_domain"].value_counts().sort_index()
        print(
            f"spatial domains ({args.domains}): "
            + ", ".join(f"{k}: {v}" for k, v in counts.items())
        )
    if getattr(args, "transfer_from", None):  # --- domains2 (issue 11)
        _run_transfer(args, sdata)

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
        report = compare(sdata, key_pred=pred, key_ref=args.compare, table=args.table)
        print(report)
    # --- cell-cell communication (issue 9) ---
    if args.communication:
        from napari_scai.tl import communication

        report = communication(
            sdata,
            table=args.table,
            groupby=args.groupby,
            pairs=args.pairs,
            bandwidth_um=args.bandwidth_um,
            n_perms=args.n_perms,
            device=args.device,
            seed=args.seed,
        )
        print(report)
        cols = ["interaction", "statistic", "pvalue", "fdr", "n_local_sig"]
        print(report.pairs[cols].head(15).to_string(index=False))
    # --- end cell-cell communication ---
    if args.out:
        out = Path(args.out)
        io.write(sdata, out, overwrite=args.overwrite)
        print(f"wrote {out}")
    return 0


# --- domains2 (issue 11): terminal progress bar and label transfer -------------------------


class TerminalProgress:
    """A one-line progress bar on stderr for ``progress(step, total, message)`` callbacks."""

    def __init__(self, title: str, width: int = 30, stream=None) -> None:
        self.title, self.width = title, width
        self.stream = stream or sys.stderr
        self.last = ""

    def __call__(self, step: int, total: int, message: str = "") -> None:
        frac = min(max(step / max(total, 1), 0.0), 1.0)
        done = int(round(frac * self.width))
        line = (f"\r{self.title} [{'#' * done}{'.' * (self.width - done)}] {frac:4.0%} {message}")[
            :120
        ]
        if line != self.last:
            self.stream.write(line.ljust(len(self.last)))
            self.stream.flush()
            self.last = line

    def __enter__(self) -> TerminalProgress:
        return self

    def __exit__(self, *exc) -> None:
        if self.last:
            self.stream.write("\n")
            self.stream.flush()


def _epochs(args) -> dict:
    return {} if getattr(args, "epochs", None) is None else {"epochs": args.epochs}


def _run_transfer(args, sdata) -> None:
    from napari_scai.tl import transfer_labels

    ref = _load(args.transfer_from, None)
    try:
        with TerminalProgress("label transfer") as bar:
            transfer_labels(
                ref,
                sdata,
                args.labels,
                table=args.table,
                device=args.device,
                seed=args.seed,
                progress=bar,
                **_epochs(args),
            )
    except ValueError as err:  # too few shared genes, too few classes: the message says why
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from err
    obs = sdata.tables[args.table].obs
    ov = sdata.tables[args.table].uns["scai_transfer_params"]["gene_overlap"]
    counts = obs["scai_transfer"].value_counts().sort_index()
    print(
        f"label transfer from {args.transfer_from} ({ov['n_shared']} shared genes): "
        + ", ".join(f"{k}: {v}" for k, v in counts.items())
        + f"; mean confidence {float(obs['scai_transfer_confidence'].mean()):.2f}"
    )


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
    from napari_scai import __version__

    parser = argparse.ArgumentParser(
        prog="napari-scai",
        description="Command line: 'napari-scai view' (GUI), 'napari-scai info' and "
        "'napari-scai run' (headless).",
    )
    parser.add_argument("--version", action="version", version=f"napari-scai {__version__}")
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
    run.add_argument("--table", help="table to analyse (default: rna)")
    run.add_argument("--domains", type=int, metavar="K", help="find K spatial domains (GNN)")
    run.add_argument("--compare", metavar="KEY", help="compare the predicted domains with obs[KEY]")
    run.add_argument(
        "--compare-pred",
        default="scai_domain",
        help="predicted column for --compare without --domains",
    )
    # --- cell-cell communication (issue 9) ---
    run.add_argument(
        "--communication",
        action="store_true",
        help="ligand-receptor communication (result table 'scai_communication')",
    )
    run.add_argument("--groupby", metavar="COL", help="obs column for group x group matrices")
    run.add_argument(
        "--pairs",
        default=None,
        help="LR table: consensus (default), cellchatdb or cellphonedb",
    )
    run.add_argument(
        "--bandwidth-um", type=float, default=None, help="kernel bandwidth in µm (default: auto)"
    )
    run.add_argument("--n-perms", type=int, default=1000, help="permutations (default 1000)")
    # --- end cell-cell communication ---

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
    # --- domains2 (issue 11): label transfer
    run.add_argument(
        "--transfer-from",
        metavar="REF",
        help="annotated reference section: transfer its --labels onto PATH (obs['scai_transfer'])",
    )
    run.add_argument("--labels", metavar="COL", help="the reference's label column")
    run.add_argument(
        "--epochs", type=int, default=None, help="training epochs of the GNN (default: 300)"
    )
    run.set_defaults(func=cmd_run)
    return parser


def _is_ours(frame) -> bool:
    """Whether the code that called ``warnings.warn`` lives in this package."""
    package = str(Path(__file__).resolve().parent)
    while frame is not None and Path(frame.f_code.co_filename).name == "warnings.py":
        frame = frame.f_back
    return frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(package)


@contextlib.contextmanager
def cli_warnings():
    """Show napari-scai's own warnings as one ``warning:`` line each; hide library noise.

    Library deprecation chatter and third-party ``UserWarning``s are not for the command line
    user; ours (e.g. "does not look like raw counts", a renamed obs column) are.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("default", UserWarning)

        def show(message, category, filename, lineno, file=None, line=None) -> None:
            if issubclass(category, UserWarning) and _is_ours(sys._getframe(1)):
                print(f"warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    """Run the command line; expected errors print one ``error:`` line and return 2."""
    from napari_scai.io import ReadError

    args = build_parser().parse_args(argv)
    with cli_warnings():
        try:
            return int(args.func(args) or 0)
        except (ReadError, FileExistsError, FileNotFoundError, ValueError, KeyError) as err:
            text = err.args[0] if isinstance(err, KeyError) and err.args else err
            print(f"error: {' '.join(str(text).split())}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
