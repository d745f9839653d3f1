"""Model files: fitted models saved as data (skops), and pickles only on request.

A ``.skops`` file is a zip of a JSON schema and ``.npy`` arrays (``skops.io``). Loading
reads the schema, lists every type the file names, and refuses the file, before any object
is built or any module imported, when one of them is not trusted: the types
:data:`TRUSTED_TYPES` names (deepmetric's own classes, each named explicitly) and those
skops trusts by default (scikit-learn estimators, numpy arrays and scalars, builtins).
Nothing in a model file is code; torch networks are stored as their weights (numpy arrays)
and rebuilt on load, and the FaceNet weights are not in the file at all: the embedder loads
them offline on first use, as it does when it is created.

Pickles (``joblib``, what earlier deepmetric versions wrote) run code when loaded. They are
recognised by their content, not their name, and refused unless the caller says it trusts
the file (``trust_pickle=True``, ``deepmetric predict --trust-pickle``).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterator

__all__ = ["TRUSTED_TYPES", "UntrustedModelError", "save_model", "load_model", "file_format",
           "read_schema", "MAX_SCHEMA_BYTES", "MAX_SCHEMA_DEPTH", "MAX_MODEL_BYTES"]

#: deepmetric classes a model file may hold (with skops' defaults: sklearn, numpy, builtins).
TRUSTED_TYPES: tuple[str, ...] = (
    "deepmetric.model.DeepfakeModel",
    "deepmetric.features.extract.Extractor",
    "deepmetric.video.faces.FaceDetector",
    "deepmetric.video.blazeface.BlazeFaceDetector",
    "deepmetric.features.backbones.facenet.FaceEmbedder",
    "deepmetric.features.backbones.mobilenet.ImageNetEmbedder",
    "deepmetric.features.backbones.timm.TimmEmbedder",
    "deepmetric.learn.projector.TripletProjector",
    "deepmetric.learn.nuisance.NuisanceProjection",
    "deepmetric.finetune.FaceNetFineTuner",
    "deepmetric.eval.selection.InnerCVSelector",
)

#: sklearn's decision-tree storage (random forests, ...). skops does not trust it by default:
#: its node indices are used without bounds checks, so a crafted file could make ``predict``
#: read outside its arrays. It is trusted here only after :func:`_check_trees` has checked
#: every tree's indices in the file, before anything is built.
TREE = "sklearn.tree._tree.Tree"

#: Largest ``schema.json`` a model file may hold, as its zip declares it uncompressed: 64 MiB
#: (a fitted model's schema is tens of KiB; its arrays are members of their own). A member
#: that inflates past its declared size fails its CRC check when read, so reads are bounded.
MAX_SCHEMA_BYTES = 64 * 2**20
#: Deepest nesting of the schema's JSON (a fitted model's is about 20; skops walks it
#: recursively, and a deeper one would exhaust the interpreter's stack).
MAX_SCHEMA_DEPTH = 100
#: Most bytes all members of a model file may inflate to, as declared: 8 GiB.
MAX_MODEL_BYTES = 8 * 2**30

#: How compressed joblib pickles start (zlib, gzip, bz2, xz, lzma, lz4).
_JOBLIB_MAGIC = (b"ZF", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x5d\x00\x00",
                 b"\x04\x22\x4d\x18")


class UntrustedModelError(ValueError):
    """A model file was refused before loading: it is a pickle, or names untrusted types."""


def file_format(path: str | os.PathLike) -> str:
    """What a model file is, from its first bytes (never from its name).

    Returns
    -------
    str
        ``"skops"`` (a zip with a skops schema), ``"pickle"`` (a pickle or a compressed
        joblib pickle) or ``"unknown"``.
    """
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as zf:
                return "skops" if "schema.json" in zf.namelist() else "unknown"
        except zipfile.BadZipFile:
            return "unknown"
    if (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5) \
            or head.startswith(_JOBLIB_MAGIC):
        return "pickle"
    return "unknown"


def read_schema(path: str | os.PathLike) -> dict:
    """The schema of a ``.skops`` file, read within bounds before anything else reads it.

    Refuses a file whose members would inflate past :data:`MAX_MODEL_BYTES`, whose
    ``schema.json`` would inflate past :data:`MAX_SCHEMA_BYTES` or nests deeper than
    :data:`MAX_SCHEMA_DEPTH`, or that is not a readable zip with a JSON schema: memory is
    bounded by these, not by what the file claims, and nothing in it is built.

    Returns
    -------
    dict
        The parsed schema.

    Raises
    ------
    UntrustedModelError
        The file is refused; the message names it and the bound it exceeds.
    """
    def refuse(why: str) -> UntrustedModelError:
        return UntrustedModelError(f"{path}: refused: {why}; nothing in it was loaded")

    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(i.file_size for i in zf.infolist())
            if total > MAX_MODEL_BYTES:
                raise refuse(f"its members would inflate to {total / 2**30:.1f} GiB, over the "
                             f"limit of {MAX_MODEL_BYTES / 2**30:.0f} GiB")
            info = zf.getinfo("schema.json")
            if info.file_size > MAX_SCHEMA_BYTES:
                raise refuse(f"its schema.json would inflate to {info.file_size / 2**20:.1f} "
                             f"MiB, over the limit of {MAX_SCHEMA_BYTES / 2**20:.0f} MiB")
            with zf.open(info) as fh:
                blob = fh.read(MAX_SCHEMA_BYTES + 1)
    except UntrustedModelError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, EOFError, OSError,
            ValueError, NotImplementedError, RuntimeError, zlib.error) as exc:
        raise refuse(f"not a readable model file ({type(exc).__name__}: {exc})") from None
    try:
        schema = json.loads(blob)
    except RecursionError:
        raise refuse(f"its schema nests deeper than {MAX_SCHEMA_DEPTH} levels") from None
    except ValueError as exc:
        raise refuse(f"its schema is not JSON ({exc})") from None
    depth = _depth(schema)
    if depth > MAX_SCHEMA_DEPTH:
        raise refuse(f"its schema nests {depth} levels deep, over the limit of "
                     f"{MAX_SCHEMA_DEPTH}")
    if not isinstance(schema, dict):
        raise refuse(f"its schema is a JSON {type(schema).__name__}, not an object")
    return schema


def _depth(node: Any) -> int:
    """Nesting depth of parsed JSON (an object or array counts one level), without recursion."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        x, d = stack.pop()
        if isinstance(x, (dict, list)):
            deepest = max(deepest, d)
            stack.extend((v, d + 1) for v in (x.values() if isinstance(x, dict) else x))
    return deepest


