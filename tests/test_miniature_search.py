"""The miniature search's driver (effects read from fabricated report tables, summary over
seeds, CSV row, overlay) and its map script, on tiny inputs worked out by hand."""
import csv
import subprocess

import pandas as pd
import pytest
import yaml

from helpers import load_benchmark


@pytest.fixture(scope="module")
def search():
    return load_benchmark("miniature_search")


@pytest.fixture(scope="module")
def mapping():
    return load_benchmark("miniature_map")


def fake_report(folder, teff, rep_9010, rep_5050, grad_9010, grad_5050):
    """Report tables shaped as the workflow writes them, with distractor rows (mono, a 2x clone run)."""
    folder.mkdir(parents=True)
    rows = [{"run": "tiny-1x-clone2-p0.50", "scale": 1.0, "language": lang, "TEff": v, "fit_reliable": True}
            for lang, v in zip(("L1", "L2"), teff)]
    rows += [{"run": "tiny-2x-clone2-p0.50", "scale": 2.0, "language": "L1", "TEff": 0.1, "fit_reliable": True},
             {"run": "tiny-1x-clone2-p0.10", "scale": 1.0, "language": "L1", "TEff": 0.2, "fit_reliable": True},
             {"run": "tiny-1x-clone2-p0.10", "scale": 1.0, "language": "L2", "TEff": 3.0, "fit_reliable": True}]
    pd.DataFrame(rows).to_csv(folder / "token_efficiency.csv", index=False)
    rep = [{"run": f"tiny-1x-{mix}", "scale": 1.0, "layer": layer, "cosine": v}
           for mix, values in (("clone2-p0.10", rep_9010), ("clone2-p0.50", rep_5050))
           for layer, v in reversed(list(enumerate(values, start=1)))]  # unsorted layers on purpose
    rep += [{"run": "tiny-2x-clone2-p0.10", "scale": 2.0, "layer": 1, "cosine": -9.0}]
    pd.DataFrame(rep).to_csv(folder / "representation_alignment.csv", index=False)
    pd.DataFrame([{"run": "tiny-1x-clone2-p0.10", "scale": 1.0, "mean_cosine": grad_9010},
                  {"run": "tiny-1x-clone2-p0.50", "scale": 1.0, "mean_cosine": grad_5050},
                  {"run": "tiny-2x-clone2-p0.50", "scale": 2.0, "mean_cosine": 5.0}]).to_csv(
        folder / "gradient_alignment.csv", index=False)
    return folder


def test_seed_effects_reads_the_1x_clone_runs(search, tmp_path):
    report = fake_report(tmp_path / "a", (0.95, 0.90), [0.5, 0.2], [0.3, 0.1], 0.10, 0.04)
    e = search.seed_effects(report)
    assert e["teff_l1"] == pytest.approx(0.95) and e["teff_l2"] == pytest.approx(0.90)
    assert e["rep_9010"] == pytest.approx([0.5, 0.2]) and e["rep_5050"] == pytest.approx([0.3, 0.1])
    assert e["rep_diff"] == pytest.approx(0.15)  # ((0.5 - 0.3) + (0.2 - 0.1)) / 2
    assert e["grad_diff"] == pytest.approx(0.06)
    assert e["fit_reliable"] is True


def test_summary_over_seeds_mean_range_and_verdicts(search, tmp_path):
    a = search.seed_effects(fake_report(tmp_path / "a", (0.95, 0.90), [0.5, 0.2], [0.3, 0.1], 0.10, 0.04))
    b = search.seed_effects(fake_report(tmp_path / "b", (0.85, 1.10), [0.4, 0.0], [0.4, 0.2], 0.02, 0.05))
    s = search.summarise([a, b])
    assert (s["teff_l1_mean"], s["teff_l1_lo"], s["teff_l1_hi"]) == pytest.approx((0.90, 0.85, 0.95))
    assert (s["teff_l2_mean"], s["teff_l2_lo"], s["teff_l2_hi"]) == pytest.approx((1.00, 0.90, 1.10))
    # seed b: diffs 0.0 and -0.2 -> -0.1
    assert (s["rep_diff_mean"], s["rep_diff_lo"], s["rep_diff_hi"]) == pytest.approx((0.025, -0.1, 0.15))
    assert (s["grad_diff_mean"], s["grad_diff_lo"], s["grad_diff_hi"]) == pytest.approx((0.015, -0.03, 0.06))
    assert s["rep_9010"] == "0.450 0.100" and s["rep_5050"] == "0.350 0.150"
    assert not (s["shows_teff"] or s["shows_rep"] or s["shows_grad"])  # seed b breaks every direction
    one = search.summarise([a])
    assert one["shows_teff"] and one["shows_rep"] and one["shows_grad"]
    # TEff below 1 on a fit the workflow flags unreliable does not show
    unsound = search.summarise([{**a, "fit_reliable": False}])
    assert unsound["teff_l1_hi"] < 1 and not unsound["shows_teff"] and unsound["shows_rep"]


