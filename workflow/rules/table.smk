rule table:
    input:
        rows=get_table_rows,
        scores=get_table_scores,
        job=ancient(get_table_job),
    output:
        csv=report(
            f"{OUT}/tables/{{table}}.csv",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{table}",
            labels={"table": "{table}", "format": "CSV"},
        ),
        md=f"{OUT}/tables/{{table}}.md",
        html=report(
            f"{OUT}/tables/{{table}}.html",
            caption="../report/table.rst",
            category="Tables",
            subcategory="{table}",
            labels={"table": "{table}", "format": "HTML"},
        ),
    log:
        f"results/logs/{BENCH}/tables/{{table}}.log",
    benchmark:
        f"results/benchmarks/{BENCH}/tables/{{table}}.tsv"
    # tables/claims.* belong to the claims rule
    wildcard_constraints:
        table=r"(?!claims\b)[a-z0-9_]+",
    resources:
        mem_mb=grow("table", "mem_mb"),
        runtime=grow("table", "runtime"),
    params:
        code=code_version("table"),
        args=job_args("table", tables_args),
    shell:
        "sure-ood table --job {params.args:q} > {log:q} 2>&1"
