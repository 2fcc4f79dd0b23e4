"""Validate predicted labels against a reference annotation.

:func:`compare` scores a predicted labelling (clusters, spatial domains) against a reference
(manual annotation) stored in the same table; :func:`rename_by_matching` renames the predicted
categories after their matched reference classes (with the reference's colours) so both can be
shown side by side; :func:`disagreement` flags the spots/cells where they differ.
"""

from __future__ import annotations

import html
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from napari_scai import metrics
from napari_scai._validate import get_table as _get_table
from napari_scai._validate import obs_column
from napari_scai.tl._annotate import _category_colors, _default_palette
from napari_scai.tl._api import copy_data, deprecated_call

if TYPE_CHECKING:
    pass

__all__ = ["CompareReport", "compare", "disagreement", "rename_by_matching"]


@dataclass
class CompareReport:
    """Agreement between a predicted labelling and a reference annotation.

    Attributes
    ----------
    ari
        Adjusted Rand index on the scored observations.
    nmi
        Normalised mutual information (arithmetic) on the scored observations.
    per_class
        One row per reference class: ``class``, ``matched`` (predicted label matched to it,
        or ``None``), ``precision``, ``recall``, ``f1``, ``support``.
    confusion
        Counts; rows = predicted labels, columns = reference classes.
    matching
        ``{predicted label: reference class}`` from the Hungarian matching.
    n_scored
        Observations with both a prediction and a reference label.
    n_dropped
        Observations left out because the reference (or prediction) is missing.
    key_pred, key_ref
        The compared columns.
    """

    ari: float
    nmi: float
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    matching: dict[Hashable, Hashable]
    n_scored: int
    n_dropped: int
    key_pred: str = "pred"
    key_ref: str = "ref"
    accuracy: float = field(default=float("nan"))

    @property
    def macro_f1(self) -> float:
        """Unweighted mean of the per-class F1 scores."""
        return float(self.per_class["f1"].mean()) if len(self.per_class) else float("nan")

    def summary(self) -> pd.Series:
        """Headline numbers as a Series (for tables over many runs)."""
        return pd.Series(
            {
                "ari": self.ari,
                "nmi": self.nmi,
                "accuracy": self.accuracy,
                "macro_f1": self.macro_f1,
                "n_scored": self.n_scored,
                "n_dropped": self.n_dropped,
            }
        )

    def __str__(self) -> str:
        head = (
            f"Comparison of '{self.key_pred}' (predicted) with '{self.key_ref}' (reference)\n"
            f"  scored: {self.n_scored}   dropped (no label): {self.n_dropped}\n"
            f"  ARI: {self.ari:.4f}   NMI: {self.nmi:.4f}   "
            f"matched accuracy: {self.accuracy:.4f}   macro F1: {self.macro_f1:.4f}\n"
        )
        per_class = self.per_class.copy()
        per_class["matched"] = per_class["matched"].map(lambda v: "-" if v is None else str(v))
        per_class_txt = per_class.to_string(
            index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"
        )
        confusion_txt = self.confusion.to_string()
        return (
            f"{head}\nPer class (after matching):\n{per_class_txt}\n\n"
            f"Confusion (rows = predicted, columns = reference):\n{confusion_txt}\n"
        )

    def __repr__(self) -> str:
        return (
            f"CompareReport(key_pred={self.key_pred!r}, key_ref={self.key_ref!r}, "
            f"ari={self.ari:.4f}, nmi={self.nmi:.4f}, n_scored={self.n_scored}, "
            f"n_dropped={self.n_dropped})"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        head = (
            f"<p><b>{esc(self.key_pred)}</b> (predicted) vs <b>{esc(self.key_ref)}</b> "
            f"(reference): ARI <b>{self.ari:.4f}</b>, NMI <b>{self.nmi:.4f}</b>, "
            f"matched accuracy {self.accuracy:.4f}, macro F1 {self.macro_f1:.4f}; "
            f"{self.n_scored} scored, {self.n_dropped} dropped (no label).</p>"
        )
        per_class = self.per_class.to_html(
            index=False, float_format=lambda v: f"{v:.3f}", na_rep="-", escape=True
        )
        confusion = self.confusion.to_html(escape=True)
        return (
            f"<div>{head}<p>Per class (after matching)</p>{per_class}"
            f"<p>Confusion (rows = predicted, columns = reference)</p>{confusion}</div>"
        )


_obs_column = obs_column


@deprecated_call(positional=("key_pred", "key_ref"))
def compare(
    data: Any, *, key_pred: str = "scai_domain", key_ref: str, table: str = "rna"
) -> CompareReport:
    """Score a predicted labelling against a reference annotation.

    A report: writes nothing into ``data``. ``compare(data, "pred", "ref")`` (positional keys,
    the previous release's form) still works, with a FutureWarning.

    Parameters
    ----------
    data
        A :class:`spatialdata.SpatialData` (its ``tables[table]`` is used) or an
        :class:`anndata.AnnData`.
    key_pred
        ``obs`` column with the predicted labels (default ``"scai_domain"``).
    key_ref
        ``obs`` column with the reference labels (e.g. ``"layer_manual"``); missing values
        mark unlabelled observations, which are dropped and counted in ``n_dropped``.
    table
        Table name when ``data`` is a SpatialData.

    Returns
    -------
    CompareReport
        ARI, NMI, per-class scores after Hungarian matching, confusion matrix, matching.
    """
    adata = _get_table(data, table)
    pred = _obs_column(adata, key_pred, "Predicted")
    ref = _obs_column(adata, key_ref, "Reference")
    p, r, n_dropped = metrics.drop_unlabelled(pred, ref)
    if len(p) == 0:
        raise ValueError(
            f"No observation has both a {key_pred!r} and a {key_ref!r} label, so there is "
            "nothing to score. Check that the reference column is filled in."
        )
    confusion = metrics.contingency_table(p, r)
    confusion.attrs["n_dropped"] = n_dropped
    table_arr = confusion.to_numpy()
    p_classes, r_classes = list(confusion.index), list(confusion.columns)
    matching = metrics._matching_from_table(table_arr, p_classes, r_classes)
    per_class = metrics._scores_from_table(table_arr, p_classes, r_classes, matching)
    correct = sum(int(confusion.loc[pl, rl]) for pl, rl in matching.items())
    n_scored = len(p)
    return CompareReport(
        ari=metrics._ari_from_table(table_arr),
        nmi=metrics._nmi_from_table(table_arr),
        per_class=per_class,
        confusion=confusion,
        matching=matching,
        n_scored=n_scored,
        n_dropped=n_dropped,
        key_pred=key_pred,
        key_ref=key_ref,
        accuracy=correct / n_scored,
    )


def _renamed_labels(pred: pd.Series, matching: dict) -> tuple[pd.Categorical, list[str]]:
    """Map predicted labels through ``matching``; returns categorical + unmatched names."""
    matched_names = {str(v) for v in matching.values()}
    labels = pd.unique(pred.dropna())
    if isinstance(pred.dtype, pd.CategoricalDtype):
        labels = [c for c in pred.cat.categories if c in set(labels)]
    rename: dict = {}
    unmatched: list[str] = []
    for label in labels:
        if label in matching:
            rename[label] = str(matching[label])
        else:
            name = str(label)
            if name in matched_names:  # would be confused with a reference class
                name = f"{name} (unmatched)"
            rename[label] = name
            unmatched.append(name)
    values = pred.astype(object).map(rename)
    return values, unmatched


@deprecated_call(positional=("key_pred", "report"), renamed={"new_key": "key_added"})
def rename_by_matching(
    data: Any,
    *,
    report: CompareReport,
    key_pred: str | None = None,
    key_ref: str | None = None,
    key_added: str | None = None,
    table: str = "rna",
    copy: bool = False,
) -> Any:
    """Rename predicted categories after their matched reference classes.

    Matched predicted labels take the name (and the colour, from
    ``uns[f"{key_ref}_colors"]``) of their reference class; unmatched ones keep their name
    (suffixed ``" (unmatched)"`` only if it would clash with a matched reference class name)
    and their own colour when ``uns[f"{key_pred}_colors"]`` has one. Category order follows
    the reference, unmatched labels last. All category names become strings.

    Parameters
    ----------
    data
        A SpatialData (``tables[table]`` is used) or an AnnData holding both columns.
    report
        Result of :func:`compare` on the same table.
    key_pred, key_ref
        Predicted and reference columns; default: those ``report`` compared.
    key_added
        Column to write; defaults to ``f"{key_pred}_matched"`` (the original column is kept).
        Colours go to ``uns[f"{key_added}_colors"]``.
    table
        Table name when ``data`` is a SpatialData.
    copy
        Return a modified copy of ``data`` instead of writing into it.

    Returns
    -------
    None or SpatialData or AnnData
        ``None`` (``copy=False``), else the modified copy. (The previous release returned the
        key written; it is ``key_added``, or ``f"{key_pred}_matched"``.)
    """
    if copy:
        data = copy_data(data)
    adata = _get_table(data, table)
    key_pred = key_pred or report.key_pred
    key_ref = key_ref or report.key_ref
    pred = _obs_column(adata, key_pred, "Predicted")
    ref = _obs_column(adata, key_ref, "Reference")
    new_key = key_added or f"{key_pred}_matched"
    values, unmatched = _renamed_labels(pred, report.matching)

    ref_cat = ref.astype("category") if not isinstance(ref.dtype, pd.CategoricalDtype) else ref
    ref_names = [str(c) for c in ref_cat.cat.categories]
    ref_colors = _category_colors(adata, key_ref, list(ref_cat.cat.categories))
    ref_color_of = dict(zip(ref_names, ref_colors, strict=True))

    matched_in_order = [n for n in ref_names if n in {str(v) for v in report.matching.values()}]
    categories = matched_in_order + unmatched
    colors = [ref_color_of[n] for n in matched_in_order]

    if unmatched:
        pred_cat = (
            pred.astype("category") if not isinstance(pred.dtype, pd.CategoricalDtype) else pred
        )
        pred_colors = dict(
            zip(
                [str(c) for c in pred_cat.cat.categories],
                _category_colors(adata, key_pred, list(pred_cat.cat.categories)),
                strict=True,
            )
        )
        used = set(colors)
        spare = iter(c for c in _default_palette(len(categories) + len(used)) if c not in used)
        for name in unmatched:
            original = name.removesuffix(" (unmatched)")
            own = pred_colors.get(original)
            if own is not None and own not in used:
                colors.append(own)
            else:
                colors.append(next(spare, "#808080"))
            used.add(colors[-1])

    adata.obs[new_key] = pd.Categorical(values.to_numpy(), categories=categories)
    adata.uns[f"{new_key}_colors"] = colors
    return data if copy else None


@deprecated_call(positional=("key_pred", "key_ref", "report"))
def disagreement(
    data: Any,
    *,
    report: CompareReport,
    key_pred: str | None = None,
    key_ref: str | None = None,
    table: str = "rna",
) -> np.ndarray:
    """Where the matched prediction differs from the reference.

    A query: returns a mask and writes nothing into ``data``.

    Parameters
    ----------
    data
        A SpatialData (``tables[table]`` is used) or an AnnData holding both columns.
    report
        Result of :func:`compare` on these columns; its ``matching`` renames the prediction.
    key_pred, key_ref
        Predicted (original labels, as scored by :func:`compare`) and reference columns;
        default: those ``report`` compared.
    table
        Table name when ``data`` is a SpatialData.

    Returns
    -------
    numpy.ndarray
        Boolean, one per observation: ``True`` where the renamed prediction differs from the
        reference (a missing or unmatched prediction counts as different), ``False`` where
        they agree or the reference is missing.
    """
    adata = _get_table(data, table)
    key_pred = key_pred or report.key_pred
    key_ref = key_ref or report.key_ref
    pred = _obs_column(adata, key_pred, "Predicted")
    ref = _obs_column(adata, key_ref, "Reference")
    ref_missing = ref.isna().to_numpy()
    mapped = pred.astype(object).map(report.matching).to_numpy(dtype=object)  # unmatched: NaN
    same = np.asarray(mapped == ref.astype(object).to_numpy(dtype=object), dtype=bool)
    return ~same & ~ref_missing
