"""Source-paired mining on the FF++ sample's own pairing (labels, pair ids, identity groups
from the adapter), with small embeddings."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from pytorch_metric_learning import losses

from deepmetric.datasets import ffpp
from deepmetric.eval.evaluation import fit_pipeline
from deepmetric.learn.losses import MinedLoss
from deepmetric.learn.paired import (SourcePairedMiner, loss_labels, pair_labels,
                                     unpack_pair_labels, uses_source_pairs)
from deepmetric.learn.projector import TripletProjector


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clips(ffpp_dir) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # NeuralTextures is not in the sample
        return ffpp.load(ffpp_dir, check_files=False)


def _batch(clips: pd.DataFrame, n_clips: int, frames: int, seed: int) -> pd.DataFrame:
    """``frames`` rows of each of ``n_clips`` clips: real clips and fakes made from them, so
    the batch holds both sides of several pairs."""
    rng = np.random.default_rng(seed)
    reals = clips[clips["label"] == 0].sample(n_clips // 2, random_state=seed)
    fakes = clips[(clips["label"] == 1) & clips["pair_id"].isin(reals["video_id"])]
    fakes = fakes.sample(min(len(fakes), n_clips - len(reals)), random_state=seed)
    rows = pd.concat([reals, fakes]).loc[lambda d: d.index.repeat(frames)]
    return rows.iloc[rng.permutation(len(rows))].reset_index(drop=True)


def _brute_force(rows: pd.DataFrame, cross_identity: bool = True) -> set[tuple[int, int, int]]:
    y, pair, grp = (rows[c].to_numpy() for c in ("label", "pair_id", "group"))
    out = set()
    for a, p, n in itertools.product(range(len(rows)), repeat=3):
        if a == p or y[p] != y[a] or y[n] == y[a] or pair[n] != pair[a]:
            continue
        if cross_identity and grp[p] == grp[a]:
            continue
        out.add((a, p, n))
    return out


def _triplets(t) -> set[tuple[int, int, int]]:
    return set(zip(*(x.tolist() for x in t)))


def test_the_adapter_names_each_fakes_original(clips):
    fake = clips.set_index("video_id").loc["Deepfakes/033_097"]
    assert fake["pair_id"] == "real/033" and fake["source_id"] == "097"
    real = clips.set_index("video_id").loc["real/033"]
    assert real["pair_id"] == "real/033"
    # every fake of the sample whose original is in it pairs with that real clip
    reals = set(clips.loc[clips["label"] == 0, "video_id"])
    paired = clips[(clips["label"] == 1) & clips["pair_id"].isin(reals)]
    assert len(paired) == 93 and (paired["group"].to_numpy() ==
                                  clips.set_index("video_id").loc[paired["pair_id"], "group"]
                                  .to_numpy()).all()


def test_packed_labels_round_trip(clips):
    packed = pair_labels(clips["label"], clips["pair_id"], clips["group"])
    cls, grp, pair = unpack_pair_labels(torch.as_tensor(packed))
    assert (cls.numpy() == clips["label"].to_numpy()).all()
    # equal codes exactly where the ids are equal
    for codes, ids in ((grp.numpy(), clips["group"]), (pair.numpy(), clips["pair_id"])):
        assert (pd.Series(codes).groupby(ids.to_numpy()).nunique() == 1).all()
        assert pd.Series(ids.to_numpy()).groupby(codes).nunique().max() == 1
    assert (pair.numpy() > 0).all()
    none = pair_labels([1, 0], [None, ""], ["a", "a"])
    assert (unpack_pair_labels(none)[2] == 0).all()


@pytest.mark.parametrize("cross_identity", [True, False])
def test_every_triplet_obeys_the_pairing_rules(clips, cross_identity):
    rows = _batch(clips, n_clips=8, frames=3, seed=1)
    labels = torch.as_tensor(pair_labels(rows["label"], rows["pair_id"], rows["group"]))
    emb = torch.randn(len(rows), 8, generator=torch.Generator().manual_seed(0))
    miner = SourcePairedMiner(margin=float("inf"), cross_identity=cross_identity)
    got = _triplets(miner(emb, labels))
    want = _brute_force(rows, cross_identity)
    assert want and got == want
    # a real anchor's negatives are fakes of its own clip; a fake's, its original
    for a, p, n in got:
        real, fake = (a, n) if rows.at[a, "label"] == 0 else (n, a)
        assert rows.at[real, "video_id"] == rows.at[fake, "pair_id"]


def test_the_margin_filter_is_pmls(clips):
    rows = _batch(clips, n_clips=8, frames=3, seed=2)
    labels = torch.as_tensor(pair_labels(rows["label"], rows["pair_id"], rows["group"]))
    emb = torch.randn(len(rows), 4, generator=torch.Generator().manual_seed(1))
    d = torch.cdist(*(2 * [torch.nn.functional.normalize(emb)]))
    every = _triplets(SourcePairedMiner(margin=float("inf"))(emb, labels))
    for kind, rule in (("all", lambda m: m <= 0.2), ("hard", lambda m: m <= 0),
                       ("semihard", lambda m: 0 < m <= 0.2), ("easy", lambda m: m > 0.2)):
        got = _triplets(SourcePairedMiner(margin=0.2, type_of_triplets=kind)(emb, labels))
        want = {t for t in every if rule(float(d[t[0], t[2]] - d[t[0], t[1]]))}
        assert got == want, kind
    capped = SourcePairedMiner(margin=float("inf"), max_triplets=5)(emb, labels)
    assert len(capped[0]) == 5 and _triplets(capped) <= every


def test_a_pml_loss_reads_the_tuples(clips):
    rows = _batch(clips, n_clips=6, frames=2, seed=3)
    labels = torch.as_tensor(pair_labels(rows["label"], rows["pair_id"], rows["group"]))
    emb = torch.randn(len(rows), 5, generator=torch.Generator().manual_seed(2))
    a, p, n = SourcePairedMiner(margin=float("inf"))(emb, labels)
    got = losses.TripletMarginLoss(margin=0.2)(emb, labels, (a, p, n))
    e = torch.nn.functional.normalize(emb)
    per = torch.relu((e[a] - e[p]).norm(dim=1) - (e[a] - e[n]).norm(dim=1) + 0.2)
    assert torch.isclose(got, per[per > 0].mean(), atol=1e-5)


def test_unpacked_labels_are_refused():
    emb = torch.randn(6, 3)
    with pytest.raises(ValueError, match="pair_labels"):
        SourcePairedMiner()(emb, torch.tensor([0, 0, 0, 1, 1, 1]))


def _features(rows: pd.DataFrame, seed: int) -> np.ndarray:
    """Identity and scene vary most; the manipulation is a shift shared by all fakes: an
    identity vector per group (scale 2 per dimension), a scene vector per original (scale 2,
    shared by the fake and its real clip), noise (1) and a shift of length 6 for fakes."""
    rng = np.random.default_rng(seed)
    dim = 32
    ident = {g: 2 * rng.standard_normal(dim) for g in rows["group"].unique()}
    scene = {s: 2 * rng.standard_normal(dim) for s in rows["pair_id"].unique()}
    shift = rng.standard_normal(dim)
    shift *= 6 / np.linalg.norm(shift)
    X = np.stack([ident[g] + scene[s] for g, s in zip(rows["group"], rows["pair_id"])])
    X += rng.standard_normal(X.shape) + np.outer(rows["label"], shift)
    return X.astype(np.float32)


def test_a_projector_trains_with_triplet_margin_loss_and_the_miner(clips):
    rows = clips.loc[clips.index.repeat(6)].reset_index(drop=True)
    X = _features(rows, seed=0)
    held = rows["group"].isin(sorted(rows["group"].unique())[:5]).to_numpy()
    loss = MinedLoss(losses.TripletMarginLoss(margin=0.2), SourcePairedMiner())
    assert uses_source_pairs(loss) and not uses_source_pairs(losses.TripletMarginLoss())
    proj = TripletProjector(hidden=(64,), out_dim=16, loss=loss, epochs=15, batch_size=256,
                            validation_fraction=0.0, device="cpu", random_state=0)
    tr = rows[~held]
    fitted = fit_pipeline(proj, X[~held], tr)  # pair_id reaches the projector from the frames
    hist = [h["train_loss"] for h in fitted.history_]
    assert hist[-1] < 0.5 * hist[0]
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    Z = fitted.transform(X)
    clf = LogisticRegression().fit(Z[~held], rows["label"][~held])
    auc = roc_auc_score(rows["label"][held], clf.predict_proba(Z[held])[:, 1])
    assert auc > 0.75  # unseen identities and scenes (a linear model on X: 0.83)


def test_the_projector_needs_the_pairs_when_its_miner_does(clips):
    rows = clips.loc[clips.index.repeat(2)].reset_index(drop=True)
    loss = MinedLoss(losses.TripletMarginLoss(), SourcePairedMiner())
    proj = TripletProjector(hidden=(), out_dim=4, loss=loss, epochs=1, device="cpu")
    with pytest.raises(ValueError, match="pair_id"):
        proj.fit(_features(rows, 1), rows["label"], groups=rows["group"])
    assert loss_labels(None, rows["label"].to_numpy(), None, None) is None
