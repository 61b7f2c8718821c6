"""Study A report: aggregation over seeds and the written tables/figure."""

from __future__ import annotations

import json
import math
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
    counts = _write(pd.DataFrame({"split": ["test"] + ["train"] * 6, "variant": ["balanced"] + ["imbalanced"] * 6,
                                  "language": ["en"] * 4 + ["fr"] * 3, "label": [0, 0, 1, 2, 0, 1, 2],
                                  "n": [3, 10, 20, 30, 30, 20, 10]}), tmp_path / "counts.csv")
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
    predictions = []
    for ident in acc_ids:  # balanced runs: all right; imbalanced: seed 0 misses one row, seed 42 two
        wrong = 0 if ident["condition"] == "balanced" else (1 if ident["seed"] == 0 else 2)
        labels = [0, 1, 2, 0, 1, 2]
        pred = pd.DataFrame({"test_variant": "balanced", "id": [str(i) for i in range(6)],
                             "language": ["en"] * 3 + ["fr"] * 3, "label": labels,
                             "prediction": [(y + 1) % 3 if i < wrong else y for i, y in enumerate(labels)]})
        for c in range(3):  # 0.5 on the predicted class, 0.25 on the others
            pred[f"prob_{c}"] = np.where(pred["prediction"] == c, 0.5, 0.25)
        path = tmp_path / f"pred_{ident['condition']}_{ident['seed']}.parquet"
        pred.to_parquet(path)
        predictions.append(str(path))
    metrics = []
    for ident in acc_ids:  # the imbalanced runs had a language adversary (kept-weights interval 0.6, 0.8)
        adversary = ({"adversary_accuracy": {"at_best_step": 0.6 if ident["seed"] == 0 else 0.8, "final": 0.9}}
                     if ident["condition"] == "imbalanced" else {})
        path = tmp_path / f"metrics_{ident['condition']}_{ident['seed']}.json"
        path.write_text(json.dumps({"model_selection": "val_loss", **adversary}))
        metrics.append(str(path))
    dfr_ids, dfr_predictions, dfr_metrics = [], [], []
    for seed, wrong in ((0, 0), (42, 1)):  # DFR of the imbalanced runs: seed 0 all right, seed 42 misses one row
        labels = [0, 1, 2, 0, 1, 2]
        pred = pd.DataFrame({"test_variant": "balanced", "id": [str(i) for i in range(6)],
                             "language": ["en"] * 3 + ["fr"] * 3, "label": labels,
                             "prediction": [(y + 1) % 3 if i < wrong else y for i, y in enumerate(labels)]})
        for c in range(3):
            pred[f"prob_{c}"] = np.where(pred["prediction"] == c, 0.6, 0.2)
        pred.to_parquet(tmp_path / f"dfr_{seed}.parquet")
        (tmp_path / f"dfr_{seed}.json").write_text(json.dumps({"model_selection": "val_loss; C: worst_group_accuracy"}))
        dfr_ids.append({"dataset": "xnli", "model": "mbert", "condition": "imbalanced_dfr", "seed": seed})
        dfr_predictions.append(str(tmp_path / f"dfr_{seed}.parquet"))
        dfr_metrics.append(str(tmp_path / f"dfr_{seed}.json"))
    names = ["accuracy", "lid", "shap", "class_weights", "counts", "reliance", "mitigation"]
    output = SimpleNamespace(**{n: str(tmp_path / "out" / f"{n}.csv") for n in names},
                             **{f"{n}_md": str(tmp_path / "out" / f"{n}.md") for n in names},
                             accuracy_fig=str(tmp_path / "out" / "accuracy.png"),
                             mitigation_fig=str(tmp_path / "out" / "mitigation.png"),
                             informative=str(tmp_path / "out" / "informative.csv"))
    report.report_job(
        job({"accuracy": acc_paths, "lid": lid_paths, "shap": shap_paths, "class_weights": [weights],
             "counts": [counts], "informative": informative, "reliance": reliance, "predictions": predictions,
             "metrics": metrics, "dfr_predictions": dfr_predictions, "dfr_metrics": dfr_metrics},
            vars(output)),
        accuracy_ids=acc_ids, lid_ids=lid_ids, shap_ids=shap_ids, dataset_ids=[{"dataset": "xnli"}],
        figure_test_variants={"xnli": None}, mitigation_baseline="imbalanced", n_classes={"xnli": 3},
        dfr_ids=dfr_ids)
    ranking = pd.read_csv(output.mitigation).set_index(["metric", "condition"])
    # balanced: accuracy 1 in both seeds; imbalanced: 5/6 and 4/6; paired differences 1/6, 2/6
    assert ranking.loc[("accuracy", "balanced"), "rank"] == 1
    assert ranking.loc[("accuracy", "imbalanced"), "mean"] == pytest.approx(0.75)
    assert ranking.loc[("accuracy", "balanced"), "diff_vs_baseline"] == pytest.approx(0.25)
    # worst group of imbalanced seed 42: the en rows of classes 0 and 1 are wrong -> 0
    assert ranking.loc[("worst_group_accuracy", "imbalanced"), "mean"] == pytest.approx(0.0)
    assert ranking.loc[("lid_accuracy", "balanced"), "mean"] == pytest.approx(0.6)
    assert ranking.loc[("reliance_gap", "imbalanced"), "mean"] == pytest.approx(0.5)
    assert ranking.loc[("shap_neutral_abs_diff", "imbalanced"), "mean"] == pytest.approx(0.2)
    assert ranking.loc[("adversary_accuracy", "imbalanced"), "mean"] == pytest.approx(0.7)
    assert ("adversary_accuracy", "balanced") not in ranking.index
    posthoc = ranking.loc[("accuracy", "imbalanced_posthoc_logit_adjustment")]  # derived from the baseline's runs
    assert posthoc["n_seeds"] == 2 and posthoc["n_pairs"] == 2 and 0 <= posthoc["mean"] <= 1
    derived = ["imbalanced_posthoc_logit_adjustment", "imbalanced_dfr"]
    assert (ranking.drop(index=derived, level="condition")["model_selection"] == "val_loss").all()
    assert (ranking.xs("imbalanced_posthoc_logit_adjustment", level="condition")["model_selection"]
            == "val_loss (baseline's checkpoint)").all()
    dfr = ranking.loc[("accuracy", "imbalanced_dfr")]  # accuracies 6/6 and 5/6, paired with 5/6 and 4/6
    assert dfr["mean"] == pytest.approx(11 / 12) and dfr["diff_vs_baseline"] == pytest.approx(1 / 6)
    assert dfr["n_pairs"] == 2 and dfr["model_selection"] == "val_loss; C: worst_group_accuracy"
    assert ("lid_accuracy", "imbalanced_dfr") not in ranking.index  # no probe: DFR keeps the baseline's encoder
    lid = pd.read_csv(output.lid).set_index("condition")  # the adversary beside the probe
    assert lid.loc["imbalanced", "adversary_accuracy_mean"] == pytest.approx(0.7)
    assert lid.loc["imbalanced", "adversary_accuracy_final_mean"] == pytest.approx(0.9)
    assert pd.isna(lid.loc["balanced", "adversary_accuracy_mean"])
    assert Path(output.mitigation_fig).stat().st_size > 1000 and "paired t-test" in Path(output.mitigation_md).read_text()
    shap = pd.read_csv(output.shap).set_index("language")
    assert shap.loc["en", "mean_diff_mean"] == pytest.approx(0.2)
    assert shap.loc["fr", "mean_diff_sd"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    assert (shap["n_seeds"] == 2).all()
    assert pd.read_csv(output.class_weights).columns[0] == "dataset"
    assert set(pd.read_csv(output.counts)["dataset"]) == {"xnli"}
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


@pytest.mark.parametrize("n_panels", [1, 3])
def test_accuracy_figure_legend_sits_below_every_panel_and_keeps_one_colour_per_condition(n_panels):
    """Eight conditions with long names: the one legend overlaps no panel (bars, ticks, titles)
    and lies inside the figure; a condition missing from a panel does not shift the others' colours."""
    from matplotlib.colors import to_rgba
    from matplotlib.container import BarContainer

    conditions = ["balanced", "imbalanced", *(f"imbalanced_{m}" for m in (
        "adversary", "group_dro", "logit_adjustment", "mask_entropy_1", "plw", "subsample"))]
    variants = ("balanced", "imbalanced", "original")[:n_panels]
    rows = [("xnli", "m", c, v, "all", 0.5 + 0.05 * i, 0.02, 2) for v in variants for i, c in enumerate(conditions)
            if not (n_panels > 1 and v == variants[-1] and c == "imbalanced")]
    table = pd.DataFrame(rows, columns=["dataset", "model", "condition", "test_variant", "language",
                                        "accuracy_mean", "accuracy_sd", "n_seeds"])
    fig = report.accuracy_figure(table, {"xnli": list(variants)})
    renderer = fig.canvas.get_renderer()
    legend = fig.legends[0].get_window_extent(renderer)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == conditions
    assert legend.x0 >= 0 and legend.x1 <= fig.bbox.width and legend.y0 >= 0
    for ax in fig.axes:
        assert not ax.get_tightbbox(renderer).overlaps(legend)
    colours = {}
    for i, ax in enumerate(fig.axes):
        bars = [c for c in ax.containers if isinstance(c, BarContainer)]
        assert len(bars) == (7 if n_panels > 1 and i == n_panels - 1 else 8)
        for bar in bars:
            colours.setdefault(bar.get_label(), set()).add(to_rgba(bar.patches[0].get_facecolor()))
    assert sorted(colours) == sorted(conditions) and all(len(c) == 1 for c in colours.values())
    assert len({c.pop() for c in colours.values()}) == 8


def test_paper_config_sets_the_figures_test_sets():
    from langskew.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "config.yaml")
    assert cfg["datasets"]["xnli"]["report_tests"] == ["balanced", "imbalanced"]
    assert cfg["datasets"]["amazon"]["report_tests"] == ["original"]


