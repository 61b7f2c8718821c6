# Study A: class skew per language in multilingual fine-tuning.
# dataset -> subsets -> (tiny model) -> finetune -> evaluate / probe / SHAP -> report
# Helpers: rules/study_a_common.smk.
# Jobs of seconds that read a few tables run on the submitting machine, not as cluster jobs:


localrules:
    study_a_diagnose,
    study_a_diagnose_report,
    study_a_evaluate,
    study_a_shap_compare,
    study_a_report,


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    condition="[A-Za-z0-9_.-]+",
    seed="[0-9]+",


rule study_a_dataset:
    """Load a dataset (hub, local files or synthetic) into the normalised Parquet layout."""
    input:
        local=local_dataset_files,
    output:
        train=f"{SA_DIR}/data/{{dataset}}/train.parquet",
        validation=f"{SA_DIR}/data/{{dataset}}/validation.parquet",
        test=f"{SA_DIR}/data/{{dataset}}/test.parquet",
        meta=f"{SA_DIR}/data/{{dataset}}/meta.json",
    log:
        f"{LOGS}/study_a/dataset/{{dataset}}.log",
    benchmark:
        benchmark_file("study_a_dataset", "{dataset}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        **cpu_resources(SA_CPU),
    params:
        name="{dataset}",
        spec=dataset_spec,
        seed=dataset_key("seed"),
        code_digest=code_digest("study_a_dataset"),
    script:
        script_path("study_a_dataset")


rule study_a_subsets:
    """Balanced and imbalanced train/validation/test subsets, counts and class weights."""
    input:
        train=rules.study_a_dataset.output.train,
        validation=rules.study_a_dataset.output.validation,
        test=rules.study_a_dataset.output.test,
    output:
        **{f"{v}_{s}": subset_file("{dataset}", v, s) for v in VARIANTS for s in SPLITS},
        counts=f"{SA_DIR}/subsets/{{dataset}}/counts.csv",
        class_weights=f"{SA_DIR}/subsets/{{dataset}}/class_weights.csv",
    log:
        f"{LOGS}/study_a/subsets/{{dataset}}.log",
    benchmark:
        benchmark_file("study_a_subsets", "{dataset}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        **cpu_resources(SA_CPU),
    params:
        languages=dataset_key("languages"),
        labels=dataset_key("labels"),
        n_classes=n_labels,
        ratios=dataset_key("ratios"),
        split_sizes=dataset_key("split_sizes"),
        code_digest=code_digest("study_a_subsets"),
    script:
        script_path("study_a_subsets")


rule study_a_diagnose:
    """Language-label skew of one dataset: its normalised splits (stage "data"), or the balanced
    and imbalanced subsets the study builds (stage "subsets"). CPU, seconds."""
    input:
        unpack(diagnose_inputs),
    output:
        summary=f"{SA_DIR}/diagnosis/{{dataset}}/{{stage}}.csv",
        cells=f"{SA_DIR}/diagnosis/{{dataset}}/{{stage}}_cells.csv",
        figure=report(
            f"{SA_DIR}/diagnosis/{{dataset}}/{{stage}}.png",
            **report_category("Diagnosis", "diagnosis_fig"),
        ),
    log:
        f"{LOGS}/study_a/diagnose/{{dataset}}/{{stage}}.log",
    benchmark:
        benchmark_file("study_a_diagnose", "{dataset}/{stage}")
    wildcard_constraints:
        stage="data|subsets",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        dataset="{dataset}",
        languages=dataset_key("languages"),
        labels=dataset_key("labels"),
        code_digest=code_digest("study_a_diagnose"),
    script:
        script_path("study_a_diagnose")


rule study_a_diagnose_report:
    """Every dataset's diagnosis in one table (CSV + Markdown), without waiting for any training."""
    input:
        summary=diagnosis_files("summary"),
        cells=diagnosis_files("cells"),
    output:
        csv=report(
            f"{REP_A}/diagnosis.csv", **report_category("Diagnosis", "diagnosis")
        ),
        md=f"{REP_A}/diagnosis.md",
        cells=report(
            f"{REP_A}/diagnosis_cells.csv",
            **report_category("Diagnosis", "diagnosis_cells"),
        ),
    log:
        f"{LOGS}/study_a/diagnose_report.log",
    benchmark:
        benchmark_file("study_a_diagnose_report", "all")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        code_digest=code_digest("study_a_diagnose_report"),
    script:
        script_path("study_a_diagnose_report")


rule study_a_tiny_model:
    """A tiny encoder (BERT or XLM-R architecture: tiny.architecture) and its tokenizer
    trained on the study's corpora, saved with save_pretrained and loaded later exactly
    like a hub checkpoint."""
    input:
        data=tiny_model_inputs,
    output:
        directory(f"{OUT}/models/{{model}}"),
    log:
        f"{LOGS}/study_a/tiny_model/{{model}}.log",
    benchmark:
        benchmark_file("study_a_tiny_model", "{model}")
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        **cpu_resources(SA_CPU),
    params:
        arch=lookup(dpath="models/{model}/tiny", within=config),
        seed=lookup(dpath="models/{model}/tiny/seed", within=config),
        code_digest=code_digest("study_a_tiny_model"),
    script:
        script_path("study_a_tiny_model")


rule study_a_finetune:
    """Fine-tune one model on one training variant with one loss weighting and one seed."""
    input:
        unpack(finetune_inputs),
    output:
        model=directory(f"{run_dir(f'{SA_DIR}/finetune')}/model"),
        metrics=f"{run_dir(f'{SA_DIR}/finetune')}/metrics.json",
        predictions=f"{run_dir(f'{SA_DIR}/finetune')}/predictions.parquet",
        curve=f"{run_dir(f'{SA_DIR}/finetune')}/curve.csv",
    log:
        f"{run_dir(f'{LOGS}/study_a/finetune')}.log",
    benchmark:
        benchmark_file("study_a_finetune", "{dataset}/{model}/{condition}/seed{seed}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(model_settings)
    resources:
        **gpu_resources(model_settings, mem_mb=32000, runtime=720),
    params:
        model=model_spec,
        labels=dataset_key("labels"),
        test_variants=TEST_VARIANTS,
        hp=finetune_hp,
        weighting=condition_weighting,
        mitigation=condition_mitigation,
        model_selection=condition_model_selection,
        seed=finetune_seed,
        ckpt_dir=run_dir(f"{CKPT}/study_a"),
        keep_checkpoints=config["keep_checkpoints"],
        code_digest=code_digest("study_a_finetune"),
    script:
        script_path("study_a_finetune")


rule study_a_evaluate:
    """Accuracy overall and per language on every test variant; predicted-class shares; language
    reliance on the balanced test set (TVD of predicted vs true classes, accuracy on the
    language's over- vs under-represented training classes)."""
    input:
        predictions=rules.study_a_finetune.output.predictions,
        counts=rules.study_a_subsets.output.counts,
    output:
        accuracy=f"{run_dir(f'{SA_DIR}/eval')}/accuracy.csv",
        distribution=f"{run_dir(f'{SA_DIR}/eval')}/distribution.csv",
        reliance=f"{run_dir(f'{SA_DIR}/eval')}/reliance.csv",
    log:
        f"{run_dir(f'{LOGS}/study_a/evaluate')}.log",
    benchmark:
        benchmark_file("study_a_evaluate", "{dataset}/{model}/{condition}/seed{seed}")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        labels=dataset_key("labels"),
        reliance_test="balanced",
        reliance_reference="imbalanced",
        code_digest=code_digest("study_a_evaluate"),
    script:
        script_path("study_a_evaluate")


rule study_a_probe:
    """Language-identification probe on a fine-tuned model's sentence representations."""
    input:
        model=rules.study_a_finetune.output.model,
        data=probe_data,
    output:
        f"{run_dir(f'{SA_DIR}/probe')}.csv",
    log:
        f"{run_dir(f'{LOGS}/study_a/probe')}.log",
    benchmark:
        benchmark_file("study_a_probe", "{dataset}/{model}/{condition}/seed{seed}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(model_settings)
    resources:
        **gpu_resources(model_settings, mem_mb=16000, runtime=60, stage="probe"),
    params:
        settings=probe_settings,
        model=model_spec,
        code_digest=code_digest("study_a_probe"),
    script:
        script_path("study_a_probe")


rule study_a_probe_base:
    """The same probe on the pretrained (not fine-tuned) model."""
    input:
        unpack(probe_base_inputs),
    output:
        f"{SA_DIR}/probe/{{dataset}}/{{model}}/base.csv",
    log:
        f"{LOGS}/study_a/probe/{{dataset}}/{{model}}/base.log",
    benchmark:
        benchmark_file("study_a_probe_base", "{dataset}/{model}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(model_settings)
    resources:
        **gpu_resources(model_settings, mem_mb=16000, runtime=60, stage="probe"),
    params:
        settings=probe_settings,
        model=model_spec,
        num_labels=n_labels,
        code_digest=code_digest("study_a_probe_base"),
    script:
        script_path("study_a_probe_base")


rule study_a_dfr:
    """Deep feature reweighting (Kirichenko et al. 2023) of the baseline condition's model: its
    encoder frozen, its last layer refitted on (language, label)-balanced validation rows.
    """
    input:
        unpack(dfr_inputs),
    output:
        predictions=f"{SA_DIR}/dfr/{{dataset}}/{{model}}/seed{{seed}}/predictions.parquet",
        metrics=f"{SA_DIR}/dfr/{{dataset}}/{{model}}/seed{{seed}}/metrics.json",
    log:
        f"{LOGS}/study_a/dfr/{{dataset}}/{{model}}/seed{{seed}}.log",
    benchmark:
        benchmark_file("study_a_dfr", "{dataset}/{model}/seed{seed}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(model_settings)
    resources:
        **gpu_resources(model_settings, mem_mb=16000, runtime=60, stage="dfr"),
    params:
        labels=dataset_key("labels"),
        test_variants=TEST_VARIANTS,
        max_length=dfr_max_length,
        settings=dfr_settings,
        model=model_spec,
        seed=finetune_seed,
        code_digest=code_digest("study_a_dfr"),
    script:
        script_path("study_a_dfr")


rule study_a_shap_values:
    """SHAP values (Partition explainer, text masker, class probabilities) of one model."""
    input:
        model=rules.study_a_finetune.output.model,
        data=probe_data,
    output:
        shap_values_file("{dataset}", "{model}", "{condition}", "{seed}"),
    log:
        f"{run_dir(f'{LOGS}/study_a/shap_values')}.log",
    benchmark:
        benchmark_file(
            "study_a_shap_values", "{dataset}/{model}/{condition}/seed{seed}"
        )
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(model_settings)
    resources:
        **gpu_resources(model_settings, mem_mb=16000, runtime=240, stage="shap"),
    params:
        settings=shap_settings,
        labels=dataset_key("labels"),
        code_digest=code_digest("study_a_shap_values"),
    script:
        script_path("study_a_shap_values")


rule study_a_shap_compare:
    """Cumulative SHAP differences per token type (imbalanced and weighted vs balanced)."""
    input:
        reference=shap_reference,
        others=shap_others,
        meta=rules.study_a_dataset.output.meta,
    output:
        cumulative=f"{SA_DIR}/shap/{{dataset}}/{{model}}/seed{{seed}}/cumulative.csv",
        informative=f"{SA_DIR}/shap/{{dataset}}/{{model}}/seed{{seed}}/informative.csv",
        figure=report(
            f"{SA_DIR}/shap/{{dataset}}/{{model}}/seed{{seed}}/differences.png",
            **report_category("SHAP", "shap_differences"),
        ),
    log:
        f"{LOGS}/study_a/shap_compare/{{dataset}}/{{model}}/seed{{seed}}.log",
    benchmark:
        benchmark_file("study_a_shap_compare", "{dataset}/{model}/seed{seed}")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        threshold=SA["shap"]["threshold"],
        compare=SA["shap"]["compare"],
        classes=shap_classes,
        ratio_groups=dataset_key("ratios"),
        labels=dataset_key("labels"),
        code_digest=code_digest("study_a_shap_compare"),
    script:
        script_path("study_a_shap_compare")


rule study_a_report:
    """Report tables (CSV + Markdown) and the accuracy figure of Study A."""
    input:
        unpack(report_inputs),
    output:
        accuracy=report(
            f"{REP_A}/accuracy.csv", **report_category("Tables", "accuracy")
        ),
        lid=report(f"{REP_A}/lid.csv", **report_category("Tables", "lid")),
        shap=report(
            f"{REP_A}/shap_cumulative.csv",
            **report_category("Tables", "shap_cumulative"),
        ),
        class_weights=report(
            f"{REP_A}/class_weights.csv", **report_category("Tables", "class_weights")
        ),
        counts=report(
            f"{REP_A}/subset_counts.csv", **report_category("Tables", "subset_counts")
        ),
        accuracy_md=f"{REP_A}/accuracy.md",
        lid_md=f"{REP_A}/lid.md",
        shap_md=f"{REP_A}/shap_cumulative.md",
        class_weights_md=f"{REP_A}/class_weights.md",
        counts_md=f"{REP_A}/subset_counts.md",
        informative=f"{REP_A}/shap_informative.csv",
        accuracy_fig=report(
            f"{REP_A}/accuracy.png", **report_category("Figures", "accuracy_fig")
        ),
        reliance=report(
            f"{REP_A}/language_reliance.csv",
            **report_category("Tables", "language_reliance"),
        ),
        reliance_md=f"{REP_A}/language_reliance.md",
        mitigation=report(
            f"{REP_A}/mitigation.csv", **report_category("Tables", "mitigation")
        ),
        mitigation_md=f"{REP_A}/mitigation.md",
        mitigation_fig=report(
            f"{REP_A}/mitigation.png", **report_category("Figures", "mitigation_fig")
        ),
    log:
        f"{LOGS}/study_a/report.log",
    benchmark:
        benchmark_file("study_a_report", "all")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        **report_ids(),
        figure_test_variants=report_figure_tests(),
        mitigation_baseline=mitigation_baseline(),
        n_classes=report_n_classes(),
        code_digest=code_digest("study_a_report"),
    script:
        script_path("study_a_report")
