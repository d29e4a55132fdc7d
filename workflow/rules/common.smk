# Helpers shared by the rules: config look-ups, target expanders, wildcard constraints.
# The logic lives in the package (sure_ood.config); these functions only adapt it to wildcards.
import json
import os
import shlex

from sure_ood.config import (
    all_rows,
    all_test_models,
    check_config,
    method_config,
    resolve_row,
    row_test_models,
)
from sure_ood.data import view_names

check_config(config)

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
    table="[a-z0-9_]+",
    row="[a-z0-9_]+",
    test_model="[a-z0-9_.-]+",


def as_json(obj):
    """A config subtree as one shell-quoted JSON argument."""
    return shlex.quote(json.dumps(obj, sort_keys=True))


# The benchmark keys that define the splits: only these rerun prepare_data when edited.
SPLIT_KEYS = ("name", "source", "known_classes", "unknown_classes", "split", "ood_fraction",
              "seed", "data_root", "splits", "ssb_splits", "skip_unreadable")


def get_split_config():
    return as_json({k: v for k, v in config["benchmark"].items() if k in SPLIT_KEYS})


def res(rule_name, key, default):
    """A portable resource of a rule from config (resources.<rule>.<key>, then .default)."""
    r = config.get("resources", {})
    return r.get(rule_name, {}).get(key, r.get("default", {}).get(key, default))


def get_all_targets():
    targets = []
    for table in config["tables"]:
        targets += [f"{OUT}/tables/{table}.csv", f"{OUT}/tables/{table}.md"]
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


def get_score_inputs(wildcards):
    needs = method_needs(wildcards.method)
    inputs = {
        "features": [
            feature_path(wildcards.test_model, wildcards.view, s) for s in TEST_SPLITS
        ],
        "prior": f"{OUT}/data/prior.npy",
    }
    if "train" in needs:
        inputs["train"] = feature_path(wildcards.test_model, "center", "train")
    return inputs


def get_score_args(wildcards, input):
    m = get_method(wildcards)
    args = [f"--method {m['method']}"]
    args += [
        f"--param {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in m["params"].items()
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


def get_fusion(wildcards):
    return get_row(wildcards)["fusion"]


def row_views(row):
    return view_names(row["views"])


def get_fuse_scores(wildcards):
    row = get_row(wildcards)
    return [
        f"{OUT}/scores/{tm.id}/method~{row['method']}/view~{view}/scores.parquet"
        for tm in row_test_models(row)
        for view in row_views(row)
    ]


def get_fuse_features(wildcards):
    """Feature caches of every view, for the softmax-mean class prediction (several views)."""
    row = get_row(wildcards)
    if len(get_fuse_scores(wildcards)) == 1:
        return []
    return [
        feature_path(tm.id, view, split)
        for tm in row_test_models(row)
        for view in row_views(row)
        for split in TEST_SPLITS
    ]


def get_row_checkpoints(wildcards):
    row = get_row(wildcards)
    return [
        f"{OUT}/test_models/{tm.id}/model.safetensors" for tm in row_test_models(row)
    ]


def get_row_features(wildcards):
    row = get_row(wildcards)
    return [
        feature_path(tm.id, view, split)
        for tm in row_test_models(row)
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


# Cheap rules run inside the main Snakemake process's machine, never as cluster jobs.
localrules:
    all,
    score,
    fuse,
    evaluate,
    table,
    histogram,
