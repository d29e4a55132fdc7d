"""Methods from other packages: entry points in the group ``sure_ood.scores``.

A package declares, in its pyproject.toml::

    [project.entry-points."sure_ood.scores"]
    my_score = "my_package.module:MyScorer"

naming a :class:`sure_ood.scores.Scorer` subclass whose ``name`` is the entry point's name.
After ``pip install`` the method is listed by ``sure-ood score --list`` and usable in configs
(docs/adding-a-method.md). Entry points are read once, on the first registry look-up, with the
standard library's :mod:`importlib.metadata` (no plugin framework needed).

A plugin that fails to import does not break the other methods: ``score --list`` reports it
on stderr, and asking for it raises an InputError naming the plugin and its package. Two
methods with one name are an error naming both.
"""

from __future__ import annotations

import logging

from sure_ood.io import InputError

log = logging.getLogger(__name__)

GROUP = "sure_ood.scores"

_loaded = False
_broken: dict[str, str] = {}  # method name -> why its plugin could not be loaded
_conflicts: list[str] = []  # two methods with one name: an error every time, not once


def load() -> None:
    """Register every installed plugin (once per process)."""
    global _loaded
    if not _loaded:
        _loaded = True
        _load()
    if _conflicts:
        raise InputError(_conflicts[0])


def _load() -> None:
    from importlib.metadata import entry_points

    from sure_ood.scores.scorer import Scorer, register

    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        package = ep.dist.name if ep.dist is not None else "an unknown package"
        origin = f"plugin {ep.name!r} (package {package})"
        try:
            cls = ep.load()
        except Exception as e:  # any import-time failure of third-party code
            _broken[ep.name] = (
                f"{origin}: cannot import {ep.value}: {type(e).__name__}: {e}".replace("\n", " ")
            )
            log.debug("%s", _broken[ep.name])
            continue
        if not (isinstance(cls, type) and issubclass(cls, Scorer)):
            _broken[ep.name] = f"{origin}: {ep.value} is not a sure_ood.scores.Scorer subclass"
            log.debug("%s", _broken[ep.name])
            continue
        if cls.name != ep.name:
            _broken[ep.name] = (
                f"{origin}: the entry point is named {ep.name!r} but {ep.value}.name is "
                f"{cls.name!r}; they must match"
            )
            log.debug("%s", _broken[ep.name])
            continue
        try:
            register(cls, origin=origin)
        except InputError as e:
            _conflicts.append(str(e))


def broken() -> dict[str, str]:
    """Plugins that could not be loaded: method name -> the reason."""
    load()
    return dict(_broken)


def raise_if_broken(name: str) -> None:
    """Asking for a method whose plugin failed to load: say why, naming plugin and package."""
    if name in _broken:
        raise InputError(_broken[name])
