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
        fusion=get_fusion,
    shell:
        "sure-ood fuse --scores {input.scores:q} --features {input.features:q} "
        "--fusion {params.fusion} --out {output:q} > {log:q} 2>&1"
