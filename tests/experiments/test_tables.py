"""Issue #32: the README's and the docs' results tables are the results files, rendered.

Every table between ``<!-- table:NAME -->`` markers is rendered again from the committed
results files (``benchmarks/results/``) and compared with the file: a number typed by hand,
or a results file updated without ``python -m experiments.tables render``, fails here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.tables import DOCS, REPO, RUNS, STUDY, load_result, render_text, stale_tables


def test_every_generated_table_matches_its_results_files():
    assert stale_tables() == [], "run: python -m experiments.tables render"


def test_the_readme_and_the_docs_have_the_tables():
    text = {rel: (REPO / rel).read_text() for rel in DOCS}
    assert "<!-- table:headline" in text["README.md"]
    assert "<!-- table:poster" in text["docs/results.md"]
    assert "<!-- table:demo" in text["docs/results.md"]
    assert "<!-- table:card " in text["docs/pretrained.md"]
    assert "<!-- table:cardtext" in text["docs/pretrained.md"]


def _copy(tmp_path: Path) -> Path:
    from deepmetric.pretrained import PACKAGED

    for rel in [*DOCS, str(STUDY), *(f"deepmetric/{p}" for p in PACKAGED.values())]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    shutil.copytree(REPO / RUNS, tmp_path / RUNS)
    return tmp_path


def test_a_changed_result_makes_its_tables_stale(tmp_path):
    root = _copy(tmp_path)
    assert stale_tables(root) == []
    path = root / RUNS / "cross_dataset.json"
    result = json.loads(path.read_text())
    old = f"{result['cross']['video']['auc']:.3f}"
    result["cross"]["video"]["auc"] = 0.123456
    path.write_text(json.dumps(result))
    assert stale_tables(root) == ["README.md: headline", "docs/pretrained.md: card"]
    readme = (root / "README.md").read_text()
    new = render_text(readme, root)
    assert "**0.123**" in new and f"**{old}**" in readme and f"**{old}**" not in new


def test_headline_rows_say_what_they_are():
    """Data set, level and pooling in the headers, the figures of the results files."""
    readme = (REPO / "README.md").read_text()
    table = readme.split("<!-- table:headline", 1)[1].split("<!-- /table:headline -->")[0]
    header = table.splitlines()[1]
    assert "FF++ in-dataset: video AUC, mean ± std over 5 folds" in header
    assert "FF++ → DFDC dev: image AUC, all 8,329 crops pooled" in header
    cross = load_result("cross_dataset")
    row = next(ln for ln in table.splitlines() if ln.startswith("| `exp=cross_dataset`"))
    assert (f"| {cross['test']['video']['auc']:.3f} ± {cross['test_std']['video']['auc']:.3f}"
            f" | **{cross['cross']['video']['auc']:.3f}** |") in row
    assert cross["command"] in table


def test_an_unknown_table_is_named():
    with pytest.raises(KeyError, match="unknown generated table 'nope'"):
        render_text("<!-- table:nope -->\nx\n<!-- /table:nope -->\n")
