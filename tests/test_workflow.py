"""The workflow as a user drives it: dry runs of the paper grid, the demo end to end,
no-op reruns, and precise reruns after a config change."""
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from conftest import ROOT


def snakemake(*args, cwd=ROOT, timeout=1800, check=True):
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def job_counts(output: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a dry run."""
    counts = {}
    block = output.split("Job stats:")[1] if "Job stats:" in output else ""
    for line in block.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def test_paper_dry_run_lists_the_grid(tmp_path):
    out = snakemake("-n", "--cores", "1", "--config", f"outdir={tmp_path}/r").stdout
    c = job_counts(out)
    # 2 datasets x 2 models x 5 conditions (3 of the paper, mask entropy 1 and 2 of its annex) x 2 seeds;
    # SHAP for all 5 (the reference and the 4 compared)
    assert c["study_a_finetune"] == 40 and c["study_a_evaluate"] == 40 and c["study_a_probe"] == 40
    assert c["study_a_shap_values"] == 40 and c["study_a_shap_compare"] == 8 and c["study_a_probe_base"] == 4
    assert c["study_a_dataset"] == 2 and c["study_a_subsets"] == 2 and c["study_a_report"] == 1
    assert c["study_a_dfr"] == 8  # DFR of the baseline (imbalanced): 2 datasets x 2 models x 2 seeds
    assert "study_a_tiny_model" not in c  # hub models are not built
    # Study B: the paper grid of pretraining runs, each with its evaluations, plus fits and tables
    assert c["study_b_pretrain"] >= 60
    assert c["study_b_perplexity"] == c["study_b_pretrain"]
    assert 0 < c["study_b_alignment"] < c["study_b_pretrain"]  # monolingual runs have no pair to align
    assert c["study_b_tokens"] == 2 and c["study_b_tokenizer"] == 2 and c["study_b_report"] == 1
    assert c["study_b_fit"] >= 1
    assert not (tmp_path / "r").exists()  # a dry run touches nothing


def test_paper_dry_run_has_gpu_resources(tmp_path):
    """Training jobs ask for GPUs through the SLURM plugin's `gpu` resource, never slurm_extra."""
    out = snakemake("-n", "--cores", "1", "-p", "--config", f"outdir={tmp_path}/r", "--forcerun", "study_a_finetune",
                    "--until", "study_a_finetune").stdout
    block = out.split("rule study_a_finetune:")[1].split("\n\n")[0]
    assert re.search(r"resources:.*gpu=1", block) and "runtime=720" in block
    assert "slurm_extra" not in out


def test_demo_dry_run_adds_the_mitigations_without_shap(tmp_path):
    """The demo: the paper's 3 conditions + mask entropy 1 (annex) + gradient reversal, logit
    adjustment, group DRO, per-language subsampling (mask entropy 2 dropped by null); SHAP only
    for the paper's 3; DFR of the baseline's runs."""
    out = snakemake("-n", "--cores", "1", "--configfile", "presets/demo.yaml", "--config",
                    f"outdir={tmp_path}/r").stdout
    c = job_counts(out)
    # 2 datasets x 1 model x 8 conditions x 2 seeds
    assert c["study_a_finetune"] == 32 and c["study_a_evaluate"] == 32 and c["study_a_probe"] == 32
    assert c["study_a_shap_values"] == 12 and c["study_a_shap_compare"] == 4
    assert c["study_a_dfr"] == 4  # 2 datasets x 2 seeds of the baseline


def test_dfr_off_drops_its_jobs_and_follows_the_baseline(tmp_path):
    """study_a.dfr.enabled: false leaves no DFR job; without a plain imbalanced condition there is
    no baseline, so no DFR either."""
    off = overlay(tmp_path, "study_a:\n  dfr: {enabled: false}\n")
    args = ["-n", "--cores", "1", "--configfile", "presets/demo.yaml"]
    c = job_counts(snakemake(*args, str(off), "--config", f"outdir={tmp_path}/r").stdout)
    assert "study_a_dfr" not in c and c["study_a_finetune"] == 32
    no_base = overlay(tmp_path, "study_a:\n  conditions: {imbalanced: null}\n  shap: {compare: [imbalanced_plw]}\n")
    c = job_counts(snakemake(*args, str(no_base), "--config", f"outdir={tmp_path}/r").stdout)
    assert "study_a_dfr" not in c and c["study_a_finetune"] == 28


# --- the demo, end to end ---------------------------------------------------------------------

def overlay(tmp_path, text):
    path = tmp_path / "overlay.yaml"
    path.write_text(text)
    return path


def dry_run_counts(conf, extra_configfile=None):
    args = ["-n", "--cores", "2"]
    if extra_configfile is None:
        args += conf
    else:  # --configfile takes several files, merged in order
        i = conf.index("--config")
        args += conf[:i] + [str(extra_configfile)] + conf[i:]
    out = snakemake(*args).stdout
    return out, job_counts(out)


@pytest.mark.slow
def test_demo_writes_every_table(demo, demo_report):
    base, _ = demo
    rep = base / "results" / "report"
    for t in ["accuracy", "lid", "shap_cumulative", "class_weights", "subset_counts", "mitigation"]:
        df = pd.read_csv(rep / "study_a" / f"{t}.csv")
        assert len(df) > 0, t
        assert (rep / "study_a" / f"{t}.md").read_text().strip()
    for t in ["perplexity", "token_efficiency", "scaling_fit", "representation_alignment", "gradient_alignment",
              "en_fr"]:
        df = pd.read_csv(rep / "study_b" / f"{t}.csv")
        assert len(df) > 0, t
    acc = pd.read_csv(rep / "study_a" / "accuracy.csv")
    assert set(acc["condition"]) == {"balanced", "imbalanced", "imbalanced_plw", "imbalanced_mask_entropy_1",
                                     "imbalanced_adversary", "imbalanced_logit_adjustment", "imbalanced_group_dro",
                                     "imbalanced_subsample"}
    assert (acc["n_seeds"] == 2).all()
    assert acc["accuracy_mean"].between(0, 1).all()
    lid = pd.read_csv(rep / "study_a" / "lid.csv")
    assert "base" in set(lid["condition"])
    diagnosis = pd.read_csv(rep / "study_a" / "diagnosis.csv")
    assert set(diagnosis["dataset"]) == {"synth_nli", "synth_reviews"}
    verdicts = diagnosis.groupby("variant")["verdict"].agg(set)
    assert verdicts["imbalanced"] == {"strong"} and verdicts["balanced"] == {"none"}
    ranking = pd.read_csv(rep / "study_a" / "mitigation.csv")
    paired = ranking[(ranking["metric"] == "worst_group_accuracy") & (ranking["condition"] != "imbalanced")]
    assert (paired["n_pairs"] == 2).all() and paired["p_value"].dropna().between(0, 1).all()
    # the baselines derived from the imbalanced runs rank beside the trained conditions
    assert {"imbalanced_posthoc_logit_adjustment", "imbalanced_dfr"} <= set(ranking["condition"])
    assert {p.parent.name for p in (base / "results" / "study_a" / "dfr").rglob("predictions.parquet")} == {"seed0", "seed42"}
    reliance = pd.read_csv(rep / "study_a" / "language_reliance.csv")
    assert set(reliance["condition"]) == set(acc["condition"]) and reliance["tvd_mean"].between(0, 1).all()
    # the HTML report collects the report() outputs with their captions (rendered once, shared with
    # tests/test_report_render.py)
    text = demo_report.read_text(errors="ignore")
    assert "Study A" in text and "Study B" in text
    # checkpoints are removed once the final outputs exist (keep_checkpoints: false)
    ckpt = base / "checkpoints"
    assert not ckpt.exists() or not any(p.is_file() for p in ckpt.rglob("*.pt"))


# The dry runs on the finished demo (one Snakemake process each, about 2 s of one core) start
# together, two at a time, when the demo has finished; each test below reads its own.
FINETUNE_SETTING = "datasets:\n  synth_nli:\n    finetune: {epochs: 5}\n"
ANALYSIS_SETTINGS = [
    ("study_a:\n  shap: {max_evals: 90}\n",
     {"study_a_shap_values": 12, "study_a_shap_compare": 4, "study_a_report": 1}),
    ("study_a:\n  shap: {threshold: 0.02}\n", {"study_a_shap_compare": 4, "study_a_report": 1}),
    ("study_a:\n  probe: {C: 0.001}\n", {"study_a_probe": 32, "study_a_probe_base": 2, "study_a_report": 1}),
    ("study_a:\n  dfr: {n_retrains: 10}\n", {"study_a_dfr": 4, "study_a_report": 1}),
    ("study_b:\n  eval: {stride: 32}\n", None),
]


@pytest.fixture(scope="module")
def demo_dry_runs(demo, tmp_path_factory):
    """{overlay text (None: no overlay): future of (output, job counts)} of the demo's dry runs."""
    _, conf = demo
    folder = tmp_path_factory.mktemp("dry_runs")
    texts = [None, FINETUNE_SETTING, *(text for text, _ in ANALYSIS_SETTINGS)]

    def dry_run(i, text):
        if text is None:
            return dry_run_counts(conf)
        (folder / str(i)).mkdir()
        return dry_run_counts(conf, overlay(folder / str(i), text))

    pool = ThreadPoolExecutor(max_workers=2)
    yield {text: pool.submit(dry_run, i, text) for i, text in enumerate(texts)}
    pool.shutdown(cancel_futures=True)  # a dry run no test read is not started


@pytest.mark.slow
def test_rerunning_a_finished_workflow_does_nothing(demo_dry_runs):
    out, counts = demo_dry_runs[None].result()
    assert counts == {}, out[-3000:]
    assert "Nothing to be done" in out


@pytest.mark.slow
def test_finetune_setting_reruns_only_its_dataset(demo_dry_runs):
    out, c = demo_dry_runs[FINETUNE_SETTING].result()
    # 8 conditions (3 of the paper, 5 mitigations) x 2 seeds of synth_nli, and what depends on them;
    # SHAP for the 3 paper conditions only; DFR of the 2 baseline runs; nothing of synth_reviews
    assert c.get("study_a_finetune") == 16 and c.get("study_a_evaluate") == 16 and c.get("study_a_probe") == 16
    assert c.get("study_a_dfr") == 2
    assert c.get("study_a_shap_values") == 6 and c.get("study_a_shap_compare") == 2 and c.get("study_a_report") == 1
    for rule in ["study_a_dataset", "study_a_subsets", "study_a_tiny_model", "study_a_probe_base"]:
        assert rule not in c, (rule, out[-3000:])
    assert not any(r.startswith("study_b") for r in c)
    assert "synth_reviews" not in out.split("Job stats:")[0]


@pytest.mark.slow
@pytest.mark.parametrize("text, expected", ANALYSIS_SETTINGS)
def test_analysis_settings_never_rerun_training(demo_dry_runs, text, expected):
    out, c = demo_dry_runs[text].result()
    assert "study_a_finetune" not in c and "study_b_pretrain" not in c, out[-3000:]
    if expected is not None:
        assert {k: v for k, v in c.items() if k != "all"} == expected
    else:
        assert c.get("study_b_perplexity", 0) > 0 and c.get("study_b_report") == 1


# The README's Study A table: its column headers name the demo's conditions.
README_CONDITIONS = {
    "trained balanced": "balanced", "imbalanced": "imbalanced", "+ per-language weights": "imbalanced_plw",
    "+ logit adjustment": "imbalanced_logit_adjustment", "+ group DRO": "imbalanced_group_dro",
    "+ mask entropy": "imbalanced_mask_entropy_1", "+ language adversary": "imbalanced_adversary",
    "+ subsampling (SUBG)": "imbalanced_subsample",
    # derived from the imbalanced runs without fine-tuning: in the mitigation table only
    "post-hoc adjustment": "imbalanced_posthoc_logit_adjustment", "DFR": "imbalanced_dfr",
}


def readme_accuracy_table(text: str) -> dict[tuple[str, str], str]:
    """{(dataset, condition): figure as printed} from the README's table under 'What the demo shows'."""
    section = text.split("## What the demo shows", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in rows[0].strip("|").split("|")]
    assert header[0] == "dataset", header
    unknown = [h for h in header[1:] if h not in README_CONDITIONS]
    assert not unknown, f"README columns naming no known condition: {unknown}"
    table = {}
    for line in rows[1:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        dataset = cells[0].split()[0]
        table.update({(dataset, README_CONDITIONS[h]): v for h, v in zip(header[1:], cells[1:])})
    return table


def test_the_suites_demo_is_run_as_make_demo_runs_it():
    """The suite's background demo passes `make demo`'s options, and the job rate timespan stays
    out of profiles/default (every SLURM job's own Snakemake reads that profile and waits up to
    one timespan before it exits, inside the job's time limit)."""
    from conftest import BackgroundDemo

    make = (ROOT / "Makefile").read_text()
    scheduling = re.search(r"^DEMO_SCHEDULING := (.+)$", make, re.M)[1].split()
    recipe = re.search(r"^demo: install\n\t(.+)$", make, re.M)[1].split()
    assert recipe[1:] == ["--cores", "$(CORES)", "--configfile", "presets/demo.yaml", "$(DEMO_SCHEDULING)"]
    assert BackgroundDemo.SCHEDULING == scheduling == ["--max-jobs-per-timespan", "100/5s"]
    assert "max-jobs-per-timespan" not in (ROOT / "profiles" / "default" / "config.yaml").read_text()


def test_readme_table_parser_reads_every_cell():
    text = ("## What the demo shows\n\n| dataset | trained balanced | + group DRO |\n|---|---|---|\n"
            "| synth_nli (en 1:2:3) | 0.632 | 0.602 |\n| synth_reviews (6 languages) | 0.484 | 0.309 |\n\n## Next\n"
            "| dataset | other |\n")
    assert readme_accuracy_table(text) == {("synth_nli", "balanced"): "0.632", ("synth_nli", "imbalanced_group_dro"): "0.602",
                                           ("synth_reviews", "balanced"): "0.484",
                                           ("synth_reviews", "imbalanced_group_dro"): "0.309"}


@pytest.mark.slow
def test_readme_accuracy_table_is_what_the_demo_gives(demo):
    """The README promises that every run of the demo gives its accuracy table exactly: every cell
    equals the report's mean accuracy on the balanced test set (3 decimals; the accuracy table's, and
    the mitigation table's for the conditions derived from the imbalanced runs), and every condition
    and dataset of the demo has its cell. A change that moves a figure fails here until the README is
    re-measured."""
    base, _ = demo
    tables = base / "results" / "report" / "study_a"
    acc = pd.read_csv(tables / "accuracy.csv")
    acc = acc[(acc["test_variant"] == "balanced") & (acc["language"] == "all")]
    report = {(r.dataset, r.condition): f"{r.accuracy_mean:.3f}" for r in acc.itertuples()}
    mit = pd.read_csv(tables / "mitigation.csv")
    mit = mit[(mit["metric"] == "accuracy") & (mit["test_variant"] == "balanced")]
    derived = {(r.dataset, r.condition): f"{r.mean:.3f}" for r in mit.itertuples()
               if (r.dataset, r.condition) not in report}
    assert {c for _, c in derived} == {"imbalanced_posthoc_logit_adjustment", "imbalanced_dfr"}, derived
    report.update(derived)
    readme = readme_accuracy_table((ROOT / "README.md").read_text())
    assert set(readme) == set(report), sorted(set(readme) ^ set(report))
    differ = {key: (readme[key], report[key]) for key in report if readme[key] != report[key]}
    assert not differ, f"README figure != demo report (README, report): {differ}"
