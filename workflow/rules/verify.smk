# verify: compare the finished run with its reference (the committed run of this config, or the
# config's published numbers); fails (exit 1) when a row is outside. The report goes to
# results/verify/, never into the run it checks.
rule verify:
    input:
        tables=get_all_tables,
        manifest=get_verify_manifest,
    output:
        VERIFY_OUT,
    log:
        f"results/logs/{BENCH}/verify.log",
    params:
        code=code_version("verify"),
        run=OUT,
        reference=get_verify_reference,
    shell:
        "sure-ood verify {params.run:q} {params.reference} --out {output:q} > {log:q} 2>&1"


# write_reference: turn the finished run into results/reference/<bench>/ (the committed
# reference). Asked for by name only (`make reference`), never by `all`.
rule write_reference:
    input:
        tables=get_all_tables,
    log:
        f"results/logs/{BENCH}/write_reference.log",
    params:
        code=code_version("verify"),
        run=OUT,
        dest=REFERENCE_DIR,
        tables=list(config["tables"]),
    shell:
        "sure-ood verify {params.run:q} --write-reference {params.dest:q} "
        "--tables {params.tables} > {log:q} 2>&1"