def test_missing_run_or_language_is_named(search, tmp_path):
    report = fake_report(tmp_path / "a", (0.95, 0.90), [0.5], [0.3], 0.1, 0.0)
    te = pd.read_csv(report / "token_efficiency.csv")
    te[te["language"] != "L2"].to_csv(report / "token_efficiency.csv", index=False)
    with pytest.raises(search.SearchError, match="L2"):
        search.seed_effects(report)
    g = pd.read_csv(report / "gradient_alignment.csv")
    fake_report(tmp_path / "b", (0.9, 0.9), [0.5], [0.3], 0.1, 0.0)
    g[~g["run"].str.endswith("p0.10")].to_csv(tmp_path / "b" / "gradient_alignment.csv", index=False)
    with pytest.raises(search.SearchError, match="clone2-p0.10"):
        search.seed_effects(tmp_path / "b")
    with pytest.raises(search.SearchError, match="no seed"):
        search.summarise([])


def test_overlay_changes_size_data_and_budget_only(search, root, tmp_path):
    from snakemake.utils import update_config

    from langskew.study_b.grid import expand_runs

    args = search.argparse.Namespace(text=None, train_docs=3000, document_split="blank_line", vocab=1024,
                                     n_layer=4, d_model=128, n_head=4, steps=500, richness=1)
    ov = search.overlay(args, 7, tmp_path)
    demo = yaml.safe_load((root / "presets/demo.yaml").read_text())["study_b"]
    assert set(ov["study_b"]) <= {"seed", "languages", "tokenizer", "sizes", "train", "grid", "parallel"}
    assert ov["study_b"]["parallel"] == {"synthetic": {"richness": 1}}
    assert ov["study_b"]["train"] == {"base_tokens": 500 * 16 * 64}
    assert demo["train"]["context"] == 64 and demo["train"]["batch_size"] == 16  # the driver's tokens per step
    update_config(demo, ov["study_b"])  # Snakemake's merge of --configfile overlays
    runs = expand_runs(demo)
    assert sorted(runs) == sorted(["tiny-1x-clone2-p0.50", "tiny-1x-clone2-p0.10", "tiny-mono-en-f0.25",
                                   "tiny-mono-en-f0.5", "tiny-mono-en-f1", "tiny-mono-en-f2"])
    assert runs["tiny-mono-en-f2"]["steps"] == 1000
    assert ov["study_a"] == {"enabled": False} and ov["outdir"] == str(tmp_path / "results")


def test_csv_row_and_map(search, mapping, tmp_path):
    path = tmp_path / "runs.csv"
    base = {c: "" for c in search.CSV_COLUMNS}
    for name, compute, teff, rep, grad in (("small", 1e12, 1.3, -0.05, -0.01), ("large", 1e14, 0.9, 0.1, 0.2)):
        search.append_row(path, {**base, "name": name, "compute": compute, "machine": "2-core x86_64 CPU",
                                 "date": "2026-12-06", "teff_l1_mean": teff, "teff_l1_lo": teff - .1,
                                 "teff_l1_hi": teff + .1, "teff_l2_mean": teff, "teff_l2_lo": teff - .1,
                                 "teff_l2_hi": teff + .1, "rep_diff_mean": rep, "rep_diff_lo": rep - .01,
                                 "rep_diff_hi": rep + .01, "grad_diff_mean": grad, "grad_diff_lo": grad,
                                 "grad_diff_hi": grad})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["small", "large"] and list(rows[0]) == search.CSV_COLUMNS
    assert float(rows[1]["teff_l1_hi"]) == pytest.approx(1.0)
    search.append_row(path, {**base, "name": "no-teff", "compute": 1e13, "machine": "2-core x86_64 CPU",
                             "date": "2026-12-06", "rep_diff_mean": 0.0, "rep_diff_lo": 0.0, "rep_diff_hi": 0.0,
                             "grad_diff_mean": 0.1, "grad_diff_lo": 0.0, "grad_diff_hi": 0.2})
    out = mapping.main(["--csv", str(path), "--out", str(tmp_path / "map.png")])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    table = mapping.main(["--csv", str(path), "--table"]).splitlines()
    assert len(table) == 5 and table[3].startswith("| large |")
    assert "| not measured | not measured |" in table[4]
    assert "| 0.900 (0.800 to 1.000) |" in table[3] and table[3].endswith("| no, no, no |")  # shows_* left empty
    no_teff = pd.read_csv(path).assign(teff_l1_mean=float("nan"), teff_l2_mean=float("nan"))
    no_teff.to_csv(tmp_path / "no_teff.csv", index=False)  # no run measured TEff: its panel says so
    assert mapping.main(["--csv", str(tmp_path / "no_teff.csv"), "--out", str(tmp_path / "m2.png")]).exists()
    pd.read_csv(path).drop(columns=["grad_diff_lo"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="grad_diff_lo"):
        mapping.main(["--csv", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "bad.png")])


