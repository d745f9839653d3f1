"""Fine-tuning the last FaceNet blocks on real crops (the DFDC fixture's 22 face crops)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from deepmetric.finetune import FaceNetFineTuner

pytestmark = pytest.mark.slow  # the real networks on real media


@pytest.fixture(scope="module")
def dfdc_crops(dfdc_dir):
    import cv2

    files = sorted((dfdc_dir / "prepared_dataset").glob("*/*.png"))
    crops = np.stack([cv2.resize(cv2.imread(str(f))[:, :, ::-1], (160, 160)) for f in files])
    y = np.array([f.parent.name == "fake" for f in files], dtype=int)
    assert len(crops) == 22 and 0 < y.sum() < len(y)
    return crops, y


def test_untrained_equals_the_embedder(dfdc_crops, embedder):
    crops, y = dfdc_crops
    ft = FaceNetFineTuner(epochs=0, device="cpu").fit(crops, y)
    np.testing.assert_allclose(ft.transform(crops), embedder.embed(crops)["embedding"],
                               atol=1e-5)
    # flattened rows (what a feature table holds) are the same input
    np.testing.assert_array_equal(ft.transform(crops.reshape(len(crops), -1)),
                                  ft.transform(crops))


@pytest.mark.parametrize("loss", ["triplet", "bce", "focal"])
def test_training_lowers_the_loss_and_moves_only_the_suffix(dfdc_crops, loss, tmp_path):
    crops, y = dfdc_crops
    ft = FaceNetFineTuner(loss=loss, epochs=6, batch_size=22, lr=1e-3, hflip=False,
                          device="cpu").fit(crops, y)
    assert len(ft.history_) == 6 and ft.history_[-1] < ft.history_[0]
    assert all(k.split(".")[0] in ("repeat_3", "block8", "last_linear", "last_bn")
               for k in ft.state_dict_)
    out = ft.transform(crops)
    assert out.shape == (22, 512) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # a pickled fitted tuner, and one saved as data (what model.skops holds), give the same
    # features
    back = pickle.loads(pickle.dumps(ft))
    np.testing.assert_allclose(back.transform(crops), out, atol=1e-6)
    from deepmetric.modelfile import load_model, save_model

    data = load_model(save_model(ft, tmp_path / "tuner.skops"))
    assert data is not ft and getattr(data, "_net", None) is None  # rebuilt on first use
    np.testing.assert_allclose(data.transform(crops), out, atol=1e-6)


def test_triplet_fine_tuning_separates_the_training_crops(dfdc_crops, embedder):
    crops, y = dfdc_crops

    def gap(e):  # mean cross-class distance minus mean within-class distance
        d = np.linalg.norm(e[:, None] - e[None], axis=-1)
        same = y[:, None] == y[None]
        return d[~same].mean() - d[same & ~np.eye(len(y), dtype=bool)].mean()

    before = gap(embedder.embed(crops)["embedding"])
    ft = FaceNetFineTuner(loss="triplet", epochs=15, batch_size=22, lr=1e-3,
                          device="cpu").fit(crops, y)
    assert gap(ft.transform(crops)) > before + 0.05


def test_pool_output_and_bad_input(dfdc_crops):
    crops, y = dfdc_crops
    ft = FaceNetFineTuner(output="avgpool_1a", epochs=1, batch_size=22, device="cpu")
    assert ft.fit(crops, y).transform(crops[:3]).shape == (3, 1792)
    with pytest.raises(ValueError, match="invalid start='repeat_9': expected one of"):
        FaceNetFineTuner(start="repeat_9").fit(crops, y)
    with pytest.raises(ValueError, match="invalid loss='hinge': expected one of"):
        FaceNetFineTuner(loss="hinge").fit(crops, y)
    with pytest.raises(ValueError, match="face crops"):
        FaceNetFineTuner().fit(np.zeros((4, 7)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="two classes"):
        FaceNetFineTuner().fit(crops, np.zeros(len(crops), int))


def test_whole_network_fine_tuning_moves_every_block(dfdc_crops):
    crops, y = dfdc_crops
    ft = FaceNetFineTuner(start="conv2d_1a", loss="bce", epochs=3, batch_size=22, lr=1e-4,
                          hflip=False, device="cpu").fit(crops, y)
    assert ft.history_[-1] < ft.history_[0]
    blocks = {k.split(".")[0] for k in ft.state_dict_}
    assert blocks == {"conv2d_1a", "conv2d_2a", "conv2d_2b", "conv2d_3b", "conv2d_4a",
                      "conv2d_4b", "repeat_1", "mixed_6a", "repeat_2", "mixed_7a", "repeat_3",
                      "block8", "last_linear", "last_bn"}  # maxpool_3a has no weights
    from deepmetric.features.backbones.weights import load_facenet

    before = load_facenet("casia-webface").state_dict()
    moved = {k.split(".")[0] for k, v in ft.state_dict_.items()
             if v.dtype.kind == "f" and not np.allclose(v, before[k].numpy())}
    assert {"conv2d_1a", "repeat_1", "block8"} <= moved
    assert ft.transform(crops[:4]).shape == (4, 512)


@pytest.mark.gpu
def test_fine_tuning_on_cuda_matches_the_cpu_untrained_and_trains(dfdc_crops):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    crops, y = dfdc_crops
    cpu = FaceNetFineTuner(start="conv2d_1a", epochs=0, device="cpu").fit(crops, y)
    gpu = FaceNetFineTuner(start="conv2d_1a", epochs=0, device="cuda").fit(crops, y)
    np.testing.assert_allclose(gpu.transform(crops), cpu.transform(crops), atol=1e-4)
    ft = FaceNetFineTuner(start="conv2d_1a", loss="triplet", epochs=5, batch_size=22, lr=1e-4,
                          device="cuda").fit(crops, y)
    assert ft.history_[-1] < ft.history_[0]
    assert all(isinstance(v, np.ndarray) for v in ft.state_dict_.values())  # data, no device
