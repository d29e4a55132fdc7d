rule histogram:
    input:
        scores=get_row_fused_first,
        row=f"{OUT}/rows/{{table}}/{{row}}.json",
    output:
        report(
            f"{OUT}/figures/{{table}}/{{row}}.png",
            caption="../report/histogram.rst",
            category="Histograms",
            subcategory="{table}",
            labels={"table": "{table}", "row": "{row}"},
        ),
    log:
        f"results/logs/{BENCH}/figures/{{table}}/{{row}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/figures/{{table}}/{{row}}.tsv"
    conda:
        "../../envs/sure-ood.yaml"
    resources:
        mem_mb=grow("histogram", "mem_mb", 1000),
        runtime=grow("histogram", "runtime", 10),
    params:
        code=code_version("histogram"),
    shell:
        "sure-ood histogram --scores {input.scores:q} --row-json {input.row:q} "
        "--out {output:q} > {log:q} 2>&1"
