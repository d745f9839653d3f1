"""The ``deepmetric`` console script.

    deepmetric predict MODEL PATH [PATH ...] [--frames] [--json]

``MODEL`` is a ``model.joblib`` written by ``python -m experiments.run`` (a pickle: only load
files you trust). ``PATH`` is a clip, an image or a folder (searched recursively for media).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from deepmetric.datasets.items import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

__all__ = ["main", "media_files"]


def media_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand folders into their media files (sorted); files are kept as given."""
    out: list[Path] = []
    exts = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        else:
            out.append(p)
    return out


def _predict(args: argparse.Namespace) -> int:
    from deepmetric.video.frames import MediaError
    from deepmetric.model import DeepfakeModel, NoFaceError

    model = DeepfakeModel.load(args.model)
    files = media_files(args.paths)
    if not files:
        print(f"no media file found in {args.paths}", file=sys.stderr)
        return 2
    status = 0
    for f in files:
        try:
            r = model.predict(f)
        except (MediaError, NoFaceError) as exc:
            status = 1
            rec = {"path": str(f), "error": str(exc)}
            print(json.dumps(rec) if args.json else f"ERROR   {f}: {exc}")
            continue
        frames = r.pop("frame_scores")
        if args.json:
            if args.frames:
                r["frames"] = frames.to_dict("records")
            print(json.dumps(r))
        else:
            print(f"{r['verdict'].upper():7s} {r['score']:.3f}  {f}  "
                  f"({r['n_faces']}/{r['n_frames']} frames with a face, {r['seconds']:.1f} s)")
            if args.frames:
                for row in frames.itertuples(index=False):
                    print(f"    frame {int(row.frame_index):6d}  score {row.score:.3f}  "
                          f"face p={row.prob:.3f}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepmetric`` console script."""
    parser = argparse.ArgumentParser(prog="deepmetric", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("predict", help="score clips, images or folders with a fitted model")
    p.add_argument("model", help="model.joblib from experiments.run (trusted files only)")
    p.add_argument("paths", nargs="+", help="clips, images or folders")
    p.add_argument("--frames", action="store_true", help="also print per-frame scores")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=_predict)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
