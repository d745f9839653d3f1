"""Built-in demo set: short real and self-blended clips made from public-domain portraits.

Needs no dataset download: it is built on first use from face photographs that ship inside
installed dependencies, then cached. The default build (20 + 20 clips of 32 frames, 256 px)
takes 10-30 s on 2 CPU cores, about half of it importing torch and running MTCNN once per
base image (skipped on later builds: the landmarks are cached too).

Base images (provenance)
------------------------
``astronaut``
    ``skimage.data.astronaut()`` (scikit-image): Eileen Collins, NASA portrait, from the NASA
    Great Images database; public domain (scikit-image's docstring: "No known copyright
    restrictions, released into the public domain").
``grace_hopper``
    ``matplotlib.cbook.get_sample_data("grace_hopper.jpg")`` (matplotlib): Commodore Grace
    M. Hopper, official U.S. Navy photograph; a work of the U.S. federal government, public
    domain.
``camera``
    ``skimage.data.camera()`` (scikit-image): a man at a camera, grey-level, three-quarter
    profile; CC0 by the photographer, Lav Varshney (scikit-image's docstring). Used as a
    grey image stacked to RGB.

Other images in the installed packages were checked and not used: ``skimage.data``'s
``lfw_subset`` (25x25 LFW faces, not public domain) and ``no_time_for_that_tiny.gif``
(no stated licence), ``skimage.data.chelsea`` (a cat); no face ships with scikit-learn,
SciPy, Pillow, OpenCV, torchvision or facenet-pytorch (weights only).

Clips
-----
For real clip ``i`` (its own generator ``default_rng([seed, i])``, so clip ``i`` does not
depend on ``n_clips``): base image ``i % 3``, a random horizontal flip, per-channel colour
gains and gamma, a face-centred framing with the face box 50-65 % of the frame, and slow
motion over the clip (linear pan with a small sinusoidal sway, zoom drift, small
oscillating roll), a brightness drift and light sensor noise; frames are written with
OpenCV's ``mp4v`` (MPEG-4 Part 2) encoder, which compresses them (about 32 dB PSNR).

Fake clip ``i`` self-blends every frame of real clip ``i``
(:func:`deepmetric.augment.blend.apply_blend`)
with one draw of :class:`~deepmetric.augment.blend.BlendParams` for the whole clip (blend ratio
U(0.6, 1)); the landmarks come from facenet-pytorch's MTCNN, run once per base image and
carried through each frame's affine transform. A real clip and its fake share a group
(``"clip007"``). All clips show one of three people, so identities repeat across groups:
fine for a smoke test, not for an identity-disjoint benchmark.

Cache layout
------------
``<cache>/<key>/{real,fake}/clipNNN.mp4``, ``manifest.csv``, ``landmarks.npz`` (group →
(frames, 5, 2) float32 landmark tracks, shared by the real and the fake clip) and the
marker ``COMPLETE.json`` (the parameters, written last); ``<cache>/base-landmarks.json``
keeps the MTCNN landmarks of the base images. ``key`` encodes the build
parameters and the generator version, so changing a parameter builds a new folder. A
build goes to a temporary sibling folder that is renamed into place when complete; it holds
the key's lock (``.<key>.lock``) meanwhile, and the next build removes the folders of
builds killed midway.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from deepmetric.augment.blend import apply_blend, sample_blend_params
from deepmetric.datasets import manifest as manifest_csv
from deepmetric.storage import atomic_write, cache_root, file_lock

__all__ = ["BASES", "VERSION", "cache_dir", "load"]

BASES: tuple[str, ...] = ("astronaut", "grace_hopper", "camera")
VERSION = 1
MARKER = "COMPLETE.json"
#: Between the key and a random suffix in the name of a build's temporary folder.
BUILDING = ".building-"
_SWAP_5 = np.array([1, 0, 2, 4, 3])  # MTCNN landmark order after a horizontal flip


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Folder holding demo builds.

    Parameters
    ----------
    root : path-like, optional
        Used as is when given.

    Returns
    -------
    pathlib.Path
        ``root``, else ``$DEEPMETRIC_CACHE/demo``, else ``~/.cache/deepmetric/demo``.
    """
    if root is not None:
        return Path(root)
    return cache_root() / "demo"


