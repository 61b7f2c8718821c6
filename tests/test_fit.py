"""Study B scaling fits (langskew.study_b.fit): the power-law fit, bootstrap, MLTE / TEff / MLPE and the job."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import job
from langskew.errors import LangskewError
from langskew.study_b import fit


def test_fit_power_law_recovers_known_parameters():
    c, a, b = 0.06, 0.012, 0.45
    x = np.array([0.05, 0.1, 0.25, 0.5, 1.0, 2.0])
    got = fit.fit_power_law(x, fit.power_law(x, c, a, b))
    np.testing.assert_allclose(got, (c, a, b), rtol=1e-4)
    with pytest.raises(LangskewError, match="3 distinct"):
        fit.fit_power_law([0.5, 1.0], [0.03, 0.04])


def test_authors_fit_is_unbounded_from_ones():
    """The authors' PowerLaw: curve_fit(-a * x^-b + c, x, 1/PPL) without p0 or bounds."""
    from scipy.optimize import curve_fit

    # exact data with b = 5.5: the unbounded fit finds it, the bounded one stops at b = 5
    x = np.array([1.0, 1.2, 1.5, 2.0, 3.0])
    y = 0.06 - 0.01 * x ** -5.5
    np.testing.assert_allclose(fit.fit_power_law(x, y), (0.06, 0.01, 5.5), rtol=1e-6)
    assert fit.fit_power_law(x, y, "bounded")[2] == pytest.approx(5.0, abs=1e-6)
    # noisy data: the same parameters as scipy's curve_fit called the authors' way, in their order (a, b, c)
    x = np.array([0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0])
    noisy = (0.06 - 0.012 * x ** -0.45) * np.array([1.01, 0.99, 1.005, 0.995, 1.0, 1.002, 0.998])
    (a, b, c), _ = curve_fit(lambda x, a, b, c: -a * x ** (-b) + c, x, noisy)
    np.testing.assert_allclose(fit.fit_power_law(x, noisy), (c, a, b), rtol=1e-7)
    with pytest.raises(LangskewError, match="method"):
        fit.fit_power_law(x, noisy, "robust")


def test_teff_denominator_is_expected_tokens_by_default():
    """TEff = MLTE / (run tokens x p), the authors'; the counted tokens only with teff_tokens=counted."""
    c, a, b = 0.05, 0.01, 0.5
    mono = [{"id": f"m{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": 10 * f,
             "language": "en", "base_languages": ["en"]} for f in (0.1, 0.25, 0.5, 1.0)]
    mono_ppl = [{"en": 1.0 / float(fit.power_law(f, c, a, b))} for f in (0.1, 0.25, 0.5, 1.0)]
    target = [{"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 10, "n_languages": 2,
               "base_languages": ["en"], "schedule": [[0.9, 0.1]]}]
    # L2 reached the fit's PPL at x = 0.25 (250 of the 1,000 budget tokens = 10 steps x 4 x 25)
    ppl_250 = 1.0 / (0.05 - 0.01 * 0.25 ** -0.5)  # = 1 / 0.03
    args = (mono, mono_ppl, target, [{"L2": ppl_250}], 4, 25, [{"L2": 130}])
    row = fit.fit_table(*args, data_passes=[{"L2": 2.5}]).iloc[0]
    # expected tokens 1,000 x 0.1 = 100 -> TEff 250 / 100 = 2.5 (the counted 130 would give 1.923)
    assert row["tokens_seen"] == pytest.approx(100.0) and row["tokens_counted"] == 130
    assert row["TEff"] == pytest.approx(2.5, rel=1e-6)
    assert row["data_passes"] == 2.5
    counted = fit.fit_table(*args, teff_tokens="counted").iloc[0]
    assert counted["TEff"] == pytest.approx(250 / 130, rel=1e-6) and math.isnan(counted["data_passes"])
    with pytest.raises(LangskewError, match="teff_tokens"):
        fit.fit_table(*args, teff_tokens="seen")


