"""Typed settings, built once from the validated config.

The schema (``workflow/schemas/config.schema.yaml``) holds every default; Snakemake's
``validate`` fills them in, so these classes read keys without restating a default. The rules
turn them into the options of a stage (``options()``) and write those options to a per-job file
(:func:`sure_ood.jobs.job_file`), which the stage's command names with ``--job FILE``. The
stages declare them (``add_arguments``) and read them back (``from_args``, the inverse of
``options()``) through the same class, so the option names of one settings object live in it only.

Imports only :mod:`sure_ood.args` (and through it :mod:`sure_ood.io`): the train, extract and
odin stages import this module, so it is part of their code version
(:mod:`sure_ood.code_version`); importing the config (and through it the method registry) here
would make those jobs rerun when any method changes.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from sure_ood.args import boolean

Options = dict[str, Any]
PIN_MEMORY = ("auto", "true", "false")


def pin_memory_option(value: Any) -> str:
    """``compute.pin_memory`` (auto | true | false; YAML reads the last two as booleans)."""
    return str(value).lower()


def pin_memory_flag(option: str) -> bool | None:
    """A ``--pin-memory`` value as the loaders take it: None (auto: on CUDA), True or False."""
    return {"auto": None, "true": True, "false": False}[option]


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

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """The options of :meth:`options`, required but the switch (train, extract)."""
        p.add_argument(
            "--amp",
            required=True,
            choices=("none", "bf16", "fp16", "tf32"),
            help="precision on CUDA: autocast dtype, or tf32 matmuls (no effect on the CPU)",
        )
        p.add_argument("--workers", type=int, required=True, help="DataLoader worker processes")
        p.add_argument("--pin-memory", required=True, choices=PIN_MEMORY)
        p.add_argument("--channels-last", action="store_true", help="channels-last memory (CUDA)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Compute:
        """The settings of parsed :meth:`options` (the inverse of :meth:`options`)."""
        return cls(args.amp, args.workers, args.pin_memory, args.channels_last)

    @property
    def pin(self) -> bool | None:
        """``pin_memory`` as the loaders take it (:func:`pin_memory_flag`)."""
        return pin_memory_flag(self.pin_memory)


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

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """The options of :meth:`options`, all required (odin)."""
        p.add_argument(
            "--amp",
            required=True,
            choices=("none", "bf16", "tf32"),
            help="precision on CUDA: none = float32 (the reference's), bf16 autocast, tf32 matmuls",
        )
        p.add_argument("--workers", type=int, required=True, help="DataLoader worker processes")
        p.add_argument("--batch-size", type=int, required=True)
        p.add_argument("--pin-memory", required=True, choices=PIN_MEMORY)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OdinCompute:
        """The settings of parsed :meth:`options` (the inverse of :meth:`options`)."""
        return cls(args.amp, args.workers, args.batch_size, args.pin_memory)

    @property
    def pin(self) -> bool | None:
        """``pin_memory`` as the loaders take it (:func:`pin_memory_flag`)."""
        return pin_memory_flag(self.pin_memory)


@dataclass(frozen=True)
class OdinSettings:
    """ODIN's hyper-parameters (a method's ``params`` with its preset resolved:
    ``sure_ood.config.odin_settings``). Methods with the same settings share one odin job."""

    temperature: float
    epsilon: float
    std_scaled: bool

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

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        """The options of :meth:`options`, all required (odin)."""
        p.add_argument("--temperature", type=float, required=True)
        p.add_argument("--epsilon", type=float, required=True)
        p.add_argument(
            "--std-scaled",
            type=boolean,
            required=True,
            metavar="{true,false}",
            help="divide the gradient sign by the normalisation std (OpenOOD; eps in pixel units)",
        )

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> OdinSettings:
        """The settings of parsed :meth:`options` (the inverse of :meth:`options`)."""
        return cls(args.temperature, args.epsilon, args.std_scaled)


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
