"""Explanations: which parts of a face crop drove a fitted model's fake score.

>>> from deepmetric.explain import explain_item
>>> ex = explain_item(model, "clip.mp4", n_frames=3, method="gradcam", out_dir="why")
>>> ex["target"], [f["score"] for f in ex["frames"]]        # f["heatmap"]: (160, 160)

What is explained
-----------------
The score is a function of the 160×160 face crop: FaceNet (InceptionResnetV1) → the model's
feature blocks → the fitted pipeline's transformers → its head. :func:`fake_scorer` rebuilds
that chain in torch.

``target="pipeline"``
    The pipeline is differentiable end to end: transformers :class:`TripletProjector`,
    ``StandardScaler`` (or none) and a *linear* binary head whose frame score is
    ``sigmoid(decision)`` (``LogisticRegression``, ``SGDClassifier(loss="log_loss")``, a
    linear head without ``predict_proba`` such as ``LinearSVC``/``SVC(kernel="linear")``/
    hinge ``SGDClassifier``, for which :func:`deepmetric.eval.scoring.frame_scores` uses
    ``sigmoid(decision)``) or ``(clip(decision, -1, 1) + 1) / 2`` (``SGDClassifier(loss=
    "modified_huber")``). :meth:`FakeScorer.proba` then equals the pipeline's frame score
    (checked against it for every explained frame: ``max_abs_error`` in the result).
``target="prototype-surrogate"``
    The head is not differentiable (random forest, k-NN, RBF SVM, Platt-calibrated SVM...).
    What is explained is the nearest-prototype score in the space the head sees (after the
    projector / scaler): ``(|z - mu_real|^2 - |z - mu_fake|^2) / |mu_fake - mu_real|^2``
    (-1 at the real prototype, +1 at the fake one, 0 half-way). The prototypes ``mu`` are
    class means of head-space features, taken from, in order:

    1. ``reference=(X, y)``: features in the model's block layout (e.g. the training
       features, ``Extractor.features(...).X`` and ``.y``) → class means after the
       pipeline's transformers ("reference");
    2. ``model.info["prototypes"] = {"real": mu_r, "fake": mu_f}`` in head space
       ("model.info");
    3. the head's own stored training set, for heads that keep one (k-NN: ``_fit_X``)
       ("head training set");
    4. else the head's own labelling of probes around the explained frames: the frames'
       head-space features plus Gaussian perturbations at several radii (re-normalised onto
       the unit sphere after a triplet projector), weighted by the pipeline's P(fake) and
       P(real) ("head-labelled probes"). This is a *local* surrogate of what the pipeline
       does near this item; it fails (``ValueError``) when every probe gets the same score.

    The result names the source in ``prototypes_from`` and reports ``surrogate_agreement``
    (fraction of explained frames where the surrogate and the pipeline take the same side of
    0.5 / 0).

The explained scalar is the *decision* (the logit for sigmoid heads), as Grad-CAM explains
a class score before its softmax: ``+decision`` (evidence for "fake") by default, or
``-decision`` (evidence for "real") with ``target_class="real"``; ``"verdict"`` picks the
verdict's class. With plain Grad-CAM the two maps are complementary (``relu(±cam)``), so the
"real" map of a real face mostly lights up what is *not* face-specific fake evidence.

Feature blocks
--------------
``embedding`` and tapped backbone layers (mean/std pooled over the map or a grid, as
:mod:`deepmetric.features.backbones.facenet` computes them) are differentiable through
hooks. When the embedder averages each crop with its mirror (``flip_average``), so does
the scorer, and a Grad-CAM map is the sum of the two views' maps, the mirror's flipped
back. ``spectrum`` (the crop's radial power spectrum) is computed by NumPy and held
**constant**: no gradient flows through it, which the result says in ``constant_blocks``.
Any other block raises ``NotImplementedError``.

Methods
-------
``"gradcam"`` (Selvaraju et al. 2017) and ``"gradcam++"`` (Chattopadhay et al. 2018) on a
FaceNet block (``layer``; default ``repeat_3``, a 3×3×1792 map at 160 px; ``repeat_2`` is 8×8,
``repeat_1`` 17×17), upsampled bilinearly; ``"ig"``: integrated gradients (Sundararajan et
al. 2017) on the input pixels from a black baseline, absolute value summed over colour
channels and lightly smoothed. Every map is scaled to [0, 1] per crop (all zeros when the
method finds no positive evidence).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deepmetric.features.spectrum import SPECTRUM
from deepmetric.scorer import (FakeScorer, fake_scorer, linear_link, pipeline_steps,
                               require_frame_level)

__all__ = ["METHODS", "DEFAULT_LAYER", "explain_crops", "explain_arrays", "explain_item",
           "overlay", "randomized_copy"]

#: Explanation methods.
METHODS = ("gradcam", "gradcam++", "ig")
#: Default FaceNet block for Grad-CAM / Grad-CAM++.
DEFAULT_LAYER = "repeat_3"


# ------------------------------------------------------------------------- the methods
def _normalize(maps: torch.Tensor) -> np.ndarray:
    """(N, H, W) → float32 in [0, 1] per map (min-max; zeros when constant)."""
    m = maps.detach().double()
    lo = m.flatten(1).min(1).values[:, None, None]
    hi = m.flatten(1).max(1).values[:, None, None]
    rng = hi - lo
    out = torch.where(rng > 1e-12, (m - lo) / rng.clamp_min(1e-12), torch.zeros_like(m))
    return out.float().cpu().numpy()


def _cam(scorer: FakeScorer, x: torch.Tensor, spec, sign: torch.Tensor, layer: str,
         plus: bool) -> tuple[np.ndarray, np.ndarray]:
    feats, acts = scorer.features(x, spec, capture=[layer])
    d = scorer.decision_of(scorer.head_input(feats))
    a = acts[layer]
    if a.ndim != 4:
        raise ValueError(f"layer {layer!r} gives a {tuple(a.shape)} output: Grad-CAM needs "
                         f"a (N, C, H, W) feature map")
    (g,) = torch.autograd.grad((d * sign).sum(), a)
    a, g = a.detach().double(), g.double()
    if plus:
        g2, g3 = g ** 2, g ** 3
        denom = 2 * g2 + a.sum((2, 3), keepdim=True) * g3
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        w = (alpha * F.relu(g)).sum((2, 3), keepdim=True)
    else:
        w = g.mean((2, 3), keepdim=True)
    cam = F.relu((w * a).sum(1, keepdim=True))
    if scorer.flip_average:  # the mirror views' maps, mirrored back onto the crop
        cam = cam[:len(x)] + cam[len(x):].flip(-1)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    return _normalize(cam), d.detach().cpu().numpy()


def _integrated_gradients(scorer: FakeScorer, x: torch.Tensor, spec, sign: torch.Tensor,
                          steps: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    base = torch.full_like(x[:1], -127.5 / 128.0)        # a black crop
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps   # midpoint rule
    maps, decisions = [], []
    for i in range(len(x)):
        xi = x[i:i + 1]
        si = None if spec is None else spec[i:i + 1]
        total = torch.zeros_like(xi)
        for k in range(0, steps, batch):
            a = alphas[k:k + batch].to(x.device)[:, None, None, None]
            path = (base + a * (xi - base)).requires_grad_(True)
            sp = None if si is None else si.expand(len(path), -1)
            d = scorer(path, sp) * sign[i]
            (g,) = torch.autograd.grad(d.sum(), path)
            total += g.sum(0, keepdim=True)
        attr = (xi - base) * total / steps
        heat = attr.abs().sum(1, keepdim=True)
        heat = _blur(heat, sigma=3.0)
        hi = torch.quantile(heat.flatten(), 0.99).clamp_min(1e-12)
        maps.append((heat / hi).clamp(0, 1)[:, 0])
        with torch.no_grad():
            decisions.append(scorer(xi, si))
    return _normalize(torch.cat(maps)), torch.cat(decisions).cpu().numpy()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))


def explain_crops(model: Any, crops: np.ndarray, method: str = "gradcam",
                  layer: str = DEFAULT_LAYER, target_class: str | Sequence[str] = "fake",
                  reference: Any = None, scorer: FakeScorer | None = None,
                  ig_steps: int = 32, ig_batch: int = 8) -> dict:
    """Heat maps of face crops for a fitted model.

    Parameters
    ----------
    model : DeepfakeModel
    crops : numpy.ndarray
        uint8 (N, 160, 160, 3) RGB face crops (as the extractor makes them).
    method : {"gradcam", "gradcam++", "ig"}
    layer : str
        FaceNet block for Grad-CAM / Grad-CAM++ (ignored by ``"ig"``).
    target_class : {"fake", "real"} or a sequence of them (one per crop)
        Class whose evidence is mapped: ``+decision`` for fake, ``-decision`` for real.
    reference : optional
        Prototype source for non-differentiable heads (see :func:`fake_scorer`).
    scorer : FakeScorer, optional
        Reuse an already built scorer.
    ig_steps, ig_batch : int
        Integrated-gradients path steps and the batch they are run in.

    Returns
    -------
    dict
        ``heatmaps`` float32 (N, 160, 160) in [0, 1]; ``decision`` float64 (N,) (of the fake
        class); ``target_score`` float64 (N,) (``scorer.link(decision)``); ``target``,
        ``prototypes_from``, ``constant_blocks``, ``method``, ``layer``,
        ``target_class`` (list of str).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    crops = np.asarray(crops)
    n = len(crops)
    classes = [target_class] * n if isinstance(target_class, str) else list(target_class)
    if len(classes) != n or any(c not in ("fake", "real") for c in classes):
        raise ValueError(f"target_class must be 'fake', 'real' or one of them per crop; got "
                         f"{target_class!r}")
    if scorer is None:
        probe = None
        if linear_link(pipeline_steps(model.pipeline)[-1][1]) is None and reference is None:
            probe = model.features_of(model.extractor.embedder.embed(crops)
                                      | _spectrum_block(model, crops)
                                      | {"found": np.ones(n, bool),
                                         "frame_index": np.arange(n)})[0]
        scorer = fake_scorer(model, reference=reference, probe_features=probe)
    x = scorer.input(crops)
    spec = scorer.constants(crops)
    sign = torch.tensor([1.0 if c == "fake" else -1.0 for c in classes], dtype=torch.float64,
                        device=x.device)
    with torch.enable_grad():
        if method == "ig":
            heat, dec = _integrated_gradients(scorer, x, spec, sign, int(ig_steps),
                                              int(ig_batch))
        else:
            heat, dec = _cam(scorer, x, spec, sign, layer, plus=method == "gradcam++")
    dec_t = torch.as_tensor(dec)
    return {"heatmaps": heat, "decision": dec.astype(np.float64),
            "target_score": scorer.link(dec_t).numpy().astype(np.float64),
            "target": scorer.target, "prototypes_from": scorer.prototypes_from,
            "constant_blocks": list(scorer.constant_blocks), "method": method,
            "layer": None if method == "ig" else layer, "target_class": classes}


