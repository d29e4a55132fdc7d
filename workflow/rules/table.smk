rule table:
    input:
        get_table_rows,
    output:
        csv=report(
            f"{OUT}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
        ),
        md=f"{OUT}/tables/{{table}}.md",
    log:
        f"results/logs/{BENCH}/tables/{{table}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/tables/{{table}}.tsv"
    conda:
        "../../envs/sure-ood.yaml"
    resources:
        mem_mb=res("table", "mem_mb", 1000),
        runtime=res("table", "runtime", 10),
    params:
        table=get_table_json,
    shell:
        "sure-ood table --rows {input:q} --table {params.table} "
        "--out-csv {output.csv:q} --out-md {output.md:q} > {log:q} 2>&1"
