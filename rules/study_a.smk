# Study A: class skew per language in multilingual fine-tuning.
# data -> subsets -> (tiny model) -> finetune -> evaluate / probe / SHAP -> report


wildcard_constraints:
    dataset="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_.-]+",
    condition="[A-Za-z0-9_.-]+",
    seed="[0-9]+",


rule prepare_dataset:
    """Load a dataset (hub, local files or synthetic) into the normalised Parquet layout."""
    input:
        local=local_dataset_files,
    output:
        train=f"{OUT}/study_a/data/{{dataset}}/train.parquet",
        validation=f"{OUT}/study_a/data/{{dataset}}/validation.parquet",
        test=f"{OUT}/study_a/data/{{dataset}}/test.parquet",
        meta=f"{OUT}/study_a/data/{{dataset}}/meta.json",
    log:
        f"{LOGS}/study_a/prepare_dataset/{{dataset}}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        name=lambda w: w.dataset,
        spec=lambda w: lsconfig.dataset_source_spec(config, w.dataset),
        seed=lambda w: config["datasets"][w.dataset]["seed"],
    script:
        script_path("study_a_prepare_dataset")


rule build_subsets:
    """Balanced and imbalanced train/validation/test subsets, counts and class weights."""
    input:
        train=rules.prepare_dataset.output.train,
        validation=rules.prepare_dataset.output.validation,
        test=rules.prepare_dataset.output.test,
    output:
        **{
            f"{v}_{s}": f"{OUT}/study_a/subsets/{{dataset}}/{v}_{s}.parquet"
            for v in VARIANTS
            for s in SPLITS
        },
        counts=f"{OUT}/study_a/subsets/{{dataset}}/counts.csv",
        class_weights=f"{OUT}/study_a/subsets/{{dataset}}/class_weights.csv",
    log:
        f"{LOGS}/study_a/build_subsets/{{dataset}}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        languages=lambda w: config["datasets"][w.dataset]["languages"],
        labels=lambda w: config["datasets"][w.dataset]["labels"],
        n_classes=lambda w: len(config["datasets"][w.dataset]["labels"]),
        ratios=lambda w: config["datasets"][w.dataset]["ratios"],
        split_sizes=lambda w: config["datasets"][w.dataset]["split_sizes"],
    script:
        script_path("study_a_build_subsets")


rule diagnose:
    """Language-label skew of one dataset: its normalised splits (stage "data"), or the balanced
    and imbalanced subsets the study builds (stage "subsets"). CPU, seconds."""
    input:
        unpack(diagnose_inputs),
    output:
        summary=f"{OUT}/study_a/diagnosis/{{dataset}}/{{stage}}.csv",
        cells=f"{OUT}/study_a/diagnosis/{{dataset}}/{{stage}}_cells.csv",
        figure=report(
            f"{OUT}/study_a/diagnosis/{{dataset}}/{{stage}}.png",
            caption="../report/diagnosis_fig.rst",
            category="Study A",
            subcategory="Diagnosis",
        ),
    log:
        f"{LOGS}/study_a/diagnose/{{dataset}}/{{stage}}.log",
    wildcard_constraints:
        stage="data|subsets",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        dataset=lambda w: w.dataset,
        languages=lambda w: config["datasets"][w.dataset]["languages"],
        labels=lambda w: config["datasets"][w.dataset]["labels"],
    script:
        script_path("study_a_diagnose")


rule report_diagnosis:
    """Every dataset's diagnosis in one table (CSV + Markdown), without waiting for any training."""
    input:
        summary=diagnosis_files("summary"),
        cells=diagnosis_files("cells"),
    output:
        csv=report(
            f"{REP_A}/diagnosis.csv",
            caption="../report/diagnosis.rst",
            category="Study A",
            subcategory="Diagnosis",
        ),
        md=f"{REP_A}/diagnosis.md",
        cells=report(
            f"{REP_A}/diagnosis_cells.csv",
            caption="../report/diagnosis_cells.rst",
            category="Study A",
            subcategory="Diagnosis",
        ),
    log:
        f"{LOGS}/study_a/report_diagnosis.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    script:
        script_path("study_a_report_diagnosis")


rule build_tiny_model:
    """A tiny BERT-style encoder and WordPiece tokenizer trained on the study's corpora,
    saved with save_pretrained and loaded later exactly like a hub checkpoint."""
    input:
        data=lambda w: expand(
            f"{OUT}/study_a/data/{{d}}/train.parquet", d=sa_datasets()
        ),
    output:
        directory(f"{OUT}/models/{{model}}"),
    log:
        f"{LOGS}/models/{{model}}.log",
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        arch=lambda w: config["models"][w.model]["tiny"],
        seed=lambda w: config["models"][w.model]["tiny"]["seed"],
    script:
        script_path("study_a_build_tiny_model")


