"""The generalisation study's data: cached FF++ / DFDC features as per-block arrays.

:func:`load_data` extracts (once, into the shared feature cache) and reads the data sets of
:mod:`experiments.generalization` with the extractor of ``exp=deepmetric``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig

from experiments.builders import extractor_for, load_items

__all__ = ["FACENET_BLOCKS", "MNV2_BLOCKS", "DEEPMETRIC", "Data", "load_data", "with_copies",
           "block_columns", "self_standardised"]

log = logging.getLogger("generalization")

#: FaceNet blocks cached by exp=deepmetric's extractor (plus the crop spectrum).
FACENET_BLOCKS = ["embedding", "avgpool_1a", "repeat_1", "repeat_2", "repeat_3",
                  "repeat_2@2x2", "spectrum"]
MNV2_BLOCKS = ["mnv2/6", "mnv2/13", "mnv2/17", "mnv2/pool"]
DEEPMETRIC = ["repeat_2@2x2", "repeat_3", "spectrum"]  # exp=deepmetric's features


@dataclass
class Data:
    """Frame features of one data set: ``X[block]`` float32 (F, D_b), ``frames`` F rows."""

    X: dict[str, np.ndarray]
    frames: pd.DataFrame

    def stack(self, blocks: list[str]) -> np.ndarray:
        return np.concatenate([self.X[b] for b in blocks], axis=1)


def load_data(cfg: DictConfig, sbi_copies: int, batch_size: int = 64,
              degrade_copies: int = 0, keep_crops: bool = False,
              geometry: bool = False, default_copies: bool = True,
              landmarks: bool = False, timm: tuple = ()) -> dict[str, Data]:
    """FF++, its self-blended and degraded copies (when asked) and the DFDC dev crops.

    ``cfg.data`` and ``cfg.eval_data`` through ``cfg.extractor`` (the study's config,
    ``conf/study.yaml``: exp=deepmetric's extractor, crops kept), as :class:`Data`.
    ``keep_crops`` keeps the face crops as block ``crops`` (uint8, flattened 160×160×3) for
    the fine-tuning rows; ``geometry`` adds ``ffpp_tight`` (FF++ cropped at MTCNN's box, no
    margin), ``dfdc_whole`` (the DFDC crops taken whole as faces) and, with ``sbi_copies``,
    ``sbi_tight`` (the self-blended copies cut at the tight box); ``default_copies=False``
    leaves out the copies cut with the default margin; ``landmarks`` adds the FaceMesh
    geometry blocks (``facemesh/...``) of the crops; ``timm`` (TimmEmbedders) adds their
    blocks, computed from the cached crops."""
    from deepmetric.datasets.items import add_degraded, add_self_blended
    from deepmetric.features.backbones.facemesh import FaceMeshEmbedder
    from deepmetric.features.backbones.mobilenet import ImageNetEmbedder

    extractor = instantiate(cfg.extractor, _convert_="all")
    mnv2 = ImageNetEmbedder(layers=[b.split("/", 1)[1] for b in MNV2_BLOCKS],
                            batch_size=batch_size, device="auto")
    backbones = {"mnv2": mnv2}  # memo folder → backbone run on the cached crops
    if landmarks:
        backbones["facemesh"] = FaceMeshEmbedder()
    for emb in timm:
        backbones["timm-" + emb.feature_names()[0].rsplit("/", 1)[0]] = emb
    ffpp = load_items(cfg.data, "data")
    sets = {"ffpp": (ffpp, cfg.data),
            "dfdc": (load_items(cfg.eval_data, "eval_data"), cfg.eval_data)}
    sbi = add_self_blended(ffpp, sbi_copies) if sbi_copies else None
    if sbi is not None:
        sbi = sbi[sbi["blend_seed"].notna()].reset_index(drop=True)
    if sbi is not None and default_copies:
        sets["sbi"] = (sbi, cfg.data)
    if degrade_copies and default_copies:
        deg = add_degraded(ffpp, degrade_copies)
        sets["degrade"] = (deg[deg["degrade_seed"].notna()].reset_index(drop=True), cfg.data)
    if geometry:
        sets["ffpp_tight"] = (ffpp, _with_detector(cfg.data, margin=0))
        sets["dfdc_whole"] = (sets["dfdc"][0], _with_detector(cfg.eval_data, whole_image=True))
        if sbi is not None:
            sets["sbi_tight"] = (sbi, _with_detector(cfg.data, margin=0))
    out = {}
    for name, (items, node) in sets.items():
        ex = extractor_for(extractor, node)
        t = time.perf_counter()
        rep = ex.run(items)
        log.info("%s: %s", name, rep.summary().splitlines()[0])
        feats = ex.features(items, FACENET_BLOCKS)
        X = {b: feats.X[:, s] for b, s in feats.blocks.items()}
        crops = ex.features(items, ["crops"]).X.reshape(-1, 160, 160, 3)
        for folder, backbone in backbones.items():
            X.update(_from_crops(backbone, crops, ex.cache.dir / folder, feats.frames))
        if keep_crops:
            X["crops"] = crops.reshape(len(crops), -1)
        out[name] = Data(X, feats.frames)
        log.info("%s: %d frames of %d items in %.0f s", name, len(feats.frames),
                 feats.frames["video_id"].nunique(), time.perf_counter() - t)
    return out


def _with_detector(node: Any, **options: Any) -> Any:
    """A data config whose ``detector`` overrides (see :func:`experiments.builders.extractor_for`)
    also set ``options``."""
    from omegaconf import OmegaConf

    d = OmegaConf.to_container(node, resolve=True)
    d["detector"] = {**(d.get("detector") or {}), **options}
    return OmegaConf.create(d)


def _from_crops(emb: Any, crops: np.ndarray, where: Path, frames: pd.DataFrame) -> dict:
    """A backbone's blocks of the crops (MobileNetV2, FaceMesh), memoised in one file per
    data set and settings."""
    from deepmetric.features.cache import read_npz, settings_hash, write_npz

    key = settings_hash({**emb.settings(), "rows": pd.util.hash_pandas_object(
        frames[["video_id", "frame_index"]], index=False).sum().item(), "n": len(frames)})
    path = where / f"{key}.npz"
    if path.is_file():
        return read_npz(path)
    arrays = emb.embed(crops)
    write_npz(path, arrays)
    return arrays


def with_copies(ff: Data, *copies: Data) -> Data:
    """FF++ (role "both") and training-only copies of its clips (role "train") in one
    :class:`Data`: the in-dataset CV tests only FF++'s own rows, a copy stays with its
    source's group."""
    parts = [ff, *copies]
    return Data({b: np.concatenate([d.X[b] for d in parts]) for b in ff.X},
                pd.concat([ff.frames.assign(role="both")]
                          + [d.frames.assign(role="train") for d in copies],
                          ignore_index=True))


def block_columns(d: Data, choices: list[list[str]]) -> tuple[list[str], dict]:
    """The blocks of all choices (sorted, the order of ``d.stack``) and, per choice (named
    ``"a+b"``), the int64 column indices of its blocks in that stack."""
    allb = sorted({b for c in choices for b in c})
    widths = [d.X[b].shape[1] for b in allb]
    starts = dict(zip(allb, np.cumsum([0] + widths)))
    span = {b: np.arange(starts[b], starts[b] + w) for b, w in zip(allb, widths)}
    return allb, {"+".join(c): np.concatenate([span[b] for b in c]) for c in choices}


def self_standardised(data: dict[str, Data]) -> dict[str, Data]:
    """Each data set's blocks standardised by that set's own mean and std (no labels used)."""
    def norm(d: Data) -> Data:
        return Data({b: ((v - v.mean(0)) / (v.std(0) + 1e-6)).astype(np.float32)
                     for b, v in d.X.items()}, d.frames)
    return {k: norm(v) for k, v in data.items()}
