# Helpers shared by the rules: config look-ups, target expanders, wildcard constraints.
# The logic lives in the package (sure_ood.config); these functions only adapt it to wildcards.
import json
import os
import shlex

from sure_ood.config import (
    all_rows,
    all_test_models,
    check_config,
    code_version,
    claim_rows,
    claim_table_rows,
    load_schema,
    method_config,
    parent_run,
    resolve_row,
    row_config_subtree,
    row_replicates,
    row_test_models,
)
from sure_ood.config import split_config as benchmark_split_config
from sure_ood.config import odin_settings
from sure_ood.code_version import method_code_version
from sure_ood.data import view_names
from sure_ood.jobs import job_file
from sure_ood.settings import OdinSettings, Settings, rule_resource

check_config(config)

# `--config data_root=/path` (top level) points an imagefolder benchmark at its images.
if config.get("data_root"):
    config["benchmark"]["data_root"] = config["data_root"]

# the typed run-wide settings (sure_ood.settings), built once from the validated config
SETTINGS = Settings.from_config(config)
BENCH = SETTINGS.benchmark
OUT = f"results/{BENCH}"
TEST_MODELS = all_test_models(config)
ID_SPLIT = "id_test"
OOD_SPLITS = config["benchmark"]["ood_splits"]
TEST_SPLITS = [ID_SPLIT] + OOD_SPLITS


wildcard_constraints:
    model="[a-z0-9_]+",
    recipe="[a-z0-9_]+",
    seed="[0-9]+",
    method="[a-z0-9_]+",
    view="[a-z0-9_]+",
    split="[a-z0-9_]+",
    temperature="[0-9][0-9.e+-]*",
    epsilon="-?[0-9][0-9.e+-]*",
    std_scaled="true|false",
    table="[a-z0-9_]+",
    row="[a-z0-9_]+",
    test_model="[a-z0-9_.-]+",
    replicate="[0-9]+",
    shard="[0-9]+",


def as_json(obj):
    """A config subtree as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


def split_config(with_location=True):
    """The split-defining benchmark keys (sure_ood.config.split_config)."""
    return benchmark_split_config(config["benchmark"], with_location)


# ---- per-job files: a stage's config-derived options (sure_ood.jobs.job_file) --------------
# The command names the file (`--job FILE`), so it holds paths and short values only. The
# file's name is the digest of its content, so it is an input (ancient: its time never matters)
# whose path changes exactly when a setting of the job does: that is the rerun trigger.
JOBS = f"{OUT}/jobs"


def job(stage, options, name=None, settings=None):
    """The per-job file of `stage` holding `options` (written once, at DAG-building time)."""
    return job_file(JOBS, stage, options, name, settings)


def job_args(stage, arguments, with_threads=False):
    """A params function: the job's resolved arguments in one job file,
    `jobs/<stage>/<digest>.json`, whose path the command names with `--job`: the options of
    its settings' job file (`input.job`, when the rule has one), then its own arguments,
    `arguments(wildcards, input, output)` -> options (its input and output paths and values
    taken from its wildcards), then `--threads` (with `with_threads=True`). So a command stays
    short (a row of 3 replicates x 5 views reads 15 score files and 30 feature caches) and
    still reruns the job by hand. The settings' job file stays the rule's (ancient) input: the rerun
    trigger of a changed setting; this file's path changes only with the job's own values.
    """

    def write(wildcards, input, output, threads):
        options, settings = {}, None
        if "job" in input.keys():
            settings = input.job
            with open(settings) as fh:
                options.update(json.load(fh)["options"])
        for opt, value in arguments(wildcards, input, output).items():
            plain = isinstance(value, (str, int, float, bool, type(None)))
            options[opt] = value if plain else list(value)
        if with_threads:
            options["--threads"] = threads
        return job(stage, options, settings=settings)

    return write


RESOURCE_DEFAULTS = load_schema(workflow.source_path("../schemas/config.schema.yaml"))[
    "properties"
]["resources"]["x-defaults"]


def res(rule_name, key):
    """A portable resource: resources.<rule>.<key>, else resources.default.<key>, else the
    schema's defaults (sure_ood.settings.rule_resource)."""
    return rule_resource(config, RESOURCE_DEFAULTS, rule_name, key)


