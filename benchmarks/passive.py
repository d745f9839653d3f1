"""``Extractor.run`` in a child process with ``OMP_WAIT_POLICY=PASSIVE`` (an extra row of
the extraction benchmark, ``--extras``).

OpenMP reads the policy only at start-up, so it needs its own process; the child loads the
models once and waits on stdin between rounds (``python -m benchmarks.passive``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

__all__ = ["PassiveChild"]

_TAG = "@@bench "


class PassiveChild:
    """``Extractor.run`` in a child process with ``OMP_WAIT_POLICY=PASSIVE``.

    The child builds the models and warms them up once; :meth:`run` then extracts the
    given clips (rows of ``ffpp_manifest(n_clips)``) into ``cache_dir`` and returns when
    the child reports it is done.
    """

    def __init__(self, device: str, n_clips: int):
        from benchmarks.common import REPO

        env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.passive"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, env=env)
        self._send({"device": device, "n_clips": n_clips})

    def _send(self, msg: dict) -> dict:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                out = json.loads(line[len(_TAG):])
                if "error" in out:
                    raise RuntimeError(f"extraction child: {out['error']}")
                return out
        raise RuntimeError(f"extraction child exited (rc={self.proc.wait()})")

    def run(self, paths: list[str], n_frames: int, cache_dir: str) -> dict:
        return self._send({"paths": paths, "n_frames": n_frames, "cache_dir": cache_dir})

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def _child() -> None:
    """The loop of :class:`PassiveChild` (``python -m benchmarks.passive``)."""
    from benchmarks.common import ffpp_manifest, setup_env

    setup_env()
    from deepmetric.features.backbones.facenet import FaceEmbedder
    from deepmetric.features.extract import Extractor
    from deepmetric.video.faces import FaceDetector

    def reply(msg: dict) -> None:
        print(_TAG + json.dumps(msg), flush=True)

    cfg = json.loads(sys.stdin.readline())
    manifest = ffpp_manifest(cfg["n_clips"])
    det, emb = FaceDetector(device=cfg["device"]), FaceEmbedder(device=cfg["device"])
    with tempfile.TemporaryDirectory() as tmp:  # warm-up, as in the parent
        Extractor(det, emb, n_frames=2, cache_dir=tmp, progress=False).run(manifest.iloc[:1])
    reply({"ready": os.environ.get("OMP_WAIT_POLICY")})
    for line in sys.stdin:
        job = json.loads(line)
        rows = manifest[manifest["path"].isin(job["paths"])]
        rep = Extractor(det, emb, n_frames=job["n_frames"], cache_dir=job["cache_dir"],
                        progress=False).run(rows)
        reply({"n_faces": rep.n_faces} if not rep.n_failed
              else {"error": f"extraction failed: {rep.failures}"})


if __name__ == "__main__":
    try:
        _child()
    except Exception as exc:  # report to the parent instead of dying silently
        print(_TAG + json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        raise
