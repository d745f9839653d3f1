"""The README's and the docs' results tables, generated from the committed results files.

One source of truth: a table between ``<!-- table:NAME ... -->`` and ``<!-- /table:NAME -->``
in a Markdown file is rendered here from the results files under ``benchmarks/results/``,
never typed by hand; ``tests/experiments/test_tables.py`` regenerates every table and fails
when a file differs from its results.

    python -m experiments.tables save cross_dataset outputs/cross_dataset/<run> \\
        --command "python -m experiments.run exp=cross_dataset data=ffpp ..."
    python -m experiments.tables render            # rewrite the tables in place
    python -m experiments.tables render --check    # exit 1 naming each stale table

``save`` keeps what the tables and the model card need from a run's ``metrics.json`` (no
per-fold rows, no extraction report) with the command that measured it, as
``benchmarks/results/runs/<key>.json``. The generalisation study's rows are read from its
own results file (``generalization-dfdc-full.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deepmetric.storage import atomic_write

__all__ = ["REPO", "RUNS", "STUDY", "DOCS", "TABLES", "save_result", "load_result",
           "study_row", "card_figures", "fold_count", "value", "render_text", "stale_tables",
           "main"]

#: The repository (tables are generated in a clone, not in an installed package).
REPO = Path(__file__).resolve().parents[1]
#: Results of ``experiments.run`` runs, one JSON per run (:func:`save_result`).
RUNS = Path("benchmarks/results/runs")
#: The generalisation study's rows.
STUDY = Path("benchmarks/results/generalization-dfdc-full.json")
#: The Markdown files whose tables are generated.
DOCS = ("README.md", "docs/results.md", "docs/pretrained.md")

_BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+)[^>]*-->\n)(?P<body>.*?)"
                    r"(<!-- /table:(?P=name) -->)", re.S)
#: metrics.json keys a results file keeps (per pipeline: without the per-fold rows).
_KEEP = ("name", "pipeline", "protocol", "threshold", "test", "test_std", "pooled",
         "per_method", "cross", "cross_skipped", "cross_scored_by", "n_left_out_few_frames",
         "deepmetric_version", "seconds")


# ------------------------------------------------------------------------- results files
def save_result(run_dir: str | Path, key: str, command: str, root: str | Path = REPO) -> Path:
    """Write ``<root>/benchmarks/results/runs/<key>.json`` from a run's ``metrics.json``.

    Parameters
    ----------
    run_dir : path-like
        An ``experiments.run`` output folder.
    key : str
        The results file's name (what the tables refer to).
    command : str
        The command that ran it, as a user types it (no absolute paths).
    """
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    first = metrics["pipelines"][metrics["pipeline"]]
    out = {"key": key, "command": command, "run": Path(run_dir).name,
           **{k: metrics.get(k, first.get(k)) for k in _KEEP if k in metrics or k in first},
           "data": {k: v for k, v in metrics["data"].items() if k != "backbones"},
           "pipelines": {n: {k: v for k, v in p.items() if k != "folds"}
                         for n, p in metrics["pipelines"].items()}}
    path = Path(root) / RUNS / f"{key}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(out, indent=1) + "\n")
    return path


def load_result(key: str, root: str | Path = REPO) -> dict:
    """The results file of run ``key`` (see :func:`save_result`)."""
    return json.loads((Path(root) / RUNS / f"{key}.json").read_text())


def study_row(group: str, name: str, root: str | Path = REPO) -> dict:
    """The row of the generalisation study's results file with this group and name."""
    rows = json.loads((Path(root) / STUDY).read_text())
    hits = [r for r in rows if r.get("group") == group and r.get("name") == name]
    if len(hits) != 1:
        raise KeyError(f"{STUDY}: {len(hits)} rows with group {group!r} and name {name!r}")
    return hits[0]


def _get(d: Any, path: str) -> Any:
    for part in path.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _f(v: Any) -> str:
    try:
        return "n/a" if v is None or math.isnan(float(v)) else f"{float(v):.3f}"
    except (TypeError, ValueError):
        return str(v)


def _pm(mean: Any, std: Any) -> str:
    return _f(mean) + ("" if std is None or _f(std) == "n/a" else f" ± {_f(std)}")


