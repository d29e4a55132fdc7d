"""The ``sure-ood`` command: one subcommand per workflow stage.

Each stage lives in the module of the same name (``sure-ood extract`` ->
``sure_ood.stages.extract``) and exposes ``add_arguments(parser)`` and ``run(args)``. Only the
chosen stage's module is imported, so cheap stages (score, evaluate, table) do not pay for
importing torch and timm.

``sure-ood [--numerics portable|native] STAGE ...``: the numerics mode (:mod:`sure_ood.numerics`)
is applied before the stage's module, and with it numpy/torch/numba, is imported. Without the
option the mode comes from ``$SURE_OOD_NUMERICS`` (the workflow sets it from the config), else
``portable``. Every stage prints the command that reproduces it, mode included, to its log.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys

# stage name -> one-line help. The module is sure_ood.stages.<stage name>.
STAGES: dict[str, str] = {
    "prepare_data": "split a benchmark, a part a job: ID splits + classes + prior, or an OOD split",
    "train": "train one run (recipe x seed); resumable",
    "finalize_swa": "turn a run's training state into final weights (SWA average or last)",
    "make_test_model": "soup runs, drop the final norm, change the test resolution",
    "extract": "one forward pass over a split: logits, features, head parameters (.npz)",
    "merge_features": "concatenate the shards of a split's feature cache, in order",
    "odin": "ODIN scores (input perturbation; needs the network)",
    "score": "score a feature cache with a post-hoc method (--list for the methods)",
    "fuse": "fuse per-view (and per-model) scores of each image",
    "evaluate": "metrics of one table row (AUROC, FPR@95, AUPR, accuracy, CIs)",
    "compare": "paired bootstrap comparison of two rows",
    "table": "collect rows into CSV and Markdown tables",
    "claims": "one line per published claim: effect, interval, p, verdict",
    "histogram": "ID vs OOD score histogram of a row (PNG)",
    "verify": "compare a finished run with its reference (identical / within / outside)",
}


def _top_parser() -> argparse.ArgumentParser:
    from sure_ood import __version__

    p = argparse.ArgumentParser(
        prog="sure-ood",
        description="SURE-OOD workflow stages. Run 'sure-ood STAGE --help' for a stage's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="stages:\n" + "\n".join(f"  {k:<16} {v}" for k, v in STAGES.items()),
    )
    p.add_argument("--version", action="version", version=f"sure-ood {__version__}")
    p.add_argument(
        "--numerics",
        choices=("portable", "native"),
        help="CPU numerics: portable = the same bits on every AVX2 CPU (default: "
        "$SURE_OOD_NUMERICS, else portable); native = each library's fastest path",
    )
    p.add_argument("stage", choices=sorted(STAGES), metavar="STAGE")
    return p


def _numerics_option(argv: list[str]) -> tuple[str | None, list[str]]:
    """``--numerics MODE`` / ``--numerics=MODE`` before the stage: (MODE or None, the rest)."""
    if argv and argv[0] == "--numerics" and len(argv) > 1:
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--numerics="):
        return argv[0].split("=", 1)[1], argv[1:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    option, argv = _numerics_option(argv)
    if not argv or argv[0].startswith("-"):
        _top_parser().parse_args(argv or ["--help"])
        return 0
    stage = argv[0].replace("-", "_")
    if stage not in STAGES:
        _top_parser().parse_args(argv[:1])  # prints the choices and exits 2
    from sure_ood import numerics
    from sure_ood.io import InputError

    try:  # before the stage's module: it imports numpy/torch/numba, which read the pins
        mode = numerics.resolve(option)
    except InputError as e:
        print(f"sure-ood: error: {e}", file=sys.stderr)
        return 2
    saved = dict(os.environ)
    try:
        return _run_stage(stage, argv, mode)
    finally:  # called in-process (tests), the caller's environment comes back unchanged
        os.environ.clear()
        os.environ.update(saved)


def stage_parser(stage: str) -> argparse.ArgumentParser:
    """The command-line parser of ``sure-ood <stage>``: the stage's options and ``--job``."""
    module = importlib.import_module(f"sure_ood.stages.{stage}")
    parser = argparse.ArgumentParser(prog=f"sure-ood {stage}", description=STAGES[stage])
    module.add_arguments(parser)
    parser.add_argument(
        "--job",
        action="append",
        metavar="FILE",
        help="a per-job file written by the workflow (its options, in place of --job)",
    )
    return parser


def _run_stage(stage: str, argv: list[str], mode: str) -> int:
    from sure_ood import jobs, numerics
    from sure_ood.io import InputError

    late = numerics.apply(mode)
    # Workflow jobs (every rule passes `--job FILE`; SURE_OOD_LOG_COMMAND is set by the
    # workflow too) begin their log with the command that reruns them by hand; a hand or
    # in-process call keeps its stderr for errors only.
    uses_job = any(a == "--job" or a.startswith("--job=") for a in argv[1:])
    log_command = uses_job or bool(os.environ.get("SURE_OOD_LOG_COMMAND"))
    if log_command:
        print(
            "sure-ood: command: " + shlex.join(["sure-ood", "--numerics", mode, *argv]),
            file=sys.stderr,
            flush=True,
        )
    if late and mode == "portable" and log_command:
        print(
            f"sure-ood: note: {', '.join(late)} already loaded in this process: its numerics "
            "pins apply to processes started from here only",
            file=sys.stderr,
        )
    module = importlib.import_module(f"sure_ood.stages.{stage}")
    parser = stage_parser(stage)
    try:
        expanded = jobs.expand_jobs(argv[1:], stage)
    except InputError as e:
        print(f"sure-ood {stage}: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(expanded)
    try:
        return int(module.run(args) or 0)
    except InputError as e:
        print(f"sure-ood {stage}: error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:  # non-finite loss or features: stop, say where
        print(f"sure-ood {stage}: numeric error: {e}", file=sys.stderr)
        return 4


if __name__ == "__main__":
    raise SystemExit(main())
