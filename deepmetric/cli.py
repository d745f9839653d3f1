"""The ``deepmetric`` console script.

    deepmetric predict [MODEL] PATH [PATH ...] [--frames] [--json] [--threshold T]
                       [--trust-pickle]
    deepmetric info [MODEL]

Without ``MODEL`` both use the model packaged with deepmetric (:mod:`deepmetric.pretrained`:
fitted on a FaceForensics++ sample, weak on other sources; ``deepmetric info`` prints its
card); ``predict`` then names it on stderr. Every ``--json`` record names the model that
scored it (``"model"``: its version). ``predict`` warns on stderr when the model is a
smoke-test model (one trained on the built-in demo data).
``MODEL`` is a first argument named ``*.skops`` (or ``*.joblib``, ``*.pkl``; any name with
``--model``), e.g. the ``model.skops`` written by ``python -m experiments.run``: data, not
code (a file naming any type deepmetric does not trust is refused before anything in it is
built).
A ``model.joblib`` of earlier deepmetric versions is a pickle, which runs any code it holds: it is
refused unless ``--trust-pickle`` is given (only for files from a source you trust).
``PATH`` is a clip, an image or a folder (searched recursively for media).
``--threshold`` replaces the model's verdict threshold for this run (the file is unchanged):
the model's own (the run's ``threshold``, 0.5 by default) suits the scores of its training
data, not necessarily those of another source; measure one on labelled data from that source.

Every item gets one line: its score, or ``ERROR`` with the file and the problem (unreadable,
too large, no face, too few frames for a video-level model, ...); one bad item never stops
the batch. Lines come in the order of the files; images go through the networks
``image_batch`` (16) at a time (:meth:`deepmetric.model.DeepfakeModel.predict_many`). The
exit status is 0 when every item was scored, 1 when any failed (listed again on stderr at
the end), 2 when the model could not be loaded (missing, refused, not a model) or no media
file was found.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from deepmetric.datasets.items import media_under
from deepmetric.text import printable

__all__ = ["main", "media_files"]


def media_files(paths: Sequence[str | Path]) -> list[Path]:
    """Expand folders into their media files (sorted, symlinked folders followed); files are
    kept as given. Entries of a folder passed over (a broken link, a folder that cannot be
    listed) are named on stderr."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found, skipped = media_under(p)
            out += found
            for why in skipped:
                _say(f"deepmetric predict: passed over {why}", sys.stderr)
        else:
            out.append(p)
    return out


def _say(text: str, file=None) -> None:
    """Print one line whatever the locale: names escaped (:func:`deepmetric.text.printable`
    is applied by the callers), anything the stream cannot encode replaced."""
    stream = sys.stdout if file is None else file
    try:
        print(text, file=stream, flush=True)
    except UnicodeEncodeError:
        enc = getattr(stream, "encoding", None) or "ascii"
        print(text.encode(enc, "backslashreplace").decode(enc), file=stream, flush=True)


