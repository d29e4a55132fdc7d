# One forward pass per (test model, view) and split group (common.smk extract_shapes): every
# test split of a built-in array benchmark in one job, else one split, or with
# `extract_shards: N` (N > 1) one of N contiguous shards of it (merge_features.smk
# concatenates them in order). One body for every shape.
# The benchmark enters as its identity keys (never the data's location: moving the images
# reruns nothing here; the manifest holds paths relative to data_root, see common.smk).
for extract_name, shape in extract_shapes().items():

    rule:
        name:
            extract_name
        input:
            model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
            manifest=shape["manifest"],
            job=ancient(get_extract_job),
        output:
            shape["output"],
        log:
            f"results/logs/{BENCH}/{shape['stem']}.log",
        benchmark:
            f"results/benchmarks/{BENCH}/{shape['stem']}.tsv"
        threads: res("extract", "threads")
        resources:
            mem_mb=grow("extract", "mem_mb"),
            runtime=grow("extract", "runtime"),
            gpu=res("extract", "gpu"),
        params:
            code=code_version("extract"),
            benchmark=get_bench_identity("extract"),
            # the test model, splits, view, shard and outputs (common.smk extract_args)
            args=job_args("extract", extract_args, with_threads=True),
        # input.job: batch size, device, GPU options and the number of shards
        shell:
            "sure-ood extract --job {BENCH_JOB} --job {params.args:q} > {log:q} 2>&1"


if EXTRACT_SHARDS > 1:

    include: "merge_features.smk"