# ------------------------------------------------------------------------------- tables
#: The README's headline rows: (label, source). A source is ``("run", key)`` (a results
#: file of ``experiments.run``) or ``("study", group, name)`` (a row of the study's file),
#: optionally with the ``experiments.run`` command that trains and saves that row's model.
HEADLINE: list[tuple[str, tuple]] = [
    ("the poster's recipe `exp=triplet_rf`: FaceNet embedding → semi-hard triplet head → RF",
     ("run", "triplet_rf")),
    ("`exp=deepmetric temporal.stats=[]`: texture stats + spectrum → logistic regression, "
     "frame level", ("study", "baselines", "+exp=deepmetric, frame level",
                     "python -m experiments.run exp=deepmetric temporal.stats=[] data=ffpp "
                     "eval_data=dfdc_faces")),
    ("`exp=deepmetric`: per-clip std → logistic regression, video level; images via its "
     "frame path", ("study", "baselines", "+exp=deepmetric, video level (images: its frame "
                    "path)", "python -m experiments.run exp=deepmetric data=ffpp "
                    "eval_data=dfdc_faces")),
    ("`exp=cross_dataset` (**the packaged model**): the same frame-level model, FF++ faces at "
     "MTCNN's tight box + 3 self-blended copies per real clip (chosen on the DFDC dev set)",
     ("run", "cross_dataset")),
    ("nested, frame level: blocks and C chosen by inner grouped CV inside each training fold",
     ("study", "nested", "inner-CV choice of blocks and C")),
    ("nested, video level: blocks, per-clip statistics and C chosen inside each training "
     "fold", ("study", "nested_video", "inner-CV choice of blocks, statistics and C, video "
              "level")),
]


def _headline_row(source: tuple, root: Path) -> tuple[str, str, str | None]:
    """(in-dataset cell, cross-dataset cell, command) of one headline source."""
    if source[0] == "run":
        r = load_result(source[1], root)
        return (_pm(_get(r, "test.video.auc"), _get(r, "test_std.video.auc")),
                _f(_get(r, "cross.video.auc")), r["command"])
    row = study_row(source[1], source[2], root)
    cross = _f(row.get("dfdc_image_auc"))
    return (_pm(row["ffpp_video_auc"], row["ffpp_video_auc_std"]),
            "(its frame path)" if cross == "n/a" else cross,
            source[3] if len(source) > 3 else None)


def _headline(root: Path) -> str:
    packaged = load_result("cross_dataset", root)
    n_cross, n_folds = int(value(packaged, "cross.video.n")), fold_count(packaged)
    lines = [f"| pipeline | FF++ in-dataset: video AUC, mean ± std over {n_folds} folds | "
             f"FF++ → DFDC dev: image AUC, all {n_cross:,} crops pooled |", "|---|---|---|"]
    commands, runs, study = [], [], []
    for i, (label, source) in enumerate(HEADLINE, 1):
        ffpp, cross, command = _headline_row(source, root)
        if source == ("run", "cross_dataset"):
            cross = f"**{cross}**"
        lines.append(f"| {label} | {ffpp} | {cross} |")
        (runs if source[0] == "run" else study).append(str(i))
        if command:
            commands.append(f"{command}    # row {i}" + (
                "" if source[0] == "run" else "'s model (its figures: the study's)"))
    lines += ["", "```bash", "export FFPP_ROOT=../shared/data/ffpp-c23 "
              "DFDC_FACES_ROOT=../shared/data/dfdc-faces", *commands, "```", "",
              f"Rows {', '.join(runs)}: `{RUNS}/<name>.json`, from the run's `metrics.json`; "
              f"rows {', '.join(study)}: the generalisation study, `{STUDY}`."]
    return "\n".join(lines) + "\n"


def _poster(root: Path) -> str:
    r = load_result("poster_table", root)
    pipes = r["pipelines"]
    names = list(pipes)
    rows = [("AUC", "auc"), ("accuracy (at 0.5)", "accuracy"), ("precision", "precision"),
            ("recall", "recall"), ("F1", "f1"), ("EER", "eer")]
    lines = [f"`{r['command']}` — {r['data']['name']}, {r['data']['n_scored_videos']} clips, "
             f"video level, {r['protocol']}:", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(
            _pm(_get(p, f"test.video.{key}"), _get(p, f"test_std.video.{key}"))
            for p in pipes.values()) + " |")
    lines.append("| AUC, out-of-fold scores pooled (the ROC's) | " + " | ".join(
        _f(_get(p, "pooled.video.auc")) for p in pipes.values()) + " |")
    methods = sorted({m for p in pipes.values() for m in p.get("per_method", {})})
    for m in methods:
        lines.append(f"| AUC {m} (pooled) | " + " | ".join(
            _f(_get(p, f"per_method.{m}.auc")) for p in pipes.values()) + " |")
    lines.append("| frame-level AUC, mean ± std over folds | " + " | ".join(
        _pm(_get(p, "test.frame.auc"), _get(p, "test_std.frame.auc"))
        for p in pipes.values()) + " |")
    return "\n".join(lines) + "\n"


def _demo(root: Path) -> str:
    r = load_result("demo", root)
    lines = [f"`{r['command']}` — {r['data']['name']}, {r['data']['n_scored_videos']} clips, "
             f"{r['protocol']}:", "", "| level | AUC | accuracy (at 0.5) | F1 (at 0.5) | "
             "AUC, out-of-fold scores pooled (the ROC's) |", "|---|---|---|---|---|"]
    for level in ("video", "frame"):
        lines.append(f"| {level} | " + " | ".join(
            _pm(_get(r, f"test.{level}.{k}"), _get(r, f"test_std.{level}.{k}"))
            for k in ("auc", "accuracy", "f1")) + f" | {_f(_get(r, f'pooled.{level}.auc'))} |")
    return "\n".join(lines) + "\n"


