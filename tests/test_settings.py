"""One source of truth for defaults, typed settings, and the per-job files of the workflow.

- no rule restates a default the schema holds (a ``.get("bootstrap", 1000)`` would drift);
- the settings the workflow always passes to odin are required options (no second default);
- the typed settings read the schema's defaults (Snakemake's own validate fills them in);
- a stage reads its options back into the same typed settings (``from_args`` inverts
  ``options()``), and a hand run without one of them fails;
- a job file round-trips to the same argv as the options it holds; a missing, malformed or
  foreign one is a one-line error naming the file; a job run logs the command that reruns it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex

import pytest
import yaml
from conftest import MAX_COMMAND, ROOT, copy_workflow, run_snakemake, shell_commands
from snakemake.utils import validate

from sure_ood import jobs, settings
from sure_ood.cli import main as cli_main
from sure_ood.cli import stage_parser
from sure_ood.config import odin_settings
from sure_ood.stages import odin as odin_stage

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


def _schema_default_keys(node, out: set[str]) -> set[str]:
    """Every property name of the schema that carries a ``default``."""
    if isinstance(node, dict):
        for key, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and "default" in sub:
                out.add(key)
        for v in node.values():
            _schema_default_keys(v, out)
    elif isinstance(node, list):
        for v in node:
            _schema_default_keys(v, out)
    return out


def test_no_rule_restates_a_schema_default():
    keys = _schema_default_keys(yaml.safe_load(SCHEMA.read_text()), set())
    assert {"bootstrap", "extract_batch_size", "device", "amp"} <= keys  # the walk finds them
    files = [ROOT / "Snakefile", *sorted((ROOT / "workflow/rules").glob("*.smk"))]
    found = []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            for key in re.findall(r"""\.get\(\s*["']([a-z_]+)["']\s*,""", line):
                if key in keys:
                    found.append(f"{f.name}:{n}: {line.strip()}")
    assert not found, "defaults restated (the schema holds them):\n" + "\n".join(found)
    # resources: res(rule, key) / grow(rule, key) read the schema's resources.x-defaults
    calls = [
        f"{f.name}: {c}"
        for f in files
        for c in re.findall(r"\b(?:res|grow)\([^()]*\)", f.read_text())
        if c.count(",") != 1
    ]
    assert not calls, calls


def _restated_defaults(source: str, keys: set[str]) -> list[str]:
    """``x.get("key", default)`` calls (and ``x.get("key") or default``) of ``source`` whose
    key has a default in the schema."""
    import ast

    def get_of_key(node, nargs: int) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "get"
            and len(node.args) == nargs
            and isinstance(node.args[0], ast.Constant)
            and node.args[0].value in keys
        )

    found = []
    for node in ast.walk(ast.parse(source)):
        if get_of_key(node, 2) or (
            isinstance(node, ast.BoolOp)
            and isinstance(node.op, ast.Or)
            and get_of_key(node.values[0], 1)
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_config_checks_restate_no_schema_default():
    """sure_ood.config reads the validated config (Snakemake's validate filled the schema's
    defaults in before check_config runs): a key with a schema default is read as it is, never
    with a second copy of its default (``r.get("head", "linear")`` would drift)."""
    from sure_ood.config import ConfigError, check_config, validate_config

    keys = _schema_default_keys(yaml.safe_load(SCHEMA.read_text()), set())
    # the scan finds a restated default, and a `.get` of a key without one is not flagged
    assert _restated_defaults('r.get("head", "linear") + r.get("sam_rho", 0)', keys) == [
        "1: r.get('head', 'linear')"
    ]
    assert _restated_defaults('b.get("ood_splits") or ["ood_test"]', keys) == [
        "1: b.get('ood_splits') or ['ood_test']"
    ]
    source = (ROOT / "src/sure_ood/config.py").read_text()
    found = _restated_defaults(source, keys)
    assert not found, "defaults restated in config.py (the schema holds them):\n" + "\n".join(found)
    # a config whose defaults were never filled in is named, not a KeyError
    raw = yaml.safe_load((ROOT / "config/digits_osr.yaml").read_text())
    validate_config(raw, SCHEMA)
    with pytest.raises(ConfigError, match=r"missing; the config's checks read the validated"):
        check_config(raw)
    check_config(_digits_config())  # the same config validated passes


# Modules whose restated defaults are being removed in another change (listed, not skipped
# silently), and `.get`s of a key that names something else than the config key of that name.
NOT_YET_SCANNED: set[str] = set()
OTHER_MEANING = {
    "stages/table.py": {"r.get('replicates', [0])"},  # a row JSON's list of seeds
}


def test_the_library_restates_no_schema_default():
    """Every module of the package reads validated subtrees (the workflow's, or a hand-written
    one through sure_ood.defaults.with_defaults) without a second copy of a schema default."""
    keys = _schema_default_keys(yaml.safe_load(SCHEMA.read_text()), set())
    package = ROOT / "src/sure_ood"
    modules = sorted(package.rglob("*.py"))
    assert package / "training/setup.py" in modules and package / "models.py" in modules
    found = []
    for f in modules:
        name = f.relative_to(package).as_posix()
        if name in NOT_YET_SCANNED:
            continue
        allowed = OTHER_MEANING.get(name, set())
        found += [
            f"{name}:{hit}"
            for hit in _restated_defaults(f.read_text(), keys)
            if hit.split(": ", 1)[1] not in allowed
        ]
    assert not found, "defaults restated (the schema holds them):\n" + "\n".join(found)


def test_rule_resources_fall_back_to_the_schemas_defaults():
    defaults = yaml.safe_load(SCHEMA.read_text())["properties"]["resources"]["x-defaults"]
    config = {"resources": {"default": {"mem_mb": 500}, "extract": {"gpu": 1}}}
    assert settings.rule_resource(config, defaults, "extract", "gpu") == 1  # the rule's own
    assert settings.rule_resource(config, defaults, "extract", "mem_mb") == 500  # default's
    assert settings.rule_resource({}, defaults, "extract", "mem_mb") == 4000  # the schema's
    assert settings.rule_resource({}, defaults, "score", "threads") == 1  # schema default's
    with pytest.raises(KeyError, match="verify.mem_mb"):
        settings.rule_resource({}, defaults, "verify", "mem_mb")


def _digits_config() -> dict:
    config = yaml.safe_load((ROOT / "config/digits_osr.yaml").read_text())
    validate(config, str(SCHEMA))  # fills the schema's defaults, as the Snakefile does
    return config


def test_settings_are_the_schemas_defaults():
    config = _digits_config()
    for key in ("device", "extract_batch_size", "compute", "bootstrap", "numerics"):
        config.pop(key, None)
    validate(config, str(SCHEMA))
    s = settings.Settings.from_config(config)
    assert (s.device, s.extract_batch_size, s.bootstrap, s.numerics) == (
        "auto",
        256,
        1000,
        "portable",
    )
    assert s.compute == settings.Compute("none", 0, "auto", False)
    # a null odin batch size is extract_batch_size
    assert s.odin == settings.OdinCompute("none", 0, 256, "auto")


def test_the_python_apis_batch_size_is_the_schemas():
    """extract(), odin() and open_test_loader() default to inference.BATCH_SIZE, so a Python
    caller gets the batch the workflow passes (the schema's extract_batch_size)."""
    import inspect

    from sure_ood import inference
    from sure_ood.stages import extract, odin

    config = _digits_config()
    config.pop("extract_batch_size", None)
    validate(config, str(SCHEMA))
    assert inference.BATCH_SIZE == config["extract_batch_size"]
    for fn in (extract.extract, odin.odin, inference.open_test_loader):
        assert inspect.signature(fn).parameters["batch_size"].default == inference.BATCH_SIZE


def test_odin_settings_of_a_method_and_their_path_level():
    openood = odin_settings({})
    assert openood == settings.OdinSettings(1000.0, 0.0014, True)
    ref = odin_settings({"preset": "reference", "temperature": 10})
    assert ref == settings.OdinSettings(10.0, 0.0, False)
    for s in (openood, ref, settings.OdinSettings(1e-07, 0.00140000001, True)):
        levels = dict(level.split("~") for level in s.levels().split("/"))
        assert settings.OdinSettings.from_levels(**levels) == s  # exact: no rounding
    assert openood.levels() == "temperature~1000.0/epsilon~0.0014/std_scaled~true"


# Each settings object, on values other than the schema's defaults, and the options each stage
# needs besides it (paths and short values the rule gives on the command line).
_ROUND_TRIPS = [
    (
        settings.Compute("bf16", 3, "false", True),
        "train",
        "--benchmark {} --model {} --recipe {} --seed 0 --data-dir d --state-dir s --log l "
        "--summary m --threads 1 --device cpu",
    ),
    (
        settings.Compute("tf32", 2, "true", False),
        "extract",
        "--test-model t --benchmark {} --data-dir d --split id_test --view center "
        "--batch-size 8 --threads 1 --device cpu --num-shards 1 --out o.npz",
    ),
    (
        settings.OdinSettings(10.0, 0.00140000001, False),
        "odin",
        "--test-model t --features f --benchmark {} --data-dir d --split id_test --view center "
        "--threads 1 --device cpu --out o.npz --amp none --workers 0 --batch-size 8 "
        "--pin-memory auto",
    ),
    (
        settings.OdinCompute("bf16", 4, 64, "false"),
        "odin",
        "--test-model t --features f --benchmark {} --data-dir d --split id_test --view center "
        "--threads 1 --device cpu --out o.npz --temperature 1000 --epsilon 0 --std-scaled true",
    ),
]


@pytest.mark.parametrize(
    ("obj", "stage", "rest"),
    _ROUND_TRIPS,
    ids=["compute-train", "compute-extract", "odin", "odin-compute"],
)
def test_a_stage_reads_its_settings_back_from_their_options(obj, stage, rest, tmp_path, capsys):
    """from_args(parse(options())) == the settings, through the stage's real parser (the one
    sure_ood.cli builds) and through a job file as the workflow writes it; and a hand run
    without any one of the options the workflow passes fails (required: no second default)."""
    parser = stage_parser(stage)
    cls = type(obj)
    argv = jobs.options_argv(obj.options()) + shlex.split(rest)
    assert cls.from_args(parser.parse_args(argv)) == obj
    job = jobs.job_file(tmp_path, stage, obj.options())
    by_job = parser.parse_args(jobs.expand_jobs(["--job", job, *shlex.split(rest)], stage))
    assert cls.from_args(by_job) == obj
    actions = {o: a for a in parser._actions for o in a.option_strings}
    for opt in obj.options():
        if actions[opt].nargs == 0:
            continue  # a switch (--channels-last): absent is off, as the workflow writes it
        i = argv.index(opt)
        with pytest.raises(SystemExit):
            parser.parse_args(argv[:i] + argv[i + 2 :])
        assert f"required: {opt}" in capsys.readouterr().err


def test_every_odin_setting_the_workflow_passes_is_required():
    parser = argparse.ArgumentParser()
    odin_stage.add_arguments(parser)
    actions = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    config = _digits_config()
    s = settings.Settings.from_config(config)
    passed = {
        **odin_settings({}).options(),
        **s.odin.options(),
        "--device": s.device,
    }
    for opt in passed:
        assert actions[opt].required and actions[opt].default is None, opt


def test_job_file_round_trips_to_the_options_argv(tmp_path):
    options = {
        "--model": {"b": 1, "a": [0.1, 2]},
        "--split": ["id_test", "ood_test"],
        "--channels-last": True,
        "--nothing": False,
        "--batch-size": 256,
    }
    path = jobs.job_file(tmp_path, "extract", options)
    again = jobs.job_file(tmp_path, "extract", dict(reversed(options.items())))
    assert again == path  # the name is the digest of the content, in any key order
    argv = jobs.expand_jobs(["--job", path, "--threads", "1"], "extract")
    expected = jobs.options_argv(dict(sorted(options.items()))) + ["--threads", "1"]
    assert argv == expected
    assert argv[argv.index("--model") + 1] == '{"a": [0.1, 2], "b": 1}'
    assert "--nothing" not in argv and argv.count("--channels-last") == 1
    other = jobs.job_file(tmp_path, "extract", {**options, "--batch-size": 64})
    assert other != path


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "job file not found"),
        ("{not json", "not a valid job file"),
        ('["--method", "msp"]', "not a job file"),
        ('{"stage": "odin", "options": {}}', "written for stage 'odin', not for 'score'"),
    ],
    ids=["missing", "malformed", "not_a_mapping", "other_stage"],
)
def test_bad_job_file_is_one_line_naming_the_file(tmp_path, capsys, content, needle):
    path = tmp_path / "job.json"
    if content is not None:
        path.write_text(content)
    assert cli_main(["score", "--job", str(path), "--features", "f.npz"]) == 2
    err = capsys.readouterr().err
    # a job's log begins with its command (and, in-process, a numerics note): then one error
    lines = [line for line in err.splitlines() if not line.startswith("sure-ood: ")]
    assert len(lines) == 1, err
    assert str(path) in lines[0] and needle in lines[0], err


