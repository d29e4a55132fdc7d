# One forward pass per (test model, view, split), or with `extract_shards: N` (N > 1) per one
# of N contiguous shards of the split (merge_features.smk concatenates them in order).
# The benchmark enters as its identity keys (never the data's location: moving the images
# reruns nothing here; the manifest holds paths relative to data_root, see common.smk).
rule extract:
    input:
        model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
        manifest=split_manifest("{split}"),
        job=ancient(get_extract_job),
    output:
        temp(EXTRACT_OUTPUT) if EXTRACT_SHARDS > 1 else EXTRACT_OUTPUT,
    log:
        f"results/logs/{BENCH}/{EXTRACT_STEM}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/{EXTRACT_STEM}.tsv"
    threads: res("extract", "threads")
    resources:
        mem_mb=grow("extract", "mem_mb"),
        runtime=grow("extract", "runtime"),
        gpu=res("extract", "gpu"),
    params:
        code=code_version("extract"),
        benchmark=get_bench_identity("extract"),
        # the test model, split, view, shard and output (common.smk extract_args)
        args=job_args("extract", extract_args, with_threads=True),
    # input.job: batch size, device, GPU options and the number of shards
    shell:
        "sure-ood extract --job {BENCH_JOB} --job {params.args:q} > {log:q} 2>&1"


if EXTRACT_SHARDS > 1:

    include: "merge_features.smk"
