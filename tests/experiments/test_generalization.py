"""The generalisation study's protocols (experiments/generalization.py) on small arrays:
copies are trained on and never tested, rows carry their copy counts, and one failing row
keeps the others. The study itself runs on cached FF++/DFDC features (docs/generalization.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import generalization as g
from experiments import study_data as sd
from experiments import study_protocols as sp


def _data(n_clips=40, frames=3, seed=0, shift=1.0, tag="ff"):
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n_clips):
        label = c % 2
        for f in range(frames):
            rows.append({"video_id": f"{tag}{c}", "group": f"{tag}g{c // 2}", "label": label,
                         "frame_index": f})
    frames_ = pd.DataFrame(rows)
    y = frames_["label"].to_numpy()
    signal = rng.normal(size=(len(y), 6)) + shift * y[:, None] * np.linspace(1, 0, 6)
    X = {b: rng.normal(size=(len(y), 4)).astype(np.float32) for b in
         ["embedding", *sd.DEEPMETRIC]}
    X["a"] = signal.astype(np.float32)
    return sd.Data(X, frames_)


def _study():
    ff = _data()
    copies = _data(n_clips=20, seed=1, shift=3.0, tag="ff")  # same clips' ids: copies
    copies.frames["video_id"] += "#deg0"
    dfdc = _data(n_clips=60, frames=1, seed=2, shift=0.5, tag="dd")
    return {"ffpp": ff, "dfdc": dfdc, "degrade": copies, "sbi": copies}


def test_copies_are_training_rows_with_their_sources_groups():
    data = _study()
    both = sd.with_copies(data["ffpp"], data["degrade"])
    assert len(both.frames) == len(data["ffpp"].frames) + len(data["degrade"].frames)
    assert set(both.frames.loc[both.frames["video_id"].str.contains("#"), "role"]) == {"train"}
    assert set(both.frames.loc[~both.frames["video_id"].str.contains("#"), "role"]) == {"both"}
    np.testing.assert_array_equal(both.X["a"][:len(data["ffpp"].frames)], data["ffpp"].X["a"])


def test_copies_change_the_fit_but_never_the_test_rows():
    """The in-dataset CV of FF++ + copies is scored on FF++'s own clips only: the copies
    (here easy, shift 3) cannot be scored, so the video AUC stays on FF++'s scale."""
    data = _study()
    plain = sp.in_and_cross(sp.logreg(), ["a"], data)
    with_deg = sp.in_and_cross(sp.logreg(), ["a"], data,
                              train=sd.with_copies(data["ffpp"], data["degrade"]))
    for r in (plain, with_deg):
        assert 0.5 < r["ffpp_video_auc"] <= 1 and 0 <= r["dfdc_image_auc"] <= 1
    assert with_deg["dfdc_image_auc"] != plain["dfdc_image_auc"]  # the copies were fitted


def test_the_new_row_groups_run_and_name_their_copies():
    data = _study()
    seen = []
    # the dev-set "best blocks" of an earlier run are not in these arrays: its rows fail
    out = g.rows(data, {"sbi", "degrade", "identity"}, on_row=seen.append,
                 done=[{"group": "blocks", "name": "gone", "blocks": ["gone"],
                        "dfdc_image_auc": 0.7, "ffpp_video_auc": 0.8,
                        "ffpp_video_auc_std": 0.0, "dim": 6, "seconds": 0}],
                 sbi_copies=3, degrade_copies=1)
    names = [r["name"] for r in out if r["group"] != "blocks"]
    assert any("(3 per real clip)" in n for n in names)
    assert any("degraded copies (1 per clip)" in n for n in names)
    assert sum(r["group"] == "identity" for r in out) == 9  # 3 block sets x k in {8, 16, 32}
    errors = [r for r in out if "error" in r]
    assert errors and all(r["blocks"] == ["gone"] for r in errors)
    assert len(errors) < len(out) - 1 - 3  # the other block sets' rows ran
    assert len(seen) == len(out) - 1  # written after every new row
    md = g.markdown(out, 30)
    assert md.count("\n| identity |") == 9 and "error: KeyError" in md


def test_paired_rows_carry_group_bootstrap_intervals():
    data = _study()
    out = g.rows(data, {"paired"}, sbi_copies=3, degrade_copies=1,
                 done=[{"group": "blocks", "name": "a", "blocks": ["a"], "dfdc_image_auc": 0.7,
                        "ffpp_video_auc": 0.8, "ffpp_video_auc_std": 0.0, "dim": 6,
                        "seconds": 0}])
    got = {r["name"]: r for r in out if r["group"] == "paired"}
    assert len(got) == 6 and not [r for r in got.values() if "error" in r]
    base = got["exp=deepmetric, frame level (the baseline itself)"]
    assert base["diff_vs_deepmetric"] == 0 and list(base["diff_ci"]) == [0.0, 0.0]
    for r in got.values():
        lo, hi = r["dfdc_image_auc_ci"]
        assert lo <= r["dfdc_image_auc"] <= hi and r["n_groups"] == 30
    assert "[" in g.markdown(out, 60).split("| paired |")[2]


