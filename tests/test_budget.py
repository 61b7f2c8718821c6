"""`langskew budget` on benchmark files written by hand, against figures worked out by hand; the
training tokens of the configured grid, checked by hand for the medium size."""
import pytest

from conftest import ROOT
from langskew import budget
from langskew.cli import main
from langskew.config import load_config
from langskew.errors import LangskewError
from langskew.study_b.grid import expand_runs

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time"


def write(folder, rel, seconds, rss):
    path = folder / f"{rel}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{HEADER}\n{seconds}\t0:00:00\t{rss}\t0\t0\t0\t0\t0\t0\t0\n")


CFG = {"models": {"mbert": {"resources": {"gpu": 1}}},
       "study_b": {"sizes": {"small": {"resources": {"gpu": 2}}}}}
RUNS = {"small-2x-clone2-p0.50": {"size": "small", "scale": 2.0, "steps": 10, "tokens": 100},
        "small-mono-en-f0.25": {"size": "small", "scale": 0.25, "steps": 1, "tokens": 10}}


@pytest.fixture
def bench(tmp_path):
    b = tmp_path / "benchmarks"
    write(b, "study_a_finetune/xnli/mbert/balanced/seed0", 3600.50, 2048.30)
    write(b, "study_a_finetune/xnli/mbert/balanced/seed42", 5400.00, 3000.00)
    write(b, "study_a_probe/xnli/mbert/balanced/seed0", 300.00, "NA")
    write(b, "study_a_probe_base/xnli/mbert", 120.00, 1500.00)
    write(b, "study_b_pretrain/small-2x-clone2-p0.50", 7200.00, 40000.00)
    write(b, "study_b_pretrain/small-mono-en-f0.25", 1000.00, 30000.00)
    write(b, "study_a_evaluate/xnli/mbert/balanced/seed0", 3.20, 200.00)  # a local rule
    write(b, "study_b_corpus/en", 900.00, 12000.00)
    return b


def test_gpu_hours_per_rule(bench):
    rows = {r["rule"]: r for r in budget.gpu_hours(budget.read_benchmarks(bench), CFG, RUNS)}
    assert set(rows) == {"study_a_finetune", "study_a_probe", "study_a_probe_base", "study_b_pretrain"}
    assert rows["study_a_finetune"]["jobs"] == 2
    assert rows["study_a_finetune"]["gpu_hours"] == pytest.approx((3600.5 + 5400) / 3600)   # 2.500139
    assert rows["study_a_probe"]["gpu_hours"] == pytest.approx(300 / 3600)
    assert rows["study_b_pretrain"]["gpu_hours"] == pytest.approx((7200 + 1000) * 2 / 3600)  # 2 GPUs: 4.555556
    assert rows["study_b_pretrain"]["longest_s"] == 7200


def test_runtime_requests_with_margin(bench):
    rows = {r["key"]: r for r in budget.runtime_requests(budget.read_benchmarks(bench), CFG, RUNS, margin=1.5)}
    assert set(rows) == {"models.mbert.resources", "models.mbert.resources.probe", "study_b.sizes.small.resources",
                         "study_b.resources.cpu"}  # evaluate is a local rule: nothing to request
    ft = rows["models.mbert.resources"]
    assert (ft["longest_min"], ft["runtime"], ft["mem_mb"]) == (90, 140, 5000)      # 135 min -> 140; 4500 MB -> 5000
    probe = rows["models.mbert.resources.probe"]
    assert probe["rules"] == "study_a_probe, study_a_probe_base" and probe["jobs"] == 2
    assert (probe["runtime"], probe["peak_rss_mb"], probe["mem_mb"]) == (10, 1500, 3000)  # 7.5 min -> 10
    pre = rows["study_b.sizes.small.resources"]  # per 1x: 7200 s / 2 = 60 min; 1000 s / 0.25 = 66.7 min
    assert pre["longest_min"] == pytest.approx(4000 / 60) and pre["runtime"] == 100 and pre["mem_mb"] == 60000
    cpu = rows["study_b.resources.cpu"]
    assert (cpu["runtime"], cpu["mem_mb"]) == (30, 18000)  # 22.5 min -> 30


def test_extended_benchmark_gives_the_gpus_of_the_job(tmp_path):
    b = tmp_path / "benchmarks" / "study_a_shap_values" / "xnli" / "mbert" / "balanced"
    b.mkdir(parents=True)
    extended = HEADER + "\tjobid\trule_name\twildcards\tparams\tthreads\tcpu_usage\tresources\tinput_size_mb"
    params = "{'settings': {'a\\tb': 1}}"  # a tab inside params must not shift the resources column
    (b / "seed0.tsv").write_text(f"{extended}\n1800.00\t0:30:00\t900\t0\t0\t0\t0\t0\t0\t0\t7\tstudy_a_shap_values\t{{}}"
                                 f"\t{params.replace(chr(92) + 't', chr(9))}\t8\t50\t{{'gpu': 4, 'mem_mb': 16000}}\t12\n")
    rows = budget.gpu_hours(budget.read_benchmarks(tmp_path / "benchmarks"), CFG, RUNS)
    assert rows == [{"rule": "study_a_shap_values", "jobs": 1, "gpu_hours": 2.0, "longest_s": 1800.0}]


