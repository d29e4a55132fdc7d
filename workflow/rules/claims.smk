rule claims:
    input:
        rows=get_claims_rows,
        scores=get_claims_scores,
        job=ancient(get_claims_job),
    output:
        csv=report(
            f"{OUT}/tables/claims.csv",
            caption="../report/claims.rst",
            category="Tables",
            subcategory="claims",
            labels={"table": "claims", "format": "CSV"},
        ),
        md=f"{OUT}/tables/claims.md",
        html=report(
            f"{OUT}/tables/claims.html",
            caption="../report/claims.rst",
            category="Tables",
            subcategory="claims",
            labels={"table": "claims", "format": "HTML"},
        ),
    log:
        f"results/logs/{BENCH}/tables/claims.log",
    benchmark:
        f"results/benchmarks/{BENCH}/tables/claims.tsv"
    resources:
        mem_mb=grow("claims", "mem_mb"),
        runtime=grow("claims", "runtime"),
    params:
        code=code_version("claims"),
        args=job_args("claims", tables_args),
    shell:
        "sure-ood claims --job {params.args:q} > {log:q} 2>&1"
