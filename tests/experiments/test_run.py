"""run(cfg) end to end on a slice of the real FF++ clips, with cross-dataset evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from deepmetric.model import DeepfakeModel, TooFewFramesError
from experiments.run import run

pytestmark = pytest.mark.slow  # the real networks on real media

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


def compose_run(overrides: list[str], out: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return cfg


def _slice(ffpp_dir: Path, out: Path, groups: list[int],
           methods: tuple[str, ...] | None = None) -> Path:
    """The FF++ clips of some identity groups (of some methods: all when None), as a
    manifest CSV with absolute paths."""
    df = pd.read_csv(ffpp_dir / "labels.csv", dtype=str)
    chosen = df["group"].drop_duplicates().iloc[groups]
    part = df[df["group"].isin(chosen)].copy()
    if methods is not None:
        part = part[part["method"].isin(methods)]
    part["path"] = [str(ffpp_dir / p) for p in part["path"]]
    part["method"] = part["method"].replace({"original": "real"})
    part[["path", "label", "group", "method"]].to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def slice_csv(ffpp_dir, tmp_path_factory):
    """16 FF++ clips from 4 identity groups."""
    return _slice(ffpp_dir, tmp_path_factory.mktemp("slice") / "ffpp_slice.csv",
                  [0, 5, 10, 15])


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory) -> Path:
    """One fresh feature cache for the runs of this module that extract the same clips with
    the same settings (3 frames, no flip averaging): each stores every FaceNet tap, so the
    second test reads what the first extracted."""
    return tmp_path_factory.mktemp("shared_cache")


def _overrides(csv: Path, dfdc_dir: Path, cache: Path) -> list[str]:
    return ["data=manifest", f"data.path={csv}", "eval_data=folder",
            f"eval_data.root={dfdc_dir / 'prepared_dataset'}", f"paths.cache_dir={cache}",
            "extractor.n_frames=3", "extractor.progress=false", "projector.epochs=5",
            "projector.batch_size=64", "cv.n_splits=2", "classifier.n_estimators=50"]


def test_run_end_to_end_and_deterministic(slice_csv, dfdc_dir, shared_cache, tmp_path):
    cache = shared_cache
    m1 = run(compose_run(_overrides(slice_csv, dfdc_dir, cache), tmp_path / "a"))
    out = tmp_path / "a"
    for name in ("metrics.json", "results.md", "frame_scores.csv", "video_scores.csv",
                 "roc.png", "triplet_scatter.png", "model.skops", "extraction.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for section in ("test", "cross"):
        for level in ("frame", "video"):
            block = metrics[section][level]
            for key in ("auc", "ap", "eer", "accuracy", "precision", "recall", "f1", "n"):
                assert key in block, (section, level, key)
            assert 0 <= block["accuracy"] <= 1 and block["n"] > 0
    assert metrics["test"]["video"]["n"] > 0 and metrics["cross"]["video"]["n"] == 22
    assert metrics["extraction"]["n_failed"] == 0
    assert set(metrics["per_method"]) <= {"Deepfakes", "Face2Face", "FaceSwap"}
    table = (out / "results.md").read_text()
    assert "| auc |" in table and "video level" in table and "cross-dataset" in table
    videos = pd.read_csv(out / "video_scores.csv")
    assert videos["video_id"].is_unique and videos["fake_score"].between(0, 1).all()
    # issue #32: every table and figure says what it holds
    frames = pd.read_csv(out / "frame_scores.csv")
    assert {"fake_score", "face_prob"} <= set(frames) and not {"score", "prob"} & set(frames)
    assert frames["face_prob"].between(0.9, 1).all()  # MTCNN's min_prob
    from sklearn.metrics import roc_auc_score

    assert metrics["pooled"]["video"]["auc"] == pytest.approx(
        roc_auc_score(videos["label"], videos["fake_score"]))
    assert metrics["data"]["name"].startswith("manifest: slice")
    assert metrics["data"]["eval_name"] == "folder: prepared_dataset"
    assert f"## video level, in-dataset ({metrics['data']['name']}): mean ± std over 2 " \
           "identity-grouped folds" in table
    assert f"| auc, out-of-fold scores pooled (roc.png) | " \
           f"{metrics['pooled']['video']['auc']:.3f} |" in table
    assert (out / "roc_cross.png").stat().st_size > 0
    # the saved model predicts a real clip end to end
    model = DeepfakeModel.load(out / "model.skops")
    clip = pd.read_csv(slice_csv)["path"].iloc[0]
    pred = model.predict(clip)
    assert pred["verdict"] in ("real", "fake") and 0 <= pred["score"] <= 1
    # same config and seed on CPU: identical metrics (features come from the cache now)
    m2 = run(compose_run(_overrides(slice_csv, dfdc_dir, cache), tmp_path / "b"))
    strip = lambda m: json.dumps({k: v for k, v in m.items()  # noqa: E731
                                  if k not in ("seconds", "extraction", "pipelines")},
                                 sort_keys=True, default=str)
    assert strip(m1) == strip(m2)
    a = json.loads((out / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    for m in (a, b):
        m.pop("seconds"), m.pop("extraction")
        for p in m["pipelines"].values():
            p.pop("seconds")
    assert a == b


def test_run_with_self_blended_training_and_fine_tuning(ffpp_dir, tmp_path):
    """SBI pseudo-fakes are trained on and never scored; fine-tuning runs from crops (8 clips:
    the real and the Deepfakes clip of 4 identity groups)."""
    slice_csv = _slice(ffpp_dir, tmp_path / "ffpp_slice.csv", [0, 5, 10, 15],
                       ("original", "Deepfakes"))
    cache = tmp_path / "cache"
    base = ["data=manifest", f"data.path={slice_csv}", f"paths.cache_dir={cache}",
            "extractor.n_frames=2", "extractor.progress=false", "cv.n_splits=2"]
    m = run(compose_run(base + ["exp=finetune", "self_blend.copies=1", "projector.epochs=2",
                                "projector.batch_size=16"], tmp_path / "ft"))
    items = pd.read_csv(slice_csv)
    n_real = int((items["label"] == "real").sum())
    assert m["extraction"]["n_items"] == len(items) + n_real and m["extraction"]["n_failed"] == 0
    videos = pd.read_csv(tmp_path / "ft" / "video_scores.csv")
    assert len(videos) == len(items) and not videos["video_id"].str.contains("#sbi").any()
    assert "self-blended" not in m["per_method"] and m["data"]["features"] == ["crops"]
    assert (tmp_path / "ft" / "triplet_scatter.png").stat().st_size > 0
    model = DeepfakeModel.load(tmp_path / "ft" / "model.skops")
    pred = model.predict(items["path"].iloc[0])
    assert 0 <= pred["score"] <= 1
    # SBI alone: the data's own fakes are scored but never trained on
    m2 = run(compose_run(base + ["exp=triplet_rf", "self_blend.copies=1", "self_blend.only=true",
                                 "extractor.save_crops=true", "projector.epochs=2",
                                 "classifier.n_estimators=20"],
                         tmp_path / "only"))
    assert m2["extraction"]["n_cached"] == len(items) + n_real  # same cache, other features
    assert set(pd.read_csv(tmp_path / "only" / "video_scores.csv")["video_id"]) == \
        set(items["path"])
    # degraded copies of every trainable clip (the SBI copy included), never scored
    m3 = run(compose_run(base + ["self_blend.copies=1", "degrade.copies=1",
                                 "projector.epochs=2", "classifier.n_estimators=20"],
                         tmp_path / "deg"))
    assert m3["extraction"]["n_items"] == 2 * (len(items) + n_real)
    assert m3["extraction"]["n_cached"] == len(items) + n_real  # the clips and SBI copies
    assert set(pd.read_csv(tmp_path / "deg" / "video_scores.csv")["video_id"]) == \
        set(items["path"])


def test_run_video_level_model_on_per_clip_spreads(slice_csv, dfdc_dir, shared_cache,
                                                   tmp_path):
    """exp=deepmetric: one row of frame-feature spreads per clip, scored once per clip
    (without flip averaging, tested in tests/features/backbones: the features are those the
    end-to-end test extracted into the shared cache)."""
    import math

    from deepmetric.explain import explain_arrays

    over = ["data=manifest", f"data.path={slice_csv}", "eval_data=folder",
            f"eval_data.root={dfdc_dir / 'prepared_dataset'}", f"paths.cache_dir={shared_cache}",
            "extractor.n_frames=3", "extractor.progress=false", "cv.n_splits=2",
            "exp=deepmetric", "embedder.flip_average=false"]
    m = run(compose_run(over, tmp_path / "t"))
    items = pd.read_csv(slice_csv)
    assert m["data"]["temporal"] == ["std"] and m["data"]["n_frames"] == 3 * len(items)
    assert "video-level model" in m["protocol"]
    assert 0 <= m["test"]["video"]["auc"] <= 1 and m["test"]["video"]["n"] > 0
    assert all(math.isnan(v) for v in m["test"]["frame"].values())  # no frame level
    # single crops have no spread: the same pipeline fitted on frames scores them
    assert "cross_skipped" not in m and m["cross_scored_by"] == {"video": 0, "frame": 22}
    assert m["cross"]["video"]["n"] == 22 and 0 <= m["cross"]["frame"]["auc"] <= 1
    videos = pd.read_csv(tmp_path / "t" / "video_scores.csv")
    assert len(videos) == len(items) and videos["video_id"].is_unique
    assert (videos["n_frames"] == 1).all()  # one pooled row per clip
    table = (tmp_path / "t" / "results.md").read_text()
    assert "None: a video-level model" in table
    model = DeepfakeModel.load(tmp_path / "t" / "model.skops")
    assert model.temporal == ["std"] and model.ddof == 1
    arrays = model.extractor.extract_item(items["path"].iloc[0])
    pred = model.score_arrays(arrays)
    assert 0 <= pred["score"] <= 1 and pred["frame_scores"]["fake_score"].isna().all()
    del model.__dict__["ddof"]  # a model pickled before the option pooled with ddof=0
    assert model.ddof == 0 and model.score_arrays(arrays)["score"] != pred["score"]
    with pytest.raises(NotImplementedError, match="frame-level model"):
        explain_arrays(model, arrays)
    crop = next((dfdc_dir / "prepared_dataset").rglob("*.png"))
    assert model.predict(crop)["scored_by"] == "frame"  # one model scores images and clips
    model.frame_pipeline = None  # as models saved before 0.2: no frame-level path
    with pytest.raises(TooFewFramesError, match="at least 2 frames; found 1"):
        model.predict(crop)
    # the crops joined into clips (one per video and face): the clips of 2+ crops are scored
    clips = run(compose_run(over + [r"eval_data.clip_regex='^([^-]+)-\d+-(\d+)$'",
                                    "plots=false", "save_model=false"], tmp_path / "c"))
    assert "cross_skipped" not in clips
    scored = pd.read_csv(tmp_path / "c" / "cross_video_scores_deepmetric.csv")
    pooled = scored[scored["scored_by"] == "video"]
    assert sorted(pooled["video_id"]) == ["aapnvogymq-00", "aapnvogymq-01", "abarnvbtwb-00",
                                          "abqwwspghj-00"]  # 2, 3, 11 and 4 crops
    assert pooled["label"].tolist().count(0) == 1 and scored["fake_score"].between(0, 1).all()
    assert clips["cross_scored_by"] == {"video": 4, "frame": len(scored) - 4}
    assert clips["cross"]["video"]["n"] == len(scored) and len(scored) > 4


def test_one_class_data_is_refused_before_extraction(tmp_path, faces_dir):
    """Issue #20: data with only real items fails at once, naming the manifest and the class,
    and extracts nothing (not deep in scikit-learn after extraction)."""
    photos = sorted((faces_dir / "test_images").rglob("1.jpg"))[:3]
    csv = tmp_path / "only_real.csv"
    pd.DataFrame({"path": [str(p) for p in photos], "label": "real"}).to_csv(csv, index=False)
    cfg = compose_run(["data=manifest", f"data.path={csv}", f"paths.cache_dir={tmp_path / 'c'}",
                       "extractor.progress=false", "plots=false"], tmp_path / "out")
    with pytest.raises(ValueError, match=rf"data \({csv}, 3 items\): training needs both real "
                                         r"\(0\) and fake \(1\) items; it has only real \(0\)"):
        run(cfg)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.npz"))


# -- issue #33: outputs never half-written, names that cannot become formulas, runs that never
# share a directory -----------------------------------------------------------------------------

#: What a run writes, in the order it writes it (metrics.json first, the model last).
OUTPUTS = ("metrics.json", "extraction.json", "frame_scores.csv", "video_scores.csv",
           "results.md", "roc.png", "model.skops")


@pytest.fixture(scope="module")
def hostile_run(tiny_demo, tmp_path_factory):
    """The tiny demo as a manifest whose video ids start with =, +, - and @, its features
    cached, and one run of it: ``(overrides, reference output folder)``."""
    items = tiny_demo.items
    d = tmp_path_factory.mktemp("hostile")
    ids = [f'{"=+-@"[i % 4]}HYPERLINK("http://x.example","{v}")'
           for i, v in enumerate(items["video_id"])]
    csv = d / "hostile.csv"
    pd.DataFrame({"path": items["path"], "label": items["label"], "group": items["group"],
                  "video_id": ids}).to_csv(csv, index=False)
    over = ["data=manifest", f"data.path={csv}", f"paths.cache_dir={d / 'cache'}",
            "extractor.n_frames=3", "extractor.progress=false", "projector=none",
            "classifier=logreg", "cv.n_splits=2", "name=hostile"]
    run(compose_run(over, d / "reference"))
    return over, d / "reference"


def test_score_tables_hold_no_formula_cell(hostile_run):
    import csv

    _, ref = hostile_run
    for name in ("frame_scores.csv", "video_scores.csv"):
        with open(ref / name, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        cells = [c for row in rows[1:] for c in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], name
        ids = [row[rows[0].index("video_id")] for row in rows[1:]]
        assert all(i.startswith(("'=", "'+", "'-", "'@")) for i in ids), ids[:4]


def _resource_limited(limit: int):
    def child():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return child


_RUN = """
import json, sys
from omegaconf import open_dict
from experiments.builders import compose
from experiments.run import run
cfg = compose(json.loads(sys.argv[1]))
with open_dict(cfg):
    cfg.paths.output_dir = sys.argv[2]
