"""Per-job files: the options of one workflow job, named by the digest of their content.

A rule writes its stage's config-derived options (from :mod:`sure_ood.settings`) to a job file
with :func:`job_file`; the stage's command names it with ``--job FILE``, and the CLI expands it
(:func:`expand_jobs`), so a command holds paths and short values only, never a JSON subtree.

A job file's name is the digest of its content: a changed setting is a new file name, i.e. a
changed input of exactly the jobs that use it (the rerun trigger), and an unchanged one is never
rewritten (no new modification time, nothing reruns). Snakemake's own alternatives do not fit:
a params-triggered local rule would rewrite the file, and with it every consumer's input time.

Its own module, importing nothing from the package but :mod:`sure_ood.io`: the CLI imports it
for every stage, so it is part of every stage's code version (:mod:`sure_ood.code_version`);
importing the config or the method registry here would make every job rerun when any method
changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from sure_ood.io import InputError

Options = dict[str, Any]


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


def job_text(stage: str | None, options: Options, settings: str | None = None) -> str:
    data: dict[str, Any] = {"stage": stage, "options": options}
    if settings is not None:
        data["settings"] = settings
    return json.dumps(data, sort_keys=True, indent=1) + "\n"


def job_file(
    folder: str | os.PathLike,
    stage: str | None,
    options: Options,
    name: str | None = None,
    settings: str | None = None,
) -> str:
    """Write ``{"stage", "options"}`` to ``<folder>/<name or stage>/<digest>.json`` unless it
    is there (atomically: concurrent writers of one digest write the same bytes); return its
    path. A file of stage None serves any stage (the benchmark's location). ``settings``: the
    job file of the config-derived settings that ``options`` include (recorded, not read)."""
    text = job_text(stage, options, settings)
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
