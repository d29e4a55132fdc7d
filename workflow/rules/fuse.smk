rule fuse:
    input:
        scores=get_fuse_scores,
        features=get_fuse_features,
    output:
        f"{OUT}/fused/{{table}}/{{row}}/rep~{{replicate}}.parquet",
    log:
        f"results/logs/{BENCH}/fused/{{table}}/{{row}}/rep~{{replicate}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/fused/{{table}}/{{row}}/rep~{{replicate}}.tsv"
    resources:
        mem_mb=grow("fuse", "mem_mb"),
        runtime=grow("fuse", "runtime"),
    params:
        code=code_version("fuse"),
        # the score files, feature caches and the row's fusion (common.smk fuse_args)
        args=job_args("fuse", fuse_args),
    shell:
        "sure-ood fuse --job {params.args:q} > {log:q} 2>&1"
