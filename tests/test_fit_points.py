"""Which monolingual runs the scaling fit uses (study_b.eval.fit_points) and the TEff columns
under all points and under the paper table's points (0.1x, 0.5x, 1x) side by side."""

from __future__ import annotations

import copy
import json
import math

import pandas as pd
import pytest

from helpers import job, rejected
from langskew.config import load_config
from langskew.errors import LangskewError
from langskew.study_b import fit
from langskew.study_b.report import token_efficiency_table

# the paper table's three runs lie on curve A; the other runs lie well above it (1/PPL 8% higher),
# so that a fit of all points differs from curve A
C, A, B = 0.05, 0.01, 0.5
FRACTIONS = (0.1, 0.25, 0.5, 1.0, 2.0)
OFF_CURVE = {0.25: 1.08, 2.0: 1.08}


def curve(x: float) -> float:
    """1/PPL of curve A, written out: c - a x^-b."""
    return C - A * x ** -B


MONO = [{"id": f"m{f:g}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": round(10 * f),
         "language": "en", "base_languages": ["en"]} for f in FRACTIONS]
MONO_PPL = [{"en": 1.0 / (curve(f) * OFF_CURVE.get(f, 1.0))} for f in FRACTIONS]
TARGET = [{"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 10, "n_languages": 2,
           "base_languages": ["en"], "schedule": [[0.75, 0.25]], "label": "t"}]
# L2 saw 250 tokens (budget 1,000 = 10 steps x 4 x 25) and reached curve A's PPL at 0.4x
TARGET_PPL = [{"L1": 1.0 / curve(0.9), "L2": 1.0 / curve(0.4)}]


def table(points_used="all"):
    return fit.fit_table(MONO, MONO_PPL, TARGET, TARGET_PPL, batch_size=4, context=25,
                         points_used=points_used).set_index("language")


def test_select_points_picks_the_paper_table_runs_within_rounding():
    pts = [(0.09997, 0.01, "a"), (0.25, 0.02, "b"), (0.5, 0.03, "c"), (1.0, 0.04, "d"), (2.0, 0.05, "e")]
    assert [p[2] for p in fit.select_points(pts, "paper_table")] == ["a", "c", "d"]
    assert [p[2] for p in fit.select_points(pts, [2, 0.25, 1])] == ["b", "d", "e"]
    assert fit.select_points(pts, "all") == pts
    with pytest.raises(LangskewError, match="x=0.3"):
        fit.select_points(pts, [0.3, 0.5, 1])
    with pytest.raises(LangskewError, match="at least 3"):
        fit.select_points(pts, [0.5, 1])


def test_teff_under_the_paper_points_is_that_of_their_curve():
    """The paper table's points fit curve A exactly: L2 needs 400 monolingual tokens, TEff 400 / 250."""
    rows = table("paper_table")
    assert rows.loc["L2", "TEff"] == pytest.approx(400 / 250, rel=1e-4)
    assert rows.loc["L2", "n_mono_points"] == 3
    assert (rows["fit_points"] == "paper_table").all()
    assert rows.loc["L2", "c"] == pytest.approx(C, rel=1e-4) and rows.loc["L2", "b"] == pytest.approx(B, rel=1e-3)


def test_both_point_sets_side_by_side_whichever_is_chosen():
    every, paper = table("all"), table("paper_table")
    for rows in (every, paper):
        assert rows.loc["L2", "TEff_paper_points"] == pytest.approx(400 / 250, rel=1e-4)
        assert rows.loc["L2", "TEff_all_points"] == pytest.approx(every.loc["L2", "TEff"], rel=1e-9)
    assert every.loc["L2", "n_mono_points"] == 5
    # the off-curve points move the fit: the two TEff differ by more than rounding
    assert abs(every.loc["L2", "TEff_all_points"] - 1.6) > 0.05
    assert paper.loc["L1", "TEff"] == pytest.approx(900 / 750, rel=1e-4)


def test_paper_column_is_empty_without_the_paper_runs():
    mono = [m for m in MONO if m["scale"] != 0.1]
    ppl = [p for m, p in zip(MONO, MONO_PPL) if m["scale"] != 0.1]
    rows = fit.fit_table(mono, ppl, TARGET, TARGET_PPL, batch_size=4, context=25, method="bounded")
    assert rows["TEff_paper_points"].isna().all() and rows["TEff_all_points"].notna().all()
    with pytest.raises(LangskewError, match="x=0.1"):
        fit.fit_table(mono, ppl, TARGET, TARGET_PPL, batch_size=4, context=25, points_used="paper_table")


def test_fit_job_takes_the_point_set_and_writes_only_its_points(tmp_path):
    mono_files, target_file = [], tmp_path / "t.json"
    for m, p in zip(MONO, MONO_PPL):
        mono_files.append(tmp_path / f"{m['id']}.json")
        mono_files[-1].write_text(json.dumps(p))
    target_file.write_text(json.dumps(TARGET_PPL[0]))
    out, points = tmp_path / "fit.csv", tmp_path / "points.csv"
    fit.fit_job(job({"mono": [str(f) for f in mono_files], "target": [str(target_file)]},
                    {"table": str(out), "points": str(points)}),
                mono_ids=MONO, target_runs=TARGET, train={"batch_size": 4, "context": 25},
                fit={"points": [0.1, 0.5, 1.0]})
    written = pd.read_csv(out).set_index("language")
    assert written.loc["L2", "TEff"] == pytest.approx(1.6, rel=1e-4)
    assert list(pd.read_csv(points)["run"]) == ["m0.1", "m0.5", "m1"]


def test_report_carries_both_columns_next_to_teff():
    rows = table("all").reset_index()
    teff = token_efficiency_table(TARGET, rows)
    cols = list(teff.columns)
    assert cols[cols.index("TEff") + 1:cols.index("TEff") + 3] == ["TEff_all_points", "TEff_paper_points"]
    assert teff.set_index("language").loc["L2", "TEff_paper_points"] == pytest.approx(1.6, rel=1e-4)
    assert not math.isnan(teff.set_index("language").loc["L2", "TEff_all_points"])


def test_config_names_a_point_set_the_grid_lacks():
    demo = load_config("config.yaml", "presets/demo.yaml", validate=False)
    msg = rejected(demo, lambda c: c["study_b"].setdefault("eval", {}).update(fit_points="paper_table"))
    assert "config key 'study_b.eval.fit_points'" in msg and "x=0.1" in msg and "size 'tiny'" in msg
    msg = rejected(demo, lambda c: c["study_b"].setdefault("eval", {}).update(fit_points=[0.5, 1]))
    assert "config key 'study_b.eval.fit_points'" in msg and "too short" in msg
    msg = rejected(demo, lambda c: c["study_b"].setdefault("eval", {}).update(fit_points="table"))
    assert "'table' is not one of ['all', 'paper_table']" in msg
    paper = copy.deepcopy(load_config("config.yaml", validate=False))
    paper["study_b"]["eval"]["fit_points"] = "paper_table"
    from langskew.config import validate_config

    assert validate_config(paper)["study_b"]["eval"]["fit_points"] == "paper_table"
