"""Manifest CSV adapter: CSVs written to tmp_path pointing at the DFDC crop fixture."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepmetric.datasets import manifest
from deepmetric.datasets.items import ManifestError

VALID = ["0", "1", "real", "fake", "REAL", "Fake", " fake ", "1 "]
# every spelling parse_label accepts, lower-cased and stripped
ACCEPTED = {"0", "1", "real", "fake", "original", "pristine", "authentic", "manipulated",
            "deepfake", "synthesis"}


def _write(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def crops(dfdc_dir: Path) -> list[Path]:
    return sorted((dfdc_dir / "prepared_dataset").rglob("*.png"))


def test_relative_and_absolute_paths(tmp_path: Path, crops: list[Path]):
    img = tmp_path / "imgs" / "a.png"
    img.parent.mkdir()
    shutil.copy(crops[0], img)
    csv_path = _write(tmp_path / "m.csv", ["path", "label", "group", "split", "extra"],
                      [["imgs/a.png", "real", "g1", "train", "x"],
                       [str(crops[1]), "1", "", "test", "y"]])
    m = manifest.load(csv_path)
    assert m["path"].tolist() == [str(img), str(crops[1])]
    assert m["label"].tolist() == [0, 1]
    assert m["video_id"].tolist() == ["imgs/a.png", str(crops[1])]
    assert m["group"].tolist() == ["g1", str(crops[1])]  # empty group → video_id
    assert m["split"].tolist() == ["train", "test"] and m["extra"].tolist() == ["x", "y"]
    assert m["kind"].tolist() == ["image", "image"]


def test_spaces_and_non_ascii_paths(tmp_path: Path, crops: list[Path]):
    name = tmp_path / "dossier élève" / "visage 顔 ñ.png"
    name.parent.mkdir()
    shutil.copy(crops[0], name)
    csv_path = _write(tmp_path / "liste données.csv", ["path", "label", "video_id"],
                      [["dossier élève/visage 顔 ñ.png", "fake", "顔"]])
    m = manifest.load(csv_path)
    assert m["path"].item() == str(name) and Path(m["path"].item()).is_file()
    assert m["video_id"].item() == "顔" and m["label"].item() == 1


def test_bom_and_method_column(tmp_path: Path, crops: list[Path]):
    p = tmp_path / "bom.csv"
    p.write_text(f"path,label,method\n{crops[0]},real,real\n", encoding="utf-8-sig")
    assert manifest.load(p)["method"].tolist() == ["real"]


@pytest.mark.parametrize("rows, message", [
    ([["{a}", "real"], ["{b}", "bogus"]], r"data row 2 \(1-based, header not counted\).*"
                                          r"unknown label 'bogus'"),
    ([["{a}", ""]], r"data row 1 .*empty label"),
    ([["{a}", "1"], ["nope.png", "0"]], r"data row 2 .*file not found: .*nope\.png"),
    ([["{a}", "1"], ["", "0"]], r"data row 2 .*empty path"),
    ([["{a}", "1"], ["{b}", "0"], ["{a}", "0"]], r"data row 3 .*already listed in data row 1"),
])
def test_bad_rows_name_csv_and_row(tmp_path: Path, crops: list[Path], rows, message):
    rows = [[c.format(a=crops[0], b=crops[1]) for c in r] for r in rows]
    p = _write(tmp_path / "bad.csv", ["path", "label"], rows)
    with pytest.raises(ManifestError, match=rf"bad\.csv {message}"):
        manifest.load(p)


def test_duplicate_video_ids(tmp_path: Path, crops: list[Path]):
    p = _write(tmp_path / "dup.csv", ["path", "label", "video_id"],
               [[str(crops[0]), "0", "v1"], [str(crops[1]), "1", "v2"],
                [str(crops[2]), "1", "v1"]])
    with pytest.raises(ManifestError, match=r"dup\.csv data row 3 .*duplicate video_id 'v1' "
                                            r"\(first in data row 1\)"):
        manifest.load(p)
    p = _write(tmp_path / "empty_id.csv", ["path", "label", "video_id"],
               [[str(crops[0]), "0", "v1"], [str(crops[1]), "1", " "]])
    with pytest.raises(ManifestError, match=r"data row 2 .*empty video_id"):
        manifest.load(p)


def test_missing_columns_and_files(tmp_path: Path, crops: list[Path]):
    p = _write(tmp_path / "nolabel.csv", ["path", "group"], [[str(crops[0]), "g"]])
    with pytest.raises(ManifestError, match=r"nolabel\.csv: missing required column\(s\) "
                                            r"\['label'\]; found \['path', 'group'\]"):
        manifest.load(p)
    with pytest.raises(ManifestError, match="not found"):
        manifest.load(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(ManifestError, match=r"empty\.csv: not a readable CSV"):
        manifest.load(tmp_path / "empty.csv")
    _write(tmp_path / "header_only.csv", ["path", "label"], [])
    with pytest.raises(ManifestError, match="no data rows"):
        manifest.load(tmp_path / "header_only.csv")
    missing = _write(tmp_path / "gone.csv", ["path", "label"], [["gone.png", "0"]])
    assert manifest.load(missing, check_files=False)["path"].item() == \
        str(tmp_path / "gone.png")


# -- property-based: the label column --------------------------------------------------------

_N_FILES = 8


@pytest.fixture(scope="module")
def prop_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("prop")
    files = [folder / f"f{i}.png" for i in range(_N_FILES)]
    for f in files:
        f.touch()
    return files

_valid = st.sampled_from(VALID)
_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
_invalid = _text.filter(lambda s: s.strip().lower() not in ACCEPTED)


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(_valid, min_size=1, max_size=_N_FILES))
def test_property_valid_labels_parse(prop_files: list[Path], labels: list[str]):
    p = _write(prop_files[0].parent / "ok.csv", ["path", "label"],
               [[f.name, lab] for f, lab in zip(prop_files, labels)])
    m = manifest.load(p)
    expected = [0 if lab.strip().lower() in ("0", "real") else 1 for lab in labels]
    assert m["label"].tolist() == expected
    assert m["label"].dtype == "int64"


@settings(max_examples=40, deadline=None)
@given(labels=st.lists(_valid, min_size=0, max_size=_N_FILES - 1), bad=_invalid,
       data=st.data())
def test_property_invalid_label_names_row(prop_files: list[Path], labels: list[str], bad: str,
                                          data):
    at = data.draw(st.integers(0, len(labels)), label="position")
    labels = labels[:at] + [bad] + labels[at:]
    p = _write(prop_files[0].parent / "bad.csv", ["path", "label"],
               [[f.name, lab] for f, lab in zip(prop_files, labels)])
    assert pd.read_csv(p, dtype=str, keep_default_na=False)["label"].tolist() == labels
    with pytest.raises(ManifestError, match=rf"bad\.csv data row {at + 1} "):
        manifest.load(p)


def test_a_manifest_larger_than_the_bound_is_refused_before_it_is_read(tmp_path: Path,
                                                                       crops: list[Path]):
    """Issue #33: a manifest is read whole into memory (several times its size): one over
    MAX_LIST_BYTES is refused by name, from its size, without reading it. Here a real 300 MiB
    CSV (sparse on disk: a valid header and row, then a 300 MiB last cell of NULs)."""
    import time

    big = _write(tmp_path / "huge labels.csv", ["path", "label", "note"],
                 [[str(crops[0]), "real", "x"]])
    with open(big, "r+b") as fh:
        fh.truncate(300 * 2**20)
    assert big.stat().st_size == 300 * 2**20
    t = time.perf_counter()
    with pytest.raises(ManifestError, match=r"huge labels\.csv: manifest CSV of 300 MiB, over "
                                            r"the limit of 256 MiB"):
        manifest.load(big)
    assert time.perf_counter() - t < 1.0  # refused from its size, not after reading it