def test_mlte_teff_and_mlpe_on_a_constructed_fit():
    c, a, b, budget = 0.05, 0.01, 0.5, 1000.0
    ppl_at_quarter = 1.0 / (c - a * 0.25 ** -0.5)  # the fit's PPL after 250 tokens
    assert fit.mlte(ppl_at_quarter, c, a, b, budget) == pytest.approx(250.0)
    assert fit.mlte(1.0 / c, c, a, b, budget) == math.inf  # beyond the asymptote
    assert fit.mlpe(250.0, c, a, b, budget) == pytest.approx(ppl_at_quarter)
    # a bilingual language that saw 125 tokens and reached the 250-token PPL: TEff 2
    table = fit.fit_table(
        mono_runs=[{"id": f"m{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": 10 * f,
                    "language": "en", "base_languages": ["en"]} for f in (0.1, 0.25, 0.5, 1.0)],
        mono_ppl=[{"en": 1.0 / float(fit.power_law(f, c, a, b))} for f in (0.1, 0.25, 0.5, 1.0)],
        target_runs=[{"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 10, "n_languages": 2,
                      "base_languages": ["en"], "schedule": [[0.875, 0.125]]}],
        target_ppl=[{"L1": 1.0 / float(fit.power_law(0.875, c, a, b)), "L2": ppl_at_quarter}],
        batch_size=4, context=25)  # budget = 10 steps * 4 * 25 = 1000 tokens
    row = table.set_index("language").loc["L2"]
    assert row["tokens_seen"] == pytest.approx(125.0)
    assert row["MLTE"] == pytest.approx(250.0, rel=1e-3)
    assert row["TEff"] == pytest.approx(2.0, rel=1e-3)
    assert row["MLPE"] == pytest.approx(fit.mlpe(125.0, c, a, b, 1000.0), rel=1e-3)
    assert table.set_index("language").loc["L1", "TEff"] == pytest.approx(1.0, rel=1e-3)
    assert row["base_language"] == "en"


def test_fit_reports_residuals_bounds_and_bootstrap_intervals():
    c, a, b = 0.05, 0.01, 0.5
    fractions = (0.1, 0.25, 0.5, 0.75, 1.0)
    noise = np.array([1.01, 0.99, 1.005, 0.995, 1.0])
    mono = [{"id": f"m{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": 10 * f,
             "language": "en", "base_languages": ["en"]} for f in fractions]
    mono_ppl = [{"en": 1.0 / (float(fit.power_law(f, c, a, b)) * k)} for f, k in zip(fractions, noise)]
    target = [{"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 10, "n_languages": 2,
               "base_languages": ["en"], "schedule": [[0.5, 0.5]]}]
    target_ppl = [{"L1": 1.0 / float(fit.power_law(0.4, c, a, b)), "L2": 1.0 / float(fit.power_law(0.6, c, a, b))}]
    table = fit.fit_table(mono, mono_ppl, target, target_ppl, batch_size=4, context=25, n_boot=200, seed=0)
    row = table.set_index("language").loc["L1"]
    assert row["fit_at_bound"] == "" and row["fit_reliable"]
    assert 0 < row["fit_rmse"] < 0.01 * c and row["fit_max_rel_error"] < 0.02
    assert row["TEff_lo"] <= row["TEff"] <= row["TEff_hi"] and row["TEff_hi"] - row["TEff_lo"] > 0
    assert row["MLPE_lo"] <= row["MLPE"] <= row["MLPE_hi"] and 0 < row["n_boot_ok"] <= 200
    points = fit.fit_points_table(mono, mono_ppl)
    np.testing.assert_allclose(points["residual"], points["inv_ppl"] - points["fitted_inv_ppl"])
    assert list(points["run"]) == [m["id"] for m in mono]
    # perplexities that keep falling fast: the asymptote c runs into its bound (1/PPL <= 1)
    steep = [{"en": 1.0 / min(0.9, 0.9 * f ** 1.5 + 0.01)} for f in fractions]
    flagged = fit.fit_table(mono, steep, target, target_ppl, batch_size=4, context=25, n_boot=20, method="bounded")
    assert "c=1" in flagged["fit_at_bound"].iloc[0] and not flagged["fit_reliable"].any()
    assert fit.params_at_bound((1.0, 0.2, 0.5)) == ["c=1"] and fit.params_at_bound((0.3, 0.2, 5.0)) == ["b=5"]


