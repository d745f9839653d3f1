"""The differentiable fake score of a fitted model: what :mod:`deepmetric.explain` takes
gradients of.

:func:`fake_scorer` rebuilds a fitted :class:`~deepmetric.model.DeepfakeModel`'s frame
score as one torch chain, crops → FaceNet features → the pipeline's transforms → the head's
decision: exactly for linear heads, through a prototype surrogate for the others (see
:mod:`deepmetric.explain` for the targets, the feature blocks and their limits).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from deepmetric.features.backbones.base import mean_of_views, with_mirrors
from deepmetric.features.backbones.facenet import (EMBEDDING, parse_tap, pool_activations,
                                                   standardize_crops)
from deepmetric.features.spectrum import SPECTRUM

__all__ = ["CROP", "FakeScorer", "fake_scorer", "linear_link", "pipeline_steps",
           "require_frame_level"]

#: Side of the face crops FaceNet sees.
CROP = 160

# Hooks are registered on the shared FaceNet module for the duration of one forward pass;
# this lock keeps two threads from seeing each other's activations.
_LOCK = threading.RLock()


# ------------------------------------------------------------------------- the torch chain
@dataclass
class _Head:
    """Head-space → decision; ``proba`` maps the decision to the pipeline's frame score."""

    kind: str                      # "linear" or "prototype"
    w: torch.Tensor                # (D,) float64
    b: torch.Tensor                # () float64
    link: str = "sigmoid"          # "sigmoid" | "modified_huber"
    prototypes: dict = field(default_factory=dict)
    prototypes_from: str | None = None


