"""Training one run of the recipe (docs/method.md#recipe), in four parts.

- :mod:`~sure_ood.training.setup`: what a run is (:class:`~sure_ood.training.setup.TrainingJob`)
  and everything built before its first step: devices, seeds, model, data, optimizer and
  schedulers, data-parallel wrapping, the state folder.
- :mod:`~sure_ood.training.engine`: one training epoch (the SURE step of
  :mod:`sure_ood.tricks`) and evaluation.
- :mod:`~sure_ood.training.state`: the checkpoint written after every epoch, built in one
  place and restored in one place, so a killed run resumes bit for bit.
- :mod:`~sure_ood.training.loop`: :func:`~sure_ood.training.loop.train`, the epochs in the
  order the recipe runs them.

The formulas (RegMixup, CRL, SAM, SWA, the cosine head) live in :mod:`sure_ood.tricks`.
This ``__init__`` imports nothing, so a stage that needs only the checkpoint reader
(``finalize_swa``) does not take the whole loop into its code version.
"""