# ---- GPU options, multi-GPU launch, sharded extraction ------------------------------------
# One extraction job per (test model, view, split), or per shard of the split with
# `extract_shards: N` (N > 1): the shard is a path level of the (temporary) extract output, and
# merge_features concatenates them. One job per split, on every benchmark, keeps one extract
# rule and makes a new OOD split run only its own jobs; on the small benchmarks it costs each
# extra job its start-up (importing torch and timm, ~5 CPU s; docs/performance.md).
EXTRACT_SHARDS = SETTINGS.extract_shards
SPLIT_STEM = "split~{split}/shard~{shard}" if EXTRACT_SHARDS > 1 else "split~{split}"
EXTRACT_STEM = f"features/{{test_model}}/view~{{view}}/{SPLIT_STEM}"
EXTRACT_OUTPUT = f"{OUT}/{EXTRACT_STEM}.npz"


def extract_args(wildcards, input, output):
    """The test model, the split, the view and (sharded) `--shard i` (the count is in the
    settings' job file)."""
    return {
        "--test-model": input.model,
        "--data-dir": get_data_dir(wildcards, input),
        "--split": [wildcards.split],
        "--view": wildcards.view,
        "--shard": int(wildcards.shard) if EXTRACT_SHARDS > 1 else None,
        "--out": output,
    }


# ---- run identity: what the images are, never where they are ------------------------------
def get_bench_identity(stage):
    """The benchmark keys a stage depends on, as its param (sure_ood.data.benchmark_identity):
    no location key (data_root, splits, ssb_splits), so moving the images reruns prepare_data
    only; train also ignores the OOD-only keys, extraction the list of OOD splits."""
    from sure_ood.data import benchmark_identity

    return as_json(benchmark_identity(config["benchmark"], stage))


def data_input(name):
    """A prepare_data output (its image paths are relative to data_root)."""
    return f"{OUT}/data/{name}"


# ---- prepared data: one manifest per split (sure_ood.stages.prepare_data, in parts) --------
from sure_ood.data import ID_PART, ID_SPLITS, TRAIN_SPLITS, prepare_identity


def split_manifest(split):
    """The manifest of one split: a job reads only those of its splits, so adding an OOD
    split changes no input of training or of another split's jobs."""
    return data_input(f"split~{split}/manifest.parquet")


def get_prepared_dir(wildcards, input, output):
    """The prepare_data folder, where classes.json is (the ID part's output, an OOD part's
    input)."""
    classes = output.classes if "classes" in output.keys() else input.classes
    return os.path.dirname(classes)


def get_prepare_identity(wildcards):
    """The split keys of one prepare_data part (its rerun trigger): the in-distribution
    part's, or OOD split {split}'s (sure_ood.data.prepare_identity)."""
    part = wildcards.split if "split" in wildcards.keys() else ID_PART
    return as_json(prepare_identity(split_config(with_location=False), part))


# Where the images are reaches the jobs outside their params and inputs: these globals (job
# files of the whole benchmark, location included) are formatted into the shell commands
# (`--job {BENCH_JOB}`), and a rule's code trigger sees the template, not the value. So moving
# the images (a new data_root) reruns nothing: the manifest holds paths relative to data_root,
# and every param and job input is location-free.
BENCH_JOB = job(None, {"--benchmark": config["benchmark"]}, name="benchmark")
SPLIT_JOB = job(None, {"--benchmark": split_config()}, name="benchmark")


def grow(rule_name, key):
    """A resource that grows with Snakemake's `attempt` (1, 2, ... on retries): a job retried
    after running out of memory or time asks for `attempt` x the configured amount."""
    base = int(res(rule_name, key))
    return lambda wildcards, attempt: base * attempt


def zero_epoch(recipe_id):
    """A recipe that trains no epoch (the pretrained baseline only measures validation)."""
    return int(config["recipes"][recipe_id]["epochs"]) == 0


def train_gpus(wildcards):
    """GPUs of a train job: the configured count, but at most one for a zero-epoch run (one
    validation pass, no GPU-days)."""
    gpus = int(res("train", "gpu"))
    return min(gpus, 1) if zero_epoch(wildcards.recipe) else gpus


def train_runtime(wildcards, attempt):
    """Minutes of a train job x `attempt`; a zero-epoch run gets the default rule's runtime."""
    if zero_epoch(wildcards.recipe):
        return int(res("default", "runtime")) * attempt
    return int(res("train", "runtime")) * attempt


