rule finalize_swa:
    input:
        summary=f"{OUT}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/run.json",
    output:
        # protected: a finished checkpoint (hours of training at full scale) is made read-only,
        # so no rerun or --forcerun can overwrite it; delete it by hand to retrain
        protected(
            f"{OUT}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/final.safetensors"
        ),
    log:
        f"results/logs/{BENCH}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/finalize_swa.log",
    benchmark:
        f"results/benchmarks/{BENCH}/runs/model~{{model}}/recipe~{{recipe}}/seed~{{seed}}/finalize_swa.tsv"
    resources:
        mem_mb=grow("finalize_swa", "mem_mb"),
        runtime=grow("finalize_swa", "runtime"),
    params:
        code=code_version("finalize_swa"),
        args=job_args(
            "finalize_swa", lambda w, i, o: {"--summary": i.summary, "--out": o[0]}
        ),
    shell:
        "sure-ood finalize_swa --job {params.args:q} > {log:q} 2>&1"
