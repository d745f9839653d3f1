"""Names in output (issue #33): a file name cannot forge a line of text output nor stop a
printer under a strict locale, and a CSV cell cannot become a spreadsheet formula."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from deepmetric.text import printable, spreadsheet_cell, spreadsheet_safe

FORGED = "clip.mp4\nFAKE    0.999  someone_else.mp4"


@pytest.mark.parametrize("name, shown", [
    ("plain name é 顔 (1).jpg", "plain name é 顔 (1).jpg"),      # left as it is
    (FORGED, "clip.mp4\\nFAKE    0.999  someone_else.mp4"),      # no second line
    ("a\rb\x1b[2Jc\x00d\x7fe\x85f", "a\\rb\\x1b[2Jc\\x00d\\x7fe\\x85f"),
    ("evil\u202egpj.exe", "evil\\u202egpj.exe"),                  # right-to-left override
    ("line\u2028sep", "line\\u2028sep"),
    ("back\\slash", "back\\\\slash"),                             # an escape cannot be forged
    (os.fsdecode(b"bad\xff\xfename.jpg"), "bad\\xff\\xfename.jpg"),  # not UTF-8
    (b"bytes\xffname", "bytes\\xffname"),
])
def test_printable_escapes_what_could_forge_or_break_a_line(name, shown):
    out = printable(name)
    assert out == shown
    assert "\n" not in out and "\r" not in out
    out.encode("utf-8")  # never a lone surrogate: encodes under a strict UTF-8 locale


def test_printable_output_prints_under_a_strict_utf8_locale():
    """The same names printed by a real interpreter whose stdout is strict UTF-8."""
    names = [os.fsdecode(b"bad\xffname.jpg"), FORGED]
    code = ("import os, sys; from deepmetric.text import printable; "
            "[print(printable(os.fsdecode(n))) for n in sys.argv[1:]]")
    env = {**os.environ, "LC_ALL": "C.UTF-8", "PYTHONIOENCODING": "utf-8:strict",
           "PYTHONUTF8": "0"}
    proc = subprocess.run([sys.executable, "-c", code, *map(os.fsencode, names)],
                          capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.decode().splitlines() == [printable(n) for n in names]


def test_spreadsheet_cells_cannot_become_formulas():
    table = pd.DataFrame({
        "video_id": ["=HYPERLINK(\"http://x\")", "+1+2", "-3", "@SUM(A1)", "\tx", "ok", "a=b"],
        "score": [0.1, -0.5, 0.2, 0.3, 0.4, 0.5, 0.6],  # numbers, negative ones included
        "n": [1, 2, 3, 4, 5, 6, 7]})
    safe = spreadsheet_safe(table)
    assert safe["video_id"].tolist() == ["'=HYPERLINK(\"http://x\")", "'+1+2", "'-3",
                                         "'@SUM(A1)", "'\tx", "ok", "a=b"]
    pd.testing.assert_frame_equal(safe[["score", "n"]], table[["score", "n"]])
    assert table["video_id"].iloc[0].startswith("=")  # the input is not changed
    assert spreadsheet_cell(-1.5) == -1.5 and spreadsheet_cell(None) is None