def train_launcher(wildcards):
    """torchrun with one process per GPU when the job gets several, else `sure-ood`."""
    return get_launcher("train") if train_gpus(wildcards) > 1 else "sure-ood"


def get_feature_shards(wildcards):
    """The shard caches of one split, in order (merge_features)."""
    base = f"{OUT}/features/{wildcards.test_model}/view~{wildcards.view}/split~{wildcards.split}"
    return [f"{base}/shard~{i}.npz" for i in range(EXTRACT_SHARDS)]


def get_launcher(rule_name):
    """`sure-ood`, or torchrun with one process per GPU when the rule gets more than one."""
    gpus = int(res(rule_name, "gpu"))
    if gpus > 1:
        # `--`: torchrun's parser must not read the stage's options (--log is ambiguous to it)
        return f"torchrun --standalone --nproc_per_node={gpus} -m sure_ood --"
    return "sure-ood"


def get_all_targets():
    targets = []
    for table in config["tables"]:
        targets += [f"{OUT}/tables/{table}.{ext}" for ext in ("csv", "md", "html")]
        # one histogram job per table: every row's PNG in figures/<table>/, and the grid
        targets += [f"{OUT}/figures/{table}", f"{OUT}/figures/{table}.png"]
    if config.get("claims"):
        targets += [f"{OUT}/tables/claims.{ext}" for ext in ("csv", "md", "html")]
    return targets


def get_data_dir(wildcards, input):
    """The prepare_data folder, derived from the manifest input(s) (no hard-coded prefix):
    data/split~<split>/manifest.parquet."""
    manifests = [input.manifest] if isinstance(input.manifest, str) else input.manifest
    return os.path.dirname(os.path.dirname(manifests[0]))


# ---- train -------------------------------------------------------------------------------
def run_dir(model, recipe, seed):
    return f"{OUT}/runs/model~{model}/recipe~{recipe}/seed~{seed}"


def get_recipe(wildcards):
    return config["recipes"][wildcards.recipe]


def recipe_init_run(recipe_id, seed):
    """(recipe, seed) of the run a recipe fine-tunes from, or None (sure_ood.config.parent_run:
    without an init seed, the parent run of the same replicate)."""
    return parent_run(config, recipe_id, seed)


def get_train_job(wildcards):
    """The run's model and recipe subtrees, the device and the GPU options."""
    options = {
        "--model": config["models"][wildcards.model],
        "--recipe": get_recipe(wildcards),
        "--device": SETTINGS.device,
    }
    return job("train", {**options, **SETTINGS.compute.options()})


def get_extract_job(wildcards):
    """Batch size, device, GPU options and shard count (one file for every extract job)."""
    options = {
        "--batch-size": SETTINGS.extract_batch_size,
        "--device": SETTINGS.device,
        "--num-shards": EXTRACT_SHARDS,
    }
    return job("extract", {**options, **SETTINGS.compute.options()})


def train_args(wildcards, input, output):
    """The seed, the data, the parent run's weights (fine-tuning), the resumable state and the
    outputs."""
    return {
        "--seed": get_train_seed(wildcards),
        "--data-dir": get_data_dir(wildcards, input),
        "--init": input.init or None,
        "--state-dir": f"{run_dir(wildcards.model, wildcards.recipe, wildcards.seed)}/state",
        "--log": output.log,
        "--summary": output.summary,
    }


def get_train_init(wildcards):
    parent = recipe_init_run(wildcards.recipe, int(wildcards.seed))
    if parent is None:
        return []
    return f"{run_dir(wildcards.model, parent[0], parent[1])}/final.safetensors"


def get_train_seed(wildcards):
    return int(wildcards.seed) + int(config["recipes"][wildcards.recipe].get("seed", 0))


# ---- test models, features, scores -------------------------------------------------------
def get_test_model(wildcards):
    try:
        return TEST_MODELS[wildcards.test_model]
    except KeyError:
        raise ValueError(f"unknown test model {wildcards.test_model!r}")


def get_test_model_runs(wildcards):
    tm = get_test_model(wildcards)
    return [f"{run_dir(tm.model, tm.recipe, s)}/final.safetensors" for s in tm.seeds]


def make_test_model_args(wildcards, input, output):
    """The runs to average, the tricks of the test model, the output."""
    tm = get_test_model(wildcards)
    return {
        "--runs": input.runs,
        "--drop-final-norm": bool(tm.drop_final_norm),
        "--img-size": None if tm.img_size is None else int(tm.img_size),
        "--out": output[0],
    }


