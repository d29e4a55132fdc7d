# One forward pass per (test model, view, split). With `extract_shards: N` (N > 1) each split is
# cut into N contiguous shards, one job each, and merge_features.smk concatenates them in order.
# The benchmark enters as its identity keys (never the data's location: moving the images
# reruns nothing here; the manifest holds paths relative to data_root, see common.smk).
if not EXTRACT_PER_SPLIT:

    # One job per (test model, view) extracts every test split: the model and the torch/timm
    # start-up are paid once, not once per split.
    rule extract:
        input:
            model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
            manifest=data_input("manifest.parquet"),
            job=ancient(get_extract_job),
        output:
            [
                f"{OUT}/features/{{test_model}}/view~{{view}}/split~{split}.npz"
                for split in TEST_SPLITS
            ],
        log:
            f"results/logs/{BENCH}/features/{{test_model}}/view~{{view}}/extract.log",
        benchmark:
            f"results/benchmarks/{BENCH}/features/{{test_model}}/view~{{view}}/extract.tsv"
        threads: res("extract", "threads", 1)
        resources:
            mem_mb=grow("extract", "mem_mb", 4000),
            runtime=grow("extract", "runtime", 60),
            gpu=res("extract", "gpu", 0),
        params:
            code=code_version("extract"),
            benchmark=get_bench_identity("extract"),
            data_dir=get_data_dir,
            splits=" ".join(TEST_SPLITS),
        shell:
            "sure-ood extract --job {BENCH_JOB} --job {input.job:q} --test-model {input.model:q} "
            "--data-dir {params.data_dir:q} --split {params.splits} --view {wildcards.view} "
            "--threads {threads} --out {output:q} > {log:q} 2>&1"

    # The training split (for fitted methods: Mahalanobis, KNN, ViM...) or the held-out
    # validation split (temperature scaling) only where a method needs it, always at the
    # center view: the same CLI stage, one split.
    rule extract_train:
        input:
            model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
            manifest=data_input("manifest.parquet"),
            job=ancient(get_extract_job),
        output:
            f"{OUT}/features/{{test_model}}/view~center/split~{{fit_split}}.npz",
        log:
            f"results/logs/{BENCH}/features/{{test_model}}/view~center/split~{{fit_split}}.log",
        benchmark:
            f"results/benchmarks/{BENCH}/features/{{test_model}}/view~center/split~{{fit_split}}.tsv"
        wildcard_constraints:
            fit_split="train|val",
        threads: res("extract", "threads", 1)
        resources:
            mem_mb=grow("extract", "mem_mb", 4000),
            runtime=grow("extract", "runtime", 60),
            gpu=res("extract", "gpu", 0),
        params:
            code=code_version("extract"),
            benchmark=get_bench_identity("extract"),
            data_dir=get_data_dir,
        shell:
            "sure-ood extract --job {BENCH_JOB} --job {input.job:q} --test-model {input.model:q} "
            "--data-dir {params.data_dir:q} --split {wildcards.fit_split} --view center "
            "--threads {threads} --out {output:q} > {log:q} 2>&1"

elif EXTRACT_SHARDS == 1:

    # Image folders: one job per split, so a new OOD split runs only its own extraction.
    rule extract:
        input:
            model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
            manifest=data_input("manifest.parquet"),
            job=ancient(get_extract_job),
        output:
            f"{OUT}/features/{{test_model}}/view~{{view}}/split~{{split}}.npz",
        log:
            f"results/logs/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}.log",
        benchmark:
            f"results/benchmarks/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}.tsv"
        threads: res("extract", "threads", 1)
        resources:
            mem_mb=grow("extract", "mem_mb", 4000),
            runtime=grow("extract", "runtime", 60),
            gpu=res("extract", "gpu", 0),
        params:
            code=code_version("extract"),
            benchmark=get_bench_identity("extract"),
            data_dir=get_data_dir,
        shell:
            "sure-ood extract --job {BENCH_JOB} --job {input.job:q} --test-model {input.model:q} "
            "--data-dir {params.data_dir:q} --split {wildcards.split} --view {wildcards.view} "
            "--threads {threads} --out {output:q} > {log:q} 2>&1"

else:

    rule extract:
        input:
            model=f"{OUT}/test_models/{{test_model}}/model.safetensors",
            manifest=data_input("manifest.parquet"),
            job=ancient(get_extract_job),
        output:
            temp(
                f"{OUT}/features/{{test_model}}/view~{{view}}/split~{{split}}/shard~{{shard}}.npz"
            ),
        log:
            f"results/logs/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}/shard~{{shard}}.log",
        benchmark:
            f"results/benchmarks/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}/shard~{{shard}}.tsv"
        wildcard_constraints:
            shard="[0-9]+",
        threads: res("extract", "threads", 1)
        resources:
            mem_mb=grow("extract", "mem_mb", 4000),
            runtime=grow("extract", "runtime", 60),
            gpu=res("extract", "gpu", 0),
        params:
            code=code_version("extract"),
            benchmark=get_bench_identity("extract"),
            data_dir=get_data_dir,
            num_shards=EXTRACT_SHARDS,
        shell:
            "sure-ood extract --job {BENCH_JOB} --job {input.job:q} --test-model {input.model:q} "
            "--data-dir {params.data_dir:q} --split {wildcards.split} --view {wildcards.view} "
            "--threads {threads} --shard {wildcards.shard} --num-shards {params.num_shards} "
            "--out {output:q} > {log:q} 2>&1"

    include: "merge_features.smk"
