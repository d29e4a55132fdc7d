rule claims:
    input:
        rows=get_claims_rows,
        scores=get_claims_scores,
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
    conda:
        "../../envs/sure-ood.yaml"
    resources:
        mem_mb=res("claims", "mem_mb", 1000),
        runtime=res("claims", "runtime", 10),
    params:
        code=code_version("claims"),
        claims=get_claims_json,
        published=get_claims_published_json,
        n_boot=config.get("bootstrap", 1000),
    shell:
        "sure-ood claims --rows {input.rows:q} --claims {params.claims} "
        "--published {params.published} --n-boot {params.n_boot} "
        "--out-csv {output.csv:q} --out-md {output.md:q} --out-html {output.html:q} "
        "> {log:q} 2>&1"
