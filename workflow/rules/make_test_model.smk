rule make_test_model:
    input:
        runs=get_test_model_runs,
    output:
        f"{OUT}/test_models/{{test_model}}/model.safetensors",
    log:
        f"results/logs/{BENCH}/test_models/{{test_model}}/make_test_model.log",
    benchmark:
        f"results/benchmarks/{BENCH}/test_models/{{test_model}}/make_test_model.tsv"
    resources:
        mem_mb=grow("make_test_model", "mem_mb"),
        runtime=grow("make_test_model", "runtime"),
    params:
        code=code_version("make_test_model"),
        args=job_args("make_test_model", make_test_model_args),
    shell:
        "sure-ood make_test_model --job {params.args:q} > {log:q} 2>&1"
