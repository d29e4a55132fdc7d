# sure-ood: the SURE-OOD recipe as a DAG, from data to published-style tables.
# Usage: snakemake --cores 2                      (every table of config/config.yaml)
#        snakemake results/mnist_osr/rows/posthoc/msp.json   (one row and what it needs)
import os

from snakemake.utils import min_version, validate

from sure_ood.config import validate_config

min_version("9.0")


# ---- trust: config files are data (sure_ood.trust) -----------------------------------------
# The workflow profiles refuse a templated or oversized config before Snakemake loads it; this
# block repeats the check for runs without them (--workflow-profile none, the Python API).
from sure_ood.trust import check_config_files, check_config_tree

check_config_files(workflow.overwrite_configfiles or ["config/config.yaml"])


# The embedded default, unless the command line names config files: `--configfile X` must
# run X alone, not X merged into the default (which would add the default's models, tables...).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Our validator first: its messages name the key path of every problem (recipes.sure.epochs:
# ...). Snakemake's validate then fills in the schema's defaults.
check_config_tree(config)
validate_config(config, workflow.source_path("workflow/schemas/config.schema.yaml"))
validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare_data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/finalize_swa.smk"
include: "workflow/rules/make_test_model.smk"
include: "workflow/rules/extract.smk"
include: "workflow/rules/odin.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/fuse.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/table.smk"
include: "workflow/rules/claims.smk"
include: "workflow/rules/histogram.smk"
include: "workflow/rules/verify.smk"


# One software environment for every job: envs/sure-ood.yaml (used with `--sdm conda`). Set
# here for every rule that runs a command, instead of a `conda:` line in each rule. (Snakemake's
# top-level `conda:` directive is another thing: it installs packages into the Snakemake
# process itself.)
for _rule in workflow.rules:
    if _rule.shellcmd and not _rule.conda_env:
        _rule.conda_env = os.path.join(workflow.basedir, "envs", "sure-ood.yaml")


rule all:
    default_target: True
    input:
        get_all_targets(),
        verify_targets(),
