rule prepare_data:
    output:
        manifest=f"{OUT}/data/manifest.parquet",
        classes=f"{OUT}/data/classes.json",
        prior=f"{OUT}/data/prior.npy",
    log:
        f"results/logs/{BENCH}/prepare_data.log",
    benchmark:
        f"results/benchmarks/{BENCH}/prepare_data.tsv"
    resources:
        mem_mb=grow("prepare_data", "mem_mb"),
        runtime=grow("prepare_data", "runtime"),
    params:
        code=code_version("prepare_data"),
        # location-free: the data's folder is in the command (SPLIT_JOB), not a rerun trigger
        benchmark=get_split_config(with_location=False),
        out_dir=get_data_dir_of_output,
    shell:
        "sure-ood prepare_data --job {SPLIT_JOB} --out-dir {params.out_dir:q} "
        "> {log:q} 2>&1"
