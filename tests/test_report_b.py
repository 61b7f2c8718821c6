"""Study B report tables on constructed inputs: our numbers beside the published ones."""

import math

import pandas as pd
import pytest

from langskew.study_b import report
from langskew.study_b.grid import expand_runs

CFG = {
    "languages": {"en": {}, "fr": {}},
    "sizes": {"small": {"n_layer": 1, "d_model": 8, "n_head": 1}},
    "train": {"base_steps": 100},
    "grid": [
        {"name": "split", "kind": "clone", "sizes": ["small"], "scales": [1, 2], "p_l2": [0.5, 0.1]},
        {"name": "sched", "kind": "clone", "sizes": ["small"], "schedules": ["0.1_0.9"]},
        {"name": "enfr", "kind": "real", "sizes": ["small"], "vocab_modes": ["disjoint", "anchored"],
         "p_l2": [0.1, 0.3]},
        {"name": "mono", "kind": "mono", "sizes": ["small"], "languages": ["en", "fr"], "fractions": [0.1, 0.25]},
    ],
}


@pytest.fixture()
def runs():
    return list(expand_runs(CFG).values())


def _ppl(runs):
    return {r["id"]: {name: 20.0 + i for i, name in enumerate(
        ["L1", "L2"] if r["kind"] == "clone" else r["base_languages"])} for r in runs}


def test_perplexity_table_fills_published_where_known(runs):
    table = report.perplexity_table(runs, _ppl(runs)).set_index(["run", "language"])
    assert table.loc[("small-1x-clone2-p0.10", "L2"), "published_ppl"] == 32.81
    assert table.loc[("small-2x-clone2-p0.50", "L1"), "published_ppl"] == 23.35
    assert table.loc[("small-1x-sched-0.1_0.9", "L2"), "published_ppl"] == 24.44
    assert table.loc[("small-mono-fr-f0.1", "fr"), "published_ppl"] == 34.06
    assert table.loc[("small-1x-enfr-anchored-p0.10", "fr"), "published_ppl"] == 29.04
    assert math.isnan(table.loc[("small-1x-enfr-anchored-p0.30", "fr"), "published_ppl"])  # not in the paper
    assert math.isnan(table.loc[("small-mono-en-f0.25", "en"), "published_ppl"])
    assert table.loc[("small-1x-clone2-p0.10", "L1"), "p_l2"] == pytest.approx(0.1)
    assert table.loc[("small-1x-clone2-p0.10", "L2"), "ppl"] == 21.0


def test_token_efficiency_published_teff(runs):
    fits = pd.DataFrame([
        {"run": "small-1x-clone2-p0.10", "language": "L2", "ppl": 30.0, "tokens_seen": 1e5, "MLTE": 2e5,
         "TEff": 2.0, "MLPE": 35.0, "c": 0.1, "a": 0.05, "b": 0.5},
        {"run": "small-1x-enfr-disjoint-p0.30", "language": "fr", "ppl": 30.0, "tokens_seen": 1e5, "MLTE": 1e5,
         "TEff": 1.0, "MLPE": 30.0, "c": 0.1, "a": 0.05, "b": 0.5},
    ])
    table = report.token_efficiency_table(runs, fits)
    assert table["published_TEff"].iloc[0] == 2.076 and math.isnan(table["published_TEff"].iloc[1])
    assert table["TEff"].tolist() == [2.0, 1.0]
    assert {"TEff_lo", "TEff_hi", "MLPE_lo", "MLPE_hi", "fit_reliable", "fit_at_bound", "budget_tokens"} <= set(table)
    bad = fits.assign(run="nope")
    with pytest.raises(Exception, match="nope"):
        report.token_efficiency_table(runs, bad)


def test_alignment_tables(runs):
    rep = pd.DataFrame({"layer": [1, 2], "cosine_mean": [0.5, 0.4], "cosine_sd": [0.1, 0.1], "n": [8, 8]})
    grad = pd.DataFrame({"parameter": ["blocks.0.w", "wte.weight", "mean", "mean_all_tensors"],
                         "cosine_mean": [0.3, 0.0, 0.3, 0.15], "n": [8, 8, 8, 8]})
    ids = ["small-1x-clone2-p0.50", "small-1x-enfr-disjoint-p0.10"]
    rt = report.representation_table(runs, {i: rep for i in ids})
    first = rt[rt["run"] == ids[0]]
    assert first["published_cosine"].tolist() == [0.55, 0.79]
    assert rt[rt["run"] == ids[1]]["published_cosine"].isna().all()
    gt = report.gradient_table(runs, {i: grad for i in ids})
    assert gt["mean_cosine"].tolist() == [0.3, 0.3]  # the blocks' mean, not the all-tensor one
    assert gt["mean_cosine_all_tensors"].tolist() == [0.15, 0.15]
    assert gt["published_mean_cosine"].iloc[0] == 0.0719 and math.isnan(gt["published_mean_cosine"].iloc[1])


