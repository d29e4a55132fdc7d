# Helpers shared by the rules: config look-ups, target expanders, wildcard constraints.
# The logic lives in the package (sure_ood.config); these functions only adapt it to wildcards.
import json
import os
import shlex

from sure_ood.config import (
    odin_params,
    all_rows,
    all_test_models,
    check_config,
    code_version,
    method_config,
    resolve_row,
    row_config_subtree,
    row_replicates,
    row_test_models,
)
from sure_ood.data import view_names

check_config(config)

# `--config data_root=/path` (top level) points an imagefolder benchmark at its images.
if config.get("data_root"):
    config["benchmark"]["data_root"] = config["data_root"]

BENCH = config["benchmark"]["name"]
OUT = f"results/{BENCH}"
TEST_MODELS = all_test_models(config)
ID_SPLIT = "id_test"
OOD_SPLITS = config["benchmark"].get("ood_splits", ["ood_test"])
TEST_SPLITS = [ID_SPLIT] + OOD_SPLITS


wildcard_constraints:
    model="[a-z0-9_]+",
    recipe="[a-z0-9_]+",
    seed="[0-9]+",
    method="[a-z0-9_]+",
    view="[a-z0-9_]+",
    split="[a-z0-9_]+",
    odin="t[0-9.e+-]+_e[0-9.e+-]+_s[01]",
    table="[a-z0-9_]+",
    row="[a-z0-9_]+",
    test_model="[a-z0-9_.-]+",
    replicate="[0-9]+",