def test_a_job_run_logs_the_command_that_reruns_it(tmp_path, capsys, monkeypatch):
    """Every workflow command names a --job file: such a run begins its log with the exact
    command, whether or not the environment asks for it."""
    monkeypatch.delenv("SURE_OOD_LOG_COMMAND", raising=False)
    job = jobs.job_file(tmp_path, "score", {"--list": True})
    assert cli_main(["score", "--job", job]) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == f"sure-ood: command: sure-ood --numerics portable score --job {job}"


def test_job_options_reach_the_stage_as_on_the_command_line(tmp_path):
    """The score job of a method with parameters parses to what the flags would give."""
    from sure_ood.stages import score

    parser = argparse.ArgumentParser()
    score.add_arguments(parser)
    opts = {"--method": "energy", "--param": [f"temperature={json.dumps(2.0)}"]}
    job = jobs.job_file(tmp_path, "score", opts)
    by_job = parser.parse_args(jobs.expand_jobs(["--job", job], "score"))
    by_hand = parser.parse_args(["--method", "energy", "--param", "temperature=2.0"])
    assert vars(by_job) == vars(by_hand)


# Options of a job file with a meaning of their own when left out by hand (not a config default):
# evaluate without --replicates scores replicates 0, 1, ...; without --config it records no
# provenance. score's options are all optional (the same parser serves `score --list`).
OPTIONAL_BY_DESIGN = {("evaluate", "--replicates"), ("evaluate", "--config")}