rule finetune:
    """Fine-tune one model on one training variant with one loss weighting and one seed."""
    input:
        unpack(
            lambda w: {
                "train": f"{OUT}/study_a/subsets/{w.dataset}/{SA['conditions'][w.condition]['train']}_train.parquet",
                "validation": f"{OUT}/study_a/subsets/{w.dataset}/{SA['conditions'][w.condition]['train']}_validation.parquet",
                "tests": [test_file(w.dataset, v) for v in TEST_VARIANTS],
                **({"model": model_input(w.model)} if model_input(w.model) else {}),
            }
        ),
    output:
        model=directory(
            f"{OUT}/study_a/finetune/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/model"
        ),
        metrics=f"{OUT}/study_a/finetune/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/metrics.json",
        predictions=f"{OUT}/study_a/finetune/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/predictions.parquet",
        curve=f"{OUT}/study_a/finetune/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/curve.csv",
    log:
        f"{LOGS}/study_a/finetune/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}.log",
    conda:
        "../envs/torch.yaml"
    threads: model_threads
    resources:
        gpu=model_resources("gpu", 1),
        gpu_model=model_resources("gpu_model"),
        cpus_per_gpu=model_resources("cpus_per_gpu", 8),
        mem_mb=model_resources("mem_mb", 32000),
        runtime=model_resources("runtime", 720),
    params:
        model=lambda w: lsconfig.model_spec(config, w.model),
        labels=lambda w: config["datasets"][w.dataset]["labels"],
        test_variants=TEST_VARIANTS,
        hp=finetune_hp,
        weighting=lambda w: SA["conditions"][w.condition]["weighting"],
        seed=lambda w: int(w.seed),
        ckpt_dir=lambda w: f"{CKPT}/study_a/{w.dataset}/{w.model}/{w.condition}/seed{w.seed}",
        keep_checkpoints=config["keep_checkpoints"],
    script:
        script_path("study_a_finetune")


rule evaluate:
    """Accuracy overall and per language on every test variant; predicted-class shares; language
    reliance on the balanced test set (TVD of predicted vs true classes, accuracy on the
    language's over- vs under-represented training classes)."""
    input:
        predictions=rules.finetune.output.predictions,
        counts=f"{OUT}/study_a/subsets/{{dataset}}/counts.csv",
    output:
        accuracy=f"{OUT}/study_a/eval/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/accuracy.csv",
        distribution=f"{OUT}/study_a/eval/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/distribution.csv",
        reliance=f"{OUT}/study_a/eval/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}/reliance.csv",
    log:
        f"{LOGS}/study_a/evaluate/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        labels=lambda w: config["datasets"][w.dataset]["labels"],
        reliance_test="balanced",
        reliance_reference="imbalanced",
    script:
        script_path("study_a_evaluate")


rule probe:
    """Language-identification probe on a fine-tuned model's sentence representations."""
    input:
        model=rules.finetune.output.model,
        data=lambda w: test_file(w.dataset, config["datasets"][w.dataset]["probe_test"]),
    output:
        f"{OUT}/study_a/probe/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}.csv",
    log:
        f"{LOGS}/study_a/probe/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}.log",
    conda:
        "../envs/torch.yaml"
    threads: model_threads
    resources:
        gpu=model_resources("gpu", 1),
        gpu_model=model_resources("gpu_model"),
        cpus_per_gpu=model_resources("cpus_per_gpu", 8),
        mem_mb=model_resources("mem_mb", 32000),
        runtime=model_resources("runtime", 720),
    params:
        settings=probe_params,
        model=lambda w: lsconfig.model_spec(config, w.model),
        num_labels=lambda w: len(config["datasets"][w.dataset]["labels"]),
    script:
        script_path("study_a_probe")


rule probe_base:
    """The same probe on the pretrained (not fine-tuned) model."""
    input:
        unpack(
            lambda w: {
                "data": test_file(
                    w.dataset, config["datasets"][w.dataset]["probe_test"]
                ),
                **({"model": model_input(w.model)} if model_input(w.model) else {}),
            }
        ),
    output:
        f"{OUT}/study_a/probe/{{dataset}}/{{model}}/base.csv",
    log:
        f"{LOGS}/study_a/probe/{{dataset}}/{{model}}/base.log",
    conda:
        "../envs/torch.yaml"
    threads: model_threads
    resources:
        gpu=model_resources("gpu", 1),
        gpu_model=model_resources("gpu_model"),
        cpus_per_gpu=model_resources("cpus_per_gpu", 8),
        mem_mb=model_resources("mem_mb", 32000),
        runtime=model_resources("runtime", 720),
    params:
        settings=probe_params,
        model=lambda w: lsconfig.model_spec(config, w.model),
        num_labels=lambda w: len(config["datasets"][w.dataset]["labels"]),
    script:
        script_path("study_a_probe")