def feature_path(test_model, view, split):
    """One split's feature cache (a pattern when given "{test_model}", "{view}", "{split}")."""
    return f"{OUT}/features/{test_model}/view~{view}/split~{split}.npz"


def get_method(wildcards):
    return method_config(config, wildcards.method)


def get_score_code(wildcards):
    """The code version of one method's score jobs: the score stage and that method's own
    module only, so adding, removing or editing another method (or a plugin) reruns nothing
    here."""
    from sure_ood import scores

    cls = scores.method_class(method_config(config, wildcards.method)["method"])
    return method_code_version(cls.__module__)


def method_needs(method_id):
    from sure_ood import scores

    return set(scores.needs_of(**method_config(config, method_id)))


# ODIN's hyper-parameters belong to the `odin` rule (it runs the network); its scorers have none.
# ODIN's settings are path levels (temperature~/epsilon~/std_scaled~): methods with the same
# settings share one job.
ODIN_LEVELS = "temperature~{temperature}/epsilon~{epsilon}/std_scaled~{std_scaled}"


def odin_path(test_model, settings, view, split):
    return f"{OUT}/odin/{test_model}/{settings.levels()}/view~{view}/split~{split}.npz"


def get_odin_job(wildcards):
    """ODIN's settings (from the path), the device and config `compute.odin`."""
    odin = OdinSettings.from_levels(
        wildcards.temperature, wildcards.epsilon, wildcards.std_scaled
    )
    options = {
        **odin.options(),
        "--device": SETTINGS.device,
        **SETTINGS.odin.options(),
    }
    return job("odin", options)


def odin_args(wildcards, input, output):
    return {
        "--test-model": input.model,
        "--features": input.features,
        "--data-dir": get_data_dir(wildcards, input),
        "--split": wildcards.split,
        "--view": wildcards.view,
        "--out": output[0],
    }


def get_score_inputs(wildcards):
    needs = method_needs(wildcards.method)
    tm, v = wildcards.test_model, wildcards.view
    if "network" in needs:
        odin = odin_settings(get_method(wildcards)["params"])
        features = [odin_path(tm, odin, v, s) for s in TEST_SPLITS]
    else:
        features = [feature_path(tm, v, s) for s in TEST_SPLITS]
    inputs = {"features": features, "prior": data_input("prior.npy")}
    if "train" in needs:
        inputs["train"] = feature_path(tm, "center", "train")
    if "val" in needs:  # the held-out validation split (e.g. temperature scaling)
        inputs["val"] = feature_path(tm, "center", "val")
    return inputs


def get_score_job(wildcards):
    """The method's registered name and hyper-parameters (ODIN's belong to the odin rule)."""
    m = get_method(wildcards)
    params = {} if "network" in method_needs(wildcards.method) else m["params"]
    options = {"--method": m["method"]}
    if params:
        options["--param"] = [f"{k}={json.dumps(v)}" for k, v in params.items()]
    return job("score", options)


def score_args(wildcards, input, output):
    keys = input.keys()
    return {
        "--features": input.features,
        "--train-features": input.train if "train" in keys else None,
        "--val-features": input.val if "val" in keys else None,
        "--prior": input.prior,
        "--out": output[0],
    }


# ---- rows --------------------------------------------------------------------------------
def get_row(wildcards):
    return resolve_row(config, wildcards.table, wildcards.row)


def get_evaluate_job(wildcards):
    """The resolved row, its full config subtree (row, model, recipe chain, method: for
    provenance), its replicates and the bootstrap."""
    options = {
        "--row": get_row(wildcards),
        "--config": row_config_subtree(config, wildcards.table, wildcards.row),
        "--replicates": row_replicates(get_row(wildcards)),
        "--table": wildcards.table,
        "--row-id": wildcards.row,
        "--n-boot": SETTINGS.bootstrap,
    }
    return job("evaluate", options)


def evaluate_args(wildcards, input, output):
    """Every replicate's fused scores (the first is the headline replicate), and for
    provenance the test models and feature caches they come from."""
    return {
        "--scores": input.scores,
        "--checkpoints": input.checkpoints,
        "--features": input.features,
        "--out": output[0],
    }