def test_alignment_effects_from_the_run_folders(search, tmp_path):
    """--skip-teff: the alignment tables of the two 1x clone runs, as the alignment rule writes them."""
    for mix, layers, grad in (("clone2-p0.10", [0.6, 0.1], 0.30), ("clone2-p0.50", [0.2, 0.3], 0.05)):
        folder = tmp_path / f"tiny-1x-{mix}"
        folder.mkdir()
        pd.DataFrame({"layer": [2, 1], "cosine_mean": layers[::-1], "cosine_sd": 0.1, "n": 32}).to_csv(
            folder / "alignment_representation.csv", index=False)
        pd.DataFrame({"parameter": ["h.0.attn.weight", "mean", "mean_all_tensors"], "cosine_mean": [9.0, grad, 7.0],
                      "n": 32}).to_csv(folder / "alignment_gradient.csv", index=False)
    e = search.alignment_effects(tmp_path)
    assert e["rep_9010"] == pytest.approx([0.6, 0.1]) and e["rep_diff"] == pytest.approx(0.1)  # (0.4 - 0.2) / 2
    assert e["grad_diff"] == pytest.approx(0.25)
    s = search.summarise([e])
    assert s["shows_rep"] and s["shows_grad"] and s["shows_teff"] is False  # no TEff measured
    path = tmp_path / "runs.csv"
    search.append_row(path, {**{c: "" for c in search.CSV_COLUMNS}, **s, "name": "x", "compute": 1e12,
                             "machine": "m", "date": "2026-12-06"})
    row = pd.read_csv(path).iloc[0]
    assert pd.isna(row["teff_l1_mean"]) and row["grad_diff_mean"] == pytest.approx(0.25)
    (tmp_path / "tiny-1x-clone2-p0.10" / "alignment_gradient.csv").write_text("parameter,cosine_mean\nh.0,0.1\n")
    with pytest.raises(search.SearchError, match="'mean' row"):
        search.alignment_effects(tmp_path)


@pytest.mark.parametrize("text", [False, True])
def test_overlay_passes_the_workflows_config_validation(search, root, tmp_path, text):
    from langskew.config import load_config

    files = None
    if text:
        (tmp_path / "book.txt").write_text("A first paragraph.\n\nA second one.\n")
        files = [str(tmp_path / "book.txt")]
    args = search.argparse.Namespace(text=files, train_docs=100, document_split="blank_line", vocab=384,
                                     n_layer=1, d_model=32, n_head=2, steps=10, richness=1 if text else 3)
    ov = tmp_path / "overlay.yaml"
    ov.write_text(yaml.safe_dump(search.overlay(args, 0, tmp_path)))
    cfg = load_config(root / "config.yaml", root / "presets/demo.yaml", ov)
    en = cfg["study_b"]["languages"]["en"]
    assert en["source"] == ("local" if text else "synthetic")
    assert cfg["study_b"]["sizes"]["tiny"]["d_model"] == 32 and cfg["study_b"]["tokenizer"]["vocab_size"] == 384
    if not text:  # --richness: both languages and the parallel pairs, the preset's other settings kept
        fr = cfg["study_b"]["languages"]["fr"]
        assert en["synthetic"]["richness"] == fr["synthetic"]["richness"] == 3
        assert fr["synthetic"]["grammar"] == "fr" and fr["synthetic"]["seed"] == 1
        assert cfg["study_b"]["parallel"]["synthetic"] == {"seed": 2, "richness": 3}


def test_map_draws_the_last_row_of_each_configuration(mapping):
    df = pd.DataFrame({"name": ["a", "b", "a"], "teff_l1_mean": [None, 1.2, 1.3], "rep_diff_mean": [0.1, 0.2, 0.1]})
    latest = mapping.latest_per_name(df)
    assert list(latest["name"]) == ["b", "a"] and latest.set_index("name").loc["a", "teff_l1_mean"] == 1.3


