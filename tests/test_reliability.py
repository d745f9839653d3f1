"""Bad inputs through the real pipeline: each gives a recorded skip with its reason (or a
clear error naming the file with on_error="raise"), and never loses finished work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from deepmetric.datasets.items import validate_manifest
from deepmetric.features.extract import Extractor
from deepmetric.features.results import ExtractionError

pytestmark = pytest.mark.slow  # the real networks on real media


def _video(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    h, w = frames[0].shape[:2] if frames else (48, 64)
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        wr.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


@pytest.fixture(scope="module")
def face(faces_dir) -> np.ndarray:
    return np.asarray(Image.open(faces_dir / "test_images" / "kate_siegel" / "1.jpg")
                      .convert("RGB").resize((300, 430)))


def _make(kind: str, d: Path, face: np.ndarray, ffpp_dir: Path, faces_dir: Path) -> Path:
    if kind == "empty_mp4":
        (p := d / "empty.mp4").write_bytes(b"")
    elif kind == "text_as_mp4":
        (p := d / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    elif kind == "truncated_mp4":
        src = sorted((ffpp_dir / "original_sequences/youtube/c23/videos").glob("*.mp4"))[1]
        (p := d / "truncated.mp4").write_bytes(src.read_bytes()[:30_000])
    elif kind == "zero_frame_clip":
        p = _video(d / "zero.mp4", [])
    elif kind == "one_frame_clip":
        p = _video(d / "one.mp4", [face])
    elif kind == "short_clip":
        p = _video(d / "short.mp4", [face] * 3)
    elif kind == "no_face_image":
        Image.fromarray(np.full((300, 300, 3), 120, np.uint8)).save(p := d / "wall.png")
    elif kind == "several_faces":
        p = faces_dir / "multiface.jpg"
    elif kind == "grayscale_image":
        Image.fromarray(face).convert("L").save(p := d / "gray.png")
    elif kind == "rgba_image":
        Image.fromarray(face).convert("RGBA").save(p := d / "rgba.png")
    elif kind == "tiny_image":
        Image.fromarray(face).resize((16, 16)).save(p := d / "tiny.png")
    elif kind == "8k_image":
        big = np.full((4320, 7680, 3), 200, np.uint8)
        portrait = np.asarray(Image.fromarray(face).resize((900, 1290)))
        big[1000:2290, 3000:3900] = portrait  # a ~350-px face: ~30 px at 640, ~90 at 1920
        Image.fromarray(big).save(p := d / "big8k.jpg", quality=80)
    elif kind == "8k_image_retry":
        p = _make("8k_image", d, face, ffpp_dir, faces_dir)
    elif kind == "corrupt_png":
        good = d / "good.png"
        Image.fromarray(face).save(good)
        (p := d / "corrupt.png").write_bytes(good.read_bytes()[:200])
    elif kind == "odd_name":
        Image.fromarray(face).save(p := d / "visage été 顔 (1).png")
    else:  # pragma: no cover
        raise ValueError(kind)
    return p


# kind -> expected outcome: "ok" (features), "no_face" (recorded), "failed" (recorded skip)
CASES = {
    "empty_mp4": "failed", "text_as_mp4": "failed", "truncated_mp4": "failed",
    "zero_frame_clip": "failed", "one_frame_clip": "ok", "short_clip": "ok",
    "no_face_image": "no_face", "several_faces": "ok", "grayscale_image": "ok",
    "rgba_image": "ok", "tiny_image": "no_face",
    # a 300-px face in an 8K frame is under MTCNN's minimum on the 640-px detection copy:
    # recorded as "no face" unless the high-resolution retry is on
    "8k_image": "no_face", "8k_image_retry": "ok", "corrupt_png": "failed",
    "odd_name": "ok",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input_matrix(kind, tmp_path, face, ffpp_dir, faces_dir, detector, embedder):
    path = _make(kind, tmp_path, face, ffpp_dir, faces_dir)
    good = faces_dir / "test_images" / "paul_rudd" / "1.jpg"
    items = validate_manifest(pd.DataFrame({"path": [str(good), str(path)], "label": [0, 1],
                                            "video_id": ["good", kind]}))
    if kind == "8k_image_retry":
        from deepmetric.video.faces import FaceDetector

        detector = FaceDetector(device="cpu", retry_max_side=1920)
    ex = Extractor(detector, embedder, n_frames=25, cache_dir=tmp_path / "cache",
                   progress=False)
    with pytest.warns(UserWarning) if CASES[kind] == "failed" else _nullcontext():
        report = ex.run(items)
    assert ex.cache.has(good)  # the good item is always done
    expected = CASES[kind]
    if expected == "failed":
        assert [f["video_id"] for f in report.failures] == [kind]
        assert report.failures[0]["error"]  # a reason, and the path alongside it
        assert Path(report.failures[0]["path"]).name == path.name
        with pytest.raises(ExtractionError, match=path.name.replace("(", r"\(")
                           .replace(")", r"\)")):
            Extractor(detector, embedder, cache_dir=tmp_path / "c2", on_error="raise",
                      progress=False).run(items.iloc[[1]])
    elif expected == "no_face":
        assert report.no_face == [kind] and not report.failures
    else:
        assert not report.failures and not report.no_face
        feats = ex.features(items)
        assert set(feats.frames["video_id"]) == {"good", kind}
    if kind == "short_clip":
        assert ex.cache.load(path)["frame_index"].tolist() == [0, 1, 2]
    if kind == "several_faces":
        arr = ex.cache.load(path)
        assert arr["n_faces"][0] == 6 and arr["found"][0]


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- round two: images read right, a pixel bound, short clips, config errors, predict ------

KATE = ("test_images", "kate_siegel", "1.jpg")


def _png(path: Path, width: int, height: int) -> Path:
    """A real, valid 1-bit black PNG of any size: a few KiB on disk however many pixels
    (rows of zeros compress ~1000:1): the shape of a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n"
                     + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def _exif_rotated(photo: Path, dest: Path) -> Path:
    """The photo stored turned 90 degrees counter-clockwise with EXIF orientation 6 (display
    turned 90 degrees clockwise): what a phone held upright writes."""
    im = Image.open(photo).convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(dest, quality=95, exif=exif)
    return dest


