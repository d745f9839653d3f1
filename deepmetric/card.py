"""Model cards: what a fitted model is, what it was trained and measured on, how to use it.

A card is plain data stored inside the model file, ``DeepfakeModel.info["card"]`` (so it
travels with the model and loads with it, types checked like the rest of the file). Every
key is optional:

``name`` (str)
    A short name (the packaged model's is ``cross_dataset``).
``summary`` (str)
    One paragraph: what the model is.
``training_data``, ``terms``, ``protocol``, ``intended_use`` (str)
    What it was fitted on, the terms of that data, how it was measured, what it is for.
``figures`` (list of dict)
    Measured figures, each ``{"what": str, "value": float, "std": float or None,
    "command": str}``: ``what`` says the data set, frame or video level, pooled or mean
    over folds, in- or cross-dataset; ``command`` reproduces it.
``threshold`` (dict)
    ``{"value": float, "how": str}``: the verdict threshold and how it was chosen.
``limits`` (list of str)
    What the model does badly or was never checked on.
``smoke_test`` (str)
    Set only for smoke-test models: why their scores mean nothing
    (:attr:`deepmetric.model.DeepfakeModel.smoke_test`).
``source`` (dict of str)
    Where the card's figures come from (results file, run, deepmetric version).

A model without a card (any model ``experiments.run`` saves) gets one derived from its
provenance (:func:`model_card`): its run's name, training data config, feature blocks,
pipeline, threshold and the in-dataset figures the run measured. ``deepmetric info MODEL``
prints :func:`card_text`.
"""

from __future__ import annotations

import math
import textwrap
from typing import Any

__all__ = ["model_card", "card_text", "CARD_KEYS"]

#: The keys a card may hold, in the order :func:`card_text` prints them.
CARD_KEYS = ("name", "summary", "smoke_test", "training_data", "terms", "protocol",
             "figures", "threshold", "intended_use", "limits", "source")

_LEVELS = {"video": "video level", "frame": "frame level"}


def model_card(model: Any) -> dict:
    """The card of a fitted model: its own (``info["card"]``) or one derived from its info.

    Parameters
    ----------
    model : deepmetric.model.DeepfakeModel
        Any fitted model (read only: ``info``, ``threshold``, ``blocks``, ``pipeline``,
        ``temporal``, ``how``, ``smoke_test``).

    Returns
    -------
    dict
        A card (see the module docstring); derived keys fill in what the stored card lacks
        (``name``, ``threshold``, ``smoke_test``, ``model``).
    """
    info = getattr(model, "info", None) or {}
    card = dict(info.get("card") or {})
    config = info.get("config") or {}
    card.setdefault("name", str(info.get("version", "unversioned")))
    if "training_data" not in card and isinstance(config.get("data"), dict):
        card["training_data"] = _data_text(config)
    if "figures" not in card and isinstance(info.get("test"), dict):
        card["figures"] = _run_figures(info, config)
    card.setdefault("threshold", {
        "value": float(model.threshold),
        "how": "the threshold of the run that saved the model (its config's `threshold`), "
               "not tuned on data; measure one on labelled data from the source you score"})
    smoke = getattr(model, "smoke_test", None)
    if smoke:
        card["smoke_test"] = smoke
    card["model"] = _model_text(model, info)
    return card


