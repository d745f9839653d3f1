"""The layers of ``deepmetric`` (see its docstring), checked over every import in the source:
module-level, inside functions (lazy) and under ``TYPE_CHECKING`` alike.

The rule, with no exceptions: a module imports only its own layer and the layers below it,
in this order, and the array-only core (``model_selection``, ``learn``, ``eval``) never
imports the media layers (``augment``, ``datasets``, ``video``, ``features``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "deepmetric"

#: The layers, bottom first: each may import the ones before it.
LAYERS = ("base",             # device, storage, packaged, litert, cluster, params, text
          "model_selection",  # identity-grouped splits, on arrays
          "augment",          # image operators (self-blending, degradation)
          "datasets", "video", "features",
          "learn", "eval",
          "top")              # model, modelfile, explain, finetune, cli
BASE = ("device", "storage", "packaged", "litert", "cluster", "params", "text")
#: The array-only core and the media layers it never imports.
CORE = {"model_selection", "learn", "eval"}
MEDIA = {"augment", "datasets", "video", "features"}
#: Never imported by the library: it must work without the experiment layer and Hydra.
FORBIDDEN_TOP = ("experiments", "hydra", "omegaconf")


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    if parts[1] in BASE:
        return "base"
    return parts[1] if parts[1] in LAYERS else "top"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, name: str, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module the source of module ``name`` imports, absolute, with the line
    (relative imports resolved)."""
    package = name if is_package else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.append((node.lineno, mod))
            if mod in ("deepmetric",) or (mod.startswith("deepmetric.") and node.module):
                # "from deepmetric.video import frames": the imported names may be modules
                out += [(node.lineno, f"{mod}.{a.name}") for a in node.names
                        if (PKG.parent / Path(*f"{mod}.{a.name}".split("."))).with_suffix(
                            ".py").is_file()]
    return out


def _violations(source: str, me: str, is_package: bool = False) -> list[str]:
    mine = _layer(me)
    bad = []
    for line, mod in _imports(source, me, is_package):
        top = mod.split(".")[0]
        if top in FORBIDDEN_TOP:
            bad.append(f"line {line}: {mod} (the library never imports {top})")
        if top != "deepmetric" or mod == "deepmetric":
            continue
        theirs = _layer(mod)
        if mine in CORE and theirs in MEDIA:
            bad.append(f"line {line}: {mod} (the array-only {mine!r} never imports {theirs!r})")
        elif LAYERS.index(theirs) > LAYERS.index(mine):
            bad.append(f"line {line}: {mod} (layer {theirs!r} is not below {mine!r})")
    return bad


SOURCES = sorted(PKG.rglob("*.py"))


def test_the_layout_has_the_declared_layers():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert {"augment", "datasets", "video", "features", "learn", "eval"} <= folders
    assert (PKG / "model_selection.py").is_file()
    layers = {_layer(_module_name(p)) for p in SOURCES}
    assert layers == set(LAYERS), f"layers without a module: {set(LAYERS) - layers}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG.parent)))
def test_every_import_respects_the_layers(path):
    me = _module_name(path)
    bad = _violations(path.read_text(), me, path.name == "__init__.py")
    assert not bad, f"{me} ({_layer(me)}):\n" + "\n".join(bad)


def test_the_checker_sees_lazy_relative_and_upward_imports():
    """The checker can fail: a lazy import of face code in the core, Hydra, and an import
    of an upper layer are each caught (on source text: nothing is written to the package)."""
    lazy = "def f():\n    from ..video import faces\n    import hydra\n"
    mods = [m for _, m in _imports(lazy, "deepmetric.learn.probe")]
    assert "deepmetric.video.faces" in mods and "hydra" in mods
    bad = _violations(lazy, "deepmetric.learn.probe")
    assert any("array-only 'learn' never imports 'video'" in b for b in bad)
    assert any("never imports hydra" in b for b in bad)
    assert "line 1: deepmetric.eval.metrics (layer 'eval' is not below 'learn')" in _violations(
        "from deepmetric.eval import metrics\n", "deepmetric.learn.probe")
    assert _violations("import deepmetric.features.extract\n", "deepmetric.datasets.probe")
    assert not _violations("from deepmetric.augment.blend import apply_blend\n",
                           "deepmetric.datasets.probe")


def test_every_module_is_at_most_500_lines():
    roots = [PKG, PKG.parent / "experiments"]
    long = {str(p.relative_to(PKG.parent)): n for root in roots for p in root.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"
