# prepare_data in parts (sure_ood.stages.prepare_data): `prepare_data` writes the
# in-distribution splits' manifests, the classes and the prior; `prepare_data_ood` one OOD
# split's manifest and summary. Each part's params are its own split keys only
# (sure_ood.data.prepare_identity, location-free: the data's folder is in the command,
# SPLIT_JOB), so adding an OOD split runs that split's part alone and rewrites no file that
# training or another split's extraction reads.
rule prepare_data:
    output:
        manifests=[split_manifest(s) for s in ID_SPLITS],
        classes=data_input("classes.json"),
        prior=data_input("prior.npy"),
    log:
        f"results/logs/{BENCH}/prepare_data.log",
    benchmark:
        f"results/benchmarks/{BENCH}/prepare_data.tsv"
    resources:
        mem_mb=grow("prepare_data", "mem_mb"),
        runtime=grow("prepare_data", "runtime"),
    params:
        code=code_version("prepare_data"),
        benchmark=get_prepare_identity,
        out_dir=get_prepared_dir,
        part=ID_PART,
    shell:
        "sure-ood prepare_data --job {SPLIT_JOB} --part {params.part} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"


rule prepare_data_ood:
    input:
        # the known classes (no OOD class may be one)
        classes=data_input("classes.json"),
    output:
        manifest=split_manifest("{split}"),
        summary=data_input("split~{split}/summary.json"),
    log:
        f"results/logs/{BENCH}/data/split~{{split}}/prepare_data.log",
    benchmark:
        f"results/benchmarks/{BENCH}/data/split~{{split}}/prepare_data.tsv"
    wildcard_constraints:
        split="|".join(OOD_SPLITS),
    resources:
        mem_mb=grow("prepare_data", "mem_mb"),
        runtime=grow("prepare_data", "runtime"),
    params:
        code=code_version("prepare_data"),
        benchmark=get_prepare_identity,
        out_dir=get_prepared_dir,
    shell:
        "sure-ood prepare_data --job {SPLIT_JOB} --part {wildcards.split} "
        "--out-dir {params.out_dir:q} > {log:q} 2>&1"