def test_exif_orientation_is_applied(tmp_path, faces_dir, detector):
    from deepmetric.video.frames import read_image

    photo = faces_dir.joinpath(*KATE)
    upright = read_image(photo)
    path = _exif_rotated(photo, tmp_path / "phone.jpg")
    read = read_image(path)
    assert read.shape == upright.shape  # (H, W) of the upright photo, not (W, H)
    assert np.abs(read.astype(int) - upright).mean() < 4  # JPEG re-encoding only
    stored = np.asarray(Image.open(path).convert("RGB"))  # the pixels as stored, sideways
    assert stored.shape[:2] == upright.shape[1::-1]
    assert detector.detect([read]).found.tolist() == [True]
    assert detector.detect([np.ascontiguousarray(stored)]).found.tolist() == [False]


def test_16_bit_png_is_scaled_not_clipped(tmp_path, faces_dir):
    from deepmetric.video.frames import read_image

    photo = faces_dir.joinpath(*KATE)
    rgb8 = np.asarray(Image.open(photo).convert("RGB").resize((300, 430)))
    gray8 = np.asarray(Image.fromarray(rgb8).convert("L"))
    # grayscale 16-bit (PNG mode I;16): 65535 is white
    Image.fromarray((gray8.astype(np.uint16) * 257)).save(tmp_path / "gray16.png")
    got = read_image(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode.startswith("I")
    assert np.abs(got.astype(int) - gray8[..., None]).max() <= 1
    assert got.mean() < 250  # not clipped to white
    # colour 48-bit PNG (written by OpenCV, BGR order)
    cv2.imwrite(str(tmp_path / "rgb16.png"),
                cv2.cvtColor(rgb8, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    got = read_image(tmp_path / "rgb16.png")
    assert np.abs(got.astype(int) - rgb8).max() <= 1
    # 16-bit TIFF
    Image.fromarray((gray8.astype(np.uint16) * 257)).save(tmp_path / "gray16.tif")
    assert np.abs(read_image(tmp_path / "gray16.tif").astype(int) - gray8[..., None]).max() <= 1


def test_float_tiff_is_scaled_from_its_range(tmp_path, faces_dir, detector):
    from deepmetric.video.frames import read_image

    gray8 = np.asarray(Image.open(faces_dir.joinpath(*KATE)).convert("L").resize((300, 430)))
    unit = gray8.astype(np.float32) / 255.0  # [0, 1]
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    got = read_image(tmp_path / "unit.tif")
    assert np.abs(got.astype(int) - gray8[..., None]).max() <= 1
    assert detector.detect([got]).found.tolist() == [True]
    # outside [0, 1]: scaled from its own min/max
    wide = gray8.astype(np.float32) * 4.0 - 100.0
    Image.fromarray(wide, mode="F").save(tmp_path / "wide.tif")
    got = read_image(tmp_path / "wide.tif")
    lo, hi = gray8.min(), gray8.max()
    want = (gray8.astype(float) - lo) / (hi - lo) * 255
    assert np.abs(got[..., 0] - want).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_pixel_bound_refuses_from_the_header(tmp_path, faces_dir, monkeypatch):
    import warnings as _warnings

    from deepmetric.video.frames import MAX_PIXELS, MediaError, read_frames, read_image

    big = _png(tmp_path / "huge 13k.png", 13_000, 13_000)  # 169 MP, under Pillow's bomb limit
    assert big.stat().st_size < 1_000_000
    assert 13_000 ** 2 > MAX_PIXELS
    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")  # Pillow's DecompressionBombWarning at open
        with pytest.raises(MediaError, match=r"huge 13k\.png: image too large: 13000x13000"):
            read_frames(big)
    bomb = _png(tmp_path / "bomb.png", 30_000, 30_000)  # over Pillow's own limit
    with pytest.raises(MediaError, match=r"bomb\.png: image too large"):
        read_image(bomb, max_pixels=10**12)
    # configurable, per call and for the process
    photo = faces_dir.joinpath(*KATE)
    with pytest.raises(MediaError, match=r"1\.jpg: image too large: 1125x1612"):
        read_image(photo, max_pixels=1_000_000)
    monkeypatch.setenv("DEEPMETRIC_MAX_PIXELS", "1000000")
    with pytest.raises(MediaError, match="1125x1612"):
        read_image(photo)
    monkeypatch.setenv("DEEPMETRIC_MAX_PIXELS", "2e6")
    assert read_image(photo).shape == (1612, 1125, 3)


def _truncated_avi(ffpp_dir: Path, dest: Path, n: int = 50, keep: float = 0.4) -> Path:
    """The first ``n`` frames of a real FF++ clip as an MJPG AVI, cut to ``keep`` of its
    bytes: the header still counts ``n`` frames, the data ends early."""
    src = sorted((ffpp_dir / "original_sequences/youtube/c23/videos").glob("*.mp4"))[0]
    cap = cv2.VideoCapture(str(src))
    full = dest.with_name("full.avi")
    wr = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 25, (480, 270))
    for _ in range(n):
        ok, bgr = cap.read()
        assert ok
        wr.write(cv2.resize(bgr, (480, 270)))
    wr.release()
    cap.release()
    data = full.read_bytes()
    dest.write_bytes(data[:int(len(data) * keep)])
    full.unlink()
    return dest


def test_short_clip_is_recorded_and_warned(tmp_path, ffpp_dir, faces_dir, detector, embedder):
    from deepmetric.video.frames import read_frames

    cut = _truncated_avi(ffpp_dir, tmp_path / "cut.avi")
    fr = read_frames(cut, 25)
    assert fr.n_asked == 25 and 0 < fr.n_read < 25
    good = faces_dir.joinpath(*KATE)
    items = validate_manifest(pd.DataFrame({"path": [str(good), str(cut)], "label": [0, 1],
                                            "video_id": ["good", "cut"]}))
    ex = Extractor(detector, embedder, n_frames=25, cache_dir=tmp_path / "cache",
                   progress=False)
    with pytest.warns(UserWarning, match=rf"cut\.avi \({fr.n_read} of 25\)"):
        report = ex.run(items)
    assert report.short == [{"video_id": "cut", "path": str(cut), "read": fr.n_read,
                             "asked": 25}]
    assert report.to_dict()["short"] == report.short
    assert f"SHORT {cut}: {fr.n_read} of 25 frames read" in report.summary()
    assert int(ex.cache.load(cut)["n_asked"]) == 25
    assert set(ex.features(items).frames["video_id"]) <= {"good", "cut"}
    assert ex.cache.has(good)
    # a clip shorter than asked is not short: all of it was read
    whole = _video(tmp_path / "three.mp4", [np.asarray(Image.open(good).convert("RGB")
                                                      .resize((300, 430)))] * 3)
    items = validate_manifest(pd.DataFrame({"path": [str(whole)], "label": [1],
                                            "video_id": ["three"]}))
    assert Extractor(detector, embedder, n_frames=25, cache_dir=tmp_path / "cache",
                     progress=False).run(items).short == []


@pytest.mark.parametrize("n_frames", [0, -3, 2.5])
def test_n_frames_is_checked_at_once(n_frames, detector, embedder):
    with pytest.raises(ValueError, match="n_frames"):
        Extractor(detector, embedder, n_frames=n_frames)


def test_self_blend_only_without_copies_is_refused(faces_dir):
    from deepmetric.datasets.items import add_self_blended

    photo = faces_dir.joinpath(*KATE)
    other = faces_dir / "test_images" / "paul_rudd" / "1.jpg"  # one file has one label
    items = validate_manifest(pd.DataFrame({"path": [str(photo), str(other)], "label": [0, 1],
                                            "video_id": ["a", "b"]}))
    with pytest.raises(ValueError, match="only=True.*copies >= 1"):
        add_self_blended(items, 0, only=True)
    assert len(add_self_blended(items, 0)) == 2  # without `only`, 0 copies is a no-op


def test_refused_weights_stop_the_run_with_their_own_error(tmp_path, faces_dir, detector):
    import argparse

    import torch

    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.backbones.weights import WeightsError

    evil = tmp_path / "weights.pt"
    torch.save({"model": argparse.Namespace(payload="not a tensor")}, evil)
    items = validate_manifest(pd.DataFrame({"path": [str(faces_dir.joinpath(*KATE))],
                                            "label": [0], "video_id": ["a"]}))
    ex = Extractor(detector, FaceEmbedder(weights_path=str(evil), device="cpu"),
                   cache_dir=tmp_path / "cache", progress=False)
    with pytest.raises(WeightsError, match=r"weights\.pt: not a loadable state dict") as err:
        ex.run(items)
    assert "Extractor.run(manifest) first" not in str(err.value)
    assert not ex.cache.has(items.path[0])


# -- deepmetric predict over a folder of good and bad items --------------------------------

LEGACY_MODEL = Path(__file__).parent / "data" / "model-0.1.0.joblib"


@pytest.fixture(scope="module")
def batch_dir(tmp_path_factory, faces_dir, ffpp_dir) -> Path:
    d = tmp_path_factory.mktemp("batch")
    _png(d / "a_bomb.png", 30_000, 30_000)
    Image.open(faces_dir.joinpath(*KATE)).save(d / "b_face.jpg")
    _exif_rotated(faces_dir / "test_images" / "paul_rudd" / "1.jpg", d / "c_phone.jpg")
    clip = sorted((ffpp_dir / "original_sequences/youtube/c23/videos").glob("*.mp4"))[0]
    (d / "d_clip.mp4").symlink_to(clip)
    (d / "e_notes.mp4").write_text("not a video\n" * 10)
    Image.fromarray(np.full((200, 200, 3), 120, np.uint8)).save(d / "f_wall.png")
    return d


@pytest.fixture(scope="module")
def data_model(tmp_path_factory) -> Path:
    """The 0.1.0 fixture model as a data file (model.skops), what predict gets now."""
    from deepmetric.model import DeepfakeModel

    with pytest.warns(UserWarning, match="loading a pickle"):
        model = DeepfakeModel.load(LEGACY_MODEL, trust_pickle=True)
    return model.save(tmp_path_factory.mktemp("model") / "model.skops")


def _predict(cli, *argv: object) -> tuple[int, list[str], str]:
    """``deepmetric predict ARGV...`` in this process: exit status, stdout lines, stderr."""
    proc = cli("predict", *argv)
    return proc.returncode, proc.stdout.splitlines(), proc.stderr


def _video_level_model(tmp_path: Path) -> Path:
    from deepmetric.model import DeepfakeModel

    with pytest.warns(UserWarning, match="loading a pickle"):
        model = DeepfakeModel.load(LEGACY_MODEL, trust_pickle=True)
    model.temporal = ["std"]  # the frame head reads the 512-d std row: a video-level model
    return model.save(tmp_path / "video-level.skops")


def test_predict_scores_every_scorable_item_and_names_the_rest(batch_dir, data_model, cli):
    code, lines, err = _predict(cli, data_model, batch_dir)
    assert code == 1
    rows = {}
    for ln in lines:
        name = next(n for n in ("a_bomb.png", "b_face.jpg", "c_phone.jpg", "d_clip.mp4",
                                "e_notes.mp4", "f_wall.png") if n in ln)
        rows[name] = ln
    assert len(rows) == len(lines) == 6  # one row per item, in order, none lost
    for name in ("b_face.jpg", "c_phone.jpg", "d_clip.mp4"):
        assert rows[name].split()[0] in ("REAL", "FAKE"), rows[name]
    assert "(1/1 frames with a face" in rows["c_phone.jpg"]  # upright: the face is found
    assert re.search(r"a_bomb\.png: image too large", rows["a_bomb.png"])
    assert re.search(r"e_notes\.mp4: cannot open as video", rows["e_notes.mp4"])
    assert re.search(r"f_wall\.png: no face", rows["f_wall.png"])
    assert "3 of 6 item(s) failed" in err
    assert all(n in err for n in ("a_bomb.png", "e_notes.mp4", "f_wall.png"))


def test_predict_json_rows_and_exit_status(batch_dir, data_model, cli):
    code, lines, _ = _predict(cli, data_model, batch_dir / "a_bomb.png",
                              batch_dir / "b_face.jpg", "--json")
    recs = [json.loads(ln) for ln in lines]
    assert code == 1 and [Path(r["path"]).name for r in recs] == ["a_bomb.png", "b_face.jpg"]
    assert recs[0]["error_type"] == "MediaError" and "too large" in recs[0]["error"]
    assert 0.0 <= recs[1]["score"] <= 1.0 and "error" not in recs[1]
    code, _, err = _predict(cli, data_model, batch_dir / "b_face.jpg")
    assert code == 0 and not err


def test_predict_video_level_model_names_images_and_scores_clips(batch_dir, tmp_path, cli):
    model = _video_level_model(tmp_path)
    code, lines, err = _predict(cli, model, batch_dir / "b_face.jpg", batch_dir / "d_clip.mp4")
    assert code == 1 and len(lines) == 2
    assert lines[0].startswith(f"ERROR   {batch_dir / 'b_face.jpg'}: ")
    assert "needs faces in at least" in lines[0]
    assert lines[1].split()[0] in ("REAL", "FAKE") and "d_clip.mp4" in lines[1], lines[1]
    assert "(4/4 frames with a face" in lines[1]
    assert "1 of 2 item(s) failed" in err


# -- round three: one-class training data, a cache file missing an array, one file under two
# paths with different labels -----------------------------------------------------------------

def _photos(faces_dir: Path) -> list[Path]:
    return sorted((faces_dir / "test_images").rglob("1.jpg"))[:4]


def test_cache_file_missing_a_feature_array_is_extracted_again(tmp_path, faces_dir, detector,
                                                               embedder):
    from deepmetric.features.cache import read_npz, write_npz

    good, damaged = _photos(faces_dir)[:2]
    items = validate_manifest(pd.DataFrame({"path": [str(good), str(damaged)], "label": [0, 1],
                                            "video_id": ["good", "damaged"]}))
    ex = Extractor(detector, embedder, cache_dir=tmp_path / "cache", progress=False)
    ex.run(items)
    before = ex.features(items).X
    file = ex.cache.path_for(damaged)
    arrays = read_npz(file)
    del arrays["embedding"]  # e.g. written by a tool that dropped a block
    write_npz(file, arrays)
    with pytest.raises(KeyError, match=rf"'embedding' is not in the cache for {damaged}: the "
                                       r"file lacks it; Extractor.run\(manifest\) extracts"):
        ex.features(items)
    report = ex.run(items)  # no KeyError: the file is extracted again, the good one reused
    assert (report.n_extracted, report.n_cached, report.failures) == (1, 1, [])
    feats = ex.features(items)
    assert list(feats.frames["video_id"]) == ["good", "damaged"]  # both scored
    np.testing.assert_allclose(feats.X, before, atol=1e-6)


def test_one_file_through_two_paths_with_different_labels_is_refused(tmp_path, faces_dir):
    from deepmetric.datasets.items import ManifestError

    photo, other = _photos(faces_dir)[:2]
    (tmp_path / "a").mkdir()
    (link := tmp_path / "a" / "link.jpg").symlink_to(photo)
    dotted = f"{photo.parent}/../{photo.parent.name}/{photo.name}"  # no link: a/../a/x.jpg
    for second in (str(link), dotted):
        df = pd.DataFrame({"path": [str(photo), str(other), second], "label": [0, 0, 1],
                           "video_id": ["a", "b", "c"]})
        with pytest.raises(ManifestError, match=r"rows 1 and 3: one file through two paths "
                           r"with different labels") as err:
            validate_manifest(df, source="labels.csv")
        assert str(photo) in str(err.value) and second in str(err.value)
        assert "labels.csv" in str(err.value)
    # the same file twice with one label stays valid (e.g. a clip listed in two folders)
    same = validate_manifest(pd.DataFrame({"path": [str(photo), str(link)], "label": [0, 0],
                                           "video_id": ["a", "b"]}))
    assert len(same) == 2


def test_one_class_training_data_is_refused_naming_the_fold(tmp_path, faces_dir, detector,
                                                            embedder):
    """A CV fold whose training part has one class fails before fitting, naming the fold."""
    from sklearn.linear_model import LogisticRegression

    from deepmetric.eval.evaluation import evaluate

    photos = _photos(faces_dir)
    items = validate_manifest(pd.DataFrame({
        "path": [str(p) for p in photos], "label": [0, 0, 1, 1],
        # both fakes in one identity group: the fold that tests them trains on reals only
        "group": ["r1", "r2", "f", "f"], "video_id": ["a", "b", "c", "d"]}))
    ex = Extractor(detector, embedder, cache_dir=tmp_path / "cache", progress=False)
    ex.run(items)
    feats = ex.features(items)
    with pytest.raises(ValueError, match=r"training part of fold \d of 2 \(grouped CV\): "
                                         r"training needs both real \(0\) and fake \(1\) "
                                         r"items; it has only real \(0\): all \d row\(s\)"):
        evaluate(LogisticRegression(), feats.X, feats.frames, n_splits=2)


# -- issue #33: output a name cannot forge, under any locale --------------------------------------

def test_predict_output_cannot_be_forged_by_a_name_nor_stopped_by_its_bytes(
        cli, tmp_path, faces_dir, data_model):
    """A name holding a newline and a fake result line, and a name that is not UTF-8, under a
    strict UTF-8 locale: one line per file, each name escaped, every item scored (the
    undecodable name stopped the batch mid-way; the newline forged a line)."""
    import os
    import subprocess
    import sys

    folder = tmp_path / "uploads"
    folder.mkdir()
    photo = faces_dir.joinpath(*KATE).read_bytes()
    names = [b"a plain.jpg", b"b bad\xff\xfename.jpg",
             b"c.jpg\nFAKE    0.999  someone_else.jpg", b"d \x1b[2Jclear.jpg"]
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as fh:
            fh.write(photo)
    env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8", "PYTHONUTF8": "0",
           "PYTHONIOENCODING": "utf-8:strict"}
    # JSON lines are ASCII whatever the names: in this process
    recs = [json.loads(ln) for ln in cli("predict", data_model, folder, "--json").stdout
            .splitlines()]
    assert len(recs) == 4 and all(0 <= r["score"] <= 1 for r in recs)
    assert {os.fsencode(r["path"]).rsplit(b"/", 1)[1] for r in recs} == set(names)
    # text lines under a strict UTF-8 locale: the command's own process
    proc = subprocess.run([sys.executable, "-m", "deepmetric.cli", "predict", str(data_model),
                           str(folder)], capture_output=True, env=env, timeout=600)
    out = proc.stdout.decode("utf-8")  # strict: valid UTF-8
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    lines = out.splitlines()
    assert len(lines) == 4, out  # one line per file: nothing forged
    assert all(ln.split()[0] in ("REAL", "FAKE") for ln in lines), out
    assert "b bad\\xff\\xfename.jpg" in lines[1]
    assert "c.jpg\\nFAKE    0.999  someone_else.jpg" in lines[2]
    assert "d \\x1b[2Jclear.jpg" in lines[3] and "\x1b" not in out
