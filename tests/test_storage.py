"""storage's atomic writer on a filling disk (issue #33), simulated for real: a child
process whose files may not grow past a few KiB (RLIMIT_FSIZE; root is bound by it too, and
Python ignores SIGXFSZ, so a write past it fails with EFBIG as on a full disk)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

resource = pytest.importorskip("resource")  # POSIX

LIMIT = 4096  # bytes a file of the child may hold


def _in_child(code: str, cwd: Path) -> subprocess.CompletedProcess:
    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd,
                          preexec_fn=limit, capture_output=True, text=True, timeout=120)


def test_a_write_that_fills_the_disk_names_the_file_and_leaves_the_old_one(tmp_path):
    (tmp_path / "metrics.json").write_text('{"old": 1}')
    proc = _in_child("""
        import json
        from deepmetric.storage import atomic_write
        atomic_write("small.json", json.dumps({"a": 1}))
        try:
            atomic_write("metrics.json", json.dumps({"x": "y" * 100_000}))
        except OSError as exc:
            print(json.dumps({"errno": exc.errno, "message": str(exc)}))
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    err = json.loads(proc.stdout)
    assert err["errno"] == 27 and "metrics.json: not written (File too large)" in err["message"]
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"old": 1}  # not truncated
    assert json.loads((tmp_path / "small.json").read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["metrics.json", "small.json"]  # no temp file left
