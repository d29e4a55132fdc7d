rule evaluate:
    input:
        scores=get_row_fused,
        checkpoints=get_row_checkpoints,
        features=get_row_features,
    output:
        f"{OUT}/rows/{{table}}/{{row}}.json",
    log:
        f"results/logs/{BENCH}/rows/{{table}}/{{row}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/rows/{{table}}/{{row}}.tsv"
    conda:
        "../../envs/sure-ood.yaml"
    resources:
        mem_mb=grow("evaluate", "mem_mb", 2000),
        runtime=grow("evaluate", "runtime", 15),
    params:
        code=code_version("evaluate"),
        row=get_row_json,
        config=get_row_config_json,
        replicates=get_row_replicates,
        n_boot=config.get("bootstrap", 1000),
    shell:
        "sure-ood evaluate --scores {input.scores:q} --replicates {params.replicates} "
        "--row {params.row} --config {params.config} "
        "--table {wildcards.table} --row-id {wildcards.row} "
        "--checkpoints {input.checkpoints:q} --features {input.features:q} "
        "--n-boot {params.n_boot} --out {output:q} > {log:q} 2>&1"
