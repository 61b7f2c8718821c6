# Study B: language imbalance in pretraining (cloned languages, EN+FR).
# corpus -> tokenizer -> tokens (+ parallel) -> pretrain (one job per run id)
#   -> perplexity / alignment -> scaling fits (per size) -> report


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
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        language=lambda w: w.lang,
        spec=lambda w: SB["languages"][w.lang],
    script:
        script_path("study_b_corpus")


rule study_b_parallel_corpus:
    """Parallel sentence pairs (synthetic, hub e.g. Europarl fr-en, or local files)."""
    input:
        local=local_parallel_files,
    output:
        f"{SB_DIR}/corpus/parallel.parquet",
    log:
        f"{LOGS}/study_b/corpus/parallel.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        spec=lambda w: {k: v for k, v in SB["parallel"].items() if k != "languages"},
        languages=lambda w: SB["parallel"]["languages"],
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
    conda:
        "../envs/data.yaml"
    threads: SB_CPUS
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        tokenizer=lambda w: SB["tokenizer"],
        seed=SB.get("seed", 0),
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
    conda:
        "../envs/data.yaml"
    threads: SB_CPUS
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        language=lambda w: w.lang,
    script:
        script_path("study_b_tokens")


rule study_b_parallel_tokens:
    """Parallel sentences, each side tokenised by its own language's tokenizer."""
    input:
        pairs=rules.study_b_parallel_corpus.output[0],
        tokenizers=lambda w: [
            f"{SB_DIR}/tokenizer/{lang}.model" for lang in SB["parallel"]["languages"]
        ],
    output:
        f"{SB_DIR}/tokens/parallel.npz",
    log:
        f"{LOGS}/study_b/tokens/parallel.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        languages=lambda w: SB["parallel"]["languages"],
    script:
        script_path("study_b_parallel_tokens")


# --- pretraining and evaluation ------------------------------------------------------------
rule study_b_pretrain:
    """Pretrain one run of the grid (resumable from its checkpoint folder)."""
    input:
        tokens=sb_token_metas,
    output:
        model=directory(f"{SB_DIR}/runs/{{run}}/model"),
        curve=f"{SB_DIR}/runs/{{run}}/curve.csv",
        metrics=f"{SB_DIR}/runs/{{run}}/metrics.json",
    log:
        f"{LOGS}/study_b/pretrain/{{run}}.log",
    conda:
        "../envs/torch.yaml"
    threads: sb_threads
    resources:
        gpu=sb_resources("gpu", 1),
        gpu_model=sb_resources("gpu_model"),
        cpus_per_gpu=sb_resources("cpus_per_gpu", 8),
        mem_mb=sb_resources("mem_mb", 64000),
        runtime=sb_resources("runtime", 90, scaled=True),
    params:
        run=sb_run,
        model=lambda w: sbgrid.model_params(SB, sb_run(w)["size"]),
        train=lambda w: sbgrid.train_params(SB, sb_run(w)["size"]),
        seed=SB.get("seed", 0),
        ckpt_dir=lambda w: f"{CKPT}/study_b/{w.run}",
        keep_checkpoints=config["keep_checkpoints"],
        num_gpus=lambda w: max(
            int(sbgrid.size_resources(SB, sb_run(w)["size"]).get("gpu", 1)), 1
        ),
    script:
        script_path("study_b_pretrain")


rule study_b_perplexity:
    """Held-out perplexity of every language of a run (sliding windows)."""
    input:
        model=rules.study_b_pretrain.output.model,
        tokens=sb_token_metas,
    output:
        f"{SB_DIR}/runs/{{run}}/perplexity.json",
    log:
        f"{LOGS}/study_b/perplexity/{{run}}.log",
    conda:
        "../envs/torch.yaml"
    threads: sb_threads
    resources:
        gpu=sb_resources("gpu", 1),
        gpu_model=sb_resources("gpu_model"),
        cpus_per_gpu=sb_resources("cpus_per_gpu", 8),
        mem_mb=sb_resources("mem_mb", 64000),
        runtime=sb_resources("runtime", 90),
    params:
        run=sb_run,
        eval=sb_eval("window", "stride", "max_tokens", "batch_size"),
        seed=SB.get("seed", 0),
    script:
        script_path("study_b_perplexity")


