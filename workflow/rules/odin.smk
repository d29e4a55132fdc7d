rule odin:
    input:
        model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
        features=feature_path("{test_model}", "{view}", "{split}"),
        manifest=split_manifest("{split}"),
        job=ancient(get_odin_job),
    output:
        f"{OUT}/odin/{{test_model}}/{ODIN_LEVELS}/view~{{view}}/split~{{split}}.npz",
    log:
        f"results/logs/{BENCH}/odin/{{test_model}}/{ODIN_LEVELS}/view~{{view}}/split~{{split}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/odin/{{test_model}}/{ODIN_LEVELS}/view~{{view}}/split~{{split}}.tsv"
    threads: res("odin", "threads")
    resources:
        mem_mb=grow("odin", "mem_mb"),
        runtime=grow("odin", "runtime"),
        gpu=res("odin", "gpu"),
    params:
        code=code_version("odin"),
        benchmark=get_bench_identity("odin"),
        args=job_args("odin", odin_args, with_threads=True),
    # input.job: T, epsilon and std scaling (from the path levels of ODIN_LEVELS), the
    # device, precision, loader workers and batch size (config compute.odin)
    shell:
        "sure-ood odin --job {BENCH_JOB} --job {params.args:q} > {log:q} 2>&1"