def test_every_setting_the_workflow_passes_is_a_required_option(tmp_path):
    """Dry-run the digits config, read every job's command and job files, and check that each
    option a job file gives its stage is required there, with no default of its own (a
    default would be a second copy of the schema's)."""
    work = copy_workflow(tmp_path)
    r = run_snakemake(work, "-n", "-p", "--configfile", "config/digits_osr.yaml")
    commands = shell_commands(r.stdout + r.stderr)
    assert len(commands) > 50, r.stdout[-2000:]
    # short commands: the paths and settings are in the job files (`--job FILE`)
    assert max(map(len, commands)) <= MAX_COMMAND, max(commands, key=len)
    checked: dict[str, set[str]] = {}
    for command in commands:
        argv = shlex.split(command.split(" > ")[0])
        if argv[:1] != ["sure-ood"]:
            continue  # `None`: a rule without a command (all)
        stage = argv[1]
        jobs = [argv[i + 1] for i, a in enumerate(argv) if a == "--job"]
        for path in jobs:
            data = json.loads((work / path).read_text())
            if data["stage"] is None or stage == "score" or "settings" not in data:
                continue  # the benchmark's location, score's optional options, paths only
            # the job's resolved file includes its settings' job file (the config-derived part)
            settings = json.loads((work / data["settings"]).read_text())["options"]
            assert settings.items() <= data["options"].items(), path
            checked.setdefault(stage, set()).update(settings)
    assert set(checked) >= {"train", "extract", "odin", "evaluate", "table", "claims"}, checked
    for stage, options in checked.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(f"sure_ood.stages.{stage}").add_arguments(parser)
        actions = {o: a for a in parser._actions for o in a.option_strings}
        for opt in sorted(options):
            action = actions[opt]
            if action.nargs == 0 or (stage, opt) in OPTIONAL_BY_DESIGN:
                continue  # a switch (store_true), or optional by design
            assert action.required and action.default is None, (stage, opt)