def _spectrum_block(model, crops) -> dict:
    if SPECTRUM not in model.blocks:
        return {}
    from deepmetric.features.spectrum import radial_spectrum

    return {SPECTRUM: radial_spectrum(crops, int(model.extractor.spectrum_bins))}


def overlay(crop: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blend a [0, 1] heat map (H, W) over a uint8 RGB crop (H, W, 3) with the JET colormap."""
    import cv2

    h8 = np.clip(np.asarray(heat, np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(h8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    out = (1 - alpha) * crop.astype(np.float32) + alpha * color.astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def explain_arrays(model: Any, arrays: dict, n_frames: int = 3, method: str = "gradcam",
                   layer: str = DEFAULT_LAYER, reference: Any = None,
                   out_dir: str | os.PathLike | None = None, name: str = "item",
                   scored: dict | None = None, ig_steps: int = 32,
                   target_class: str = "fake") -> dict:
    """Explain already-extracted arrays (with ``crops``: an extractor with ``save_crops``).

    Parameters
    ----------
    model : DeepfakeModel
    arrays : dict
        Output of :meth:`deepmetric.features.extract.Extractor.extract_item` with ``crops``.
    n_frames, method, layer, reference, out_dir, ig_steps, target_class
        As in :func:`explain_item`.
    name : str
        Names the item in errors.
    scored : dict, optional
        ``model.score_arrays(arrays)`` when the caller already has it.

    Returns
    -------
    dict
        See :func:`explain_item`.
    """
    from deepmetric.model import NoFaceError

    require_frame_level(model)
    if "crops" not in arrays:
        raise ValueError(f"{name}: arrays have no 'crops'; extract with save_crops=True")
    scored = scored if scored is not None else model.score_arrays(arrays, name)
    found = np.flatnonzero(arrays["found"].astype(bool))
    if not len(found):
        raise NoFaceError(f"{name}: no face found")
    fs = scored["frame_scores"]["fake_score"].to_numpy(np.float64)
    fake = scored["verdict"] == "fake"
    order = np.argsort(-fs if fake else fs, kind="stable")[:max(1, int(n_frames))]
    crops = np.ascontiguousarray(arrays["crops"][found[order]])
    X, _ = model.features_of(arrays)
    probe = X if reference is None else None
    scorer = fake_scorer(model, reference=reference, probe_features=probe)
    if target_class not in ("fake", "real", "verdict"):
        raise ValueError(f"target_class must be 'fake', 'real' or 'verdict', got "
                         f"{target_class!r}")
    cls = ("fake" if fake else "real") if target_class == "verdict" else target_class
    ex = explain_crops(model, crops, method=method, layer=layer, target_class=cls,
                       scorer=scorer, ig_steps=ig_steps)
    frames = []
    for k, i in enumerate(order):
        frames.append({
            "frame_index": int(arrays["frame_index"][found[i]]), "score": float(fs[i]),
            "target_score": float(ex["target_score"][k]), "crop": crops[k],
            "heatmap": ex["heatmaps"][k], "overlay": overlay(crops[k], ex["heatmaps"][k])})
    out = {"name": name, "score": float(scored["score"]), "verdict": scored["verdict"],
           "explained_class": cls, **{k: ex[k] for k in ("method", "layer", "target",
                                                       "prototypes_from", "constant_blocks")},
           "frames": frames}
    sel = fs[order]
    if ex["target"] == "pipeline":
        out["max_abs_error"] = float(np.max(np.abs(ex["target_score"] - sel)))
    else:
        all_dec = scorer.decision_of(scorer.head_input(torch.as_tensor(X, dtype=torch.float64)))
        out["surrogate_agreement"] = float(np.mean((all_dec.numpy() > 0)
                                                   == (fs >= 0.5)))
    if out_dir is not None:
        out["files"] = _save(frames, Path(out_dir))
    return out


def _save(frames: list[dict], out: Path) -> list[str]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for f in frames:
        stem = f"frame{f['frame_index']:06d}"
        heat8 = np.clip(f["heatmap"] * 255 + 0.5, 0, 255).astype(np.uint8)
        for kind, img in (("crop", f["crop"]), ("heatmap", heat8), ("overlay", f["overlay"])):
            p = out / f"{stem}_{kind}.png"
            Image.fromarray(img).save(p)
            files.append(str(p))
        f["files"] = files[-3:]
    return files


def explain_item(model: Any, path: str | os.PathLike, n_frames: int = 3,
                 method: str = "gradcam", out_dir: str | os.PathLike | None = None,
                 layer: str = DEFAULT_LAYER, reference: Any = None,
                 ig_steps: int = 32, target_class: str = "fake") -> dict:
    """Score a clip or image and explain the frames that drove its score most.

    The frames explained are the ``n_frames`` highest-scoring ones for a "fake" verdict
    and the lowest-scoring ones for a "real" verdict; each map shows the evidence for
    ``target_class``.

    Parameters
    ----------
    model : DeepfakeModel
    path : path-like
        A clip or an image.
    n_frames : int
        Frames to explain (fewer when fewer frames have a face).
    method : {"gradcam", "gradcam++", "ig"}
    out_dir : path-like, optional
        Also write ``frameNNNNNN_{crop,heatmap,overlay}.png`` there.
    layer : str
        FaceNet block for Grad-CAM / Grad-CAM++.
    reference : optional
        Prototype source for non-differentiable heads (see :func:`fake_scorer`).
    ig_steps : int
        Integrated-gradients steps.
    target_class : {"fake", "real", "verdict"}
        Whose evidence the maps show: the fake score (default, ``+decision``), the real
        class (``-decision``) or the verdict's class.

    Returns
    -------
    dict
        ``name, score, verdict, explained_class, method, layer, target`` ("pipeline" or
        "prototype-surrogate"), ``prototypes_from``, ``constant_blocks``, ``max_abs_error``
        (pipeline: largest |reproduced − pipeline| frame score) or ``surrogate_agreement``,
        ``files`` (with ``out_dir``) and ``frames``: a list of dicts with ``frame_index``,
        ``score`` (the pipeline's frame P(fake)), ``target_score``, ``crop`` uint8 (160,
        160, 3), ``heatmap`` float32 (160, 160) in [0, 1], ``overlay`` uint8 (160, 160, 3).

    Raises
    ------
    deepmetric.video.frames.MediaError, deepmetric.model.NoFaceError
        As :meth:`DeepfakeModel.predict`.
    """
    ex = copy.copy(model.extractor)
    ex.save_crops = True
    arrays = ex.extract_item(path)
    return explain_arrays(model, arrays, n_frames=n_frames, method=method, layer=layer,
                          reference=reference, out_dir=out_dir, name=str(path),
                          ig_steps=ig_steps, target_class=target_class)


def randomized_copy(model: Any, seed: int = 0) -> Any:
    """A copy of ``model`` whose FaceNet weights are randomised (same pipeline).

    For the model-randomisation sanity check of saliency maps (Adebayo et al., "Sanity
    checks for saliency maps", 2018): a map that survives it does not depend on what the
    network learned. Every parameter tensor of FaceNet is re-drawn from a Gaussian with that
    tensor's own mean and standard deviation (BatchNorm running statistics are kept), so
    activations keep their scale; a default re-initialisation makes this network's output
    nearly constant, which would make the check vacuous. The model's FaceNet is not touched.
    """
    m = copy.copy(model)
    m.extractor = copy.copy(model.extractor)
    net = copy.deepcopy(model.extractor.embedder.model)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for p in net.parameters():
            mean = p.mean()
            std = p.std() if p.numel() > 1 else p.abs().clamp_min(1e-3)
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std + mean)
    m.extractor.embedder = model.extractor.embedder.with_model(net.eval())
    return m
