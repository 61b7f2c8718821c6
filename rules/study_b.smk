# Study B: language imbalance in pretraining (cloned languages, EN+FR).
# corpus -> tokenizer -> tokens (+ parallel) -> pretrain (one job per run id)
#   -> perplexity / alignment -> scaling fits (per size) -> report
# Helpers: rules/study_b_common.smk.
# Jobs of seconds that read a few tables run on the submitting machine, not as cluster jobs:


localrules:
    study_b_parallel_tokens,
    study_b_fit,
    study_b_report,


wildcard_constraints:
    lang="[A-Za-z0-9_]+",
    run="[A-Za-z0-9_.-]+",
    size="[A-Za-z0-9_]+",


# --- data ----------------------------------------------------------------------------------
rule study_b_corpus:
    """Documents of one base language (hub, local files or synthetic), train and test."""
    input:
        local=local_corpus_files,
    output:
        train=f"{SB_DIR}/corpus/{{lang}}/train.parquet",
        test=f"{SB_DIR}/corpus/{{lang}}/test.parquet",
    log:
        f"{LOGS}/study_b/corpus/{{lang}}.log",
    benchmark:
        benchmark_file("study_b_corpus", "{lang}")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        **cpu_resources(SB_CPU),
    params:
        language="{lang}",
        spec=lookup(dpath="study_b/languages/{lang}", within=config),
        code_digest=code_digest("study_b_corpus"),
    script:
        script_path("study_b_corpus")


rule study_b_parallel_corpus:
    """Parallel sentence pairs (synthetic, hub e.g. Europarl fr-en, or local files), read until
    n_parallel packed sequences exist (the tokenizers measure the pairs)."""
    input:
        local=local_parallel_files,
        tokenizers=parallel_tokenizers,
    output:
        f"{SB_DIR}/corpus/parallel.parquet",
    log:
        f"{LOGS}/study_b/corpus/parallel.log",
    benchmark:
        benchmark_file("study_b_parallel_corpus", "parallel")
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        **cpu_resources(SB_CPU),
    params:
        spec=parallel_spec,
        languages=SB_PARALLEL.get("languages"),
        n_parallel=SB["eval"]["n_parallel"],
        min_len=SB["eval"]["parallel_min_len"],
        max_len=SB["eval"]["parallel_max_len"],
        code_digest=code_digest("study_b_parallel_corpus"),
    script:
        script_path("study_b_parallel_corpus")


rule study_b_tokenizer:
    """SentencePiece BPE tokenizer of one base language (byte fallback, split digits)."""
    input:
        train=rules.study_b_corpus.output.train,
    output:
        f"{SB_DIR}/tokenizer/{{lang}}.model",
    log:
        f"{LOGS}/study_b/tokenizer/{{lang}}.log",
    benchmark:
        benchmark_file("study_b_tokenizer", "{lang}")
    conda:
        "../envs/data.yaml"
    threads: SB_CPUS
    resources:
        **cpu_resources(SB_CPU),
    params:
        tokenizer=SB.get("tokenizer"),
        seed=SB_SEED,
        code_digest=code_digest("study_b_tokenizer"),
    script:
        script_path("study_b_tokenizer")


rule study_b_tokens:
    """Token streams (train.bin / test.bin, EOD between documents) and meta.json."""
    input:
        tokenizer=rules.study_b_tokenizer.output[0],
        train=rules.study_b_corpus.output.train,
        test=rules.study_b_corpus.output.test,
    output:
        train=f"{SB_DIR}/tokens/{{lang}}/train.bin",
        test=f"{SB_DIR}/tokens/{{lang}}/test.bin",
        meta=f"{SB_DIR}/tokens/{{lang}}/meta.json",
    log:
        f"{LOGS}/study_b/tokens/{{lang}}.log",
    benchmark:
        benchmark_file("study_b_tokens", "{lang}")
    conda:
        "../envs/data.yaml"
    threads: SB_CPUS
    resources:
        **cpu_resources(SB_CPU),
    params:
        language="{lang}",
        code_digest=code_digest("study_b_tokens"),
    script:
        script_path("study_b_tokens")


rule study_b_parallel_tokens:
    """Parallel sentences, each side tokenised by its own language's tokenizer."""
    input:
        pairs=rules.study_b_parallel_corpus.output[0],
        tokenizers=parallel_tokenizers,
    output:
        f"{SB_DIR}/tokens/parallel.npz",
    log:
        f"{LOGS}/study_b/tokens/parallel.log",
    benchmark:
        benchmark_file("study_b_parallel_tokens", "parallel")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        languages=SB_PARALLEL.get("languages"),
        code_digest=code_digest("study_b_parallel_tokens"),
    script:
        script_path("study_b_parallel_tokens")


