"""Typed settings, built once from the validated config.

The schema (``workflow/schemas/config.schema.yaml``) holds every default; Snakemake's
``validate`` fills them in, so these classes read keys without restating a default. The rules
turn them into the options of a stage (``options()``) and write those options to a per-job file
(:func:`sure_ood.jobs.job_file`), which the stage's command names with ``--job FILE``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