def row_score_files(row, replicate):
    """Score files of one replicate of a row: one per (test model, view)."""
    return [
        f"{OUT}/scores/{tm.id}/method~{row['method']}/view~{view}/scores.parquet"
        for tm in row_test_models(row, int(replicate))
        for view in row_views(row)
    ]


def fused_path(table, row_id, replicate):
    """The scores of one replicate of a row: the fuse output, or, for a row with one view and
    one test model, its single score file as it is (no fuse job to run)."""
    files = row_score_files(resolve_row(config, table, row_id), replicate)
    if len(files) == 1:
        return files[0]
    return f"{OUT}/fused/{table}/{row_id}/rep~{replicate}.parquet"


def get_row_fused(wildcards):
    """Fused scores of every replicate of a row; the first is the row's headline replicate."""
    return [
        fused_path(wildcards.table, wildcards.row, r)
        for r in row_replicates(get_row(wildcards))
    ]


def get_row_fused_first(wildcards):
    return get_row_fused(wildcards)[0]


def fuse_args(wildcards, input, output):
    """The row's score files (views x test models), their feature caches and its fusion."""
    return {
        "--scores": input.scores,
        "--features": input.features,
        "--fusion": get_row(wildcards)["fusion"],
        "--out": output[0],
    }


def row_views(row):
    return view_names(row["views"])


def get_fuse_scores(wildcards):
    return row_score_files(get_row(wildcards), wildcards.replicate)


def get_fuse_features(wildcards):
    """Feature caches of every view, for the softmax-mean class prediction (several views)."""
    row = get_row(wildcards)
    if len(get_fuse_scores(wildcards)) == 1:
        return []
    return [
        feature_path(tm.id, view, split)
        for tm in row_test_models(row, int(wildcards.replicate))
        for view in row_views(row)
        for split in TEST_SPLITS
    ]


def row_test_models_all(row):
    """Test models of every replicate of a row, in replicate order."""
    return [tm for r in row_replicates(row) for tm in row_test_models(row, r)]


def get_row_checkpoints(wildcards):
    row = get_row(wildcards)
    return [
        f"{OUT}/test_models/{tm.id}/model.safetensors"
        for tm in row_test_models_all(row)
    ]


def get_row_features(wildcards):
    row = get_row(wildcards)
    return [
        feature_path(tm.id, view, split)
        for tm in row_test_models_all(row)
        for view in row_views(row)
        for split in TEST_SPLITS
    ]


def get_table(wildcards):
    return config["tables"][wildcards.table]


def get_table_job(wildcards):
    options = {"--table": get_table(wildcards), "--n-boot": SETTINGS.bootstrap}
    return job("table", options)


def get_table_rows(wildcards):
    return [
        f"{OUT}/rows/{wildcards.table}/{row}.json"
        for row in get_table(wildcards)["rows"]
    ]


def tables_args(wildcards, input, output):
    """The rows of a table (or of the claims) and its three formats (table, claims)."""
    return {
        "--rows": input.rows,
        "--out-csv": output.csv,
        "--out-md": output.md,
        "--out-html": output.html,
    }


def row_fused_all(table, row_id):
    """Fused scores of every replicate of a row (the two-level paired comparisons)."""
    row = resolve_row(config, table, row_id)
    return [fused_path(table, row_id, r) for r in row_replicates(row)]


def get_histogram_inputs(wildcards):
    """Every row of a table: its JSON and its headline (first replicate) fused scores."""
    rows = get_table(wildcards)["rows"]
    return {
        "rows": [f"{OUT}/rows/{wildcards.table}/{row}.json" for row in rows],
        "scores": [
            fused_path(
                wildcards.table,
                row,
                row_replicates(resolve_row(config, wildcards.table, row))[0],
            )
            for row in rows
        ],
    }


def histogram_args(wildcards, input, output):
    return {
        "--scores": input.scores,
        "--row-json": input.rows,
        "--out-dir": output.rows,
        "--grid": output.grid,
    }


def get_table_scores(wildcards):
    """Fused scores of every replicate of every row (the comparison with the reference row)."""
    if not get_table(wildcards).get("reference_row"):
        return []
    return [
        f
        for row_id in get_table(wildcards)["rows"]
        for f in row_fused_all(wildcards.table, row_id)
    ]


# ---- claims ------------------------------------------------------------------------------
def get_claims_rows(wildcards):
    return [f"{OUT}/rows/{t}/{r}.json" for t, r in claim_table_rows(config)]