class FakeScorer(torch.nn.Module):
    """Differentiable fake score of a fitted :class:`~deepmetric.model.DeepfakeModel`.

    Built by :func:`fake_scorer`; maps standardised crops ``(x - 127.5) / 128`` (float32,
    (N, 3, 160, 160)) to the decision of the explained target (see the module docstring).

    Attributes
    ----------
    target : str
        ``"pipeline"`` or ``"prototype-surrogate"``.
    prototypes_from : str or None
        Source of the prototypes (surrogate only).
    constant_blocks : list of str
        Feature blocks held constant (``["spectrum"]`` or ``[]``).
    """

    def __init__(self, facenet: torch.nn.Module, blocks: Sequence[str],
                 transforms: list, head: _Head, spectrum_bins: int = 0,
                 flip_average: bool = False):
        super().__init__()
        self.facenet = facenet
        self.blocks = list(blocks)
        self.transforms = transforms
        self.head = head
        self.spectrum_bins = int(spectrum_bins)
        self.flip_average = bool(flip_average)
        self.target = "pipeline" if head.kind == "linear" else "prototype-surrogate"
        self.prototypes_from = head.prototypes_from
        self.constant_blocks = [b for b in self.blocks if b == SPECTRUM]
        self.taps = [b for b in self.blocks if b not in (EMBEDDING, SPECTRUM)]

    # -- pieces ---------------------------------------------------------------------------
    def constants(self, crops: np.ndarray) -> torch.Tensor | None:
        """The constant blocks of uint8 crops (N, 160, 160, 3): float64 (N, bins) or None."""
        if not self.constant_blocks:
            return None
        from deepmetric.features.spectrum import radial_spectrum

        return torch.from_numpy(radial_spectrum(crops, self.spectrum_bins).astype(np.float64))

    def features(self, x: torch.Tensor, spectrum: torch.Tensor | None = None,
                 capture: Sequence[str] = ()) -> tuple[torch.Tensor, dict]:
        """The model's feature vector (float64 (N, D), blocks in order) and captured maps.

        With ``flip_average`` the crops and their mirrors go through FaceNet together, each
        pooled block and the raw embedding are averaged over the two views (as
        :class:`~deepmetric.features.backbones.facenet.FaceEmbedder` does), and a captured map
        holds both views: (2N, C, H, W), mirrors second.
        """
        modules = [parse_tap(b)[0] for b in self.taps]
        acts = self._forward(x, list(dict.fromkeys([*modules, *capture])))

        def views(v: torch.Tensor) -> torch.Tensor:
            return mean_of_views(v) if self.flip_average else v

        emb = F.normalize(views(acts[EMBEDDING]), p=2, dim=1)
        parts = []
        for b in self.blocks:
            if b == EMBEDDING:
                parts.append(emb.double())
            elif b == SPECTRUM:
                if spectrum is None:
                    raise ValueError("the model uses the 'spectrum' block: pass spectrum="
                                     "scorer.constants(crops)")
                parts.append(spectrum.to(emb.device, torch.float64))
            else:
                name, grid = parse_tap(b)
                parts.append(views(pool_activations(acts[name], grid)).double())
        return torch.cat(parts, dim=1), {k: acts[k] for k in capture}

    def head_input(self, feats: torch.Tensor) -> torch.Tensor:
        """Apply the pipeline's transformers (float64 in, float64 out)."""
        z = feats
        for t in self.transforms:
            z = t(z)
        return z

    def decision_of(self, z: torch.Tensor) -> torch.Tensor:
        """Head decision (N,) float64 from head-space features; > 0 leans fake."""
        h = self.head
        if h.kind == "linear":
            return z @ h.w + h.b
        mr, mf = h.prototypes["real"].to(z), h.prototypes["fake"].to(z)
        sep = ((mf - mr) ** 2).sum().clamp_min(1e-12)
        return (((z - mr) ** 2).sum(1) - ((z - mf) ** 2).sum(1)) / sep

    def link(self, d: torch.Tensor) -> torch.Tensor:
        """Decision → score: the pipeline's P(fake) for ``target="pipeline"``."""
        if self.head.link == "modified_huber":
            return (d.clamp(-1, 1) + 1) / 2
        return torch.sigmoid(d)

    def forward(self, x: torch.Tensor, spectrum: torch.Tensor | None = None) -> torch.Tensor:
        """Decision (N,) float64 of standardised crops."""
        feats, _ = self.features(x, spectrum)
        return self.decision_of(self.head_input(feats))

    def proba(self, crops: np.ndarray) -> np.ndarray:
        """Score of uint8 crops (N, 160, 160, 3) as float64 (N,), without gradients.

        For ``target="pipeline"`` this is the pipeline's frame score (P(fake)); for the
        surrogate it is ``sigmoid`` of the prototype decision.
        """
        x = self.input(crops)
        with torch.no_grad():
            return self.link(self(x, self.constants(crops))).cpu().numpy()

    # -- internals ------------------------------------------------------------------------
    def input(self, crops: np.ndarray) -> torch.Tensor:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 (N, H, W, 3), got {crops.dtype} "
                             f"{crops.shape}")
        dev = next(self.facenet.parameters()).device
        return standardize_crops(crops).to(dev)

    def _forward(self, x: torch.Tensor, names: list[str]) -> dict:
        store: dict[str, torch.Tensor] = {}

        def hook(name):
            def f(module, inputs, output):
                store[name] = output
            return f

        with _LOCK:
            try:
                hooks = [self.facenet.get_submodule(n).register_forward_hook(hook(n))
                         for n in names]
            except AttributeError:
                top = [n for n, _ in self.facenet.named_children()]
                raise ValueError(f"unknown FaceNet layer in {names}; top-level blocks are "
                                 f"{top}") from None
            if self.flip_average:
                x = with_mirrors(x)
            try:
                store[EMBEDDING] = self.facenet(x).float()
            finally:
                for h in hooks:
                    h.remove()
        return store


def pipeline_steps(pipeline: Any) -> list[tuple[str, Any]]:
    """The ``(name, step)`` pairs of a fitted pipeline (a bare estimator is its one step),
    ``None``/``"passthrough"`` steps left out."""
    steps = list(getattr(pipeline, "steps", [("classifier", pipeline)]))
    return [(n, s) for n, s in steps if s is not None and s != "passthrough"]


