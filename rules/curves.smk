# Training curves of both studies for the report: train and validation loss per run, one panel
# per run (langskew.curves). Helpers of rules/common.smk and rules/study_b_common.smk
# (targets: curve_targets() in rules/common.smk).


rule training_curves_study_a:
    """Loss curves of every Study A fine-tuning run."""
    input:
        curves=[
            f"{OUT}/study_a/finetune/{d}/{m}/{c}/seed{s}/curve.csv"
            for d, m, c, s in sa_runs()
        ],
    output:
        report(
            f"{REP_A}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Study A",
            subcategory="Figures",
        ),
    log:
        f"{LOGS}/study_a/training_curves.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        labels=[f"{d} / {m} / {c} / seed {s}" for d, m, c, s in sa_runs()],
        title="Study A: fine-tuning loss per run",
    script:
        script_path("training_curves")


rule training_curves_study_b:
    """Loss curves of every Study B pretraining run (validation loss per language)."""
    input:
        curves=[f"{SB_DIR}/runs/{r}/curve.csv" for r in SB_RUNS],
    output:
        report(
            f"{REP_B}/training_curves.png",
            caption="../report/training_curves.rst",
            category="Study B",
            subcategory="Figures",
        ),
    log:
        f"{LOGS}/study_b/training_curves.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        labels=[SB_RUNS[r].get("label") or r for r in SB_RUNS],
        title="Study B: pretraining loss per run",
    script:
        script_path("training_curves")