def test_geometry_rows_swap_in_the_matched_crops_and_pair_them_with_the_baseline():
    data = _study()
    data["ffpp_tight"] = _data(seed=3, shift=2.0)
    data["dfdc_whole"] = _data(n_clips=60, frames=1, seed=4, shift=1.5, tag="dd")
    out = g.rows(data, {"geometry"})
    got = {r["name"]: r for r in out}
    assert len(got) == 5 and not [r for r in out if "error" in r]
    video = got["exp=deepmetric, video level (images: its frame path): FF++ at MTCNN's "
                "tight box + DFDC crops taken whole"]
    whole = got["exp=deepmetric, frame level: DFDC crops taken whole"]
    tight = got["exp=deepmetric, frame level: FF++ at MTCNN's tight box + DFDC crops taken "
                "whole"]
    base = sp.in_and_cross(sp.logreg(), sd.DEEPMETRIC, data)
    assert whole["ffpp_video_auc"] == base["ffpp_video_auc"]  # same FF++ crops
    assert whole["dfdc_image_auc"] != base["dfdc_image_auc"]  # other DFDC crops
    assert tight["ffpp_video_auc"] != base["ffpp_video_auc"]  # other FF++ crops
    assert video["dfdc_image_auc"] == tight["dfdc_image_auc"]  # images: the frame path
    assert video["ffpp_video_auc"] != tight["ffpp_video_auc"]  # clips: per-clip std
    pw = got["paired: DFDC crops taken whole"]
    assert abs(pw["diff_vs_deepmetric"] - (pw["dfdc_image_auc"] - base["dfdc_image_auc"])) \
        < 1e-9
    assert "[" in g.markdown(out, 60).split("| geometry | paired: DFDC")[1]
    # crops of other rows than the baseline's cannot be paired: that row fails, alone
    data["dfdc_whole"] = _data(n_clips=50, frames=1, seed=4, tag="dd")
    errs = [r for r in g.rows(data, {"geometry"}) if "error" in r]
    assert [r["name"] for r in errs] == ["paired: DFDC crops taken whole",
                                         "paired: FF++ at MTCNN's tight box + DFDC crops "
                                         "taken whole"]
    assert "same rows" in errs[0]["error"]


def test_geometry_rows_with_tight_self_blended_copies_train_on_them_and_test_ffpp_only():
    data = _study()
    data["ffpp_tight"] = _data(seed=3, shift=2.0)
    data["dfdc_whole"] = _data(n_clips=60, frames=1, seed=4, shift=1.5, tag="dd")
    tight_sbi = _data(n_clips=20, seed=5, shift=3.0, tag="ff")
    tight_sbi.frames["video_id"] += "#sbi0"
    data["sbi_tight"] = tight_sbi
    done = [{"group": "blocks", "name": "a", "blocks": ["a"], "dfdc_image_auc": 0.7,
             "ffpp_video_auc": 0.8, "ffpp_video_auc_std": 0.0, "dim": 6, "seconds": 0}]
    out = [r for r in g.rows(data, {"geometry"}, done=done, sbi_copies=3)
           if r["group"] == "geometry"]
    got = {r["name"]: r for r in out}
    assert len(got) == 9 and not [r for r in out if "error" in r]
    name = ("FF++ + self-blended copies (3 per real clip), all at MTCNN's tight box + DFDC "
            "crops taken whole")
    with_sbi = got[f"exp=deepmetric, frame level: {name}"]
    tight = got["exp=deepmetric, frame level: FF++ at MTCNN's tight box + DFDC crops taken "
                "whole"]
    assert with_sbi["dfdc_image_auc"] != tight["dfdc_image_auc"]  # the copies were fitted
    assert got[f"+ MobileNetV2 blocks: {name}"]["blocks"] == ["a"]  # the dev-set best blocks
    p = got[f"paired: exp=deepmetric, frame level: {name}"]
    assert abs(p["dfdc_image_auc"] - with_sbi["dfdc_image_auc"]) < 1e-9  # the same fit


def test_landmark_rows_run_alone_and_beside_the_texture_blocks_and_pair_them():
    data = {k: v for k, v in _study().items() if k in ("ffpp", "dfdc")}
    for d in data.values():
        d.X["facemesh/shape"] = d.X.pop("a")  # the informative block plays the geometry
        d.X["facemesh/flag"] = d.X["embedding"][:, :1]
    out = g.rows(data, {"landmarks"})
    got = {r["name"]: r for r in out}
    assert len(got) == 5 and not [r for r in out if "error" in r]
    assert got["facemesh/shape"]["dim"] == 6 and got["facemesh/flag"]["dim"] == 1
    both = got["exp=deepmetric's blocks + facemesh"]
    assert both["dim"] == 4 * len(sd.DEEPMETRIC) + 7
    pr = got["paired: exp=deepmetric's blocks + facemesh"]
    assert pr["dfdc_image_auc"] == pytest.approx(both["dfdc_image_auc"], abs=1e-12)  # same fit
    base = sp.in_and_cross(sp.logreg(), sd.DEEPMETRIC, data)
    assert abs(pr["diff_vs_deepmetric"] - (pr["dfdc_image_auc"] - base["dfdc_image_auc"])) \
        < 1e-9
    # without the FaceMesh blocks (mediapipe not installed) the group adds no row
    assert g.rows(_study(), {"landmarks"}) == []
