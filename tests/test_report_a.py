"""Study A report: aggregation over seeds and the written tables/figure."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from helpers import job

from langskew.errors import LangskewError
from langskew.study_a import report


def _write(df: pd.DataFrame, path: Path) -> str:
    df.to_csv(path, index=False)
    return str(path)


def _accuracy_run(tmp_path: Path, name: str, acc_en: float, acc_fr: float, with_all: bool) -> str:
    rows = [("balanced", "en", 100, acc_en), ("balanced", "fr", 300, acc_fr), ("imbalanced", "en", 50, acc_en)]
    if with_all:
        rows.append(("balanced", "all", 400, (100 * acc_en + 300 * acc_fr) / 400))
    return _write(pd.DataFrame(rows, columns=["test_variant", "language", "n", "accuracy"]), tmp_path / f"{name}.csv")


def test_accuracy_table_aggregates_seeds_and_derives_overall(tmp_path):
    paths = [_accuracy_run(tmp_path, "s0", 0.8, 0.6, with_all=True),
             _accuracy_run(tmp_path, "s42", 0.7, 0.4, with_all=False)]
    ids = [{"dataset": "xnli", "model": "mbert", "condition": "balanced", "seed": s} for s in (0, 42)]
    table = report.accuracy_table(report.stack_runs(paths, ids, ["dataset", "model", "condition", "seed"]))
    assert list(table.columns) == ["dataset", "model", "condition", "test_variant", "language",
                                   "accuracy_mean", "accuracy_sd", "n_seeds"]
    row = table.set_index(["test_variant", "language"])
    overall = [(100 * 0.8 + 300 * 0.6) / 400, (100 * 0.7 + 300 * 0.4) / 400]
    assert row.loc[("balanced", "all"), "accuracy_mean"] == pytest.approx(np.mean(overall))
    assert row.loc[("balanced", "all"), "accuracy_sd"] == pytest.approx(np.std(overall, ddof=1))
    assert row.loc[("balanced", "en"), "accuracy_mean"] == pytest.approx(0.75)
    assert row.loc[("balanced", "fr"), "accuracy_sd"] == pytest.approx(np.std([0.6, 0.4], ddof=1))
    assert (table["n_seeds"] == 2).all()
    assert row.loc[("imbalanced", "all"), "accuracy_mean"] == pytest.approx(0.75)
    assert table["language"].iloc[0] == "all"


def test_lid_table_keeps_base_runs(tmp_path):
    def probe_csv(name, acc):
        return _write(pd.DataFrame({"layer": ["last"], "accuracy_mean": [acc], "accuracy_sd": [0.01],
                                    "n_examples": [100], "n_languages": [2]}), tmp_path / f"{name}.csv")

    paths = [probe_csv("base", 0.9), probe_csv("b0", 0.5), probe_csv("b42", 0.7)]
    ids = [{"dataset": "xnli", "model": "xlmr", "condition": "base", "seed": None}] + \
          [{"dataset": "xnli", "model": "xlmr", "condition": "balanced", "seed": s} for s in (0, 42)]
    table = report.lid_table(report.stack_runs(paths, ids, ["dataset", "model", "condition", "seed"]))
    table = table.set_index("condition")
    assert table.loc["base", "accuracy_mean"] == pytest.approx(0.9)
    assert table.loc["base", "n_seeds"] == 1 and pd.isna(table.loc["base", "accuracy_sd"])
    assert table.loc["balanced", "accuracy_mean"] == pytest.approx(0.6)
    assert table.loc["balanced", "accuracy_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


def test_stack_runs_checks_identifiers(tmp_path):
    path = _write(pd.DataFrame({"x": [1]}), tmp_path / "x.csv")
    with pytest.raises(LangskewError, match="1 input files but 2"):
        report.stack_runs([path], [{"dataset": "a"}, {"dataset": "b"}], ["dataset"])
    with pytest.raises(LangskewError, match="lacks key 'seed'"):
        report.stack_runs([path], [{"dataset": "a"}], ["dataset", "seed"])


def test_report_job_writes_all_tables(tmp_path):
    acc_paths, acc_ids, lid_paths, lid_ids, shap_paths, shap_ids = [], [], [], [], [], []
    for cond, base_acc in (("balanced", 0.8), ("imbalanced", 0.7)):
        for seed in (0, 42):
            acc_paths.append(_accuracy_run(tmp_path, f"acc_{cond}_{seed}", base_acc + seed / 1000, 0.5, True))
            acc_ids.append({"dataset": "xnli", "model": "mbert", "condition": cond, "seed": seed})
            lid_paths.append(_write(pd.DataFrame({"layer": ["last"], "accuracy_mean": [0.6], "accuracy_sd": [0.0],
                                                  "n_examples": [10], "n_languages": [2]}),
                                    tmp_path / f"lid_{cond}_{seed}.csv"))
            lid_ids.append({"dataset": "xnli", "model": "mbert", "condition": cond, "seed": seed})
    for seed, diff in ((0, 0.1), (42, 0.3)):
        shap_paths.append(_write(pd.DataFrame({
            "comparison": ["imbalanced"] * 2, "language": ["en", "fr"], "ratio_group": ["1:2:3", "3:2:1"],
            "class_index": [0, 0], "type": ["neutral", "neutral"], "mean_diff": [diff, -diff],
            "n_examples": [5, 5]}), tmp_path / f"shap_{seed}.csv"))
        shap_ids.append({"dataset": "xnli", "model": "mbert", "seed": seed})
    weights = _write(pd.DataFrame({"variant": ["imbalanced"], "scheme": ["per_language"], "language": ["en"],
                                   "label": [0], "weight": [2.0]}), tmp_path / "cw.csv")
    counts = _write(pd.DataFrame({"split": ["test"], "variant": ["balanced"], "language": ["en"], "label": [0],
                                  "n": [3]}), tmp_path / "counts.csv")
    informative = [_write(pd.DataFrame({"condition": ["balanced", "imbalanced"], "language": ["en", "en"],
                                        "class_index": [0, 0], "share_informative": [0.5, 0.3],
                                        "share_class_informative": [0.4, 0.2], "n_examples": [5, 5]}),
                          tmp_path / "inf0.csv"),
                   _write(pd.DataFrame({"condition": ["balanced"], "language": ["en"], "class_index": [0],
                                        "share_informative": [0.7], "share_class_informative": [0.6],
                                        "n_examples": [5]}), tmp_path / "inf42.csv")]
    reliance = [_write(pd.DataFrame({"language": ["en", "all"], "n": [10, 20], "accuracy": [0.5 + seed / 420] * 2,
                                     "tvd": [0.1 * (1 + seed / 42)] * 2, "n_over": [4, 8], "accuracy_over": [0.9, 0.9],
                                     "n_under": [4, 8], "accuracy_under": [0.3, 0.4], "reliance_gap": [0.6, 0.5],
                                     "over_classes": ["2", ""], "under_classes": ["0", ""]}),
                       tmp_path / f"rel_{cond}_{seed}.csv") for cond in ("balanced", "imbalanced") for seed in (0, 42)]
    names = ["accuracy", "lid", "shap", "class_weights", "counts", "reliance"]
    output = SimpleNamespace(**{n: str(tmp_path / "out" / f"{n}.csv") for n in names},
                             **{f"{n}_md": str(tmp_path / "out" / f"{n}.md") for n in names},
                             accuracy_fig=str(tmp_path / "out" / "accuracy.png"),
                             informative=str(tmp_path / "out" / "informative.csv"))
    report.report_job(
        job({"accuracy": acc_paths, "lid": lid_paths, "shap": shap_paths, "class_weights": [weights],
             "counts": [counts], "informative": informative, "reliance": reliance}, vars(output)),
        accuracy_ids=acc_ids, lid_ids=lid_ids, shap_ids=shap_ids, dataset_ids=[{"dataset": "xnli"}],
        figure_test_variants={"xnli": None})
    shap = pd.read_csv(output.shap).set_index("language")
    assert shap.loc["en", "mean_diff_mean"] == pytest.approx(0.2)
    assert shap.loc["fr", "mean_diff_sd"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert (shap["n_seeds"] == 2).all()
    assert pd.read_csv(output.class_weights).columns[0] == "dataset"
    assert pd.read_csv(output.counts)["dataset"].tolist() == ["xnli"]
    md = Path(output.accuracy_md).read_text()
    assert md.startswith("# Study A: test accuracy") and "| xnli" in md and "imbalanced" in md
    assert Path(output.lid_md).read_text().count("\n|") >= 3
    assert Path(output.accuracy_fig).stat().st_size > 1000
    rel = pd.read_csv(output.reliance)
    assert rel["language"].tolist() == ["all", "en", "all", "en"]  # "all" first in each block
    first = rel.iloc[0]
    assert first["tvd_mean"] == pytest.approx(np.mean([0.1, 0.2])) and first["n_seeds"] == 2
    assert first["accuracy_sd"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert "reliance_gap_mean" in rel.columns and "language reliance" in Path(output.reliance_md).read_text()
    inf = pd.read_csv(output.informative).set_index("condition")
    assert inf.loc["balanced", "share_informative_mean"] == pytest.approx(0.6)
    assert inf.loc["balanced", "share_class_informative_sd"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
    assert inf.loc["balanced", "n_seeds"] == 2 and inf.loc["imbalanced", "n_seeds"] == 1


def _figure_table() -> pd.DataFrame:
    rows = [(d, "m", c, v, "all", acc, 0.01, 2) for d, variants in (("xnli", ("balanced", "imbalanced", "original")),
                                                                   ("amazon", ("balanced", "imbalanced", "original")))
            for v in variants for c, acc in (("balanced", 0.8), ("imbalanced", 0.7))]
    return pd.DataFrame(rows, columns=["dataset", "model", "condition", "test_variant", "language",
                                       "accuracy_mean", "accuracy_sd", "n_seeds"])


def test_accuracy_figure_shows_the_papers_test_sets():
    table = _figure_table()
    wanted = {"xnli": ["balanced", "imbalanced"], "amazon": ["original"]}
    assert report.figure_panels(table, wanted) == [("xnli", "balanced"), ("xnli", "imbalanced"),
                                                   ("amazon", "original")]
    fig = report.accuracy_figure(table, wanted)
    assert [ax.get_title() for ax in fig.axes] == ["xnli (test: balanced)", "xnli (test: imbalanced)",
                                                   "amazon (test: original)"]
    # without a setting: the balanced test set
    assert report.figure_panels(table, {"xnli": None}) == [("xnli", "balanced"), ("amazon", "balanced")]
    assert report.figure_panels(table, {"amazon": "original"})[-1] == ("amazon", "original")
    with pytest.raises(LangskewError, match="dataset 'xnli' has no test variant 'held_out'"):
        report.figure_panels(table, {"xnli": ["held_out"]})


def test_paper_config_sets_the_figures_test_sets():
    from langskew.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    assert cfg["datasets"]["xnli"]["report_tests"] == ["balanced", "imbalanced"]
    assert cfg["datasets"]["amazon"]["report_tests"] == ["original"]