def test_richness_column_old_rows_and_table(search, mapping, tmp_path):
    """Rows written before --richness have none (read as 1); appending to such a CSV first adds the
    column; the table names a richness other than 1."""
    assert search.CSV_COLUMNS[search.CSV_COLUMNS.index("vocab") + 1] == "richness"
    old_columns = [c for c in search.CSV_COLUMNS if c != "richness"]
    base = {"compute": 1e12, "machine": "m", "date": "2026-12-06", "data": "synthetic", "n_layer": 2, "d_model": 64,
            **{f"{s}_{x}": 0.1 for s in ("teff_l1", "teff_l2", "rep_diff", "grad_diff") for x in ("mean", "lo", "hi")}}
    path = tmp_path / "runs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns, restval="")
        writer.writeheader()
        writer.writerow({**base, "name": "old"})
    assert mapping.read_runs(path)["richness"].tolist() == [1]
    search.append_row(path, {**{c: "" for c in search.CSV_COLUMNS}, **base, "name": "rich", "richness": 4})
    with open(path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == search.CSV_COLUMNS and [r["richness"] for r in rows] == ["", "4"]
    assert rows[0]["name"] == "old" and rows[0]["d_model"] == "64"
    assert mapping.read_runs(path)["richness"].tolist() == [1, 4]
    table = mapping.main(["--csv", str(path), "--table"]).splitlines()
    assert table[2].startswith("| old | synthetic 2 layers d 64 |")
    assert table[3].startswith("| rich | synthetic (richness 4) 2 layers d 64 |")
    shipped = pd.read_csv(search.REPO / "benchmarks/miniature_runs.csv")
    assert list(shipped.columns) == search.CSV_COLUMNS  # the search's own CSV has the column
    with pytest.raises(SystemExit):
        search.main(["--name", "x", "--richness", "0"])


def test_rows_record_the_code_they_ran_on(search, mapping, tmp_path):
    """Each row names the checkout (short commit, "+changes" when tracked files differ); the table
    shows it beside the machine, and rows of two grammar richnesses draw as two series."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=search.REPO, capture_output=True,
                          text=True)
    version = search.code_version()
    if head.returncode == 0:
        assert version.split("+")[0] == head.stdout.strip() and version.endswith(("+changes", head.stdout.strip()))
    else:
        assert version == "unknown"
    assert search.CSV_COLUMNS[-1] == "code"
    # a checkout whose only change is the CSV the search appends to is not "+changes"
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, capture_output=True, text=True, check=True)  # noqa: E731
    git("init", "-q")
    (repo / "runs.csv").write_text("name\n")
    (repo / "code.py").write_text("x = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    commit = git("rev-parse", "--short", "HEAD").stdout.strip()
    (repo / "runs.csv").write_text("name\nrow\n")
    assert search.code_version(repo, ignore=[repo / "runs.csv"]) == commit
    assert search.code_version(repo) == commit + "+changes"
    assert search.code_version(repo, ignore=[tmp_path / "elsewhere.csv"]) == commit + "+changes"  # outside: no-op
    (repo / "code.py").write_text("x = 2\n")
    assert search.code_version(repo, ignore=[repo / "runs.csv"]) == commit + "+changes"
    path = tmp_path / "runs.csv"
    for name, richness in (("plain", 1), ("rich", 8)):
        search.append_row(path, {**{c: "" for c in search.CSV_COLUMNS}, "name": name, "compute": 1e12,
                                 "machine": "2-core x86_64 CPU", "date": "2026-12-06", "richness": richness,
                                 "code": "abc1234", **{f"{k}_{s}": v for k, v in (("teff_l1", 1.2), ("teff_l2", 1.1),
                                                                                   ("rep_diff", 0.01),
                                                                                   ("grad_diff", -0.01))
                                                       for s in ("mean", "lo", "hi")}})
    table = mapping.main(["--csv", str(path), "--table"]).splitlines()
    assert ", 2026-12-06, code abc1234 |" in table[2] and "code" not in table[0]
    assert mapping.main(["--csv", str(path), "--out", str(tmp_path / "m.png")]).stat().st_size > 10_000


def test_more_clones_uniform_against_l1_at_09(search, mapping, root, tmp_path):
    """--clones K > 2: the balance block trains all K uniform and L1 at 0.9 (the other K - 1 at
    0.1 / (K - 1) each), the run ids the workflow's grid gives them are the ones the effects are
    read from, and two clones keep the 50/50 and 90/10 runs."""
    from langskew.config import load_config
    from langskew.study_b import grid

    def workflow_runs(args):
        """The runs the workflow's grid expands the driver's overlay into."""
        ov = tmp_path / "overlay.yaml"
        ov.write_text(yaml.safe_dump(search.overlay(args, 0, tmp_path)))
        return grid.expand_runs(load_config(root / "config.yaml", root / "presets/demo.yaml", ov)["study_b"])

    assert search.mixes(2) == (search.RUN_5050, search.RUN_9010)
    args = search.argparse.Namespace(text=None, train_docs=100, document_split="blank_line", vocab=384,
                                     n_layer=1, d_model=32, n_head=2, steps=10, richness=1, clones=10)
    runs = workflow_runs(args)
    balanced, skewed = search.mixes(10)
    assert f"tiny-1x-{balanced}" in runs and f"tiny-1x-{skewed}" in runs
    probs = {mix: runs[f"tiny-1x-{mix}"]["schedule"][0] for mix in (balanced, skewed)}
    assert probs[balanced] == pytest.approx([0.1] * 10)
    assert probs[skewed] == pytest.approx([0.9] + [0.1 / 9] * 9) and sum(probs[skewed]) == pytest.approx(1.0)
    assert not any("clone2" in rid for rid in runs)
    with pytest.raises(SystemExit):
        search.main(["--name", "x", "--clones", "1"])
    # --skewed-l1: the paper's ten languages (L1 0.5, the nine others 0.5 / 9 each); with two clones 80/20
    args.skewed_l1 = 0.5
    runs = workflow_runs(args)
    skewed = search.mixes(10, 0.5)[1]
    assert runs[f"tiny-1x-{skewed}"]["schedule"][0] == pytest.approx([0.5] + [0.5 / 9] * 9)
    args.clones, args.skewed_l1 = 2, 0.8
    runs = workflow_runs(args)
    assert search.mixes(2, 0.8) == (search.RUN_5050, "clone2-p0.20")
    assert runs["tiny-1x-clone2-p0.20"]["schedule"][0] == pytest.approx([0.8, 0.2])
    for bad in (["--clones", "10", "--skewed-l1", "0.1"], ["--skewed-l1", "0.5"], ["--skewed-l1", "1"]):
        with pytest.raises(SystemExit):
            search.main(["--name", "x", *bad])
    path = tmp_path / "runs.csv"
    search.append_row(path, {**{c: "" for c in search.CSV_COLUMNS}, "name": "ten", "compute": 1e12,
                             "machine": "m", "date": "2026-12-06", "data": "synthetic", "clones": 10, "skewed_l1": 0.5,
                             **{f"{k}_{s}": 0.5 for k in ("teff_l1", "teff_l2", "rep_diff", "grad_diff")
                                for s in ("mean", "lo", "hi")}})
    table = mapping.main(["--csv", str(path), "--table"]).splitlines()
    assert table[2].startswith("| ten | synthetic (10 clones, skewed: L1 0.5) ")


def test_map_series_are_the_families_of_data(search, mapping, tmp_path):
    """The map draws one series per family of data: the synthetic grammar per richness, the
    text, and more than two clones apart from two; rows written before the data column are synthetic."""
    path = tmp_path / "runs.csv"
    effects = {f"{k}_{s}": 0.1 for k in ("teff_l1", "teff_l2", "rep_diff", "grad_diff") for s in ("mean", "lo", "hi")}
    for name, data, richness, clones in (("a", "synthetic", 1, 2), ("b", "synthetic", 8, 2), ("c", "text", 1, 2),
                                         ("d", "synthetic", 1, 10), ("e", "", "", "")):
        search.append_row(path, {**{c: "" for c in search.CSV_COLUMNS}, **effects, "name": name, "compute": 1e12,
                                 "machine": "m", "date": "d", "data": data, "richness": richness, "clones": clones})
    runs = mapping.read_runs(path)
    assert runs["family"].tolist() == [
        "synthetic", "synthetic, richness 8", "text", "synthetic, 10 clones", "synthetic"]
    # fit_reliable (written "False" / "True" / empty) decides a hollow TEff marker: empty reads as sound
    assert runs["fit_reliable"].tolist() == [True] * 5
    search.append_row(path, {**{c: "" for c in search.CSV_COLUMNS}, **effects, "name": "f", "compute": 1e12,
                             "machine": "m", "date": "d", "fit_reliable": False})
    assert mapping.read_runs(path)["fit_reliable"].tolist() == [True] * 5 + [False]
    assert mapping.main(["--csv", str(path), "--out", str(tmp_path / "m.png")]).stat().st_size > 10_000
