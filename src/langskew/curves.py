"""Watching training: loss curves as report figures, and (opt-in) live TensorBoard event files.

Both studies' training jobs write ``curve.csv`` (Study A: step, epoch, train_loss, val_loss,
lr; Study B: step, tokens, lr, train_loss, val_loss_<language>...). :func:`plot_curves`
draws one panel per run with the training loss and every validation loss column, and
:class:`TensorBoardLog` sends the same rows to TensorBoard while a job runs, when the config
turns it on (``tensorboard: true``; needs the ``tensorboard`` package).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import pandas as pd

from langskew.errors import LangskewError
from langskew.io import save_figure
from langskew.paths import as_list

if TYPE_CHECKING:  # langskew.workflow imports this module
    from langskew.workflow import Job

#: columns that are never plotted as losses / logged as scalars
_NOT_SCALARS = {"step"}


def loss_columns(curve: pd.DataFrame) -> tuple[str, list[str]]:
    """The training-loss column and the validation-loss columns of a curve table."""
    if "train_loss" not in curve.columns:
        raise LangskewError(f"curve table has no column 'train_loss' (columns: {', '.join(curve.columns)})")
    val = [c for c in curve.columns if c == "val_loss" or c.startswith("val_loss_")]
    if not val:
        raise LangskewError(f"curve table has no validation loss column 'val_loss' or 'val_loss_<language>' "
                            f"(columns: {', '.join(curve.columns)})")
    return "train_loss", val


def read_curve(path: str | os.PathLike) -> pd.DataFrame:
    curve = pd.read_csv(path)
    if "step" not in curve.columns:
        raise LangskewError(f"{path}: curve table has no column 'step'")
    loss_columns(curve)
    return curve


def plot_curves(curves: Mapping[str, pd.DataFrame], title: str, ncols: int = 4):
    """One panel per run: training loss (line) and validation losses (line + markers) by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        raise LangskewError(f"{title}: no training curves to plot")
    n = len(curves)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.6 * nrows), squeeze=False, sharex=False)
    for ax, (label, curve) in zip(axes.flat, curves.items()):
        train, vals = loss_columns(curve)
        ax.plot(curve["step"], curve[train], color="0.3", lw=1.2, label="train")
        for col in vals:
            pts = curve[["step", col]].dropna()
            name = "validation" if col == "val_loss" else f"validation {col.removeprefix('val_loss_')}"
            ax.plot(pts["step"], pts[col], marker="o", ms=3, lw=1.2, label=name)
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def training_curves_job(job: Job, *, labels: list[str], title: str) -> None:
    """Rules ``study_a_training_curves`` / ``study_b_training_curves``: input.curves (curve.csv files),
    ``labels`` (one per file, same order), ``title``; output[0] the figure."""
    paths = as_list(job.input.curves)
    labels = list(labels)
    if len(paths) != len(labels):
        raise LangskewError(f"training curves: {len(paths)} curve files but {len(labels)} labels")
    curves = {label: read_curve(p) for label, p in zip(labels, paths)}
    save_figure(plot_curves(curves, str(title)), job.output[0])


# --- TensorBoard -------------------------------------------------------------------------------

def tensorboard_dir(config: Mapping[str, Any], log_path: str | None, rule: str) -> str | None:
    """Where a job's TensorBoard events go when the config turns them on, else None.

    Mirrors the job's log file: ``{outdir}/logs/study_b/pretrain/<run>.log`` ->
    ``{outdir}/tensorboard/study_b/pretrain/<run>``, so ``tensorboard --logdir {outdir}/tensorboard``
    shows every run. Not a Snakemake output: turning it on or off reruns nothing.
    """
    if not config.get("tensorboard"):
        return None
    out = Path(str(config.get("outdir", "results")))
    if log_path:
        log = Path(log_path)
        try:
            rel = log.relative_to(out / "logs")
        except ValueError:
            rel = Path(rule) / log.name
        return str(out / "tensorboard" / rel.with_suffix(""))
    return str(out / "tensorboard" / rule)


def _tag(column: str) -> str:
    if column == "train_loss":
        return "loss/train"
    if column == "val_loss":
        return "loss/validation"
    if column.startswith("val_loss_"):
        return f"loss/validation_{column.removeprefix('val_loss_')}"
    return column


class TensorBoardLog:
    """Curve rows as TensorBoard scalars; does nothing when ``log_dir`` is None (the default).

    ``purge_step``: a resumed run passes the step it resumed at, so that events an
    interrupted attempt wrote after its last checkpoint are hidden, not shown twice.
    """

    def __init__(self, log_dir: str | os.PathLike | None, purge_step: int | None = None):
        self.writer = None
        if not log_dir:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise LangskewError(
                "config key 'tensorboard': TensorBoard logging is on but the 'tensorboard' package is not "
                "installed; install it (pip install 'langskew[tensorboard]') or set tensorboard: false") from err
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step or None)

    @property
    def enabled(self) -> bool:
        return self.writer is not None

    def log(self, step: int, row: Mapping[str, Any] | Sequence[Any], columns: Sequence[str] | None = None) -> None:
        """Log one curve row (a mapping, or a sequence with its ``columns``) at ``step``."""
        if self.writer is None:
            return
        items = row.items() if isinstance(row, Mapping) else zip(columns or [], row)
        for key, value in items:
            if key in _NOT_SCALARS or value is None:
                continue
            value = float(value)
            if not math.isnan(value):
                self.writer.add_scalar(_tag(key), value, int(step))
        self.writer.flush()  # a user watching a long job sees each row as it is written

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
