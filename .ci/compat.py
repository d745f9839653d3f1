"""Snapshots that the compatibility job (``.ci/compat``) compares across software stacks.

    python .ci/compat.py snapshot OUT.json --shared ../shared --demo RUN_DIR
    python .ci/compat.py compare PINNED.json OLDEST.json

A snapshot holds the stack's versions, the FaceNet embeddings of the five aligned fixture
crops (the reference set of ``../shared/README.md``, with their pairwise distances), the
MTCNN box of a fixture photo, and the demo run's ``metrics.json``. ``compare`` prints every
difference and exits 1 when the embeddings differ by more than 1e-4 or the reference
distances by more than 1e-3.
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
    from deepmetric.features.embedder import FaceEmbedder
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


def compare(a_path: Path, b_path: Path) -> int:
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
    ma, mb = dict(_flat(a["demo_metrics"].get("metrics", a["demo_metrics"]))), \
        dict(_flat(b["demo_metrics"].get("metrics", b["demo_metrics"])))
    keys = sorted(k for k in set(ma) & set(mb) if not k.endswith(("seconds", "_s", "time")))
    diffs = {k: abs(ma[k] - mb[k]) for k in keys if np.isfinite(ma[k]) and np.isfinite(mb[k])}
    worst = sorted(diffs.items(), key=lambda kv: -kv[1])[:8]
    print(f"demo metrics: {len(diffs)} numbers compared, {sum(v > 0 for v in diffs.values())} "
          f"differ; largest: " + ", ".join(f"{k} {v:.4f}" for k, v in worst))
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
    args = p.parse_args()
    if args.cmd == "snapshot":
        snapshot(args.out, args.shared, args.demo)
        return 0
    return compare(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
