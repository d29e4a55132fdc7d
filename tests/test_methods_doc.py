"""docs/methods.md is generated from the method registry: it must not drift from the code."""

from __future__ import annotations

from conftest import ROOT

from sure_ood import scores
from sure_ood.scores import catalog


def test_methods_doc_matches_the_registry():
    names = [n for n in scores.available() if catalog.is_builtin(n)]
    expected = catalog.markdown(names)
    got = (ROOT / "docs/methods.md").read_text()
    assert got == expected, (
        "docs/methods.md is out of date: regenerate it with "
        "`sure-ood score --list --markdown --builtin > docs/methods.md`"
    )


def test_every_builtin_method_is_described():
    for name in scores.available():
        if not catalog.is_builtin(name):
            continue
        d = catalog.describe(name)
        assert d["description"] and "\n" not in d["description"], name
        assert d["paper"] and any(str(y) in d["paper"] for y in range(2015, 2030)), name
        assert d["reference"], name


def test_ash_variant_and_openood_default_are_documented():
    text = (ROOT / "docs/methods.md").read_text()
    section = text.split("\n## ash\n")[1].split("\n## ")[0]
    assert "`variant` (default `'s'`)" in section
    assert "OpenOOD `ash`" in section and "ASH-B" in section
    assert "**Cosine head:**" in section