rule shap_values:
    """SHAP values (Partition explainer, text masker, class probabilities) of one model."""
    input:
        model=rules.finetune.output.model,
        data=lambda w: test_file(w.dataset, config["datasets"][w.dataset]["probe_test"]),
    output:
        f"{OUT}/study_a/shap/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}.parquet",
    log:
        f"{LOGS}/study_a/shap/{{dataset}}/{{model}}/{{condition}}/seed{{seed}}.log",
    conda:
        "../envs/torch.yaml"
    threads: model_threads
    resources:
        gpu=model_resources("gpu", 1),
        gpu_model=model_resources("gpu_model"),
        cpus_per_gpu=model_resources("cpus_per_gpu", 8),
        mem_mb=model_resources("mem_mb", 32000),
        runtime=model_resources("runtime", 720),
    params:
        settings=lambda w: dict(
            lsconfig.shap_settings(config, w.dataset),
            max_length=finetune_hp(w)["max_length"],
        ),
        labels=lambda w: config["datasets"][w.dataset]["labels"],
    script:
        script_path("study_a_shap")


rule shap_compare:
    """Cumulative SHAP differences per token type (imbalanced and weighted vs balanced)."""
    input:
        reference=lambda w: f"{OUT}/study_a/shap/{w.dataset}/{w.model}/{SA['shap']['reference']}/seed{w.seed}.parquet",
        others=lambda w: [
            f"{OUT}/study_a/shap/{w.dataset}/{w.model}/{c}/seed{w.seed}.parquet"
            for c in SA["shap"]["compare"]
        ],
        meta=f"{OUT}/study_a/data/{{dataset}}/meta.json",
    output:
        cumulative=f"{OUT}/study_a/shap/{{dataset}}/{{model}}/seed{{seed}}/cumulative.csv",
        informative=f"{OUT}/study_a/shap/{{dataset}}/{{model}}/seed{{seed}}/informative.csv",
        figure=report(
            f"{OUT}/study_a/shap/{{dataset}}/{{model}}/seed{{seed}}/differences.png",
            caption="../report/shap_differences.rst",
            category="Study A",
            subcategory="SHAP",
        ),
    log:
        f"{LOGS}/study_a/shap_compare/{{dataset}}/{{model}}/seed{{seed}}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        threshold=SA["shap"]["threshold"],
        compare=SA["shap"]["compare"],
        classes=lambda w: SA["shap"]["classes"].get(
            w.dataset, list(range(len(config["datasets"][w.dataset]["labels"])))
        ),
        ratio_groups=lambda w: config["datasets"][w.dataset]["ratios"],
        labels=lambda w: config["datasets"][w.dataset]["labels"],
    script:
        script_path("study_a_shap_compare")


rule report_study_a:
    """Report tables (CSV + Markdown) and the accuracy figure of Study A."""
    input:
        unpack(_report_a_inputs),
    output:
        accuracy=report(
            f"{REP_A}/accuracy.csv",
            caption="../report/accuracy.rst",
            category="Study A",
            subcategory="Tables",
        ),
        lid=report(
            f"{REP_A}/lid.csv",
            caption="../report/lid.rst",
            category="Study A",
            subcategory="Tables",
        ),
        shap=report(
            f"{REP_A}/shap_cumulative.csv",
            caption="../report/shap_cumulative.rst",
            category="Study A",
            subcategory="Tables",
        ),
        class_weights=report(
            f"{REP_A}/class_weights.csv",
            caption="../report/class_weights.rst",
            category="Study A",
            subcategory="Tables",
        ),
        counts=report(
            f"{REP_A}/subset_counts.csv",
            caption="../report/subset_counts.rst",
            category="Study A",
            subcategory="Tables",
        ),
        accuracy_md=f"{REP_A}/accuracy.md",
        lid_md=f"{REP_A}/lid.md",
        shap_md=f"{REP_A}/shap_cumulative.md",
        class_weights_md=f"{REP_A}/class_weights.md",
        counts_md=f"{REP_A}/subset_counts.md",
        informative=f"{REP_A}/shap_informative.csv",
        accuracy_fig=report(
            f"{REP_A}/accuracy.png",
            caption="../report/accuracy_fig.rst",
            category="Study A",
            subcategory="Figures",
        ),
        reliance=report(
            f"{REP_A}/language_reliance.csv",
            caption="../report/language_reliance.rst",
            category="Study A",
            subcategory="Tables",
        ),
        reliance_md=f"{REP_A}/language_reliance.md",
    log:
        f"{LOGS}/study_a/report.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        **_report_a_ids(),
        labels={d: config["datasets"][d]["labels"] for d in sa_datasets()},
        figure_test_variants={
            d: config["datasets"][d].get("report_tests") for d in sa_datasets()
        },
    script:
        script_path("study_a_report")
