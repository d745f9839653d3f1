"""Snapshots that the compatibility job (``.ci/compat``) compares across software stacks.

    python .ci/compat.py snapshot OUT.json --shared ../shared --demo RUN_DIR
    python .ci/compat.py compare PINNED.json OLDEST.json \
        --same-clips PINNED_RUN OLDEST_RUN --caches PINNED_CACHE OLDEST_CACHE

A snapshot holds the stack's versions, the FaceNet embeddings of the five aligned fixture
crops (the reference set of ``../shared/README.md``, with their pairwise distances), the
MTCNN box of a fixture photo, and the demo run's ``metrics.json`` (each stack's own demo
clips: OpenCV's encoder writes other bytes on each stack). ``compare`` prints every
difference and exits 1 when the embeddings differ by more than 1e-4, the reference
distances by more than 1e-3, the features of the same demo clips (the two caches) by more
than 1e-4, or the metrics of two runs on the same clips (``--same-clips``, with
``projector=none``) by more than 1e-3. The triplet head's metrics are printed, not checked:
it is trained again on each stack, and torch 2.2 and 2.14 train it differently.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from pathlib import Path

NAMES = ["angelina_jolie", "bradley_cooper", "kate_siegel", "paul_rudd", "shea_whigham"]
REFERENCE = [[0.0000, 1.4260, 1.0020, 1.4102, 1.3262],
             [1.4260, 0.0000, 1.2606, 1.1406, 1.0885],
             [1.0020, 1.2606, 0.0000, 1.3920, 1.3481],
             [1.4102, 1.1406, 1.3920, 0.0000, 1.2172],
             [1.3262, 1.0885, 1.3481, 1.2172, 0.0000]]
PACKAGES = ["torch", "torchvision", "numpy", "pillow", "scikit-learn", "scipy", "pandas",
            "opencv-python-headless", "facenet-pytorch", "pytorch-metric-learning", "deepmetric"]


def snapshot(out: Path, shared: Path, demo: Path) -> None:
    import cv2
    import numpy as np

    import deepmetric
    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.video.faces import FaceDetector

    faces = shared / "data" / "fixtures" / "faces"
    crops = np.stack([cv2.cvtColor(cv2.imread(str(faces / "test_images_aligned" / n / "1.png")),
                                   cv2.COLOR_BGR2RGB) for n in NAMES])
    emb = FaceEmbedder(device="cpu").embed(crops)["embedding"]
    dist = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    photo = faces / "multiface.jpg"
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    found = FaceDetector(device="cpu").detect([rgb])
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    data = {
        "python": sys.version.split()[0], "versions": versions,
        "deepmetric_file": deepmetric.__file__,
        "embeddings": emb.astype(float).tolist(),
        "distances": dist.astype(float).tolist(),
        "photo": photo.name, "box": np.asarray(found.boxes[0], float).tolist(),
        "face_prob": float(found.probs[0]),
        "demo_metrics": json.loads((demo / "metrics.json").read_text()),
    }
    out.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{out}: python {data['python']}, torch {versions['torch']}, numpy {versions['numpy']}")


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}{k}.")
    elif isinstance(d, (int, float)) and not isinstance(d, bool):
        yield prefix[:-1], float(d)


def _metric_diffs(a: dict, b: dict) -> dict[str, float]:
    import numpy as np

    # the metrics only: not the provenance ("data", "extraction": how many items were
    # extracted or found cached, which depends on the cache, not on the stack) nor times
    skip = ("data", "extraction", "seconds", "deepmetric_version")
    ma, mb = ({k: v for k, v in _flat({k: v for k, v in m.items() if k not in skip})}
              for m in (a, b))
    keys = sorted(k for k in set(ma) & set(mb) if not k.endswith(("seconds", "_s", "time")))
    return {k: abs(ma[k] - mb[k]) for k in keys if np.isfinite(ma[k]) and np.isfinite(mb[k])}


def _feature_diff(cache_a: Path, cache_b: Path) -> tuple[int, float]:
    import numpy as np

    fa = {p.name: p for p in cache_a.glob("features/*/*.npz")}
    fb = {p.name: p for p in cache_b.glob("features/*/*.npz")}
    worst, common = 0.0, sorted(set(fa) & set(fb))
    for name in common:
        with np.load(fa[name]) as x, np.load(fb[name]) as y:
            for k in x.files:
                if x[k].dtype.kind == "f" and x[k].shape == y[k].shape:
                    worst = max(worst, float(np.abs(x[k] - y[k]).max(initial=0.0)))
    return len(common), worst


def compare(a_path: Path, b_path: Path, same_clips: list[Path], caches: list[Path]) -> int:
    import numpy as np

    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    print(f"stacks: {a_path.name}: python {a['python']} {a['versions']}")
    print(f"        {b_path.name}: python {b['python']} {b['versions']}")
    failures = []
    emb = np.abs(np.array(a["embeddings"]) - np.array(b["embeddings"])).max()
    print(f"fixture embeddings: max |difference| {emb:.2e} (tolerance 1e-4)")
    if emb > 1e-4:
        failures.append(f"embeddings differ by {emb:.2e}")
    for name, snap in (("a", a), ("b", b)):
        ref = np.abs(np.array(snap["distances"]) - np.array(REFERENCE)).max()
        print(f"reference distances ({name}): max |difference| {ref:.2e} (tolerance 1e-3)")
        if ref > 1e-3:
            failures.append(f"{name}: reference distances differ by {ref:.2e}")
    box = np.abs(np.array(a["box"]) - np.array(b["box"])).max()
    print(f"MTCNN box on {a['photo']}: max |difference| {box:.2e} px; face probability "
          f"{a['face_prob']:.6f} vs {b['face_prob']:.6f}")
    diffs = _metric_diffs(a["demo_metrics"], b["demo_metrics"])
    worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:6]
    print(f"demo, each stack's own clips, triplet head (printed, not checked): {len(diffs)} "
          f"numbers, {sum(v > 0 for v in diffs.values())} differ; largest: "
          + ", ".join(f"{k} {v:.4f}" for k, v in worst))
    n, feat = _feature_diff(*caches)
    print(f"features of the same {n} demo clips on both stacks: max |difference| {feat:.2e} "
          "(tolerance 1e-4)")
    if n == 0 or feat > 1e-4:
        failures.append(f"features of the same clips differ by {feat:.2e} ({n} clips)")
    same = _metric_diffs(*(json.loads((d / "metrics.json").read_text()) for d in same_clips))
    worst_same = max(same.values()) if same else float("nan")
    print(f"demo, the same clips, projector=none: {len(same)} numbers, max |difference| "
          f"{worst_same:.2e} (tolerance 1e-3)")
    if not same or worst_same > 1e-3:
        failures.append(f"metrics on the same clips differ by {worst_same:.2e}")
    for msg in failures:
        print("FAIL:", msg)
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("snapshot")
    s.add_argument("out", type=Path)
    s.add_argument("--shared", type=Path, required=True)
    s.add_argument("--demo", type=Path, required=True)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--same-clips", type=Path, nargs=2, required=True)
    c.add_argument("--caches", type=Path, nargs=2, required=True)
    args = p.parse_args()
    if args.cmd == "snapshot":
        snapshot(args.out, args.shared, args.demo)
        return 0
    return compare(args.a, args.b, args.same_clips, args.caches)


if __name__ == "__main__":
    sys.exit(main())