def card_text(model: Any, path: str | None = None, width: int = 88) -> str:
    """The card of ``model`` as plain text (what ``deepmetric info`` prints).

    Parameters
    ----------
    model : deepmetric.model.DeepfakeModel
    path : str, optional
        The model file, printed in the heading.
    width : int
        Line width of the wrapped paragraphs.
    """
    card = model_card(model)
    wrap = _wrapper(width)
    head = f"Model card: {card['name']}"
    out = [head, "=" * min(len(head), width)] + ([f"File: {path}"] if path else [])
    if card.get("smoke_test"):
        out += ["", *wrap(f"WARNING: a smoke-test model: {card['smoke_test']}.", "")]
    for key, title in (("summary", None), ("training_data", "Training data"),
                       ("terms", "Terms"), ("protocol", "Protocol")):
        if card.get(key):
            out += ["", *(wrap(card[key], "") if title is None else
                         [f"{title}:", *wrap(card[key], "  ")])]
    if card.get("figures"):
        out += ["", "Measured:"]
        for f in card["figures"]:
            value = _number(f.get("value"))
            if f.get("std") is not None and not _nan(f.get("std")):
                value += f" ± {_number(f['std'])}"
            out += wrap(f"{value}  {f.get('what', '')}", "  - ", "    ")
            if f.get("command"):
                out.append(f"      $ {f['command']}")
    thr = card.get("threshold") or {}
    if thr:
        out += ["", f"Threshold: {_number(thr.get('value'))} (score >= threshold: FAKE)",
                *wrap(str(thr.get("how", "")), "  ")]
    if card.get("intended_use"):
        out += ["", "Intended use:", *wrap(card["intended_use"], "  ")]
    if card.get("limits"):
        out += ["", "Limits:"]
        for item in card["limits"]:
            out += wrap(item, "  - ", "    ")
    out += ["", "Model:", *(f"  {line}" for line in card["model"])]
    if card.get("source"):
        out += ["", "Source:", *(f"  {k}: {v}" for k, v in card["source"].items())]
    return "\n".join(out) + "\n"


def _wrapper(width: int):
    def wrap(text: str, first: str, rest: str | None = None) -> list[str]:
        return textwrap.wrap(str(text), width, initial_indent=first,
                             subsequent_indent=first if rest is None else rest) or [first]
    return wrap


def _nan(v: Any) -> bool:
    try:
        return math.isnan(float(v))
    except (TypeError, ValueError):
        return True


def _number(v: Any) -> str:
    return "n/a" if _nan(v) else f"{float(v):.3f}"


def _data_text(config: dict) -> str:
    """The training data of a run, from its (unresolved) config."""
    data = config["data"]
    where = data.get("root") or data.get("path") or ""
    text = f"{data.get('_target_', '?')}" + (f" on {where}" if where else "")
    blend = (config.get("self_blend") or {}).get("copies")
    if blend:
        text += f", plus {blend} self-blended copies per real clip"
    return text


def _run_figures(info: dict, config: dict) -> list[dict]:
    """The in-dataset figures of the run that saved a model (``info["test"]``)."""
    n = (config.get("cv") or {}).get("n_splits", "k")
    protocol = info.get("protocol") or f"identity-grouped {n}-fold CV (mean over folds)"
    data = info.get("data") or "its training data"
    out = []
    for level in ("video", "frame"):
        auc = (info["test"].get(level) or {}).get("auc")
        if auc is not None and not _nan(auc):
            out.append({"what": f"{data}, in-dataset, {_LEVELS[level]} AUC: {protocol}",
                        "value": float(auc), "std": None,
                        "command": "the run's metrics.json has every figure"})
    return out


def _model_text(model: Any, info: dict) -> list[str]:
    steps = getattr(getattr(model, "pipeline", None), "steps", None)
    pipe = " → ".join(type(s).__name__ for _, s in steps) if steps else \
        type(getattr(model, "pipeline", None)).__name__
    temporal = list(getattr(model, "temporal", []) or [])
    rule = (f"video level: per-clip {temporal} of the frame features; images and clips with "
            "one face through the same pipeline fitted on frames" if temporal else
            f"frame level; a clip's score is the {getattr(model, 'how', 'mean')} of its frame "
            "scores")
    ex = getattr(model, "extractor", None)
    det = getattr(ex, "detector", None)
    lines = [f"version: {info.get('version', 'unversioned')}",
             f"features: {list(getattr(model, 'blocks', []))}",
             f"pipeline: {pipe}", f"scores: {rule}"]
    for bb in info.get("backbones") or []:  # backbones beside FaceNet (timm, ...)
        if isinstance(bb, dict):
            digest = str(bb.get("weights_digest") or "")[:12]
            lines.append(f"backbone: {bb.get('name', '?')} (weights {bb.get('weights', '?')}"
                         + (f", tensors digest {digest}" if digest else "") + ")")
    if ex is not None:
        lines.append(f"frames sampled per clip: {getattr(ex, 'n_frames', '?')}")
    if det is not None:
        lines.append(f"faces: {type(det).__name__} (margin {getattr(det, 'margin', '?')}, "
                     f"whole images: {getattr(det, 'whole_image', False)})")
    return lines