def as_json(obj):
    """A config subtree as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


# The benchmark keys that define the splits: only these rerun prepare_data when edited.
SPLIT_KEYS = (
    "name",
    "source",
    "known_classes",
    "unknown_classes",
    "split",
    "ood_fraction",
    "seed",
    "data_root",
    "splits",
    "ssb_splits",
    "skip_unreadable",
    "ood_splits",
    "val_fraction",
    "verify_images",
)


def get_split_config(with_location=True):
    """The split-defining benchmark keys as JSON; without data_root for prepare_data's param
    (its manifest's paths are relative to data_root, so moving the data changes nothing)."""
    keys = SPLIT_KEYS if with_location else tuple(k for k in SPLIT_KEYS if k != "data_root")
    return as_json({k: v for k, v in config["benchmark"].items() if k in keys})


def res(rule_name, key, default):
    """A portable resource of a rule from config (resources.<rule>.<key>, then .default)."""
    r = config.get("resources", {})
    return r.get(rule_name, {}).get(key, r.get("default", {}).get(key, default))


# ---- GPU options, multi-GPU launch, sharded extraction ------------------------------------
EXTRACT_SHARDS = int(config.get("extract_shards", 1))
# One extraction job per split (image folders, or sharded): adding an OOD split runs only its
# jobs. The built-in array benchmarks keep one job per (test model, view) for every test split:
# their splits are fixed and each job's start-up (~5 s of torch/timm import) would dominate.
EXTRACT_PER_SPLIT = EXTRACT_SHARDS > 1 or config["benchmark"]["source"] == "imagefolder"


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


# Where the images are reaches the jobs outside their params: these globals are formatted into
# the shell commands (`{BENCH_JSON}`), and a rule's code trigger sees the template, not the
# value. So moving the images (a new data_root) reruns nothing: the manifest holds paths
# relative to data_root, and every param is location-free.
BENCH_JSON = as_json(config["benchmark"])
SPLIT_JSON = get_split_config()


def get_compute_args():
    """`--amp ... --workers ... --pin-memory ... [--channels-last]` from config `compute`."""
    c = config.get("compute", {})
    args = [
        f"--amp {c.get('amp', 'none')}",
        f"--workers {int(c.get('workers', 0))}",
        f"--pin-memory {str(c.get('pin_memory', 'auto')).lower()}",
    ]
    if c.get("channels_last", False):
        args.append("--channels-last")
    return " ".join(args)


def get_odin_compute_args():
    """`--amp ... --workers ... --batch-size ... --pin-memory ...` from config `compute.odin`."""
    c = config["compute"]
    o = c["odin"]
    batch = o["batch_size"] or config["extract_batch_size"]
    return (
        f"--amp {o['amp']} --workers {int(o['workers'])} --batch-size {int(batch)} "
        f"--pin-memory {str(c['pin_memory']).lower()}"
    )


def grow(rule_name, key, default):
    """A resource that grows with Snakemake's `attempt` (1, 2, ... on retries): a job retried
    after running out of memory or time asks for `attempt` x the configured amount."""
    base = int(res(rule_name, key, default))
    return lambda wildcards, attempt: base * attempt


def zero_epoch(recipe_id):
    """A recipe that trains no epoch (the pretrained baseline only measures validation)."""
    return int(config["recipes"][recipe_id]["epochs"]) == 0


def train_gpus(wildcards):
    """GPUs of a train job: the configured count, but at most one for a zero-epoch run (one
    validation pass, no GPU-days)."""
    gpus = int(res("train", "gpu", 0))
    return min(gpus, 1) if zero_epoch(wildcards.recipe) else gpus


def train_runtime(wildcards, attempt):
    """Minutes of a train job x `attempt`; a zero-epoch run gets the default rule's runtime."""
    if zero_epoch(wildcards.recipe):
        return int(res("default", "runtime", 60)) * attempt
    return int(res("train", "runtime", 120)) * attempt


def train_launcher(wildcards):
    """torchrun with one process per GPU when the job gets several, else `sure-ood`."""
    return get_launcher("train") if train_gpus(wildcards) > 1 else "sure-ood"


def get_feature_shards(wildcards):
    """The shard caches of one split, in order (merge_features)."""
    base = f"{OUT}/features/{wildcards.test_model}/view~{wildcards.view}/split~{wildcards.split}"
    return [f"{base}/shard~{i}.npz" for i in range(EXTRACT_SHARDS)]


def get_launcher(rule_name):
    """`sure-ood`, or torchrun with one process per GPU when the rule gets more than one."""
    gpus = int(res(rule_name, "gpu", 0))
    if gpus > 1:
        # `--`: torchrun's parser must not read the stage's options (--log is ambiguous to it)
        return (
            f"torchrun --standalone --nnodes=1 --nproc_per_node={gpus} -m sure_ood --"
        )
    return "sure-ood"


def get_all_targets():
    targets = []
    for table in config["tables"]:
        targets += [f"{OUT}/tables/{table}.{ext}" for ext in ("csv", "md", "html")]
        targets += [
            f"{OUT}/figures/{table}/{row}.png"
            for row in config["tables"][table]["rows"]
        ]
    return targets


def get_data_dir(wildcards, input):
    """The prepare_data folder, derived from the manifest input (no hard-coded prefix)."""
    return os.path.dirname(input.manifest)


def get_data_dir_of_output(wildcards, output):
    return os.path.dirname(output.manifest)


# ---- train -------------------------------------------------------------------------------
def run_dir(model, recipe, seed):
    return f"{OUT}/runs/model~{model}/recipe~{recipe}/seed~{seed}"


def get_recipe(wildcards):
    return config["recipes"][wildcards.recipe]


def recipe_init_run(recipe_id, seed):
    """(recipe, seed) of the run a recipe fine-tunes from, or None."""
    init = config["recipes"][recipe_id].get("init", "none")
    if isinstance(init, dict) and "recipe" in init:
        return init["recipe"], int(init.get("seed", 0))
    return None


def get_model_json(wildcards):
    return as_json(config["models"][wildcards.model])


def get_recipe_json(wildcards):
    return as_json(get_recipe(wildcards))


def get_state_dir(wildcards):
    return f"{run_dir(wildcards.model, wildcards.recipe, wildcards.seed)}/state"


def get_init_arg(wildcards, input):
    return f"--init {shlex.quote(input.init)}" if input.init else ""


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


def get_test_model_args(wildcards):
    tm = get_test_model(wildcards)
    args = []
    if tm.drop_final_norm:
        args.append("--drop-final-norm")
    if tm.img_size is not None:
        args.append(f"--img-size {int(tm.img_size)}")
    return " ".join(args)


def feature_path(test_model, view, split):
    return f"{OUT}/features/{test_model}/view~{view}/split~{split}.npz"


def get_method(wildcards):
    return method_config(config, wildcards.method)


def method_needs(method_id):
    from sure_ood import scores

    return set(scores.get(method_config(config, method_id)["method"]).needs)


# ODIN's hyper-parameters belong to the `odin` rule (it runs the network); its scorers have none.
def odin_slug(params):
    """The ODIN settings as a path level: methods with the same settings share one job."""
    p = odin_params(params)
    return f"t{float(p['temperature']):g}_e{float(p['epsilon']):g}_s{int(bool(p['std_scaled']))}"


def odin_path(test_model, slug, view, split):
    return f"{OUT}/odin/{test_model}/odin~{slug}/view~{view}/split~{split}.npz"


def get_odin_args(wildcards):
    t, e, s = wildcards.odin.split("_")
    args = f"--temperature {float(t[1:])} --epsilon {float(e[1:])}"
    return args + (" --std-scaled" if s == "s1" else "")


def get_score_inputs(wildcards):
    needs = method_needs(wildcards.method)
    tm, v = wildcards.test_model, wildcards.view
    if "network" in needs:
        slug = odin_slug(get_method(wildcards)["params"])
        features = [odin_path(tm, slug, v, s) for s in TEST_SPLITS]
    else:
        features = [feature_path(tm, v, s) for s in TEST_SPLITS]
    inputs = {"features": features, "prior": data_input("prior.npy")}
    if "train" in needs:
        inputs["train"] = feature_path(tm, "center", "train")
    return inputs


def get_score_args(wildcards, input):
    m = get_method(wildcards)
    args = [f"--method {m['method']}"]
    params = {} if "network" in method_needs(wildcards.method) else m["params"]
    args += [
        f"--param {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in params.items()
    ]
    args += [f"--features {shlex.quote(f)}" for f in input.features]
    if "train" in input.keys():
        args.append(f"--train-features {shlex.quote(input.train)}")
    args.append(f"--prior {shlex.quote(input.prior)}")
    return " ".join(args)


# ---- rows --------------------------------------------------------------------------------
def get_row(wildcards):
    return resolve_row(config, wildcards.table, wildcards.row)


def get_row_json(wildcards):
    return as_json(get_row(wildcards))


def get_row_config_json(wildcards):
    """The row's full config subtree (row, model, recipe chain, method), for provenance."""
    return as_json(row_config_subtree(config, wildcards.table, wildcards.row))


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


def get_row_replicates(wildcards):
    return " ".join(str(r) for r in row_replicates(get_row(wildcards)))


def get_fusion(wildcards):
    return get_row(wildcards)["fusion"]


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


def get_table_json(wildcards):
    return as_json(get_table(wildcards))


def get_table_rows(wildcards):
    return [
        f"{OUT}/rows/{wildcards.table}/{row}.json"
        for row in get_table(wildcards)["rows"]
    ]


def get_table_scores(wildcards):
    """Headline fused scores of every row (the paired comparison with the reference row)."""
    if not get_table(wildcards).get("reference_row"):
        return []
    out = []
    for row_id in get_table(wildcards)["rows"]:
        first = row_replicates(resolve_row(config, wildcards.table, row_id))[0]
        out.append(fused_path(wildcards.table, row_id, first))
    return out


# Rules run on the main Snakemake process's machine, never as cluster jobs: config
# `local_rules` (default in the schema: the cheap ones; imagenet_ssb sends score, fuse and
# evaluate to the cluster with their declared memory). The schema names every rule, so a
# misspelt one fails before any job.
workflow.localrules(*config["local_rules"])
