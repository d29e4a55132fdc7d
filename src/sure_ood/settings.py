"""Typed settings, built once from the validated config, and the per-job files that carry them.

The schema (``workflow/schemas/config.schema.yaml``) holds every default; Snakemake's
``validate`` fills them in, so these classes read keys without restating a default. The rules
turn them into the options of a stage (``options()``) and write those options to a per-job file
(:func:`job_file`); the stage's command names it with ``--job FILE`` (read by :func:`job_argv`
in ``sure_ood.cli``), so a command holds paths and short values only, never a JSON subtree.

A job file's name is the digest of its content: a changed setting is a new file name, i.e. a
changed input of exactly the jobs that use it (the rerun trigger), and an unchanged one is never
rewritten (no new modification time, nothing reruns). Snakemake's own alternatives do not fit:
a params-triggered local rule would rewrite the file, and with it every consumer's input time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sure_ood.io import InputError

Options = dict[str, Any]


def pin_memory_option(value: Any) -> str:
    """``compute.pin_memory`` (auto | true | false; YAML reads the last two as booleans)."""
    return str(value).lower()


@dataclass(frozen=True)
class Compute:
    """GPU options of train and extract (config ``compute``)."""

    amp: str
    workers: int
    pin_memory: str
    channels_last: bool

    @classmethod
    def from_config(cls, config: dict) -> Compute:
        c = config["compute"]
        return cls(
            c["amp"], int(c["workers"]), pin_memory_option(c["pin_memory"]), c["channels_last"]
        )

    def options(self) -> Options:
        return {
            "--amp": self.amp,
            "--workers": self.workers,
            "--pin-memory": self.pin_memory,
            "--channels-last": self.channels_last,
        }


@dataclass(frozen=True)
class OdinCompute:
    """The odin rule's precision, loader workers and batch size (config ``compute.odin``; a
    null batch size is ``extract_batch_size``)."""

    amp: str
    workers: int
    batch_size: int
    pin_memory: str

    @classmethod
    def from_config(cls, config: dict) -> OdinCompute:
        o = config["compute"]["odin"]
        batch = o["batch_size"] or config["extract_batch_size"]
        return cls(
            o["amp"],
            int(o["workers"]),
            int(batch),
            pin_memory_option(config["compute"]["pin_memory"]),
        )

    def options(self) -> Options:
        return {
            "--amp": self.amp,
            "--workers": self.workers,
            "--batch-size": self.batch_size,
            "--pin-memory": self.pin_memory,
        }


@dataclass(frozen=True)
class OdinSettings:
    """ODIN's hyper-parameters (a method's ``params`` with its preset resolved:
    ``sure_ood.config.odin_params``). Methods with the same settings share one odin job."""

    temperature: float
    epsilon: float
    std_scaled: bool

    @classmethod
    def from_params(cls, params: dict, where: str = "params") -> OdinSettings:
        from sure_ood.config import odin_params

        p = odin_params(params, where)
        return cls(float(p["temperature"]), float(p["epsilon"]), bool(p["std_scaled"]))

    def levels(self) -> str:
        """The settings as path levels, one each, exact (a float's shortest repr reads back
        as the same float): ``temperature~1000.0/epsilon~0.0014/std_scaled~true``."""
        return (
            f"temperature~{self.temperature!r}/epsilon~{self.epsilon!r}/"
            f"std_scaled~{str(self.std_scaled).lower()}"
        )

    @classmethod
    def from_levels(cls, temperature: str, epsilon: str, std_scaled: str) -> OdinSettings:
        """The settings of an odin output path (its ``temperature``, ``epsilon`` and
        ``std_scaled`` levels, as in :meth:`levels`)."""
        return cls(float(temperature), float(epsilon), std_scaled == "true")

    def options(self) -> Options:
        return {
            "--temperature": self.temperature,
            "--epsilon": self.epsilon,
            "--std-scaled": "true" if self.std_scaled else "false",
        }


@dataclass(frozen=True)
class Settings:
    """The run-wide settings of a validated config (defaults filled in by the schema)."""

    benchmark: str
    device: str
    extract_batch_size: int
    extract_shards: int
    bootstrap: int
    numerics: str
    compute: Compute
    odin: OdinCompute

    @classmethod
    def from_config(cls, config: dict) -> Settings:
        return cls(
            benchmark=config["benchmark"]["name"],
            device=config["device"],
            extract_batch_size=int(config["extract_batch_size"]),
            extract_shards=int(config["extract_shards"]),
            bootstrap=int(config["bootstrap"]),
            numerics=config["numerics"],
            compute=Compute.from_config(config),
            odin=OdinCompute.from_config(config),
        )


def rule_resource(config: dict, defaults: dict, rule: str, key: str):
    """A portable resource of a rule: ``resources.<rule>.<key>``, else
    ``resources.default.<key>``, else ``defaults`` (the schema's ``resources.x-defaults``: the
    rule's own, else its ``default``)."""
    r = config.get("resources") or {}
    for where in (r.get(rule), r.get("default"), defaults.get(rule), defaults["default"]):
        if where and key in where:
            return where[key]
    raise KeyError(f"resources: no default for {rule}.{key} in the schema")


# ---- per-job files -------------------------------------------------------------------------
def options_argv(options: Options) -> list[str]:
    """``{"--model": {...}, "--split": ["a", "b"], "--channels-last": True}`` -> argv: a
    mapping is one JSON value, a list several values, True a bare flag, False/None nothing."""
    argv: list[str] = []
    for opt, value in options.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(opt)
        elif isinstance(value, dict):
            argv += [opt, json.dumps(value, sort_keys=True)]
        elif isinstance(value, (list, tuple)):
            argv += [opt, *(str(v) for v in value)]
        else:
            argv += [opt, str(value)]
    return argv


def job_text(stage: str | None, options: Options) -> str:
    return json.dumps({"stage": stage, "options": options}, sort_keys=True, indent=1) + "\n"


def job_file(
    folder: str | os.PathLike, stage: str | None, options: Options, name: str | None = None
) -> str:
    """Write ``{"stage", "options"}`` to ``<folder>/<name or stage>/<digest>.json`` unless it
    is there (atomically: concurrent writers of one digest write the same bytes); return its
    path. A file of stage None serves any stage (the benchmark's location)."""
    text = job_text(stage, options)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(folder) / (name or stage or "any") / f"{digest}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    return str(path)


def job_argv(path: str | os.PathLike, stage: str) -> list[str]:
    """The options a job file gives ``stage``; a missing or malformed file, or one written for
    another stage, is an InputError naming the file."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"--job {path}: job file not found (the workflow writes it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"--job {path}: cannot read the job file ({e})") from e
    except json.JSONDecodeError as e:
        raise InputError(
            f"--job {path}: not a valid job file ({e.msg} at line {e.lineno} col {e.colno})"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise InputError(f'--job {path}: not a job file (expected {{"stage", "options": {{}}}})')
    if data.get("stage") not in (None, stage):
        raise InputError(
            f"--job {path}: written for stage {data.get('stage')!r}, not for {stage!r}"
        )
    return options_argv(data["options"])


def expand_jobs(argv: list[str], stage: str) -> list[str]:
    """``argv`` with every ``--job FILE`` (or ``--job=FILE``) replaced by the file's options,
    in place, so options given after it on the command line win where argparse keeps the
    last value."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--job":
            if i + 1 >= len(argv):
                raise InputError("--job: expected a job file after it")
            out += job_argv(argv[i + 1], stage)
            i += 2
            continue
        if a.startswith("--job="):
            out += job_argv(a.split("=", 1)[1], stage)
        else:
            out.append(a)
        i += 1
    return out