def _problem(path: Path, exc: Exception) -> str:
    """The message of one failed item, without a leading ``"<path>: "`` (printed beside it)."""
    from deepmetric.model import NoFaceError, TooFewFramesError
    from deepmetric.video.frames import MediaError

    msg = str(exc)
    for prefix in (f"{path}: ", f"{path.resolve()}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
            break
    if not isinstance(exc, (MediaError, NoFaceError, TooFewFramesError)):
        msg = f"{type(exc).__name__}: {msg}"  # unexpected: keep what kind of error it was
    return msg


def _load_errors() -> tuple[type[Exception], ...]:
    """What loading a model raises for a bad file or name (see
    :func:`deepmetric.pretrained.load_model`): a named refusal, exit status 2."""
    from deepmetric.modelfile import UntrustedModelError

    return FileNotFoundError, UntrustedModelError, TypeError, ValueError, KeyError


def _split_model(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """``--model``, or a first argument named like a model file, else None (packaged)."""
    from deepmetric.pretrained import is_model_path

    if args.model_opt is not None:
        return args.model_opt, list(args.inputs)
    if is_model_path(args.inputs[0]):
        return args.inputs[0], list(args.inputs[1:])
    return None, list(args.inputs)


def _predict(args: argparse.Namespace) -> int:
    import warnings

    from deepmetric.model import SmokeTestWarning
    from deepmetric.pretrained import load_model
    from deepmetric.video.frames import check_limits

    name, args.paths = _split_model(args)
    try:
        check_limits()  # a bad DEEPMETRIC_MAX_PIXELS: one settings error, not one per file
        model, described = load_model(name, trust_pickle=args.trust_pickle)
    except _load_errors() as exc:
        _say(f"deepmetric predict: {printable(exc)}", sys.stderr)
        return 2
    if not args.paths:
        _say(f"deepmetric predict: no clip, image or folder given after the model "
             f"{printable(name)}", sys.stderr)
        return 2
    if name is None:  # the user named no model: say which one scores
        _say(f"deepmetric predict: scoring with {printable(described)}", sys.stderr)
    if model.smoke_test:
        _say(f"deepmetric predict: warning: this is a smoke-test model: "
             f"{printable(model.smoke_test)}", sys.stderr)
    if args.threshold is not None:
        model.threshold = args.threshold  # this run's verdicts only; the file is unchanged
    files = media_files(args.paths)
    if not files:
        _say(f"no media file found in {printable(' '.join(map(str, args.paths)))}", sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmokeTestWarning)  # said above, once, in our words
        return _score_files(model, files, args)


def _score_files(model: Any, files: list[Path], args: argparse.Namespace) -> int:
    """Score ``files``, one line each (see the module docstring); the exit status."""
    failed: list[tuple[Path, str]] = []
    for f, (_, r) in zip(files, model.predict_many(files)):
        name = printable(f)  # a name cannot forge a line, nor stop the batch
        if isinstance(r, Exception):  # one item never stops the batch
            problem = _problem(f, r)
            failed.append((f, problem))
            rec = {"path": str(f), "error": problem, "error_type": type(r).__name__,
                   "model": model.version}
            _say(json.dumps(rec) if args.json else f"ERROR   {name}: {printable(problem)}")
            continue
        frames = r.pop("frame_scores")
        r["model"] = model.version
        if args.json:
            if args.frames:
                r["frames"] = frames.to_dict("records")
            _say(json.dumps(r))
        else:
            _say(f"{r['verdict'].upper():7s} {r['score']:.3f}  {name}  "
                 f"({r['n_faces']}/{r['n_frames']} frames with a face, {r['seconds']:.1f} s)")
            if args.frames:
                for row in frames.itertuples(index=False):
                    _say(f"    frame {int(row.frame_index):6d}  fake score "
                         f"{row.fake_score:.3f}  face p={row.face_prob:.3f}")
    if failed:
        _say(f"deepmetric predict: {len(failed)} of {len(files)} item(s) failed:", sys.stderr)
        for f, problem in failed:
            _say(f"  {printable(f)}: {printable(problem)}", sys.stderr)
        return 1
    return 0


def _info(args: argparse.Namespace) -> int:
    from deepmetric.card import card_text
    from deepmetric.pretrained import load_model

    try:
        model, described = load_model(args.model, trust_pickle=args.trust_pickle)
    except _load_errors() as exc:
        _say(f"deepmetric info: {printable(exc)}", sys.stderr)
        return 2
    # a card is text from a file: each line escaped so that it cannot forge output
    _say("\n".join(printable(line) for line in card_text(model, described).splitlines()))
    return 0


def _probability(text: str) -> float:
    """An argparse type: a float in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _version() -> str:
    from deepmetric import __version__

    return __version__


def plain_text(doc: str) -> str:
    """A reST docstring as plain text for ``--help``: roles (``:meth:`~a.b.c```) become their
    last name, literals lose their backquotes, the first line (the module's title) is
    dropped."""
    text = re.sub(r":\w+:`~?(?:[\w.]+\.)?([^`]+)`", r"\1", doc)
    text = text.replace("``", "")
    return text.split("\n", 1)[1].lstrip("\n") if "\n" in text else text


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``deepmetric`` console script."""
    parser = argparse.ArgumentParser(prog="deepmetric", description=plain_text(__doc__),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"deepmetric {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    model_file = argparse.ArgumentParser(add_help=False)  # what every subcommand loads with
    model_file.add_argument("--trust-pickle", action="store_true",
                            help="also load a joblib pickle (model.joblib of earlier "
                                 "versions); a pickle runs any code it holds: only for files "
                                 "you trust")
    p = sub.add_parser("predict", parents=[model_file],
                       help="score clips, images or folders (with the packaged model unless a "
                            "model file is given)")
    p.add_argument("inputs", nargs="+", metavar="[MODEL] PATH",
                   help="an optional model file first (*.skops, e.g. from experiments.run; "
                        "default: the packaged model), then clips, images or folders")
    p.add_argument("--model", dest="model_opt", default=None, metavar="MODEL",
                   help="the model file, whatever its name (instead of the first argument)")
    p.add_argument("--frames", action="store_true", help="also print per-frame scores")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--threshold", type=_probability, default=None,
                   help="score at or above which the verdict is FAKE (default: the model's "
                        "own, the run's threshold; set one measured on labelled data from the "
                        "source you score)")
    p.set_defaults(func=_predict)
    i = sub.add_parser("info", parents=[model_file],
                       help="print a model's card (default: the packaged model's)")
    i.add_argument("model", nargs="?", default=None, help="a model file (default: packaged)")
    i.set_defaults(func=_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