def test_bad_benchmark_folder_and_file(tmp_path):
    with pytest.raises(LangskewError, match="no benchmark folder"):
        budget.read_benchmarks(tmp_path / "nothing")
    (tmp_path / "b" / "study_a_finetune").mkdir(parents=True)
    (tmp_path / "b" / "study_a_finetune" / "x.tsv").write_text("time\n3\n")
    with pytest.raises(LangskewError, match="not a Snakemake benchmark file"):
        budget.read_benchmarks(tmp_path / "b")
    with pytest.raises(LangskewError, match="margin"):
        budget.runtime_requests([], CFG, RUNS, margin=0.5)


def test_medium_tokens_of_the_paper_grid_by_hand():
    """medium: batch 256 x context 512 = 131,072 tokens per step; 1x = floor(1,197,015,040 / 131,072)
    = 9,132 steps. Runs: two clone runs at 1x (model_size block) and monolingual fractions 0.1,
    0.25, 0.5, 1 (floor of f x 1,197,015,040 / 131,072: 913, 2,283, 4,566, 9,132 steps)."""
    runs = expand_runs(load_config(ROOT / "config.yaml")["study_b"])
    rows = {r["size"]: r for r in budget.pretrain_tokens(runs)}
    steps = 2 * 9132 + 913 + 2283 + 4566 + 9132
    assert rows["medium"] == {"size": "medium", "runs": 6, "steps": steps, "tokens": steps * 131072}
    assert rows["medium"]["tokens"] == 4_608_229_376  # 4.6B, not 9.2B


def test_cli_prints_the_tables(tmp_path, monkeypatch, capsys):
    b = tmp_path / "r" / "benchmarks"
    write(b, "study_b_pretrain/medium-1x-clone2-p0.50", 36000.00, 50000.00)
    write(b, "study_a_probe_base/xnli/xlmr", 600.00, 4000.00)
    monkeypatch.chdir(ROOT)
    assert main(["budget", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "| study_b_pretrain | 1 | 10.00 | 36,000.00 |" in out   # 10 h on 1 GPU
    assert "| study_b.sizes.medium.resources | study_b_pretrain | 1 | 600.00 | 900 | 50,000.00 | 75,000 |" in out
    assert "| models.xlmr.resources.probe | study_a_probe_base | 1 | 10.00 | 20 | 4,000.00 | 6,000 |" in out
    assert "Total: 10.17 GPU-hours over 2 GPU jobs." in out
    assert "| medium | 6 | 35,158 | 4,608,229,376 |" in out
    assert main(["budget", str(tmp_path / "empty")]) == 2
    assert "no benchmark folder" in capsys.readouterr().err


def test_cli_demo_tokens_by_hand(tmp_path, monkeypatch, capsys):
    """The demo grid: 1x = 1,000 steps of 16 x 64 tokens; five bilingual runs at 1x and, per
    language, monolingual runs of 0.25, 0.5, 0.75, 1 and 2x (4,500 steps): 14,000 steps."""
    b = tmp_path / "r" / "benchmarks"
    write(b, "study_a_dataset/synth_nli", 30.0, 500.0)
    monkeypatch.chdir(ROOT)
    assert main(["budget", str(tmp_path / "r"), "--configfile", "presets/demo.yaml"]) == 0
    out = capsys.readouterr().out
    assert "| tiny | 15 | 14,000 | 14,336,000 |" in out
    assert "| study_a.resources.cpu | study_a_dataset | 1 | 0.50 | 10 | 500.00 | 1,000 |" in out
    assert main(["budget", "--configfile", "missing.yaml", "--tokens-only"]) == 2
    assert "missing.yaml: no such config file" in capsys.readouterr().err


def test_perplexity_work_of_the_grid_by_hand(tmp_path):
    """Whole split: a two-clone run scores the English held-out split twice, a real run English
    and French, a French monolingual run French; every scored token costs window / stride = 4
    forward positions. A cap (max_tokens) replaces each split's size; an unknown split leaves None."""
    import json

    from langskew.budget import heldout_tokens, perplexity_work

    for lang, n in (("en", 1000), ("fr", 300)):
        (tmp_path / "study_b" / "tokens" / lang).mkdir(parents=True)
        (tmp_path / "study_b" / "tokens" / lang / "meta.json").write_text(json.dumps({"n_tokens": {"test": n}}))
    runs = {"c": {"size": "small", "kind": "clone", "base_languages": ["en"], "n_languages": 2},
            "r": {"size": "small", "kind": "real", "base_languages": ["en", "fr"], "n_languages": 2},
            "m": {"size": "small", "kind": "mono", "base_languages": ["fr"], "n_languages": 1},
            "x": {"size": "mini", "kind": "mono", "base_languages": ["de"], "n_languages": 1}}
    sb = {"eval": {"window": 512, "stride": 128, "max_tokens": None}}
    rows = {row["size"]: row for row in perplexity_work(runs, sb, tmp_path)}
    assert (rows["small"]["runs"], rows["small"]["evaluations"]) == (3, 5)
    assert rows["small"]["scored"] == 2 * 1000 + 1000 + 300 + 300 and rows["small"]["positions"] == 4 * 3600
    assert "en: whole split, counted" in rows["small"]["source"]
    assert rows["mini"]["scored"] is None and rows["mini"]["positions"] is None
    assert heldout_tokens(sb, "en", tmp_path / "elsewhere") == (63_000_000, "whole split, estimated")
    capped = {row["size"]: row for row in perplexity_work(runs, {"eval": {**sb["eval"], "max_tokens": 50}}, tmp_path)}
    assert capped["small"]["scored"] == 5 * 50 and capped["small"]["positions"] == 1000 and capped["mini"]["scored"] == 50
