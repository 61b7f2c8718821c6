# Training curves of both studies for the report: train and validation loss per run, one panel
# per run (langskew.curves.training_curves_job). Targets: curve_targets() in rules/common.smk.
# Seconds each: run on the submitting machine.


localrules:
    study_a_training_curves,
    study_b_training_curves,


rule study_a_training_curves:
    """Loss curves of every Study A fine-tuning run."""
    input:
        curves=curve_inputs(),
    output:
        report(
            f"{REP_A}/training_curves.png",
            **report_category("Figures", "training_curves"),
        ),
    log:
        f"{LOGS}/study_a/training_curves.log",
    benchmark:
        benchmark_file("study_a_training_curves", "all")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        labels=curve_labels(),
        title="Study A: fine-tuning loss per run",
        code_digest=code_digest("study_a_training_curves"),
    script:
        script_path("study_a_training_curves")


rule study_b_training_curves:
    """Loss curves of every Study B pretraining run (validation loss per language)."""
    input:
        curves=[f"{sb_run_dir(r)}/curve.csv" for r in SB_RUNS],
    output:
        report(
            f"{REP_B}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Study B",
            subcategory="Figures",
        ),
    log:
        f"{LOGS}/study_b/training_curves.log",
    benchmark:
        benchmark_file("study_b_training_curves", "all")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        labels=[SB_RUNS[r].get("label") or r for r in SB_RUNS],
        title="Study B: pretraining loss per run",
        code_digest=code_digest("study_b_training_curves"),
    script:
        script_path("study_b_training_curves")
