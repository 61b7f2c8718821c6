"""Local data files are inputs of the rules that read them: editing one reruns exactly the jobs
that depend on it (dry runs after `snakemake --touch` marks a whole workflow as done, compared
by modification time, the trigger an edited file sets off)."""
import time
from pathlib import Path

import pandas as pd
import pytest

from test_workflow import job_counts, snakemake

OVERLAY = """
datasets:
  loc_a: &local
    source: local
    task: single
    languages: [en, fr]
    labels: [neg, pos]
    ratios: {{en: "1:2", fr: "2:1"}}
    columns: {{text: text, label: label, language: lang}}
    local: {{train: {d}/a_train.csv, validation: {d}/a_val.csv, test: {d}/a_test.csv}}
  loc_b:
    <<: *local
    local: {{train: {d}/b_train.csv, validation: {d}/b_val.csv, test: {d}/b_test.csv}}
models:
  enc: {{source: hub, path: {d}/encoder, resources: {{gpu: 0}}}}
study_a:
  datasets: [loc_a, loc_b]
  models: [enc]
  seeds: [0]
  shap: {{classes: {{loc_a: [0, 1], loc_b: [0, 1]}}}}
study_b:
  languages:
    en: {{source: local, local: {{train: "{d}/en/*.txt"}}, test_fraction: 0.2}}
    fr: {{source: local, local: {{train: ["{d}/fr/books.txt"], test: "{d}/fr/test.txt"}}}}
  parallel:
    source: local
    local: {{files: {{en: {d}/par.en, fr: {d}/par.fr}}}}
"""


def _write_data(d):
    frame = pd.DataFrame({"text": ["good", "bad", "bon", "mauvais"] * 3, "label": ["pos", "neg"] * 6,
                          "lang": ["en", "en", "fr", "fr"] * 3})
    for ds in ("a", "b"):
        for split in ("train", "val", "test"):
            frame.to_csv(d / f"{ds}_{split}.csv", index=False)
    (d / "encoder").mkdir()  # a local model folder (only its existence is checked in a dry run)
    (d / "en").mkdir()
    (d / "en" / "one.txt").write_text("A story.\n\nAnother story.")
    (d / "en" / "two.txt").write_text("A third story.")
    (d / "fr").mkdir()
    (d / "fr" / "books.txt").write_text("Une histoire.")
    (d / "fr" / "test.txt").write_text("Un test.")
    (d / "par.en").write_text("Hello.\n")
    (d / "par.fr").write_text("Bonjour.\n")


def _edit(path):
    """Edit a file now: newer than every output touched before, older than any touched after
    (an mtime in the future would make the next --touch fail on clock skew)."""
    time.sleep(1)
    path.write_text(path.read_text() + "\n")


@pytest.fixture(scope="module")
def touched(tmp_path_factory):
    d = tmp_path_factory.mktemp("local-data")
    _write_data(d)
    overlay = d / "overlay.yaml"
    overlay.write_text(OVERLAY.format(d=d))
    conf = ["--configfile", "presets/demo.yaml", str(overlay), "--config", f"outdir={d}/results",
            f"checkpoint_dir={d}/ckpt"]
    _mark_done(conf, missing=True)
    return d, conf


def _mark_done(conf, missing: bool = False):
    """With ``missing``, create every missing output of the workflow (empty); then let --touch
    order their times (after an edit every output exists: only the times are stale)."""
    if missing:
        _create_missing(conf)
    snakemake("--touch", "--cores", "1", *conf)


def _create_missing(conf):
    proc = snakemake("-n", "--cores", "1", *conf)
    for line in (proc.stdout + proc.stderr).splitlines():
        if line.strip().startswith("output:"):
            for path in line.split("output:", 1)[1].split(","):
                path = Path(path.strip())
                if path.name == "model":  # directory() outputs: both studies' saved models
                    path.mkdir(parents=True, exist_ok=True)
                else:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()


def _dry_run(conf):
    # --touch records no provenance (params, code), so compare by modification times only
    proc = snakemake("-n", "--cores", "1", "--rerun-triggers", "mtime", *conf)
    return proc.stdout + proc.stderr, job_counts(proc.stdout)


def test_editing_files_reruns_only_the_jobs_that_read_them(touched):
    d, conf = touched
    jobs, counts = _dry_run(conf)
    assert counts == {}, jobs[-2000:]

    _edit(d / "a_val.csv")  # Study A: one dataset's validation file
    jobs, counts = _dry_run(conf)
    assert counts["study_a_dataset"] == 1 and counts["study_a_subsets"] == 1
    # 8 conditions (3 of the paper, 5 mitigations of the demo) x 1 seed x 1 model; DFR of the baseline
    assert counts["study_a_finetune"] == 8 and counts["study_a_probe_base"] == 1 and counts["study_a_dfr"] == 1
    assert "dataset=loc_a" in jobs and "dataset=loc_b" not in jobs
    assert not any(rule.startswith("study_b") for rule in counts)
    _mark_done(conf)

    _edit(d / "en" / "two.txt")  # Study B: a file matched by the English corpus glob
    jobs, counts = _dry_run(conf)
    assert counts["study_b_corpus"] == 1 and counts["study_b_tokenizer"] == 1 and counts["study_b_tokens"] == 1
    assert "lang=en" in jobs and "lang=fr" not in jobs
    assert not {"study_a_dataset", "study_a_finetune"} & set(counts)
    _mark_done(conf)

    _edit(d / "par.fr")  # Study B: the parallel sentences feed only the alignment of real-language runs
    jobs, counts = _dry_run(conf)
    assert counts["study_b_parallel_corpus"] == 1 and counts["study_b_parallel_tokens"] == 1
    assert counts["study_b_alignment"] >= 1
    assert not {"study_b_corpus", "study_b_tokenizer", "study_b_pretrain", "study_b_perplexity"} & set(counts)