# -- mitigation ranking ------------------------------------------------------------------------
def test_t_interval_and_paired_test_by_hand():
    import math

    from langskew.study_a.report import paired_test, t_interval

    # [1, 2, 3]: mean 2, sd 1, t_{0.975, 2} = 4.302653 -> 2 -+ 4.302653 / sqrt(3) = 2 -+ 2.484138
    mean, low, high = t_interval([1.0, 2.0, 3.0])
    assert (mean, low, high) == pytest.approx((2.0, 2 - 2.484138, 2 + 2.484138), abs=1e-5)
    assert math.isnan(t_interval([0.5])[1])
    # differences [1, 1, 3]: mean 5/3, sd sqrt(4/3), t = (5/3) / (sqrt(4/3)/sqrt(3)) = 2.5; df 2:
    # p = 2 (1 - F(2.5)), F(t) = 1/2 + t / (2 sqrt(2 + t^2)) -> p = 1 - 2.5 / sqrt(8.25) = 0.1296094
    diff, t, p, n = paired_test({0: 1.0, 1: 2.0, 2: 4.0, 9: 7.0}, {0: 0.0, 1: 1.0, 2: 1.0})
    assert (diff, t, p, n) == pytest.approx((5 / 3, 2.5, 1 - 2.5 / math.sqrt(8.25), 3), abs=1e-6)
    assert math.isnan(paired_test({0: 1.0}, {0: 0.5})[2])


