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
        seed=get_train_seed,
        data_dir=get_data_dir,
        # the resumable state lives outside the declared outputs: a failed or preempted job
        # keeps it, and the rerun resumes from the last finished epoch
        state_dir=get_state_dir,
        init=get_init_arg,
        # torchrun when resources gpu > 1
        launcher=train_launcher,
    # the job file: model and recipe subtrees, device, GPU options (amp, channels-last, workers)
    shell:
        "{params.launcher} train --job {BENCH_JOB} --job {input.job:q} --seed {params.seed} "
        "--data-dir {params.data_dir:q} {params.init} --state-dir {params.state_dir:q} "
        "--log {output.log:q} --summary {output.summary:q} --threads {threads} "
        "> {log:q} 2>&1"