def test_en_fr_table(runs):
    table = report.real_pair_table(runs, _ppl(runs))
    assert list(table["p_fr"]) == pytest.approx([0.1, 0.1, 0.3, 0.3])
    assert list(table["vocab_mode"]) == ["anchored", "disjoint", "anchored", "disjoint"]
    row = table.iloc[1]
    assert (row["ppl_en"], row["ppl_fr"], row["published_ppl_en"], row["published_ppl_fr"]) == (20.0, 21.0, 22.47, 31.89)


def test_report_job_writes_tables_and_figures(runs, tmp_path):
    from langskew.io import write_json
    from helpers import job

    ppl = _ppl(runs)
    ppl_files = []
    for r in runs:
        write_json(ppl[r["id"]], tmp_path / f"{r['id']}.json")
        ppl_files.append(str(tmp_path / f"{r['id']}.json"))
    bilingual = [r["id"] for r in runs if r["kind"] != "mono"]
    rep_files, grad_files = [], []
    for rid in bilingual:
        pd.DataFrame({"layer": [1], "cosine_mean": [0.5], "cosine_sd": [0.1], "n": [4]}).to_csv(tmp_path / f"{rid}.r.csv", index=False)
        pd.DataFrame({"parameter": ["mean", "mean_all_tensors"], "cosine_mean": [0.3, 0.2], "n": [4, 4]}).to_csv(tmp_path / f"{rid}.g.csv", index=False)
        rep_files.append(str(tmp_path / f"{rid}.r.csv"))
        grad_files.append(str(tmp_path / f"{rid}.g.csv"))
    out = {}
    for name in report.TITLES:
        out[name] = str(tmp_path / "rep" / f"{name}.csv")
        out[f"{name}_md"] = str(tmp_path / "rep" / f"{name}.md")
    out["perplexity_vs_p"] = str(tmp_path / "rep" / "perplexity_vs_p.png")
    out["alignment_layers"] = str(tmp_path / "rep" / "alignment_layers.png")
    report.report_job(job({"perplexity": ppl_files, "fits": [], "representation": rep_files, "gradient": grad_files},
                          out), runs=runs, bilingual=bilingual)
    md = (tmp_path / "rep" / "perplexity.md").read_text()
    assert "32.81" in md and "small-1x-clone2-p0.10" in md
    assert (tmp_path / "rep" / "perplexity_vs_p.png").stat().st_size > 0
    assert len(pd.read_csv(out["representation_alignment"])) == len(bilingual)


def test_report_carries_data_passes_and_warns_where_a_stream_repeats(runs, tmp_path):
    from langskew.io import write_json
    from helpers import job

    ppl = _ppl(runs)
    ppl_files, metric_files = [], []
    for r in runs:
        write_json(ppl[r["id"]], tmp_path / f"{r['id']}.json")
        ppl_files.append(str(tmp_path / f"{r['id']}.json"))
        names = ["L1", "L2"] if r["kind"] == "clone" else r["base_languages"]
        passes = 2.5 if r["id"] == "small-2x-clone2-p0.10" else 0.4  # one run read its stream 2.5 times
        write_json({"data_passes": {n: passes for n in names}}, tmp_path / f"{r['id']}.m.json")
        metric_files.append(str(tmp_path / f"{r['id']}.m.json"))
    out = {}
    for name in report.TITLES:
        out[name] = str(tmp_path / "rep" / f"{name}.csv")
        out[f"{name}_md"] = str(tmp_path / "rep" / f"{name}.md")
    out["perplexity_vs_p"] = str(tmp_path / "rep" / "perplexity_vs_p.png")
    out["alignment_layers"] = str(tmp_path / "rep" / "alignment_layers.png")
    report.report_job(job({"perplexity": ppl_files, "metrics": metric_files, "fits": [], "representation": [],
                           "gradient": []}, out), runs=runs, bilingual=[])
    table = pd.read_csv(out["perplexity"])
    assert set(table.loc[table["run"] == "small-2x-clone2-p0.10", "data_passes"]) == {2.5}
    assert set(table.loc[table["run"] != "small-2x-clone2-p0.10", "data_passes"]) == {0.4}
    md = (tmp_path / "rep" / "perplexity.md").read_text()
    assert ("Warning: 2 of 22 rows trained on repeated data" in md and "small-2x-clone2-p0.10/L1 2.50" in md
            and "small-2x-clone2-p0.10/L2 2.50" in md)
    assert "data_passes" in report.TEFF_COLUMNS
    assert report.repetition_warning(table[table["data_passes"] < 1]) == ""