def test_prediction_metrics_by_hand():
    from langskew.study_a.report import prediction_metrics

    pred = pd.DataFrame({"test_variant": "balanced", "language": ["en", "en", "en", "fr", "fr", "fr"],
                         "label": [0, 0, 1, 0, 1, 1], "prediction": [0, 0, 0, 0, 1, 0]})
    got = prediction_metrics(pred, 2).set_index("metric")["value"]
    # accuracy 4/6; groups: en-0 2/2, en-1 0/1, fr-0 1/1, fr-1 1/2 -> worst 0; languages en 2/3, fr 2/3
    # F1: class 0: tp 3, fp 2, fn 0 -> 6/8; class 1: tp 1, fp 0, fn 2 -> 2/4; macro 0.625
    # en: class 0 tp 2, fp 1 -> 4/5, class 1 never predicted -> 0: 0.4; fr: both classes 2/3
    assert got.to_dict() == pytest.approx({"accuracy": 4 / 6, "macro_f1": 0.625, "worst_group_accuracy": 0.0,
                                           "worst_language_accuracy": 2 / 3, "macro_f1[en]": 0.4,
                                           "macro_f1[fr]": 2 / 3})


def test_mitigation_table_ranks_and_pairs_with_the_baseline():
    from scipy import stats

    from langskew.study_a.report import mitigation_table

    rows = []
    for cond, vals in {"imbalanced": [0.5, 0.6, 0.55], "dro": [0.7, 0.65, 0.8], "mask": [0.4, 0.5, 0.52]}.items():
        for seed, v in zip([0, 1, 2], vals):
            rows.append(dict(dataset="d", model="m", condition=cond, seed=seed, metric="worst_group_accuracy",
                             test_variant="balanced", value=v))
            rows.append(dict(dataset="d", model="m", condition=cond, seed=seed, metric="lid_accuracy",
                             test_variant="", value=v))
    table = mitigation_table(pd.DataFrame(rows), "imbalanced")
    wga = table[table["metric"] == "worst_group_accuracy"]
    assert wga["condition"].tolist() == ["dro", "imbalanced", "mask"] and wga["rank"].tolist() == [1, 2, 3]
    lid = table[table["metric"] == "lid_accuracy"]
    assert lid["condition"].tolist() == ["mask", "imbalanced", "dro"]  # lower is better
    dro = wga.set_index("condition").loc["dro"]
    ref = stats.ttest_rel([0.7, 0.65, 0.8], [0.5, 0.6, 0.55])
    assert dro["p_value"] == pytest.approx(ref.pvalue) and dro["t"] == pytest.approx(ref.statistic)
    assert dro["diff_vs_baseline"] == pytest.approx(0.5 / 3) and dro["n_pairs"] == 3
    assert pd.isna(wga.set_index("condition").loc["imbalanced", "p_value"])