def get_claims_scores(wildcards):
    return [f for t, r in claim_table_rows(config) for f in row_fused_all(t, r)]


def get_claims_job(wildcards):
    """The claims in config order (one JSON list, each with its ``id`` and the rows it compares,
    the claimed row first), the published numbers of their tables, and the bootstrap."""
    claims = config.get("claims") or {}
    listed = [
        {"id": cid, **c, "rows": claim_rows(config, c)} for cid, c in claims.items()
    ]
    tables = {c["table"] for c in claims.values()}
    published = {t: config["tables"][t].get("published", {}) for t in sorted(tables)}
    options = {
        "--claims": json.dumps(listed, sort_keys=True),
        "--published": published,
        "--n-boot": SETTINGS.bootstrap,
    }
    return job("claims", options)


# Rules run on the main Snakemake process's machine, never as cluster jobs: config
# `local_rules` (default in the schema: the cheap ones; imagenet_ssb sends score, fuse and
# evaluate to the cluster with their declared memory). The schema names every rule, so a
# misspelt one fails before any job.
workflow.localrules(*config["local_rules"])


# ---- numerics: portable | native (sure_ood.numerics, docs/reproducibility.md) -------------
# One mechanism for every job: the mode reaches each `sure-ood` command through the
# environment (the CLI applies its pins before importing numpy/torch/numba, and prints the
# command with `--numerics MODE` to the job's log), and it is part of every rule's `code`
# param, so changing the mode reruns every job.
NUMERICS = config["numerics"]
# set here, read by the jobs; SURE_OOD_LOG_COMMAND: each job logs its command first (every
# rule's command also names a `--job` file, which switches the same log line on)
os.environ.update(SURE_OOD_NUMERICS=NUMERICS, SURE_OOD_LOG_COMMAND="1")
_stage_code_version = code_version


def code_version(stage):
    """The stage's code version and the numerics mode: a change of either reruns its jobs."""
    return f"{_stage_code_version(stage)}+{NUMERICS}"


# ---- verify: a finished run against its reference (sure_ood.stages.verify) ----------------------
REFERENCE_DIR = f"results/reference/{BENCH}"
VERIFY_OUT = f"results/verify/{BENCH}.json"


def reference_matches_config():
    """True when a committed reference exists for this benchmark and was made with this
    config (same digest of every row's config subtree)."""
    from sure_ood.stages.verify import config_digest, subtree_digest

    path = f"{REFERENCE_DIR}/manifest.json"
    if not os.path.exists(path):
        return False
    try:
        with open(path) as fh:
            digest = json.load(fh).get("config_sha256")
    except (OSError, ValueError, AttributeError):
        return False  # a broken manifest: `verify` itself reports it when asked
    rows = {
        f"{t}/{r}": subtree_digest(row_config_subtree(config, t, r))
        for t in config["tables"]
        for r in config["tables"][t]["rows"]
    }
    return digest == config_digest(rows)


def verify_targets():
    """The verify report where the committed reference is of this very config; none
    otherwise (a published-numbers check is asked for by name: `snakemake VERIFY_OUT`).
    """
    return [VERIFY_OUT] if reference_matches_config() else []


def get_verify_reference(wildcards):
    """`--reference DIR` (committed run) or, without one, the config's published numbers."""
    if os.path.exists(f"{REFERENCE_DIR}/manifest.json"):
        return f"--reference {shlex.quote(REFERENCE_DIR)}"
    published = {
        t: c["published"] for t, c in config["tables"].items() if c.get("published")
    }
    if not published:
        raise ValueError(
            f"verify: no reference for {BENCH}: neither {REFERENCE_DIR}/manifest.json "
            "(make reference) nor `published` numbers in the config's tables"
        )
    return f"--job {shlex.quote(job('verify', {'--published': published}))}"


def get_verify_manifest(wildcards):
    path = f"{REFERENCE_DIR}/manifest.json"
    return [path] if os.path.exists(path) else []


def get_all_tables(wildcards):
    """Every table of the run, and the claims table when the config has claims: what verify
    checks and write_reference copies."""
    tables = list(config["tables"]) + (["claims"] if config.get("claims") else [])
    return [f"{OUT}/tables/{t}.{ext}" for t in tables for ext in ("csv", "md")]