def untrusted_types(path: str | os.PathLike) -> list[str]:
    """The types a ``.skops`` file names that are not trusted (reads the schema only, within
    the bounds of :func:`read_schema`; a file over them is refused by name)."""
    import skops.io as sio

    read_schema(path)
    try:
        named = sio.get_untrusted_types(file=Path(path))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError, AttributeError,
            RecursionError, zlib.error) as exc:
        raise UntrustedModelError(f"{path}: refused: not a readable model file "
                                  f"({type(exc).__name__}: {exc}); nothing in it was "
                                  "loaded") from None
    return sorted(set(named) - {*TRUSTED_TYPES, *_moved_types(), TREE})


def _moved_types() -> list[str]:
    """The 0.2.x names of trusted classes whose module moved (see :data:`MOVED_MODULES`)."""
    out = []
    for old, new in MOVED_MODULES.items():
        prefix = f"deepmetric.{new}."
        out += [f"deepmetric.{old}.{t[len(prefix):]}" for t in TRUSTED_TYPES
                if t.startswith(prefix) and "." not in t[len(prefix):]]
    return out


def save_model(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as a ``.skops`` data file, atomically.

    Torch losses held by a fitted :class:`~deepmetric.learn.projector.TripletProjector`
    (training-time components, not needed to score) are stored as their names, a k-NN
    head's search tree is dropped (it searches its training rows by brute force, the same
    neighbours), and the extractor's ``cache_dir`` is stored as a str; ``obj`` itself is not
    changed.

    Raises
    ------
    TypeError
        ``obj`` holds a type that could not be loaded back as data (named, with the file).
    OSError
        The file could not be written (e.g. a full disk); no partial file is left.
    """
    import skops.io as sio

    from deepmetric.storage import atomic_file

    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            sio.dump(_data_only(obj), tmp)
            bad = untrusted_types(tmp)
            if bad:
                raise TypeError(f"{path}: the model holds types that a data file cannot hold "
                                f"(they would be refused on load): {bad}")
    except OSError as exc:  # e.g. a full disk: name the file, leave no partial file
        why = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        raise OSError(exc.errno, f"{path}: could not write the model "
                                 f"({why.strerror or why})") from exc
    return path


def load_model(path: str | os.PathLike, *, trust_pickle: bool = False) -> Any:
    """Load a model file written by :func:`save_model` (or, when trusted, a pickle).

    Parameters
    ----------
    path : path-like
        The model file.
    trust_pickle : bool
        Also load pickles (joblib files of earlier deepmetric versions). A pickle runs any code it
        holds: only for files from a source you trust. A warning says so each time.

    Raises
    ------
    FileNotFoundError
        No such file.
    UntrustedModelError
        A pickle without ``trust_pickle``, or a data file naming types not trusted (listed);
        raised before anything in the file is built.
    TypeError
        Not a model file.
    """
    import skops.io as sio

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    kind = file_format(path)
    if kind == "skops":
        bad = untrusted_types(path)
        if bad:
            raise UntrustedModelError(
                f"{path}: refused: the model file names types that are not trusted {bad} "
                f"(trusted: deepmetric's {list(TRUSTED_TYPES)} and the scikit-learn, numpy "
                "and builtin types skops trusts); nothing in it was loaded")
        _check_trees(path)
        try:
            with _legacy_module_names():
                obj = sio.load(path, trusted=[*TRUSTED_TYPES, *_moved_types(), TREE])
        except (zipfile.BadZipFile, KeyError, EOFError, RecursionError, zlib.error) as exc:
            raise UntrustedModelError(f"{path}: refused: not a readable model file "
                                      f"({type(exc).__name__}: {exc})") from None
        _check_tree_inputs(obj, path)
        return obj
    if not trust_pickle:
        if kind == "pickle":
            raise UntrustedModelError(
                f"{path}: refused: this is a pickle (a joblib model file), and loading a "
                "pickle runs any code it holds. If you trust where it came from, load it with "
                "--trust-pickle (DeepfakeModel.load(path, trust_pickle=True)) and save it again "
                "as a .skops data file")
        raise TypeError(f"{path}: not a deepmetric model file (neither a .skops data file "
                        "nor a joblib pickle)")
    import joblib

    warnings.warn(f"{path}: loading a pickle (trust_pickle=True): it can run any code it "
                  "holds; save the model again to get a .skops data file", UserWarning,
                  stacklevel=3)
    with _legacy_module_names():
        return joblib.load(path)


#: Where the modules of deepmetric 0.1.x (a flat package) live now; pickles name them.
LEGACY_MODULES = {
    "items": "datasets.items", "frames": "video.frames", "faces": "video.faces",
    "mtcnn": "video.mtcnn", "embedder": "features.backbones.facenet",
    "weights": "features.backbones.weights",
    "spectrum": "features.spectrum", "cache": "features.cache",
    "extract": "features.extract", "blend": "augment.blend",
    "finetune": "finetune", "mining": "learn.mining",
    "projector": "learn.projector", "temporal": "learn.temporal", "splits": "model_selection",
    "scoring": "eval.scoring", "metrics": "eval.metrics",
    "evaluation": "eval.evaluation", "plots": "eval.plots",
}
#: Modules of deepmetric 0.2.x that moved since; ``.skops`` files name their classes.
MOVED_MODULES = {
    "features.embedder": "features.backbones.facenet",
    "features.imagenet": "features.backbones.mobilenet",
    "features.finetune": "finetune",
}


@contextlib.contextmanager
def _legacy_module_names():
    """Let unpickling and skops find moved module names (0.1.x ``deepmetric.extract``,
    0.2.x ``deepmetric.features.embedder``, ...) for a while."""
    import importlib
    import sys

    added = []
    for old, new in {**LEGACY_MODULES, **MOVED_MODULES}.items():
        name = f"deepmetric.{old}"
        if name not in sys.modules:
            sys.modules[name] = importlib.import_module(f"deepmetric.{new}")
            added.append(name)
    try:
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def schema_trees(node: Any) -> Iterator[dict]:
    """Every decision-tree node (``"__loader__": "TreeNode"``) of a skops schema, depth first."""
    if isinstance(node, dict):
        if node.get("__loader__") == "TreeNode":
            yield node
        for v in node.values():
            yield from schema_trees(v)
    elif isinstance(node, list):
        for v in node:
            yield from schema_trees(v)


def _check_trees(path: Path) -> None:
    """Refuse a ``.skops`` file whose decision trees could index outside their arrays.

    Reads the schema and the trees' node arrays only (``np.load(allow_pickle=False)``). A
    tree is accepted when its ``node_count`` is its number of nodes and every node is a leaf
    (both children -1) or has both children after itself and a feature below the tree's
    ``n_features``, as scikit-learn's builders write them.
    """
    import numpy as np

    def bad(k: int, why: str) -> UntrustedModelError:
        return UntrustedModelError(f"{path}: refused: decision tree {k} in the model file is "
                                   f"malformed ({why}); nothing in it was loaded")

    def value(node: dict) -> Any:
        if node.get("__loader__") != "JsonNode":
            raise ValueError("not a plain value")
        return json.loads(node["content"])

    with zipfile.ZipFile(path) as zf:
        for k, tree in enumerate(schema_trees(read_schema(path))):
            try:
                n_features = int(value(tree["__reduce__"]["args"]["content"][0]))
                state = tree["content"]["content"]
                node_count = int(value(state["node_count"]))
                nodes = np.load(io.BytesIO(zf.read(state["nodes"]["file"])), allow_pickle=False)
                left, right = nodes["left_child"], nodes["right_child"]
                feature = nodes["feature"]
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise bad(k, f"unreadable tree state: {exc!r}") from None
            if nodes.ndim != 1 or len(nodes) != node_count:
                raise bad(k, f"node_count {node_count} but {nodes.shape} nodes")
            idx = np.arange(node_count)
            leaf = (left == -1) & (right == -1)
            inner = (left > idx) & (left < node_count) & (right > idx) & (right < node_count) \
                & (feature >= 0) & (feature < n_features)
            if not (leaf | inner).all():
                raise bad(k, f"node {int(np.flatnonzero(~(leaf | inner))[0])} has children or "
                             "a feature out of range")


def _check_tree_inputs(obj: Any, path: Path) -> None:
    """Refuse trees that read more columns than their estimator checks its input for.

    A forest validates ``X`` against its ``n_features_in_`` and hands it to its trees
    unchecked: every tree (and sub-estimator) must take that same width.
    """
    import numpy as np

    def refuse(why: str) -> UntrustedModelError:
        return UntrustedModelError(f"{path}: refused: {why}; the model was not used")

    def visit(est: Any, width: int | None) -> None:
        own = getattr(est, "n_features_in_", None)
        if width is not None and own is not None and int(own) != width:
            raise refuse(f"a sub-estimator of {width} inputs takes {own}")
        width = width if width is not None else own
        tree = getattr(est, "tree_", None)
        if tree is not None and f"{type(tree).__module__}.{type(tree).__name__}" == TREE \
                and int(tree.n_features) != width:
            raise refuse(f"a decision tree reads {tree.n_features} features but its "
                         f"estimator takes {width}")
        for _, step in getattr(est, "steps", ()):
            visit(step, None)
        subs = getattr(est, "estimators_", None)
        if subs is not None and len(subs):
            for sub in np.ravel(np.asarray(subs, dtype=object)):
                visit(sub, width)

    roots = [obj.pipeline, obj.frame_pipeline] if hasattr(obj, "pipeline") else [obj]
    for root in roots:
        if root is not None:
            visit(root, None)


def _data_only(obj: Any) -> Any:
    """A shallow copy of a :class:`~deepmetric.model.DeepfakeModel` fit to save as data."""
    out = copy.copy(obj)
    ex = getattr(out, "extractor", None)
    if isinstance(getattr(ex, "cache_dir", None), os.PathLike):  # a str is data, a Path not
        out.extractor = copy.copy(ex)
        out.extractor.cache_dir = os.fspath(ex.cache_dir)
    for attr in ("pipeline", "frame_pipeline"):
        if getattr(out, attr, None) is not None:
            setattr(out, attr, _without_torch_losses(getattr(out, attr)))
    return out


def _without_torch_losses(est: Any) -> Any:
    """``est`` with each projector's torch loss module replaced by its name, and each k-NN
    search tree by brute-force search (copies; ``est`` is not changed)."""
    from deepmetric.learn.projector import TripletProjector

    if hasattr(est, "steps"):
        est = copy.copy(est)
        est.steps = [(n, _without_torch_losses(s)) for n, s in est.steps]
        return est
    if getattr(est, "_tree", None) is not None and getattr(est, "_fit_method", "") in (
            "kd_tree", "ball_tree") and getattr(est, "_fit_X", None) is not None:
        # a fitted k-NN's KD/ball tree is an index skops does not trust (like Tree): search
        # the stored training rows by brute force instead, which finds the same neighbours
        est = copy.copy(est)
        est._fit_method, est._tree = "brute", None
        return est
    loss = getattr(est, "loss", None)
    if isinstance(est, TripletProjector) and loss is not None and not isinstance(loss, str):
        est = copy.copy(est)
        est.loss = f"{type(loss).__module__}.{type(loss).__qualname__} (not saved)"
    return est