# --- pretraining and evaluation ------------------------------------------------------------
rule study_b_pretrain:
    """Pretrain one run of the grid (resumable from its checkpoint folder)."""
    input:
        tokens=token_metas,
    output:
        model=directory(f"{sb_run_dir()}/model"),
        curve=f"{sb_run_dir()}/curve.csv",
        metrics=f"{sb_run_dir()}/metrics.json",
    log:
        f"{LOGS}/study_b/pretrain/{{run}}.log",
    benchmark:
        benchmark_file("study_b_pretrain", "{run}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(size_settings)
    resources:
        **gpu_resources(size_settings, mem_mb=64000, runtime=90, scale=run_scale),
    params:
        run=sb_run,
        model=size_model,
        train=size_train,
        seed=SB_SEED,
        ckpt_dir=f"{CKPT}/study_b/{{run}}",
        keep_checkpoints=config["keep_checkpoints"],
        num_gpus=num_gpus,
        code_digest=code_digest("study_b_pretrain"),
    script:
        script_path("study_b_pretrain")


rule study_b_perplexity:
    """Held-out perplexity of every language of a run (sliding windows)."""
    input:
        model=rules.study_b_pretrain.output.model,
        tokens=token_metas,
    output:
        perplexity_file("{run}"),
    log:
        f"{LOGS}/study_b/perplexity/{{run}}.log",
    benchmark:
        benchmark_file("study_b_perplexity", "{run}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(size_settings)
    resources:
        **gpu_resources(size_settings, mem_mb=16000, runtime=60, stage="perplexity"),
    params:
        **eval_params("window", "stride", "max_tokens", "batch_size", "precision"),
        run=sb_run,
        seed=SB_SEED,
        code_digest=code_digest("study_b_perplexity"),
    script:
        script_path("study_b_perplexity")


rule study_b_alignment:
    """Representation (per layer) and gradient alignment of L1/L2 on parallel data."""
    input:
        unpack(alignment_inputs),
    output:
        representation=f"{sb_run_dir()}/alignment_representation.csv",
        gradient=f"{sb_run_dir()}/alignment_gradient.csv",
    log:
        f"{LOGS}/study_b/alignment/{{run}}.log",
    benchmark:
        benchmark_file("study_b_alignment", "{run}")
    conda:
        "../envs/torch.yaml"
    threads: gpu_threads(size_settings)
    resources:
        **gpu_resources(size_settings, mem_mb=16000, runtime=30, stage="alignment"),
    params:
        **eval_params(
            "n_parallel",
            "parallel_min_len",
            "parallel_max_len",
            "clone_parallel",
            "alignment_precision",
        ),
        run=sb_run,
        seed=SB_SEED,
        code_digest=code_digest("study_b_alignment"),
    script:
        script_path("study_b_alignment")


rule study_b_fit:
    """Monolingual scaling fit 1/PPL = c - a x^-b per size; MLTE, TEff, MLPE (bootstrap intervals) of
    bilingual runs; the fit's residuals and parameters at a bound."""
    input:
        mono=fit_mono,
        target=fit_targets,
        metrics=fit_metrics,
        mono_metrics=fit_mono_metrics,
    output:
        table=f"{SB_DIR}/fits/{{size}}.csv",
        points=f"{SB_DIR}/fits/{{size}}_points.csv",
    log:
        f"{LOGS}/study_b/fit/{{size}}.log",
    benchmark:
        benchmark_file("study_b_fit", "{size}")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        mono_ids=fit_mono_runs,
        target_runs=fit_target_runs,
        train=fit_train,
        fit=fit_settings,
        code_digest=code_digest("study_b_fit"),
    script:
        script_path("study_b_fit")


# --- report --------------------------------------------------------------------------------
rule study_b_report:
    """Study B tables (CSV + Markdown, with the published figures beside ours) and figures."""
    input:
        perplexity=[perplexity_file(r) for r in SB_RUNS],
        metrics=[f"{sb_run_dir(r)}/metrics.json" for r in SB_RUNS],
        fits=[f"{SB_DIR}/fits/{size}.csv" for size in SB_FITS],
        fit_points=[f"{SB_DIR}/fits/{size}_points.csv" for size in SB_FITS],
        representation=[
            f"{sb_run_dir(r)}/alignment_representation.csv" for r in sb_bilingual()
        ],
        gradient=[f"{sb_run_dir(r)}/alignment_gradient.csv" for r in sb_bilingual()],
    output:
        **{t: report(f"{REP_B}/{t}.csv", **sb_report_category(t)) for t in SB_TABLES},
        **{f"{t}_md": f"{REP_B}/{t}.md" for t in SB_TABLES},
        **{f: report(f"{REP_B}/{f}.png", **sb_report_category(f)) for f in SB_FIGURES},
    log:
        f"{LOGS}/study_b/report.log",
    benchmark:
        benchmark_file("study_b_report", "all")
    conda:
        "../envs/data.yaml"
    threads: 1
    params:
        runs=[SB_RUNS[r] for r in SB_RUNS],
        bilingual=sb_bilingual(),
        code_digest=code_digest("study_b_report"),
    script:
        script_path("study_b_report")
