rule odin:
    input:
        model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
        features=f"{OUT}/features/{{test_model}}/view~{{view}}/split~{{split}}.npz",
        manifest=data_input("manifest.parquet"),
    output:
        f"{OUT}/odin/{{test_model}}/odin~{{odin}}/view~{{view}}/split~{{split}}.npz",
    log:
        f"results/logs/{BENCH}/odin/{{test_model}}/odin~{{odin}}/view~{{view}}/split~{{split}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/odin/{{test_model}}/odin~{{odin}}/view~{{view}}/split~{{split}}.tsv"
    conda:
        "../../envs/sure-ood.yaml"
    threads: res("odin", "threads", 1)
    resources:
        mem_mb=grow("odin", "mem_mb", 4000),
        runtime=grow("odin", "runtime", 60),
        gpu=res("odin", "gpu", 0),
    params:
        code=code_version("odin"),
        # T, epsilon and std scaling come from the path (odin~t<T>_e<eps>_s<0|1>)
        args=get_odin_args,
        benchmark=get_bench_identity("odin"),
        data_dir=get_data_dir,
        device=config.get("device", "auto"),
        # precision, loader workers and batch size (config compute.odin)
        compute=get_odin_compute_args(),
    shell:
        "sure-ood odin --test-model {input.model:q} --features {input.features:q} "
        "--benchmark {BENCH_JSON} --data-dir {params.data_dir:q} "
        "--split {wildcards.split} --view {wildcards.view} {params.args} "
        "{params.compute} --threads {threads} --device {params.device} "
        "--out {output:q} > {log:q} 2>&1"