def value(d: dict, path: str) -> float:
    """The number at a dotted ``path`` of a results file (``"cross.video.auc"``)."""
    v = _get(d, path)
    if v is None:
        raise KeyError(f"no {path!r} in the results file")
    return float(v)


def fold_count(result: dict) -> str:
    """The number of CV folds a results file's protocol names (``"k"`` when none)."""
    m = re.search(r"(\d+)-fold", result["protocol"])
    return m.group(1) if m else "k"


def card_figures(result: dict) -> list[dict]:
    """The measured figures of the packaged model's card, from its results file.

    Each says its data set, level, pooling and whether it is in- or cross-dataset, with the
    command that measured it.
    """
    data, cross = result["data"]["name"], result["data"]["eval_name"]
    cmd, k = result["command"], fold_count(result)
    n_cross = int(value(result, "cross.video.n"))
    return [
        {"what": f"{data}, in-dataset: video-level AUC, mean ± std over {k} identity-grouped "
                 "folds",
         "value": value(result, "test.video.auc"), "std": value(result, "test_std.video.auc"),
         "command": cmd},
        {"what": f"{data}, in-dataset: frame-level AUC, mean ± std over {k} identity-grouped "
                 "folds",
         "value": value(result, "test.frame.auc"), "std": value(result, "test_std.frame.auc"),
         "command": cmd},
        {"what": f"{data}, in-dataset: video-level AUC of the out-of-fold scores pooled over "
                 f"the {k} folds", "value": value(result, "pooled.video.auc"), "std": None,
         "command": cmd},
        {"what": f"{cross} ({n_cross:,} DFDC dev face crops, one per video), cross-dataset "
                 f"(fitted on all of {data}): image-level AUC, all crops pooled",
         "value": value(result, "cross.video.auc"), "std": None, "command": cmd},
        {"what": f"{cross}, cross-dataset: accuracy at the threshold "
                 f"{result['threshold']:g}, all crops pooled",
         "value": value(result, "cross.video.accuracy"), "std": None, "command": cmd},
    ]


def _card_figures(root: Path) -> str:
    """The packaged model's figures, as its card holds them (its results file)."""
    r = load_result("cross_dataset", root)
    lines = ["| figure | value | command |", "|---|---|---|"]
    for f in card_figures(r):
        lines.append(f"| {f['what']} | {_pm(f['value'], f.get('std'))} | `{f['command']}` |")
    return "\n".join(lines) + "\n"


def _card_text(root: Path) -> str:
    """The packaged model's card as ``deepmetric info`` prints it (read from the model file
    in ``deepmetric/models/``, not from the results)."""
    from deepmetric.card import card_text
    from deepmetric.model import DeepfakeModel
    from deepmetric.pretrained import DEFAULT, PACKAGED

    model = DeepfakeModel.load(Path(root) / "deepmetric" / PACKAGED[DEFAULT])
    return "```text\n" + card_text(model) + "```\n"


#: Table name → renderer(repository root) → the Markdown between the markers.
TABLES: dict[str, Callable[[Path], str]] = {
    "headline": _headline, "poster": _poster, "demo": _demo, "card": _card_figures,
    "cardtext": _card_text}


def render_text(text: str, root: str | Path = REPO) -> str:
    """``text`` with every generated table rendered again from the results files.

    Raises
    ------
    KeyError
        A marker names a table that :data:`TABLES` does not have.
    """
    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"unknown generated table {name!r} (known: {sorted(TABLES)})")
        return m.group(1) + TABLES[name](Path(root)) + m.group(4)
    return _BLOCK.sub(one, text)


def stale_tables(root: str | Path = REPO, files: Sequence[str] = DOCS) -> list[str]:
    """``"<file>: <table>"`` for every generated table that differs from its results."""
    out = []
    for rel in files:
        text = (Path(root) / rel).read_text()
        new = render_text(text, root)
        if new != text:
            old = {m.group("name"): m.group(0) for m in _BLOCK.finditer(text)}
            out += [f"{rel}: {m.group('name')}" for m in _BLOCK.finditer(new)
                    if old.get(m.group("name")) != m.group(0)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.tables",
                                     description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    s = sub.add_parser("save", help="a run's metrics.json → benchmarks/results/runs/KEY.json")
    s.add_argument("key")
    s.add_argument("run_dir")
    s.add_argument("--command", required=True, help="the command that ran it")
    r = sub.add_parser("render", help="regenerate the tables in " + ", ".join(DOCS))
    r.add_argument("--check", action="store_true", help="only check; exit 1 when stale")
    args = parser.parse_args(argv)
    if args.what == "save":
        print(save_result(args.run_dir, args.key, args.command))
        return 0
    if args.check:
        stale = stale_tables()
        for s in stale:
            print(f"stale: {s} (python -m experiments.tables render)", file=sys.stderr)
        return 1 if stale else 0
    for rel in DOCS:
        path = REPO / rel
        text = path.read_text()
        new = render_text(text)
        if new != text:
            atomic_write(path, new)
            print(f"updated {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
