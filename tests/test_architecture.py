"""The layers of ``deepmetric`` (see its docstring), checked over every import in the source:
module-level, inside functions (lazy) and under ``TYPE_CHECKING`` alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "deepmetric"

#: What each layer may import from deepmetric (besides itself). ``learn`` and ``eval`` are
#: the array-only core: the wall keeps them away from media, faces and features.
ALLOWED = {
    "base": set(),                                   # device, storage
    "datasets": {"base"},
    "video": {"base", "datasets"},
    "features": {"base", "datasets", "video", "learn"},  # finetune trains with learn's losses
    "learn": {"base", "eval"},
    "eval": {"base", "learn"},
    "top": {"base", "datasets", "video", "features", "learn", "eval", "top"},  # model, cli...
}
#: Declared exceptions, each with its reason.
EXCEPTIONS = {
    # the demo data set renders its fake clips with the self-blending operator
    ("deepmetric.datasets.demo", "deepmetric.features.blend"),
}
#: Never imported by the library: it must work without the experiment layer and Hydra.
FORBIDDEN_TOP = ("experiments", "hydra", "omegaconf")


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "top"
    if parts[1] in ("device", "storage"):
        return "base"
    return parts[1] if parts[1] in ALLOWED else "top"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, absolute, with the line (relative imports resolved)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
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


SOURCES = sorted(PKG.rglob("*.py"))


def test_the_layout_has_the_declared_layers():
    folders = {p.name for p in PKG.iterdir() if p.is_dir() and not p.name.startswith("_")}
    assert {"datasets", "video", "features", "learn", "eval"} <= folders


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG.parent)))
def test_every_import_respects_the_layers(path):
    me = _module_name(path)
    mine = _layer(me)
    bad = []
    for line, mod in _imports(path):
        top = mod.split(".")[0]
        if top in FORBIDDEN_TOP:
            bad.append(f"line {line}: {mod} (the library never imports {top})")
        if top != "deepmetric" or mod == "deepmetric":
            continue
        theirs = _layer(mod)
        if theirs == mine or theirs in ALLOWED[mine] or (me, mod) in EXCEPTIONS:
            continue
        bad.append(f"line {line}: {mod} (layer {theirs!r} is not below {mine!r})")
    assert not bad, f"{me} ({mine}):\n" + "\n".join(bad)


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """The test itself can fail: a lazy import of face code in the core is caught."""
    core = PKG / "learn" / "_probe_for_test.py"
    core.write_text("def f():\n    from ..video import faces\n    import hydra\n")
    try:
        mods = [m for _, m in _imports(core)]
        assert "deepmetric.video.faces" in mods and "hydra" in mods
        with pytest.raises(AssertionError, match="not below 'learn'"):
            test_every_import_respects_the_layers(core)
    finally:
        core.unlink()