def load(
    root: str | os.PathLike | None = None,
    n_clips: int = 20,
    frames: int = 32,
    size: int = 256,
    fps: int = 25,
    seed: int = 0,
) -> pd.DataFrame:
    """Return the demo manifest, building the clips on first use.

    Parameters
    ----------
    root : path-like, optional
        Cache folder (see :func:`cache_dir`).
    n_clips : int
        Number of real clips; each gets one self-blended fake, so the manifest has
        ``2 * n_clips`` rows in ``n_clips`` groups.
    frames : int
        Frames per clip.
    size : int
        Frame side in pixels (square frames; faces are 50-65 % of it).
    fps : int
        Frame rate written in the files.
    seed : int
        Seed of the whole build.

    Returns
    -------
    pandas.DataFrame
        A validated manifest (:func:`deepmetric.datasets.manifest.load` of the build's
        ``manifest.csv``): ``path``, ``label`` (0 real, 1 fake), ``video_id``
        (``"real/clip007"``), ``group`` (``"clip007"``), ``method`` (``"real"`` /
        ``"self-blended"``), ``identity`` (base image name) and ``kind``.
    """
    params = dict(n_clips=int(n_clips), frames=int(frames), size=int(size), fps=int(fps),
                  seed=int(seed), version=VERSION)
    if params["n_clips"] < 1 or params["frames"] < 1 or params["size"] < 64 \
            or params["fps"] < 1:
        raise ValueError(f"demo needs n_clips >= 1, frames >= 1, size >= 64, fps >= 1; "
                         f"got {params}")
    base = cache_dir(root)
    key = "v{version}-n{n_clips}-f{frames}-s{size}-fps{fps}-seed{seed}".format(**params)
    final = base / key
    if not _complete(final, params):
        base.mkdir(parents=True, exist_ok=True)
        with file_lock(base / f".{key}.lock"):  # one builder per key; dies with its process
            if not _complete(final, params):  # another process may have built it meanwhile
                _remove_dead_builds(base, key)
                tmp = Path(tempfile.mkdtemp(prefix=f".{key}{BUILDING}", dir=base))
                try:
                    _build(tmp, params)
                    _publish(tmp, final, params)
                finally:
                    if tmp.exists():
                        shutil.rmtree(tmp, ignore_errors=True)
    return manifest_csv.load(final / "manifest.csv")


def _remove_dead_builds(base: Path, held: str) -> int:
    """Remove the temporary folders of killed builds; returns how many.

    A build holds its key's lock (``.<key>.lock``) while its folder exists; a folder whose
    key's lock can be taken (or is ``held`` by this process) has no live builder.
    """
    removed = 0
    for folder in base.glob(f".*{BUILDING}*"):
        key = folder.name[1:].split(BUILDING, 1)[0]
        if key == held:
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
            continue
        with file_lock(base / f".{key}.lock", blocking=False) as free:
            if free:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed


# -- cache ------------------------------------------------------------------------------------

def _complete(folder: Path, params: dict[str, int]) -> bool:
    try:
        info = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return info.get("params") == params and (folder / "manifest.csv").is_file()


def _publish(tmp: Path, final: Path, params: dict[str, int]) -> None:
    """Rename a finished build into place; a concurrent complete build wins."""
    if final.exists():
        if _complete(final, params):
            return
        stale = final.with_name(f".{final.name}.stale-{os.getpid()}-{time.time_ns()}")
        try:
            final.rename(stale)
        except FileNotFoundError:
            pass
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.rename(final)
    except OSError:
        if not _complete(final, params):
            raise


# -- build ------------------------------------------------------------------------------------

def _build(out: Path, params: dict[str, int]) -> None:
    start = time.perf_counter()
    (out / "real").mkdir()
    (out / "fake").mkdir()
    bases = {name: _base(name, out.parent) for name in BASES}
    rows, tracks = [], {}
    for i in range(params["n_clips"]):
        name = BASES[i % len(BASES)]
        image, landmarks = bases[name]
        rng = np.random.default_rng([params["seed"], i])
        real, track = _real_frames(image, landmarks, rng, params["frames"], params["size"])
        blend = sample_blend_params(rng, ratio=float(rng.uniform(0.6, 1.0)))
        fake = [apply_blend(f, lm, blend)[0] for f, lm in zip(real, track)]
        group = f"clip{i:03d}"
        for label, clip in (("real", real), ("fake", fake)):
            rel = f"{label}/{group}.mp4"
            _write(out / rel, clip, params["fps"])
            rows.append(dict(path=rel, label=label, video_id=f"{label}/{group}", group=group,
                             method="real" if label == "real" else "self-blended",
                             identity=name))
        tracks[group] = np.stack(track).astype(np.float32)
    pd.DataFrame(rows).to_csv(out / "manifest.csv", index=False)
    np.savez_compressed(out / "landmarks.npz", **tracks)
    info = dict(params=params, bases=list(BASES),
                base_landmarks={n: bases[n][1].round(2).tolist() for n in BASES},
                build_seconds=round(time.perf_counter() - start, 2))
    (out / MARKER).write_text(json.dumps(info, indent=1), encoding="utf-8")


def _write(path: Path, frames: list[np.ndarray], fps: int) -> None:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write mp4v video {path}")
    try:
        for f in frames:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()


