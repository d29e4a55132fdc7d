rule evaluate:
    input:
        scores=get_row_fused,
        checkpoints=get_row_checkpoints,
        features=get_row_features,
        job=ancient(get_evaluate_job),
    output:
        f"{OUT}/rows/{{table}}/{{row}}.json",
    log:
        f"results/logs/{BENCH}/rows/{{table}}/{{row}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/rows/{{table}}/{{row}}.tsv"
    resources:
        mem_mb=grow("evaluate", "mem_mb"),
        runtime=grow("evaluate", "runtime"),
    params:
        code=code_version("evaluate"),
        args=job_args("evaluate", evaluate_args),
    shell:
        "sure-ood evaluate --job {params.args:q} > {log:q} 2>&1"
