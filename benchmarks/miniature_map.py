"""Draw the Study B miniature search (benchmarks/miniature_runs.csv) as a map: each capacity
effect of every configuration against its compute 6 N D, the bars spanning the range over seeds.

    python benchmarks/miniature_map.py                      # -> docs/miniature_map.png
    python benchmarks/miniature_map.py --csv runs.csv --out map.png
    python benchmarks/miniature_map.py --table              # the runs as a Markdown table

The map shows the last row of each configuration name, one marker per family of data (the
synthetic grammar at each richness, the public-domain text; more than two clones a family of its
own; a TEff whose scaling fit the workflow flags unreliable in a seed is hollow); the table
(``--table``) shows every row.
Panels: the 50/50 TEff of L1 and L2 (the effect: below 1), the clones' representation cosine
90/10 minus 50/50 averaged over layers (above 0), and the mean gradient cosine 90/10 minus
50/50 (above 0). Each point is labelled with its configuration's name; the title names the
machines and dates of the runs.
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PANELS = [  # (title, [(column stem, legend)], the value the effect must pass (dashed line), its side)
    ("50/50 token efficiency\n(effect: below the line)", [("teff_l1", "L1"), ("teff_l2", "L2")], 1.0, "below"),
    ("representation cosine 90/10 - 50/50, mean over layers\n(effect: above the line)", [("rep_diff", None)], 0.0,
     "above"),
    ("gradient cosine 90/10 - 50/50\n(effect: above the line)", [("grad_diff", None)], 0.0, "above"),
]
MARKERS = ["o", "s", "^", "D", "v", "P"]
REQUIRED = ["name", "compute", "machine", "date"] + [f"{stem}_{s}" for _, stems, _, _ in PANELS
                                                     for stem, _ in stems for s in ("mean", "lo", "hi")]


def read_runs(path: Path) -> pd.DataFrame:
    """The CSV's rows with a compute and every effect; a missing column is named. A row without
    a richness (written before the driver had ``--richness``) has richness 1, and likewise for the
    other columns added since (two clones, L1 at 0.9 in the skewed run, synthetic data)."""
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    df["richness"] = _column(df, "richness", 1).astype(int)
    df["fit_reliable"] = _column(df, "fit_reliable", True).map(lambda v: str(v).strip().lower() not in ("false", "0"))
    df["clones"] = _column(df, "clones", 2).astype(int)
    # L1's share in the skewed run; rows written before the column: 0.9 (90/10, or L1 0.9 of K clones)
    df["skewed_l1"] = _column(df, "skewed_l1", 0.9).astype(float)
    df["data"] = _column(df, "data", "synthetic").astype(str)
    df["family"] = [family(data, k, c) for data, k, c in zip(df["data"], df["richness"], df["clones"])]
    df = df.dropna(subset=["compute"]).dropna(how="all", subset=[c for c in REQUIRED if c.endswith("_mean")])
    if df.empty:
        raise ValueError(f"{path}: no row with a compute and an effect")
    return df


def _column(df: pd.DataFrame, name: str, default: Any) -> pd.Series:
    """Column ``name`` with ``default`` where it is empty, or everywhere when the CSV was written
    before the driver had it."""
    if name not in df.columns:
        return pd.Series(default, index=df.index)
    return df[name].astype(object).where(df[name].notna(), default)


def family(data: str, richness: int = 1, clones: int = 2) -> str:
    """The series a run belongs to on the map: its data (the synthetic grammar and its richness,
    or text) and, when not two, its number of clones."""
    name = "text" if data == "text" else "synthetic" + (f", richness {richness}" if richness != 1 else "")
    return name + (f", {clones} clones" if clones != 2 else "")


def latest_per_name(df: pd.DataFrame) -> pd.DataFrame:
    """The last row of each configuration: a later call of the driver on the same seeds (e.g. the
    full grid after ``--skip-teff``) re-reads the same clone runs and adds what the first lacked."""
    return df.drop_duplicates(subset="name", keep="last")


def draw(df: pd.DataFrame, out: Path) -> Path:
    df = latest_per_name(df)
    fig, axes = plt.subplots(1, len(PANELS), figsize=(5 * len(PANELS), 4.2), constrained_layout=True)
    xlim = (df["compute"].min() / 2, df["compute"].max() * 2)
    families = sorted(df["family"].unique(), key=lambda f: (f.startswith("text"), f))  # a marker and colour each
    for ax, (title, stems, threshold, _side) in zip(axes, PANELS):
        if df[[f"{stem}_mean" for stem, _ in stems]].isna().all().all():
            ax.text(0.5, 0.65, "not measured in these runs", transform=ax.transAxes, ha="center", color="grey")
        series = [(stem, legend, j, k) for stem, legend in stems for j, k in enumerate(families)]
        not_finite: set[str] = set()
        unsound = False
        for i, (stem, legend, j, k) in enumerate(series):
            rows = df[df["family"] == k].dropna(subset=[f"{stem}_mean"])  # runs without this effect: left out
            finite = np.isfinite(rows[[f"{stem}_mean", f"{stem}_lo", f"{stem}_hi"]].astype(float)).all(axis=1)
            not_finite.update(rows.loc[~finite, "name"].astype(str))  # e.g. TEff of a degenerate scaling fit
            rows = rows[finite]
            if rows.empty:
                continue
            shift = 1.0 + 0.08 * (i - (len(series) - 1) / 2)  # side by side on the log axis
            label = ", ".join(x for x in (legend, k if len(families) > 1 else None) if x) or None
            # TEff on a scaling fit the workflow flags unreliable in some seed: a hollow marker
            sound = rows["fit_reliable"] if stem.startswith("teff") else pd.Series(True, index=rows.index)
            colour = None
            for part, hollow in ((rows[sound], False), (rows[~sound], True)):
                if part.empty:
                    continue
                mean, lo, hi = part[f"{stem}_mean"], part[f"{stem}_lo"], part[f"{stem}_hi"]
                drawn = ax.errorbar(part["compute"] * shift, mean, yerr=[mean - lo, hi - mean],
                                    fmt=MARKERS[j % len(MARKERS)], capsize=3, color=colour,
                                    mfc="none" if hollow else None, label=label)
                colour, label = drawn.lines[0].get_color(), None  # one legend entry and colour per series
                unsound |= hollow
        notes = ["hollow: scaling fit flagged unreliable in a seed"] * unsound
        if not_finite:
            notes.append(textwrap.fill("not finite in a seed (not drawn): " + ", ".join(sorted(not_finite)), 90))
        if notes:  # under the axis label, clear of the points
            ax.text(0.0, -0.2, "\n".join(notes), va="top", transform=ax.transAxes, fontsize=7, color="grey")
        for _, row in df.dropna(subset=[f"{stems[0][0]}_mean"]).iterrows():
            if not np.isfinite(float(row[f"{stems[0][0]}_mean"])):
                continue
            ax.annotate(str(row["name"]), (row["compute"], row[f"{stems[0][0]}_mean"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        ax.axhline(threshold, color="grey", lw=1, ls="--")
        ax.set_xscale("log")
        ax.set_xlim(*xlim)
        ax.set_xlabel("compute of a 1x run, 6 N D (FLOPs)")
        ax.set_title(title, fontsize=10)
        if (any(legend for _, legend in stems) or len(families) > 1) and not df[f"{stems[0][0]}_mean"].isna().all():
            ax.legend(fontsize=8)
    machines = "; ".join(sorted(set(df["machine"].astype(str))))
    dates = ", ".join(sorted(set(df["date"].astype(str))))
    fig.suptitle(f"Study B miniature: capacity effects against compute (bars: range over seeds)\n{machines}, {dates}",
                 fontsize=10)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _span(row: pd.Series, stem: str) -> str:
    if pd.isna(row[stem + "_mean"]):
        return "not measured"
    return f"{row[stem + '_mean']:.3f} ({row[stem + '_lo']:.3f} to {row[stem + '_hi']:.3f})"


def _code(row: pd.Series) -> str:
    code = row.get("code")
    return "" if code is None or pd.isna(code) or not str(code) else f", code {code}"


def markdown(df: pd.DataFrame) -> str:
    """The runs as a Markdown table: setting, machine and load, wall time, each effect with its range over seeds."""
    lines = ["| name | model | 1x steps, train docs, vocab/clone | seeds | machine (load average start / end) | wall "
             "| 50/50 TEff L1 | 50/50 TEff L2 | rep. cosine per layer, 90/10 vs 50/50 | rep. 90/10 - 50/50 "
             "| grad. cosine 90/10 - 50/50 | shows (TEff, rep., grad.) |", "|" + "---|" * 12]
    for _, r in df.iterrows():
        notes = ([f"richness {r['richness']}"] * (r["richness"] != 1) + [f"{r['clones']} clones"] * (r["clones"] != 2)
                 + [f"skewed: L1 {r['skewed_l1']:g}"] * (r["skewed_l1"] != 0.9))
        data = f"{r.get('data', '')} ({', '.join(notes)})" if notes else r.get("data", "")
        wall = "" if pd.isna(r.get("wall_s")) else f"{int(r['wall_s']) // 60}m{int(r['wall_s']) % 60:02d}s"
        shows = ", ".join("yes" if str(r.get(f"shows_{k}")).lower() == "true" else "no" for k in ("teff", "rep", "grad"))
        lines.append(
            f"| {r['name']} | {data} {r.get('n_layer', '')} layers d {r.get('d_model', '')} "
            f"| {r.get('steps', '')}, {r.get('train_docs', '')}, {r.get('vocab', '')} | {r.get('seeds', '')} "
            f"| {r['machine']} ({r.get('load_start', '')} / {r.get('load_end', '')}), {r['date']}{_code(r)} | {wall} "
            f"| {_span(r, 'teff_l1')} | {_span(r, 'teff_l2')} | {r.get('rep_9010', '')} vs {r.get('rep_5050', '')} "
            f"| {_span(r, 'rep_diff')} | {_span(r, 'grad_diff')} | {shows} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> Path | str:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--csv", type=Path, default=REPO / "benchmarks/miniature_runs.csv")
    ap.add_argument("--out", type=Path, default=REPO / "docs/miniature_map.png")
    ap.add_argument("--table", action="store_true", help="print the runs as a Markdown table instead")
    args = ap.parse_args(argv)
    if args.table:
        return markdown(read_runs(args.csv))
    return draw(read_runs(args.csv), args.out)


if __name__ == "__main__":
    print(main())
