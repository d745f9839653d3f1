"""Names in output: text a file name cannot forge, and CSV cells that cannot become formulas.

A file name is any bytes but ``/`` and NUL: it may hold a newline, a carriage return, an
escape sequence, right-to-left overrides, or bytes that are not valid UTF-8 (they reach
Python as lone surrogates). Printed raw, such a name can forge a whole result line in text
output, or stop the printer under a strict UTF-8 locale. :func:`printable` is the one
function every text printer of deepmetric passes names through (``deepmetric predict``, the
extraction report and its warnings).

A spreadsheet opening a CSV runs a cell that starts with ``=``, ``+``, ``-`` or ``@`` as a
formula; a manifest path or id can start with one. :func:`spreadsheet_safe` is the one place
that neutralises such cells before a table is written as CSV (the OWASP "CSV injection"
rule: a leading ``'``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import pandas as pd

__all__ = ["printable", "spreadsheet_cell", "spreadsheet_safe", "FORMULA_PREFIXES"]

#: What a spreadsheet reads as the start of a formula (tab and CR: OWASP's list).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

# C0 and C1 controls, DEL, backslash (so that an escape cannot be forged either), the line
# and paragraph separators, the bidirectional controls, and lone surrogates (the bytes of a
# name that are not UTF-8, decoded with surrogateescape).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\\\\\u2028\u2029\u200e\u200f\u202a-\u202e"
                     "\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def _escape(m: re.Match) -> str:
    c = m.group()
    if c in _SHORT:
        return _SHORT[c]
    code = ord(c)
    if 0xDC80 <= code <= 0xDCFF:  # an undecodable byte (surrogateescape): show the byte
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: Any) -> str:
    """``value`` as one line of text that can be printed under any locale.

    Parameters
    ----------
    value : str, bytes or path-like
        A name (bytes are decoded as the file system does, undecodable bytes kept).

    Returns
    -------
    str
        The text with every control character, line separator, bidirectional control,
        backslash and undecodable byte escaped (``\\n``, ``\\x1b``, ``\\u202e``, ``\\xff``
        for the byte 0xFF of a name that is not UTF-8). Plain names are returned as they
        are. The result encodes to UTF-8 and holds no line break.
    """
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    elif isinstance(value, os.PathLike):
        value = os.fspath(value)
        value = os.fsdecode(value) if isinstance(value, bytes) else value
    text = str(value)
    return _UNSAFE.sub(_escape, text)


def spreadsheet_cell(value: Any) -> Any:
    """A text cell that a spreadsheet cannot read as a formula: ``'`` before a leading
    ``=``, ``+``, ``-``, ``@``, tab or CR; anything else (numbers included) unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def spreadsheet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``table`` whose text cells cannot become formulas (:func:`spreadsheet_cell`).

    Parameters
    ----------
    table : pandas.DataFrame
        Any table about to be written as CSV.

    Returns
    -------
    pandas.DataFrame
        The same shape, index and dtypes; only text (object and string) columns change,
        and only in cells that start with a formula character. Number columns are kept.
    """
    out = table.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col]):
            out[col] = out[col].map(spreadsheet_cell)
    return out