run(cfg)
"""


def test_a_filling_disk_leaves_every_output_whole_or_absent_and_names_the_file(
        hostile_run, tmp_path):
    """The run directory fills while results are written (a real run in a child process
    whose files may not grow past a limit: RLIMIT_FSIZE, a write past it fails with EFBIG as
    on a full disk). metrics.json comes first; the run stops naming the file it could not
    write; every file under a final name is whole (the same bytes as an unlimited run), and
    no temporary file is left."""
    import subprocess
    import sys

    from PIL import Image

    over, ref = hostile_run
    sizes = {n: (ref / n).stat().st_size for n in OUTPUTS}
    assert max(sizes, key=sizes.get) == "model.skops"
    for limit in (512, sizes["metrics.json"] + 512, sizes["roc.png"] + 512):
        out = tmp_path / f"limit-{limit}"
        proc = subprocess.run([sys.executable, "-c", _RUN, json.dumps(over), str(out)],
                              preexec_fn=_resource_limited(limit), capture_output=True,
                              text=True, timeout=600)
        first_missing = next(n for n in OUTPUTS if sizes[n] > limit)
        assert proc.returncode != 0, f"limit {limit}: the run did not fail"
        assert f"{out / first_missing}: not written (File too large)" in proc.stderr \
            or f"{out / first_missing}: could not write the model (File too large)" \
            in proc.stderr, proc.stderr[-2000:]
        there = sorted(p.name for p in out.iterdir()) if out.exists() else []
        assert not [n for n in there if n.endswith(".tmp")], there  # no temp file left
        assert there == sorted(OUTPUTS[:OUTPUTS.index(first_missing)]), (limit, there)
        for name in there:  # whole: what an unlimited run writes (its features cached)
            if name.endswith(".json"):
                got, want = (json.loads((d / name).read_text()) for d in (out, ref))
                for m in (got, want):
                    for key in ("seconds", "extraction", "n_extracted", "n_cached",
                                "faces_per_second", "n_frames", "n_faces"):
                        m.pop(key, None)
                    for p in m.get("pipelines", {}).values():
                        p.pop("seconds")
                assert got == want, name
            elif name == "roc.png":
                Image.open(out / name).verify()
            else:
                assert (out / name).read_bytes() == (ref / name).read_bytes(), name


def test_two_runs_of_one_name_started_together_never_share_a_directory(hostile_run, tmp_path):
    """Two runs of the same name started in the same second shared one run directory (the
    second's results lost, the provenance files mixed). The run directory pattern of
    conf/hydra/default.yaml is used with its clock coarsened to the year, so that the two
    runs certainly start "at the same time"."""
    import os
    import re
    import subprocess
    import sys

    import yaml

    over, _ = hostile_run
    pattern = yaml.safe_load((CONF / "hydra" / "default.yaml").read_text())["run"]["dir"]
    coarse = pattern.replace("%Y-%m-%d_%H-%M-%S", "%Y")
    assert coarse != pattern
    env = {**os.environ, "DEEPMETRIC_OUTPUTS": str(tmp_path / "outputs")}
    procs = [subprocess.Popen([sys.executable, "-m", "experiments.run", *over, f"seed={s}",
                               "plots=false", "save_model=false", f"hydra.run.dir={coarse}"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for s in (1, 2)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    dirs = sorted(p.parent for p in (tmp_path / "outputs" / "hostile").rglob("metrics.json"))
    assert len(dirs) == 2, dirs
    seeds = sorted(int(re.search(r"^seed: (\d+)$", (d / ".hydra" / "config.yaml").read_text(),
                                 re.M)[1]) for d in dirs)
    assert seeds == [1, 2]
    for d in dirs:
        overrides = (d / ".hydra" / "overrides.yaml").read_text()
        assert overrides.count("- seed=") == 1
