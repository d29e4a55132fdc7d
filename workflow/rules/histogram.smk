# One job per table: every row's histogram (figures/<table>/<row>.png) and the table's grid
# figure (figures/<table>.png), so a default run starts one process per table, not per row.
rule histogram:
    input:
        unpack(get_histogram_inputs),
    output:
        rows=report(
            directory(f"{OUT}/figures/{{table}}"),
            patterns=["{row}.png"],
            caption="../report/histogram.rst",
            category="Histograms",
            subcategory="{table}",
            labels={"table": "{table}", "row": "{row}"},
        ),
        grid=report(
            f"{OUT}/figures/{{table}}.png",
            caption="../report/histogram_grid.rst",
            category="Histograms",
            subcategory="{table}",
            labels={"table": "{table}", "row": "all rows"},
        ),
    log:
        f"results/logs/{BENCH}/figures/{{table}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/figures/{{table}}.tsv"
    resources:
        mem_mb=grow("histogram", "mem_mb"),
        runtime=grow("histogram", "runtime"),
    params:
        code=code_version("histogram"),
        args=job_args("histogram", histogram_args),
    shell:
        "sure-ood histogram --job {params.args:q} > {log:q} 2>&1"
