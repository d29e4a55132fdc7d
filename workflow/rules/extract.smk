rule extract:
    input:
        model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
        manifest=f"{OUT}/data/manifest.parquet",
    output:
        f"{OUT}/features/{{test_model}}/view~{{view}}/split~{{split}}.npz",
    log:
        f"results/logs/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}.tsv"
    conda:
        "../../envs/sure-ood.yaml"
    threads: res("extract", "threads", 1)
    resources:
        mem_mb=res("extract", "mem_mb", 4000),
        runtime=res("extract", "runtime", 60),
        gpu=res("extract", "gpu", 0),
    params:
        benchmark=as_json(config["benchmark"]),
        data_dir=get_data_dir,
        batch_size=config.get("extract_batch_size", 256),
        device=config.get("device", "auto"),
    shell:
        "sure-ood extract --test-model {input.model:q} --benchmark {params.benchmark} "
        "--data-dir {params.data_dir:q} --split {wildcards.split} --view {wildcards.view} "
        "--batch-size {params.batch_size} --threads {threads} --device {params.device} "
        "--out {output:q} > {log:q} 2>&1"
