rule score:
    input:
        unpack(get_score_inputs),
        job=ancient(get_score_job),
    output:
        f"{OUT}/scores/{{test_model}}/method~{{method}}/view~{{view}}/scores.parquet",
    log:
        f"results/logs/{BENCH}/scores/{{test_model}}/method~{{method}}/view~{{view}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/scores/{{test_model}}/method~{{method}}/view~{{view}}.tsv"
    resources:
        mem_mb=grow("score", "mem_mb"),
        runtime=grow("score", "runtime"),
    params:
        code=get_score_code,
        # the method's own config subtree: editing it reruns only this method's jobs
        method=get_method,
        args=job_args("score", score_args),
    shell:
        "sure-ood score --job {params.args:q} > {log:q} 2>&1"