def test_weighted_prediction_metrics_match_scikit_learn_on_resampled_rows():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(3)
    n = 120
    pred = pd.DataFrame({"language": rng.choice(["de", "en", "zh"], n), "label": rng.integers(0, 4, n),
                         "prediction": rng.integers(0, 4, n)})
    counts = report.resample_counts(n, 5, np.random.default_rng(0))
    assert (counts.sum(axis=1) == n).all()
    got = report.weighted_prediction_metrics(counts, pred, 4)
    for b, w in enumerate(counts):
        assert got["accuracy"][b] == pytest.approx(accuracy_score(pred["label"], pred["prediction"], sample_weight=w))
        assert got["macro_f1"][b] == pytest.approx(f1_score(pred["label"], pred["prediction"], labels=range(4),
                                                            average="macro", zero_division=0, sample_weight=w))
        rows = pred.loc[pred.index.repeat(w)]  # the resample written out row by row
        correct = rows["label"] == rows["prediction"]
        assert got["worst_group_accuracy"][b] == pytest.approx(correct.groupby([rows["language"],
                                                                                rows["label"]]).mean().min())
        assert got["worst_language_accuracy"][b] == pytest.approx(correct.groupby(rows["language"]).mean().min())
        zh = rows[rows["language"] == "zh"]
        assert got["macro_f1[zh]"][b] == pytest.approx(f1_score(zh["label"], zh["prediction"], labels=range(4),
                                                                average="macro", zero_division=0))


def test_holm_by_hand():
    # m = 3 (the NaN is not a test): sorted 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, 1 x 0.04 = 0.03, 0.06, 0.04,
    # then running maximum -> 0.03, 0.06, 0.06
    got = report.holm([0.01, 0.04, np.nan, 0.03])
    assert got[[0, 1, 3]] == pytest.approx([0.03, 0.06, 0.06]) and np.isnan(got[2])
    assert report.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert np.isnan(report.holm([np.nan])).all()


