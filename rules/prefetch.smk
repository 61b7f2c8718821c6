# Login-node prefetch: every hub dataset and model of the configuration, into the caches the
# jobs use (HF_HOME, or HF_HUB_CACHE / HF_DATASETS_CACHE). Run `snakemake prefetch` with
# network access, then the workflow with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1.


localrules:
    prefetch,


rule prefetch:
    """Load every hub dataset and model the configuration names; list them and the cache folders."""
    output:
        csv=f"{OUT}/prefetch/hub.csv",
        md=f"{OUT}/prefetch/hub.md",
    log:
        f"{LOGS}/prefetch.log",
    benchmark:
        benchmark_file("prefetch", "all")
    conda:
        "../envs/torch.yaml"
    threads: 1
    params:
        config=lambda w: config,
        code_digest=code_digest("prefetch"),
    script:
        script_path("prefetch")