def _transform_fn(name: str, step: Any):
    """A torch function reproducing one fitted transformer, or None if unsupported."""
    from sklearn.preprocessing import StandardScaler

    from deepmetric.learn.projector import TripletProjector

    if isinstance(step, TripletProjector):
        net = step.build_network("cpu")
        for p in net.parameters():
            p.requires_grad_(False)
        mean = torch.as_tensor(step.mean_, dtype=torch.float64)
        scale = torch.as_tensor(step.scale_, dtype=torch.float64)

        def proj(z):
            xs = ((z - mean.to(z.device)) / scale.to(z.device)).float()
            return F.normalize(net.to(z.device)(xs), p=2, dim=1).double()
        proj.unit_sphere = True
        return proj
    if isinstance(step, StandardScaler):
        mean = torch.as_tensor(step.mean_ if step.with_mean else 0.0, dtype=torch.float64)
        scale = torch.as_tensor(step.scale_ if step.with_std and step.scale_ is not None
                                else 1.0, dtype=torch.float64)

        def scaler(z):
            return (z - mean.to(z.device)) / scale.to(z.device)
        scaler.unit_sphere = False
        return scaler
    return None


def linear_link(head: Any) -> str | None:
    """How the pipeline's frame score follows from a linear head's decision, or None."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
    from sklearn.linear_model import LogisticRegression, SGDClassifier

    coef = getattr(head, "coef_", None)
    if coef is None or np.ndim(coef) != 2 or np.shape(coef)[0] != 1:
        return None
    if getattr(head, "kernel", "linear") != "linear":
        return None
    if not hasattr(head, "predict_proba"):
        return "sigmoid"            # frame_scores uses sigmoid(decision_function)
    if isinstance(head, (LogisticRegression, LinearDiscriminantAnalysis)):
        return "sigmoid"
    if isinstance(head, SGDClassifier):
        return {"log_loss": "sigmoid", "modified_huber": "modified_huber"}.get(head.loss)
    return None                     # e.g. Platt-calibrated: not reproduced


def require_frame_level(model: Any) -> None:
    """``NotImplementedError`` for a model that scores clips from per-video statistics."""
    if getattr(model, "temporal", ()):
        raise NotImplementedError(
            f"the model scores whole clips from per-video statistics of their frames "
            f"(temporal={list(model.temporal)}); heat maps need a frame-level model")


def fake_scorer(model: Any, reference: Any = None, probe_features: np.ndarray | None = None,
                random_state: int = 0) -> FakeScorer:
    """Build the differentiable score of a fitted model (see the module docstring).

    Parameters
    ----------
    model : DeepfakeModel
        Fitted model; its FaceNet (``model.extractor.embedder.model``) is shared, not copied.
    reference : tuple (X, y), FrameFeatures or dict, optional
        Prototype source for non-differentiable heads: features in the model's block
        layout (float (F, D)) and labels (0 real / 1 fake), or ``{"real": mu, "fake": mu}``
        in head space.
    probe_features : numpy.ndarray, optional
        float (F, D) model features of the explained frames, for the "head-labelled probes"
        fallback.
    random_state : int
        Seed of the probes.

    Returns
    -------
    FakeScorer

    Raises
    ------
    NotImplementedError
        A feature block or a pipeline transformer that cannot be reproduced in torch.
    ValueError
        No prototype source could be found or built for a non-differentiable head.
    """
    from sklearn.utils.validation import check_is_fitted

    require_frame_level(model)
    steps = pipeline_steps(model.pipeline)
    *trans, (hname, head) = steps
    check_is_fitted(head)
    classes = np.asarray(getattr(head, "classes_", []))
    if classes.size != 2 or (classes == 1).sum() != 1:
        raise ValueError(f"the head {type(head).__name__} must be binary with fake = 1; "
                         f"classes_ = {classes.tolist()}")
    sign = 1.0 if classes[1] == 1 else -1.0
    embedder = model.extractor.embedder
    facenet = embedder.model
    flip = bool(getattr(embedder, "flip_average", False))
    blocks = list(model.blocks)
    for b in blocks:
        if b not in (EMBEDDING, SPECTRUM):
            try:
                facenet.get_submodule(parse_tap(b)[0])
            except (AttributeError, ValueError):
                raise NotImplementedError(
                    f"feature block {b!r} is neither 'embedding', 'spectrum' nor a FaceNet "
                    f"layer: cannot differentiate through it") from None
    bins = int(getattr(model.extractor, "spectrum_bins", 0))
    if SPECTRUM in blocks and bins <= 0:
        raise ValueError("the model uses the 'spectrum' block but its extractor has "
                         "spectrum_bins=0")
    fns = []
    for name, step in trans:
        fn = _transform_fn(name, step)
        if fn is None:
            raise NotImplementedError(
                f"pipeline step {name!r} ({type(step).__name__}) has no torch version: "
                f"explanations support TripletProjector and StandardScaler transformers")
        fns.append(fn)

    link = linear_link(head)
    if link is not None:
        w = torch.as_tensor(np.asarray(head.coef_, np.float64).reshape(-1) * sign)
        b = torch.as_tensor(float(np.asarray(head.intercept_).reshape(-1)[0]) * sign,
                            dtype=torch.float64)
        return FakeScorer(facenet, blocks, fns, _Head("linear", w, b, link), bins, flip)

    protos, source = _prototypes(model, trans, head, reference, probe_features, fns,
                                 random_state)
    hd = _Head("prototype", torch.zeros(0, dtype=torch.float64),
               torch.zeros((), dtype=torch.float64), "sigmoid",
               {k: torch.as_tensor(np.asarray(v, np.float64)) for k, v in protos.items()},
               source)
    return FakeScorer(facenet, blocks, fns, hd, bins, flip)


def _transform_np(trans: list, X: np.ndarray) -> np.ndarray:
    Z = np.asarray(X)
    for _, step in trans:
        Z = step.transform(Z)
    return np.asarray(Z, np.float64)


def _prototypes(model, trans, head, reference, probe_features, fns, seed):
    if reference is not None:
        if isinstance(reference, dict):
            return {"real": reference["real"], "fake": reference["fake"]}, "reference"
        if hasattr(reference, "X") and hasattr(reference, "y"):
            X, y = reference.X, reference.y
        else:
            X, y = reference
        y = np.asarray(y)
        if not ((y == 0).any() and (y == 1).any()):
            raise ValueError("reference labels must include both real (0) and fake (1)")
        Z = _transform_np(trans, np.asarray(X, np.float32))
        return {"real": Z[y == 0].mean(0), "fake": Z[y == 1].mean(0)}, "reference"
    info = getattr(model, "info", {}) or {}
    if isinstance(info.get("prototypes"), dict):
        p = info["prototypes"]
        return {"real": p["real"], "fake": p["fake"]}, "model.info"
    fit_X = getattr(head, "_fit_X", None)
    fit_y = getattr(head, "_y", None)
    if fit_X is not None and fit_y is not None:       # k-NN keeps its training set
        Z = np.asarray(fit_X, np.float64)
        y = np.asarray(head.classes_)[np.asarray(fit_y)]
        return {"real": Z[y == 0].mean(0), "fake": Z[y == 1].mean(0)}, "head training set"
    if probe_features is None or len(probe_features) == 0:
        raise ValueError(f"the head {type(head).__name__} is not differentiable and no "
                         f"prototype source was found: pass reference=(X, y)")
    Z = _transform_np(trans, np.asarray(probe_features, np.float32))
    rng = np.random.default_rng(seed)
    sphere = bool(fns) and getattr(fns[-1], "unit_sphere", False)
    spread = float(np.sqrt(np.mean(np.var(Z, axis=0)) * Z.shape[1])) if len(Z) > 1 else 0.0
    scale = spread if spread > 1e-6 else (1.0 if sphere else float(np.linalg.norm(Z[0])) or 1.0)
    probes = [Z]
    for r in (0.1, 0.25, 0.5, 1.0):
        noise = rng.standard_normal((64 * len(Z), Z.shape[1])) / np.sqrt(Z.shape[1])
        P = np.repeat(Z, 64, axis=0) + r * scale * noise
        if sphere:
            P /= np.linalg.norm(P, axis=1, keepdims=True)
        probes.append(P)
    P = np.concatenate(probes)
    from deepmetric.eval.scoring import frame_scores

    p = frame_scores(head, P.astype(np.float32))
    wf, wr = p, 1.0 - p
    if wf.sum() < 1e-6 or wr.sum() < 1e-6:
        raise ValueError(f"the head {type(head).__name__} gives every probe around these "
                         f"frames the same score ({p.mean():.3f}): pass reference=(X, y) "
                         f"to explain it")
    return {"real": (wr[:, None] * P).sum(0) / wr.sum(),
            "fake": (wf[:, None] * P).sum(0) / wf.sum()}, "head-labelled probes"
