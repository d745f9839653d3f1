"""Every config option and every experiment composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from experiments.builders import build_pipeline, pipeline_specs

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/unused"  # ${hydra:...} needs a running app
    return cfg


@pytest.mark.parametrize("exp", _options("exp"))
def test_every_experiment_composes_and_builds_its_pipelines(exp):
    cfg = _compose([f"exp={exp}"])
    assert cfg.name == exp
    pipes = pipeline_specs(cfg)
    assert pipes and all(hasattr(p, "fit") for p in pipes.values())
    OmegaConf.to_yaml(cfg, resolve=False)


def test_poster_table_runs_heads_side_by_side():
    cfg = _compose(["exp=poster_table"])
    pipes = pipeline_specs(cfg)
    assert set(pipes) == {"triplet_rf", "triplet_sgd", "triplet_knn", "raw_rf", "raw_sgd",
                          "raw_knn"}
    assert [n for n, _ in pipes["triplet_rf"].steps] == ["projector", "classifier"]
    assert [n for n, _ in pipes["raw_sgd"].steps] == ["scaler", "classifier"]


@pytest.mark.parametrize("clf", _options("classifier"))
@pytest.mark.parametrize("proj", _options("projector"))
def test_every_projector_and_classifier(proj, clf):
    cfg = _compose([f"projector={proj}", f"classifier={clf}"])
    pipe = build_pipeline({"projector": cfg.projector, "classifier": cfg.classifier})
    assert pipe.steps[-1][0] == "classifier"
    assert ("projector" in pipe.named_steps) == (proj != "none")


@pytest.mark.parametrize("data", _options("data"))
def test_every_data_option_composes(data):
    cfg = _compose([f"data={data}", f"eval_data={data}"])
    assert cfg.data._target_.startswith("deepmetric.datasets.")
    assert cfg.eval_data._target_ == cfg.data._target_


def test_detector_embedder_extractor_instantiate(tmp_path):
    cfg = _compose([f"paths.cache_dir={tmp_path}"])
    ex = instantiate(cfg.extractor, _convert_="all")
    assert ex.n_frames == 25 and ex.embedder.layers == ["avgpool_1a", "repeat_1", "repeat_2",
                                                         "repeat_3", "repeat_2@2x2"]
    assert not ex.embedder.flip_average
    assert str(ex.cache.dir).startswith(str(tmp_path))


def test_the_fast_extraction_options_compose_into_their_own_cache(tmp_path):
    """detector=blazeface embedder.quantize=int8 (docs/performance.md): its own cache key."""
    from deepmetric.video.blazeface import BlazeFaceDetector

    cfg = _compose(["detector=blazeface", "embedder.quantize=int8",
                    f"paths.cache_dir={tmp_path}"])
    ex = instantiate(cfg.extractor, _convert_="all")
    assert isinstance(ex.detector, BlazeFaceDetector) and ex.embedder.quantize == "int8"
    assert ex.settings()["quantize"]["dtype"] == "int8"
    plain = instantiate(_compose(["detector=blazeface", f"paths.cache_dir={tmp_path}"]).extractor,
                        _convert_="all")
    assert "quantize" not in plain.settings() and ex.cache.dir != plain.cache.dir
    with pytest.raises(Exception, match="quantize must be one of"):
        instantiate(_compose(["embedder.quantize=int4"]).extractor, _convert_="all")


def test_deepmetric_exp_uses_its_flip_averaged_grid_features(tmp_path):
    cfg = _compose(["exp=deepmetric", f"paths.cache_dir={tmp_path}"])
    ex = instantiate(cfg.extractor, _convert_="all")
    assert ex.embedder.flip_average and "repeat_2@2x2" in ex.embedder.layers
    assert set(cfg.features) - {"spectrum"} <= set(ex.embedder.layers)


def test_cross_dataset_exp_cuts_faces_tight_adds_pseudo_fakes_and_takes_crops_whole(tmp_path):
    """exp=cross_dataset: exp=deepmetric's features at frame level, FF++ faces at MTCNN's
    tight box, three SBI copies; the DFDC crops it is scored on are taken whole."""
    from experiments.builders import extractor_for

    cfg = _compose(["exp=cross_dataset", "data=ffpp", "eval_data=dfdc_faces",
                    "eval_data.detector.whole_image=true", f"paths.cache_dir={tmp_path}"])
    base = _compose(["exp=deepmetric", f"paths.cache_dir={tmp_path}"])
    assert cfg.features == base.features and cfg.classifier == base.classifier
    assert list(cfg.temporal.stats) == [] and cfg.self_blend.copies == 3
    ex = instantiate(cfg.extractor, _convert_="all")
    assert ex.detector.margin == 0 and ex.embedder.flip_average
    dfdc = extractor_for(ex, cfg.eval_data)
    assert dfdc.detector.whole_image and not ex.detector.whole_image
    assert ex.cache.dir != instantiate(base.extractor, _convert_="all").cache.dir  # own crops


def test_wrong_key_is_a_clear_error():
    with pytest.raises(ConfigCompositionException, match="projector.margn"):
        _compose(["projector.margn=0.3"])
    with pytest.raises(ConfigCompositionException, match="classifier"):
        _compose(["classifier=xgboost"])


def test_no_absolute_paths_in_configs():
    for path in CONF.rglob("*.yaml"):
        for line in path.read_text().splitlines():
            value = line.split("#")[0].split(":", 1)[-1].strip()
            assert not value.startswith("/"), f"{path}: absolute path in {line!r}"


def test_a_pml_loss_from_the_command_line_builds_and_trains():
    """Issue #19: ``projector.loss={_target_: <any PML loss>}`` plugs into the projector."""
    import numpy as np

    cfg = _compose(["projector.loss={_target_:pytorch_metric_learning.losses.SupConLoss}",
                    "projector.epochs=3", "projector.device=cpu"])
    pipe = build_pipeline({"projector": cfg.projector, "classifier": cfg.classifier})
    assert type(pipe.named_steps["projector"].loss).__name__ == "SupConLoss"
    rng = np.random.default_rng(0)
    y = np.arange(120) % 2
    X = (rng.normal(size=(120, 16)) + y[:, None]).astype(np.float32)
    assert pipe.fit(X, y).predict_proba(X).shape == (120, 2)
