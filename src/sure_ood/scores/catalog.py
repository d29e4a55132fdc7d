"""What each method is: the rows of ``sure-ood score --list`` and of docs/methods.md.

Everything comes from the registered classes (their ``description``, ``paper``,
``reference``, ``cosine_head``, ``needs`` and hyper-parameters), so the list and the docs
cannot drift from the code; docs/methods.md is this module's Markdown output for the
built-in methods (``sure-ood score --list --markdown --builtin``), checked by a test.
"""

from __future__ import annotations

from typing import Any

from sure_ood.scores.scorer import method_class, params_of

# What a method fits on, from its ``needs``.
FITS_ON = {
    "train": "labelled training features",
    "val": "the held-out validation split",
    "prior": "the class prior (training label counts)",
    "network": "the network itself (the 'odin' rule perturbs the input images)",
}
# What it reads from the test cache.
READS = ("logits", "features", "head")


def describe(name: str) -> dict[str, Any]:
    """One method as a dict: name, description, fits_on, reads, paper, reference, params..."""
    cls = method_class(name)
    needs = set(cls.needs)
    fits = [FITS_ON[k] for k in ("train", "val", "prior", "network") if k in needs]
    return {
        "name": name,
        "description": cls.description,
        "fits_on": "; ".join(fits) if fits else "nothing (the test cache alone)",
        "reads": ", ".join(k for k in READS if k in needs) or "-",
        "paper": cls.paper,
        "reference": cls.reference,
        "cosine_head": cls.cosine_head,
        "params": params_of(name),
        "origin": cls.origin,
    }


def is_builtin(name: str) -> bool:
    return method_class(name).__module__.startswith("sure_ood.")


def text(names: list[str]) -> str:
    """The plain-text listing of ``score --list``: one block per method."""
    blocks = []
    for name in names:
        d = describe(name)
        lines = [f"{name}: {d['description']}"]
        lines.append(f"    fits on:   {d['fits_on']}")
        if d["params"]:
            lines.append(
                "    params:    " + ", ".join(f"{k}={v!r}" for k, v in d["params"].items())
            )
        lines.append(f"    paper:     {d['paper']}")
        lines.append(f"    reference: {d['reference']}")
        if d["cosine_head"]:
            lines.append(f"    cosine head: {d['cosine_head']}")
        if not is_builtin(name):
            lines.append(f"    from:      {d['origin']}")
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def markdown(names: list[str]) -> str:
    """docs/methods.md: a summary table, then one section per method."""
    out = [
        "# Post-hoc methods",
        "",
        "<!-- Generated from the method registry by `sure-ood score --list --markdown --builtin`;",
        "     do not edit by hand (tests/test_methods_doc.py checks it). -->",
        "",
        "Every method scores one image from the cached forward pass; **higher = more",
        "in-distribution**. Use a method in a config under `methods:` (with `params:`) or score",
        "a cache with `sure-ood score --method NAME`. The recipe and the quirks of the reference",
        "code are in [method.md](method.md); adding a method from your own package is in",
        "[adding-a-method.md](adding-a-method.md).",
        "",
        "| method | what | fits on | reads | paper |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        d = {
            k: v.replace("|", "\\|") if isinstance(v, str) else v for k, v in describe(name).items()
        }
        out.append(
            f"| [`{name}`](#{name}) | {d['description']} | {d['fits_on']} | {d['reads']} "
            f"| {d['paper']} |"
        )
    for name in names:
        d = describe(name)
        out += ["", f"## {name}", "", d["description"][:1].upper() + d["description"][1:] + ".", ""]
        out.append(f"- **Fits on:** {d['fits_on']}.")
        out.append(f"- **Reads from the test cache:** {d['reads']}.")
        if d["params"]:
            params = ", ".join(f"`{k}` (default `{v!r}`)" for k, v in d["params"].items())
            out.append(f"- **Parameters:** {params}.")
        out.append(f"- **Paper:** {d['paper']}.")
        out.append(f"- **Reference implementation:** {d['reference']}.")
        if d["cosine_head"]:
            out.append(f"- **Cosine head:** {d['cosine_head']}")
    return "\n".join(out) + "\n"