def test_accuracy_intervals_stay_in_the_unit_interval():
    # [0.9, 1.0]: mean 0.95, sd / sqrt(2) = 0.05, t_{0.975, 1} = 12.706205 -> 0.95 -+ 0.635310
    mean, low, high = report.t_interval([0.9, 1.0], bounds=(0.0, 1.0))
    assert (mean, low, high) == pytest.approx((0.95, 0.95 - 0.635310, 1.0), abs=1e-6)
    rows = [dict(dataset="d", model="m", condition=c, seed=s, metric=metric, test_variant="balanced", value=v)
            for metric in ("worst_group_accuracy", "reliance_gap")
            for c, vals in (("a", [0.0, 0.3]), ("b", [0.95, 1.0]))
            for s, v in zip((0, 1), vals)]
    table = report.mitigation_table(pd.DataFrame(rows), "a")
    wga = table[table["metric"] == "worst_group_accuracy"].set_index("condition")
    assert wga.loc["a", "t_ci_low"] == 0.0 and wga.loc["b", "t_ci_high"] == 1.0
    gap = table[table["metric"] == "reliance_gap"].set_index("condition")
    assert gap.loc["a", "t_ci_low"] < 0  # a gap may be negative: clipped to [-1, 1] only
    assert report.metric_range("macro_f1[en]") == (0.0, 1.0)


def _predictions(correct_by_condition: dict, n: int = 400, seeds=(0, 1)) -> dict:
    rng = np.random.default_rng(7)
    out = {}
    for seed in seeds:
        labels = rng.integers(0, 2, n)
        for cond, p in correct_by_condition.items():
            right = rng.random(n) < p if isinstance(p, float) else np.asarray(p(n), dtype=bool)
            out[("d", "m", cond, seed)] = pd.DataFrame({
                "test_variant": "balanced", "id": [f"r{i}" for i in range(n)],
                "language": np.where(np.arange(n) % 2 == 0, "en", "fr"), "label": labels,
                "prediction": np.where(right, labels, 1 - labels)})
    return out


def test_bootstrap_interval_matches_the_binomial_standard_error():
    # accuracy p over n rows per seed, mean of two seeds: sd sqrt(p (1 - p) / n) / sqrt(2)
    preds = _predictions({"base": 0.7, "other": 0.7})
    table = report.bootstrap_table(preds, {"d": 2}, "base", n_boot=2000, seed=1).set_index(["condition", "metric"])
    row = table.loc[("base", "accuracy")]
    point = np.mean([(df["label"] == df["prediction"]).mean() for (_, _, c, _), df in preds.items() if c == "base"])
    expected_half = 1.96 * math.sqrt(point * (1 - point) / 400) / math.sqrt(2)
    assert row["boot_ci_low"] < point < row["boot_ci_high"]
    assert (row["boot_ci_high"] - row["boot_ci_low"]) / 2 == pytest.approx(expected_half, rel=0.15)
    assert row["n_test_rows"] == 400 and row["n_boot"] == 2000
    assert np.isnan(row["boot_p"])  # the baseline is not tested against itself
    again = report.bootstrap_table(preds, {"d": 2}, "base", n_boot=2000, seed=1).set_index(["condition", "metric"])
    assert again.loc[("other", "accuracy"), "boot_p"] == table.loc[("other", "accuracy"), "boot_p"]  # seeded


def test_bootstrap_pairs_the_rows_of_the_conditions():
    # "same" predicts exactly what the baseline predicts: every paired difference is 0, p = 1;
    # "right" is right on every row and the baseline wrong on every row: the difference is 1 in every resample
    preds = _predictions({"base": lambda n: np.zeros(n), "right": lambda n: np.ones(n)})
    preds.update({("d", "m", "same", s): preds[("d", "m", "base", s)].copy() for s in (0, 1)})
    table = report.bootstrap_table(preds, {"d": 2}, "base", n_boot=300).set_index(["condition", "metric"])
    same = table.loc[("same", "accuracy")]
    assert (same["boot_diff_low"], same["boot_diff_high"], same["boot_p"]) == (0.0, 0.0, 1.0)
    right = table.loc[("right", "accuracy")]
    assert (right["boot_diff_low"], right["boot_diff_high"]) == (1.0, 1.0)
    assert right["boot_p"] == pytest.approx(2 / 301)
    shuffled = dict(preds)
    shuffled[("d", "m", "same", 0)] = preds[("d", "m", "same", 0)].iloc[::-1]  # row order does not matter
    again = report.bootstrap_table(shuffled, {"d": 2}, "base", n_boot=300).set_index(["condition", "metric"])
    assert again.loc[("same", "accuracy"), "boot_p"] == 1.0
    broken = dict(preds)
    broken[("d", "m", "same", 0)] = preds[("d", "m", "same", 0)].iloc[1:]
    with pytest.raises(LangskewError, match="other test rows"):
        report.bootstrap_table(broken, {"d": 2}, "base", n_boot=10)


