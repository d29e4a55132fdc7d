"""The workflow's stages: one module per Snakemake rule file and ``sure-ood`` subcommand.

``workflow/rules/<stage>.smk`` runs ``sure-ood <stage>``, which runs
``sure_ood.stages.<stage>.run``. A stage reads its inputs, calls the library (the modules and
packages beside ``stages/``: ``scores``, ``tricks``, ``metrics``, ``models``, ``data``, ...) and
writes its outputs; the formulas live in the library. Each module exposes
``add_arguments(parser)`` and ``run(args)``.
"""