def _real_frames(image: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator,
                 n_frames: int, size: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One real clip: frames (size, size, 3) uint8 RGB and their (5, 2) landmarks."""
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        image = np.ascontiguousarray(image[:, ::-1])
        landmarks = np.column_stack([w - 1 - landmarks[:, 0], landmarks[:, 1]])[_SWAP_5]
    gains = rng.uniform(0.9, 1.1, size=3)
    gamma = rng.uniform(0.85, 1.15)
    ramp = (np.arange(256) / 255.0) ** gamma
    lut = np.clip(np.rint(255 * ramp[:, None] * gains[None, :]), 0, 255).astype(np.uint8)
    image = np.dstack([cv2.LUT(image[..., c], lut[:, c]) for c in range(3)])

    eyes, mouth = landmarks[:2].mean(0), landmarks[3:].mean(0)
    face_h = 2.3 * float(np.linalg.norm(mouth - eyes))       # ~ eyebrows to chin
    face_c = eyes + 0.4 * (mouth - eyes)
    scale0 = rng.uniform(0.5, 0.65) * size / face_h
    centre0 = size / 2 + rng.uniform(-0.08, 0.08, size=2) * size
    drift = rng.uniform(-0.1, 0.1, size=2) * size
    sway, sway_f, sway_ph = rng.uniform(0, 0.02) * size, rng.uniform(0.5, 1.5), rng.uniform(0, 6.3)
    zoom = rng.uniform(-0.12, 0.12)
    roll0, roll_a = rng.uniform(-5, 5), rng.uniform(0, 4)
    roll_f, roll_ph = rng.uniform(0.3, 1.0), rng.uniform(0, 6.3)
    light = rng.uniform(-0.06, 0.06, size=2)
    noise = rng.uniform(1.0, 3.0)

    frames, track = [], []
    for t in range(n_frames):
        a = t / max(n_frames - 1, 1)
        centre = centre0 + (a - 0.5) * drift \
            + sway * np.sin(2 * np.pi * sway_f * a + sway_ph) * np.array([1.0, 0.5])
        scale = scale0 * (1 + zoom * a)
        angle = roll0 + roll_a * np.sin(2 * np.pi * roll_f * a + roll_ph)
        m = cv2.getRotationMatrix2D((float(face_c[0]), float(face_c[1])), angle, scale)
        m[:, 2] += centre - face_c
        frame = cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT101).astype(np.float32)
        frame *= np.float32(1 + light[0] + (light[1] - light[0]) * a)
        frame += rng.standard_normal(frame.shape, dtype=np.float32) * np.float32(noise)
        frames.append(np.clip(np.rint(frame, out=frame), 0, 255).astype(np.uint8))
        track.append(landmarks @ m[:, :2].T + m[:, 2])
    return frames, track


@functools.lru_cache(maxsize=None)
def _base(name: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """Base image (H, W, 3) uint8 RGB and its MTCNN landmarks (5, 2) float64.

    The landmarks are kept in ``cache/base-landmarks.json`` keyed by the image's SHA-1, so
    later builds (other parameters) need neither torch nor MTCNN.
    """
    image = _base_image(name)
    image.setflags(write=False)
    digest = hashlib.sha1(image.tobytes()).hexdigest()
    store = cache / "base-landmarks.json"
    try:
        known = json.loads(store.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    entry = known.get(name, {})
    if entry.get("sha1") == digest and np.shape(entry.get("landmarks")) == (5, 2):
        return image, np.asarray(entry["landmarks"], dtype=np.float64)
    landmarks = _landmarks(image, name)
    known[name] = dict(sha1=digest, landmarks=landmarks.tolist())
    atomic_write(store, json.dumps(known, indent=1))
    return image, landmarks


def _base_image(name: str) -> np.ndarray:
    import skimage.data  # noqa: PLC0415 (only needed to build)

    if name == "astronaut":
        return np.ascontiguousarray(skimage.data.astronaut())
    if name == "camera":
        return np.ascontiguousarray(np.dstack([skimage.data.camera()] * 3))
    if name == "grace_hopper":
        import matplotlib.cbook  # noqa: PLC0415

        path = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError(f"cannot read matplotlib sample image {path}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise ValueError(f"unknown base image {name!r}; expected one of {BASES}")


def _landmarks(image: np.ndarray, name: str) -> np.ndarray:
    from facenet_pytorch import MTCNN  # noqa: PLC0415 (torch only when building)

    detector = _mtcnn(MTCNN)
    boxes, probs, points = detector.detect(image, landmarks=True)
    if boxes is None or len(boxes) == 0:
        raise RuntimeError(f"MTCNN found no face in base image {name!r}")
    best = int(np.argmax(np.asarray(probs).astype(float)))
    return np.asarray(points[best]).astype(float).reshape(5, 2)


@functools.lru_cache(maxsize=1)
def _mtcnn(cls: type) -> object:
    return cls(keep_all=True, device="cpu")
