"""The app's logic on real fixtures: a face, no face, a corrupt file, an oversized file,
unsupported types, kept uploads, reports; and its command line.

The model is trained here by ``experiments.run.run`` on a small built-in demo set (the
config the users run, shrunk), so the test exercises the saved ``model.skops``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # the real networks on real media

pytest.importorskip("sqlalchemy")

CONF = Path(__file__).resolve().parents[2] / "experiments" / "conf"


def build_demo_model(out_dir: Path) -> Path:
    """Train ``exp=triplet_rf`` on 4+4 demo clips of 8 frames; return its model.skops.

    The extraction settings equal tests/test_explain.py's, so both reuse one feature cache.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from deepmetric.storage import cache_root
    from experiments.run import run

    overrides = [
        "exp=triplet_rf", f"paths.cache_dir={cache_root()}",
        "data.n_clips=4", "data.frames=8", "extractor.n_frames=8", "extractor.progress=false",
        "cv.n_splits=2", "plots=false", "projector.epochs=20", "projector.device=cpu",
        "projector.validation_fraction=0", "classifier.n_estimators=50", "classifier.n_jobs=1",
        "embedder.device=cpu", "detector.device=cpu",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    run(cfg)
    path = out_dir / "model.skops"
    assert path.is_file()
    return path


_BUILT: list[Path] = []


def demo_model(tmp_path_factory) -> Path:
    """The demo model, trained once per test session (test_app_browser.py shares it)."""
    if not _BUILT:
        _BUILT.append(build_demo_model(tmp_path_factory.mktemp("app-model")))
    return _BUILT[0]


@pytest.fixture(scope="session")
def model_path(tmp_path_factory) -> Path:
    return demo_model(tmp_path_factory)


@pytest.fixture(scope="session")
def app_factory(model_path, tmp_path_factory):
    from experiments.app import make_app, parse_args

    def make(*extra: str):
        db = tmp_path_factory.mktemp("db") / "reports.db"
        return make_app(parse_args([f"model={model_path}", f"db={db}", *extra]))
    return make


@pytest.fixture(scope="session")
def app(app_factory):
    return app_factory()


@pytest.fixture(scope="session")
def face_image(faces_dir) -> Path:
    return faces_dir / "test_images" / "paul_rudd" / "1.jpg"


def test_image_with_a_face(app, face_image):
    from experiments.reports import file_sha256
    from experiments.app_figures import gallery_items, score_figure

    a = app.analyze(face_image)
    assert a.ok and a.error is None
    assert 0 <= a.score <= 1 and a.verdict in ("real", "fake")
    assert a.verdict == ("fake" if a.score >= app.model.threshold else "real")
    assert (a.n_frames, a.n_faces) == (1, 1) and a.seconds > 0
    assert a.sha256 == file_sha256(face_image)
    assert a.score == pytest.approx(app.model.predict(face_image)["score"])
    assert len(a.frames) == 1 and a.frames[0]["heatmap"].shape == (160, 160)
    assert a.explanation["target"] == "prototype-surrogate"        # a random forest head
    assert "P(fake) = " in a.message and a.verdict.upper() in a.message
    assert f"{a.score:.3f}" in a.message and " s" in a.message
    assert app.model.version.replace("_", "") in a.message.replace("\\", "").replace("_", "")
    fig = score_figure(a, app.model.threshold)
    assert fig.axes and fig.axes[0].get_ylabel() == "P(fake)"
    (img, caption), = gallery_items(a)
    assert img.shape == (160, 324, 3) and img.dtype == np.uint8 and "frame 0" in caption


def _demo_clip(label: int) -> Path:
    """A clip of the demo set the model fixture was trained on (cached: no rebuild)."""
    from deepmetric.storage import cache_root
    from deepmetric.datasets import demo

    items = demo.load(root=cache_root() / "demo", n_clips=4, frames=8)
    return Path(items[items["label"] == label]["path"].iloc[0])


def test_clip(app, model_path):
    a = app.analyze(_demo_clip(1))
    assert a.ok and a.n_frames == 8 and len(a.frame_scores) == a.n_faces
    assert len(a.frames) == 3
    scores = a.frame_scores["fake_score"].to_numpy()
    picked = sorted((f["score"] for f in a.frames), reverse=a.verdict == "fake")
    expected = np.sort(scores)[::-1][:3] if a.verdict == "fake" else np.sort(scores)[:3]
    np.testing.assert_allclose(picked, expected)


def test_image_without_a_face(app, tmp_path):
    from PIL import Image
    from skimage import data

    p = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(p)
    a = app.analyze(p)
    assert not a.ok and a.error == "no_face"
    assert "No face found" in a.message and "coffee" in a.message
    assert a.sha256 is not None and a.score is None


@pytest.mark.parametrize("content", [b"this is not a jpeg at all",
                                     b"\xff\xd8\xff\xe0" + b"\0" * 64],
                         ids=["text", "truncated-jpeg"])
def test_corrupt_image(app, tmp_path, content):
    p = tmp_path / "holiday photo.jpg"
    p.write_bytes(content)
    a = app.analyze(p)
    assert not a.ok and a.error == "unreadable"
    assert "Could not read" in a.message and "corrupt" in a.message
    assert str(tmp_path) not in a.message            # no server path shown


def test_corrupt_clip(app, tmp_path, model_path):
    good = _demo_clip(0).read_bytes()
    p = tmp_path / "cut.mp4"
    p.write_bytes(good[: len(good) // 20])           # truncated: header without the frames
    a = app.analyze(p, name="my clip.mp4")
    assert not a.ok and a.error in ("unreadable", "no_face")
    assert "my clip" in a.message and str(tmp_path) not in a.message


def test_oversized_empty_unsupported_and_missing(app_factory, face_image, tmp_path):
    small = app_factory("max_mb=0.01")                # 10 KiB
    assert face_image.stat().st_size > small.max_bytes
    a = small.analyze(face_image)
    assert not a.ok and a.error == "too_large"
    assert "File too large" in a.message and "0.01 MiB" in a.message
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert small.analyze(empty).error == "unreadable"
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    u = small.analyze(txt)
    assert u.error == "unsupported" and ".mp4" in u.message and ".jpg" in u.message
    assert small.analyze(tmp_path / "gone.jpg").error == "missing"
    assert small.analyze(None).error == "missing"


def test_uploads_are_kept_only_when_configured(app_factory, face_image, tmp_path):
    from experiments.reports import file_sha256

    keep = tmp_path / "kept"
    app = app_factory(f"keep_uploads={keep}", "explain_frames=0")
    weird = tmp_path / "x" / "..;rm -rf ~.jpg"      # a hostile name never becomes a path
    weird.parent.mkdir(parents=True, exist_ok=True)
    weird.write_bytes(face_image.read_bytes())
    a = app.analyze(weird)
    assert a.ok and a.frames == [] and "Heat maps" not in a.message
    sha = file_sha256(face_image)
    assert sorted(p.name for p in keep.iterdir()) == [f"{sha}.jpg"]
    assert (keep / f"{sha}.jpg").read_bytes() == face_image.read_bytes()
    app.analyze(weird)                                 # same content: still one file
    assert len(list(keep.iterdir())) == 1
    # issue #33: a file the model could not score is never kept
    from PIL import Image
    from skimage import data

    Image.fromarray(data.coffee()).save(no_face := tmp_path / "coffee.png")
    (corrupt := tmp_path / "cut.jpg").write_bytes(face_image.read_bytes()[:300])
    assert app.analyze(no_face).error == "no_face"
    assert app.analyze(corrupt).error == "unreadable"
    assert sorted(p.name for p in keep.iterdir()) == [f"{sha}.jpg"]


def test_reports(app_factory, face_image):
    app = app_factory("explain_frames=0")
    a = app.analyze(face_image)
    assert "Analyse a file first" in app.report(None, "unsure")
    assert "Choose" in app.report(a, None)
    msg = app.report(a, "manipulated", "  teeth look odd ")
    assert msg.startswith("Report #") and "manipulated" in msg
    bad = app.analyze(Path("/nonexistent/x.jpg"))
    assert "Only a file the model could score" in app.report(bad, "authentic")
    assert "not saved" in app.report(a, "unsure", "x" * 2001)
    rows = app.store.list()
    assert len(rows) == 1
    r = rows[0]
    assert (r.sha256, r.label, r.comment) == (a.sha256, "manipulated", "teeth look odd")
    assert r.score == pytest.approx(a.score) and r.model_version == app.model.version
    assert r.verdict == a.verdict


def test_command_line_options(model_path):
    from experiments.app import DEFAULTS, parse_args

    o = parse_args([f"model={model_path}", "port=0", "max_mb=2.5", "db=sqlite:///x.db",
                    "keep_uploads=up", "method=gradcam++"])
    assert (o["port"], o["max_mb"], o["db"], o["keep_uploads"], o["method"]) \
        == (0, 2.5, "sqlite:///x.db", "up", "gradcam++")
    assert o["host"] == DEFAULTS["host"] == "127.0.0.1"
    with pytest.raises(SystemExit, match="bad argument 'prot=1'"):
        parse_args([f"model={model_path}", "prot=1"])
    with pytest.raises(SystemExit, match="port must be int"):
        parse_args([f"model={model_path}", "port=abc"])
    assert parse_args(["port=1"])["model"] == ""  # the packaged model
    assert o["trust_pickle"] is False
    assert parse_args([f"model={model_path}", "trust_pickle=true"])["trust_pickle"] is True
    with pytest.raises(SystemExit, match="trust_pickle must be true or false, got 'yes'"):
        parse_args([f"model={model_path}", "trust_pickle=yes"])
    with pytest.raises(SystemExit) as e:
        parse_args(["--help"])
    assert e.value.code == 0


def test_the_app_loads_a_pickle_only_when_told_to_trust_it(tmp_path):
    """Issue #20: a model.joblib (a pickle) is refused before it is read, unless trusted."""
    from deepmetric.modelfile import UntrustedModelError
    from experiments.app import DEFAULTS, make_app

    legacy = Path(__file__).resolve().parents[1] / "data" / "model-0.1.0.joblib"
    opts = {**DEFAULTS, "model": str(legacy), "db": str(tmp_path / "reports.db")}
    with pytest.raises(UntrustedModelError, match=r"model-0\.1\.0\.joblib: refused: .*pickle"):
        make_app(opts)
    with pytest.warns(UserWarning, match="loading a pickle"):
        app = make_app({**opts, "trust_pickle": True})
    assert type(app.model).__name__ == "DeepfakeModel"


def test_the_ui_builds(app):
    pytest.importorskip("gradio")
    ui = app.build()
    ids = {getattr(b, "elem_id", None) for b in ui.blocks.values()}
    assert {"upload", "analyze", "verdict", "frame-plot", "heatmaps", "report-label",
            "report-comment", "report-submit", "report-status"} <= ids


def test_the_app_opens_with_the_packaged_model_and_warns_for_a_smoke_test(app, tmp_path):
    """Issue #32: no model= → the packaged model, named with its limits in the header; the
    demo model (a smoke test) gets a warning there instead."""
    gr = pytest.importorskip("gradio")
    from experiments.app import DEFAULTS, make_app

    def header(a) -> str:
        return next(b.value for b in a.build().blocks.values() if isinstance(b, gr.Markdown))

    packaged = make_app({**DEFAULTS, "db": str(tmp_path / "reports.db")})
    assert packaged.model.version.startswith("cross_dataset-")
    top = header(packaged)
    assert "Packaged model cross\\_dataset: fitted on a FaceForensics\\+\\+ sample" in top
    assert "smoke-test" not in top
    assert "**Warning: a smoke-test model.** It was trained on deepmetric's built\\-in demo" \
        in header(app)


def test_the_reports_database_defaults_to_the_data_folder(tmp_path, monkeypatch):
    """Not the working directory: ``$DEEPMETRIC_DATA/reports.db`` (the folder created)."""
    from experiments.app import default_reports_db

    monkeypatch.setenv("DEEPMETRIC_DATA", str(tmp_path / "data"))
    assert default_reports_db() == str(tmp_path / "data" / "reports.db")
    assert (tmp_path / "data").is_dir()
    monkeypatch.delenv("DEEPMETRIC_DATA")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_reports_db() == str(tmp_path / "xdg" / "deepmetric" / "reports.db")
