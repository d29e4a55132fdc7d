# Concatenate the extract shards of one split, in shard order (only with extract_shards > 1).
rule merge_features:
    input:
        shards=get_feature_shards,
    output:
        feature_path("{test_model}", "{view}", "{split}"),
    log:
        f"results/logs/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}.merge.log",
    benchmark:
        f"results/benchmarks/{BENCH}/features/{{test_model}}/view~{{view}}/split~{{split}}.merge.tsv"
    resources:
        mem_mb=grow("merge_features", "mem_mb"),
        runtime=grow("merge_features", "runtime"),
    params:
        code=code_version("merge_features"),
        args=job_args(
            "merge_features", lambda w, i, o: {"--shards": i.shards, "--out": o[0]}
        ),
    shell:
        "sure-ood merge_features --job {params.args:q} > {log:q} 2>&1"
