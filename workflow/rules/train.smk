rule train:
    input:
        classes=data_input("classes.json"),
        manifest=[split_manifest(s) for s in TRAIN_SPLITS],
        init=get_train_init,
        job=ancient(get_train_job),
    output:
        log=f"{OUT}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/train_log.jsonl",
        summary=f"{OUT}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/run.json",
    log:
        f"results/logs/{BENCH}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/train.log",
    benchmark:
        f"results/benchmarks/{BENCH}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/train.tsv"
    threads: res("train", "threads")
    resources:
        mem_mb=grow("train", "mem_mb"),
        runtime=train_runtime,
        gpu=train_gpus,
    params:
        code=code_version("train"),
        # identity keys only: moving the images never retrains (see common.smk)
        benchmark=get_bench_identity("train"),
        # torchrun when resources gpu > 1
        launcher=train_launcher,
        # the seed, data, parent weights, the resumable state (outside the declared outputs:
        # a failed or preempted job keeps it, and the rerun resumes from the last finished
        # epoch) and the outputs (common.smk train_args)
        args=job_args("train", train_args, with_threads=True),
    # input.job: model and recipe subtrees, device, GPU options (amp, channels-last, workers)
    shell:
        "{params.launcher} train --job {BENCH_JOB} --job {params.args:q} > {log:q} 2>&1"