def test_split_config_and_claim_rows_moved_from_the_rules_into_the_package():
    from sure_ood.config import claim_table_rows, split_config

    bench = {"name": "b", "source": "imagefolder", "seed": 0, "data_root": "/d", "normalization": 1}
    assert split_config(bench) == {
        "name": "b",
        "source": "imagefolder",
        "seed": 0,
        "data_root": "/d",
    }
    assert "data_root" not in split_config(bench, with_location=False)
    config = {
        "tables": {"t": {"rows": {"a": {}, "b": {}, "c": {}}}},
        "claims": {
            "x": {"table": "t", "kind": "pair", "a": "b", "b": "a"},  # validated: kind filled
            "y": {"table": "t", "kind": "best_of", "a": "a"},
        },
    }
    assert claim_table_rows(config) == [("t", "b"), ("t", "a"), ("t", "c")]


def test_cluster_resources_grow_with_the_attempt(tmp_path):
    """Every rule that declares memory or runtime asks for `attempt` x them on a retry (a job
    killed for memory or time is not resubmitted with the same request): the rules' resources
    as Snakemake itself evaluates them, at attempts 1 and 2."""
    from types import SimpleNamespace

    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    work = copy_workflow(tmp_path)
    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        workflow = api.workflow(
            resource_settings=ResourceSettings(),
            config_settings=ConfigSettings(configfiles=[work / "config/config.yaml"]),
            snakefile=work / "Snakefile",
            workdir=work,
        )._workflow
        wildcards = SimpleNamespace(recipe="sure")  # a recipe that trains (train_runtime)
        checked = set()
        for rule in workflow.rules:
            for key in ("mem_mb", "runtime"):
                if key not in rule.resources:
                    continue
                first, second = (
                    rule.resources[key].evaluate(wildcards, attempt=a).value for a in (1, 2)
                )
                assert second == 2 * first > 0, (rule.name, key, first, second)
                checked.add(rule.name)
    assert {"train", "extract", "odin", "score", "fuse", "evaluate", "claims"} <= checked