def test_fit_job_reads_perplexities_and_metrics(tmp_path):
    c, a, b = 0.05, 0.01, 0.5
    mono = [{"id": f"m-f{f}", "kind": "mono", "size": "s", "scale": f, "data_fraction": 1.0, "steps": int(20 * f),
             "language": "en", "base_languages": ["en"]} for f in (0.1, 0.25, 0.5, 1.0)]
    paths = []
    for run in mono:
        p = tmp_path / f"{run['id']}.json"
        p.write_text(json.dumps({"en": 1.0 / float(fit.power_law(run["scale"], c, a, b))}))
        paths.append(str(p))
    target = {"id": "t", "kind": "clone", "size": "s", "scale": 1.0, "steps": 20, "n_languages": 2,
              "base_languages": ["en"], "schedule": [[0.5, 0.5]]}
    (tmp_path / "t.json").write_text(json.dumps({"L1": 30.0, "L2": 31.0}))
    (tmp_path / "t-metrics.json").write_text(json.dumps({"tokens_seen": {"L1": 900, "L2": 1100},
                                                          "data_passes": {"L1": 1.5, "L2": 1.5}}))
    mono_metrics = []
    for run in mono:
        mono_metrics.append(str(tmp_path / f"{run['id']}-metrics.json"))
        Path(mono_metrics[-1]).write_text(json.dumps({"data_passes": {"en": run["scale"] * 3}}))
    out = tmp_path / "fit.csv"
    inputs = {"mono": paths, "target": [str(tmp_path / "t.json")], "metrics": [str(tmp_path / "t-metrics.json")],
              "mono_metrics": mono_metrics}
    fit.fit_job(job(inputs, {"table": str(out), "points": str(tmp_path / "points.csv")}),
                mono_ids=mono, target_runs=[target], train={"batch_size": 2, "context": 50},
                fit={"n_boot": 50, "seed": 0})
    table = pd.read_csv(out)
    points = pd.read_csv(tmp_path / "points.csv")
    assert len(points) == 4 and table["TEff_lo"].notna().all()
    assert list(points["data_passes"]) == pytest.approx([0.3, 0.75, 1.5, 3.0])
    assert list(table["language"]) == ["L1", "L2"]
    assert list(table["tokens_seen"]) == [1000, 1000]  # 20 steps x 2 x 50 x 0.5 (expected, the authors')
    assert list(table["tokens_counted"]) == [900, 1100] and list(table["data_passes"]) == [1.5, 1.5]
    fit.fit_job(job(inputs, {"table": str(out)}), mono_ids=mono, target_runs=[target],
                train={"batch_size": 2, "context": 50}, fit={"teff_tokens": "counted"})
    assert list(pd.read_csv(out)["tokens_seen"]) == [900, 1100]
    np.testing.assert_allclose(table[["c", "a", "b"]].iloc[0], (c, a, b), rtol=1e-3)
    assert (table["TEff"] > 0).all()
    with pytest.raises(LangskewError, match="mono"):
        fit.fit_job(job({"mono": paths[:2], "target": []}, [str(out)]),
                    mono_ids=mono, target_runs=[], train={"batch_size": 2, "context": 50}, fit={})


def test_mlpe_is_inf_where_the_fit_has_no_positive_inverse_perplexity():
    c, a, b = 0.05, 0.04, 0.5
    # 1/PPL = c - a * x^-b <= 0 for x <= (a / c)^(1/b) = 0.64
    assert fit.mlpe(0.5, c, a, b) == float("inf")
    assert 0 < fit.mlpe(1.0, c, a, b) < float("inf")
