"""Study A's diagnosis stages: language-label skew of every dataset's splits and subsets.

The statistics and the verdict are langskew's library (:mod:`langskew.diagnosis`, thresholds
there); these jobs apply them to the workflow's files (rules ``study_a_diagnose`` and
``study_a_diagnose_report``).
"""

from __future__ import annotations

import logging
from typing import Sequence

import pandas as pd

from langskew import io
from langskew.diagnosis import diagnose_frame, heatmap_figure, markdown_report, summary_line
from langskew.workflow import Job

logger = logging.getLogger(__name__)


# --- Snakemake jobs -------------------------------------------------------------------------

def diagnose_job(job: Job, *, dataset: str, languages: Sequence[str], labels: Sequence[str]) -> None:
    """Snakemake job: one dataset's normalised splits or its subsets -> summary, cells, heatmap.

    input: one Parquet file per ``{variant}_{split}`` (variant "original" for the normalised
    data, "balanced"/"imbalanced" for the subsets); params: ``dataset``, ``languages``,
    ``labels`` (class names in index order). output: ``summary`` and ``cells`` (CSV), ``figure``.
    """
    labels = list(labels)
    summaries, cells = [], []
    for name in job.input.keys():
        variant, split = name.rsplit("_", 1)
        frame = pd.read_parquet(job.input[name], columns=["language", "label"])
        summary, cell = diagnose_frame(frame, languages=list(languages), labels=list(range(len(labels))),
                                       label_names=labels)
        for part in (summary, cell):
            part["split"] = split
            part.insert(0, "variant", variant)
            part.insert(0, "dataset", dataset)
        logger.info("%s %s %s: %s", dataset, variant, split, summary_line(summary.iloc[0]))
        for note in filter(None, summary["notes"]):
            logger.warning("%s %s %s: %s", dataset, variant, split, note)
        summaries.append(summary)
        cells.append(cell)
    summary, cells = pd.concat(summaries, ignore_index=True), pd.concat(cells, ignore_index=True)
    io.write_csv(summary, job.output.summary)
    io.write_csv(cells, job.output.cells)
    notes = {(r.variant, r.split): f"{r.verdict} (V = {r.cramers_v:.2f})" for r in summary.itertuples()}
    io.save_figure(heatmap_figure(cells, ["variant", "split"], f"{dataset}: label shares per language",
                                  notes), job.output.figure)


def diagnose_report_job(job: Job) -> None:
    """Snakemake job: every diagnose output -> diagnosis.csv, diagnosis.md, diagnosis_cells.csv."""
    keys = ["dataset", "variant", "split"]
    text = {"notes": str, "max_weight_ratio_language": str}
    summary = pd.concat([pd.read_csv(p, dtype=text) for p in job.input.summary], ignore_index=True)
    summary[list(text)] = summary[list(text)].fillna("")
    cells = pd.concat([pd.read_csv(p) for p in job.input.cells], ignore_index=True)
    io.write_csv(summary, job.output.csv)
    io.write_csv(cells, job.output.cells)
    with io.atomic_path(job.output.md) as tmp:
        tmp.write_text(markdown_report(summary, cells, keys, "Study A: language-label skew of the data"))
    for _, row in summary.iterrows():
        logger.info("%s %s %s: %s", row["dataset"], row["variant"], row["split"], row["verdict"])