rule study_b_alignment:
    """Representation (per layer) and gradient alignment of L1/L2 on parallel data."""
    input:
        unpack(
            lambda w: {
                "model": f"{SB_DIR}/runs/{w.run}/model",
                "tokens": sb_token_metas(w),
                **sb_parallel_input(w),
            }
        ),
    output:
        representation=f"{SB_DIR}/runs/{{run}}/alignment_representation.csv",
        gradient=f"{SB_DIR}/runs/{{run}}/alignment_gradient.csv",
    log:
        f"{LOGS}/study_b/alignment/{{run}}.log",
    conda:
        "../envs/torch.yaml"
    threads: sb_threads
    resources:
        gpu=sb_resources("gpu", 1),
        gpu_model=sb_resources("gpu_model"),
        cpus_per_gpu=sb_resources("cpus_per_gpu", 8),
        mem_mb=sb_resources("mem_mb", 64000),
        runtime=sb_resources("runtime", 90),
    params:
        run=sb_run,
        eval=sb_eval(
            "n_parallel",
            "batch_size",
            "parallel_min_len",
            "parallel_max_len",
            "clone_parallel",
        ),
        seed=SB.get("seed", 0),
    script:
        script_path("study_b_alignment")


rule study_b_fit:
    """Monolingual scaling fit 1/PPL = c - a x^-b per size; MLTE, TEff, MLPE (bootstrap intervals) of
    bilingual runs; the fit's residuals and parameters at a bound."""
    input:
        mono=lambda w: [sb_ppl(r) for r in SB_FITS[w.size]["mono"]],
        target=lambda w: [sb_ppl(r) for r in SB_FITS[w.size]["targets"]],
        metrics=lambda w: [sb_metrics(r) for r in SB_FITS[w.size]["targets"]],
    output:
        table=f"{SB_DIR}/fits/{{size}}.csv",
        points=f"{SB_DIR}/fits/{{size}}_points.csv",
    log:
        f"{LOGS}/study_b/fit/{{size}}.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        mono_ids=lambda w: [SB_RUNS[r] for r in SB_FITS[w.size]["mono"]],
        target_runs=lambda w: [SB_RUNS[r] for r in SB_FITS[w.size]["targets"]],
        train=lambda w: sbgrid.train_params(SB, w.size),
        fit=lambda w: {
            "n_boot": SB["eval"].get("fit_bootstrap", 1000),
            "seed": SB.get("seed", 0),
            "max_rel_residual": SB["eval"].get("fit_max_rel_error", 0.05),
        },
    script:
        script_path("study_b_fit")


# --- report --------------------------------------------------------------------------------
rule study_b_report:
    """Study B tables (CSV + Markdown, with the published figures beside ours) and figures."""
    input:
        perplexity=[sb_ppl(r) for r in SB_RUNS],
        fits=[f"{SB_DIR}/fits/{size}.csv" for size in SB_FITS],
        fit_points=[f"{SB_DIR}/fits/{size}_points.csv" for size in SB_FITS],
        representation=[
            f"{SB_DIR}/runs/{r}/alignment_representation.csv" for r in sb_bilingual()
        ],
        gradient=[f"{SB_DIR}/runs/{r}/alignment_gradient.csv" for r in sb_bilingual()],
    output:
        **{t: report(f"{REP_B}/{t}.csv", **_sb_report_category(t)) for t in SB_TABLES},
        **{f"{t}_md": f"{REP_B}/{t}.md" for t in SB_TABLES},
        **{f: report(f"{REP_B}/{f}.png", **_sb_report_category(f)) for f in SB_FIGURES},
    log:
        f"{LOGS}/study_b/report.log",
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=sb_cpu("mem_mb"),
        runtime=sb_cpu("runtime"),
    params:
        runs=[SB_RUNS[r] for r in SB_RUNS],
        bilingual=sb_bilingual(),
    script:
        script_path("study_b_report")