def test_mitigation_table_holm_adjusts_across_conditions_and_the_figure_explains_markers():
    preds = _predictions({"base": 0.6, "better": 0.8, "same": 0.6, "worse": 0.4})
    per_run = report.collect_mitigation_runs(preds, {"d": 2}, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    boot = report.bootstrap_table(preds, {"d": 2}, "base", n_boot=400)
    table = report.mitigation_table(per_run, "base", bootstrap=boot)
    acc = table[(table["metric"] == "accuracy")].set_index("condition")
    tested = acc.drop(index="base")
    assert tested["boot_p_holm"].to_numpy() == pytest.approx(report.holm(tested["boot_p"].to_numpy()))
    assert (tested["boot_p_holm"] >= tested["boot_p"]).all()
    assert acc.loc["better", "boot_diff_low"] > 0 and acc.loc["worse", "boot_diff_high"] < 0
    assert set(table["metric"]) >= {"macro_f1[en]", "macro_f1[fr]"}
    assert table[["t_ci_low", "boot_ci_low"]].min().min() >= 0 and table[["t_ci_high", "boot_ci_high"]].max().max() <= 1
    fig = report.mitigation_figure(table, None, "base")
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    assert any(label.startswith("filled: Holm-adjusted bootstrap p < 0.05 against base") for label in labels)


def test_lid_table_names_the_representation_and_features(tmp_path):
    def probe_csv(name, norms):
        return _write(pd.DataFrame({"layer": ["last", "0"], "representation": ["pooler output", "token mean"],
                                    "features": ["raw", "standardised"], "feature_norm": norms, "C": [1e-4, 1e-4],
                                    "accuracy_mean": [0.9, 0.5], "accuracy_sd": [0.0, 0.0], "n_examples": [10, 10],
                                    "n_languages": [2, 2]}), tmp_path / f"{name}.csv")

    ids = [{"dataset": "xnli", "model": "mbert", "condition": "balanced", "seed": s} for s in (0, 1)]
    per_run = report.stack_runs([probe_csv("a", [10.0, 1.0]), probe_csv("b", [12.0, 3.0])], ids,
                                ["dataset", "model", "condition", "seed"])
    table = report.lid_table(per_run).set_index("layer")
    assert table.loc["0", "representation"] == "token mean" and table.loc["0", "features"] == "standardised"
    assert table.loc["last", "features"] == "raw" and table.loc["0", "feature_norm_mean"] == pytest.approx(2.0)
    assert table.loc["last", "accuracy_mean"] == pytest.approx(0.9)


def test_posthoc_condition_adjusts_the_baselines_stored_probabilities_by_hand():
    counts = pd.DataFrame({"dataset": "d", "split": ["train"] * 4 + ["validation"], "variant": "imbalanced",
                           "language": ["en", "en", "fr", "fr", "en"], "label": [0, 1, 0, 1, 0],
                           "n": [30, 10, 10, 30, 999]})
    pred = pd.DataFrame({"test_variant": "balanced", "id": ["a", "b"], "language": ["en", "fr"], "label": [1, 0],
                         "prediction": [0, 1], "prob_0": [0.6, 0.4], "prob_1": [0.4, 0.6]})
    preds = {("d", "m", "imbalanced", 0): pred, ("d", "m", "other", 0): pred}
    got = report.posthoc_predictions(preds, "imbalanced", counts)
    assert list(got) == [("d", "m", "imbalanced_posthoc_logit_adjustment", 0)]
    # en priors 0.75 / 0.25 (validation rows not counted): log .6 - log .75 = 0.0645 < log .4 - log .25 = 0.4700 -> 1
    # fr priors 0.25 / 0.75: log .4 - log .25 = 0.4700 > log .6 - log .75 = 0.0645 -> 0
    adjusted = got[("d", "m", "imbalanced_posthoc_logit_adjustment", 0)]
    assert adjusted["prediction"].tolist() == [1, 0] and adjusted["label"].tolist() == [1, 0]
    assert report.posthoc_predictions(preds, None, counts) == {}
    with pytest.raises(LangskewError, match="no imbalanced training counts of dataset 'd'"):
        report.posthoc_predictions(preds, "imbalanced", counts.assign(dataset="e"))
