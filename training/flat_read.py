"""Reading a flat lead table the way users have it: whatever delimiter and encoding their tool wrote.

Why sniff: a spreadsheet in a European locale saves CSV with semicolons (and decimal commas), a
database dump may be tab-separated, Excel on Windows writes Windows-1252/Latin-1 or UTF-8 with a
byte-order mark. Asking each user to convert by hand first is the first thing that goes wrong, so
the reader decides from the file itself and says what it decided (``frame.attrs["read"]``).

* **encoding**: strict UTF-8 (a BOM is dropped), else Windows-1252 (Excel's "ANSI"; a superset of
  Latin-1's printable characters), else Latin-1, which decodes any byte;
* **delimiter**: of comma, semicolon, tab and pipe, the one that splits the first lines (parsed as
  CSV, so quoted delimiters do not count) into the same number (> 1) of fields on every line, the
  most fields winning; :class:`csv.Sniffer` decides when none is consistent;
* **decimal commas**: in a file not separated by commas, a column whose every value is a number
  written with a decimal comma (``1,5``) is rewritten with a point, so a numeric mapping reads it.

Cells stay text (blank = missing); the mapping decides the types.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd

from leadscore.training.mapping import MappingError

ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")
DELIMITERS = (",", ";", "\t", "|")
#: lines read to decide the delimiter
SNIFF_LINES = 50
_DECIMAL_COMMA = re.compile(r"^[+-]?\d*,\d+$")
_PLAIN_NUMBER = re.compile(r"^[+-]?\d+$")


def decode(raw: bytes) -> tuple[str, str]:
    """The text and the first of :data:`ENCODINGS` that decodes ``raw`` strictly."""
    for encoding in ENCODINGS:
        try:
            return raw.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise AssertionError("latin-1 decodes every byte")  # pragma: no cover


def sniff_delimiter(text: str) -> str:
    """The delimiter that splits the first lines into a constant number (> 1) of fields; most fields win."""
    head = "\n".join(text.splitlines()[:SNIFF_LINES])
    best, best_width = "", 1
    for delimiter in DELIMITERS:
        widths = {len(row) for row in csv.reader(io.StringIO(head), delimiter=delimiter) if row}
        if len(widths) == 1 and (width := widths.pop()) > best_width:
            best, best_width = delimiter, width
    if best:
        return best
    try:
        return csv.Sniffer().sniff(head, delimiters="".join(DELIMITERS)).delimiter
    except csv.Error:
        return ","  # one column, or nothing to go on: the CSV default


def _decimal_commas(frame: pd.DataFrame) -> list[str]:
    """Rewrite columns written with decimal commas (every value a number, at least one with a comma)."""
    changed = []
    for col in frame.columns:
        values = frame[col].dropna()
        if values.empty:
            continue
        comma = values.str.match(_DECIMAL_COMMA)
        if comma.any() and (comma | values.str.match(_PLAIN_NUMBER)).all():
            frame[col] = frame[col].str.replace(",", ".", regex=False)
            changed.append(str(col))
    return changed


def read_flat(path: Path | str) -> pd.DataFrame:
    """A flat table from Parquet, or from delimited text of any common delimiter and encoding.

    All cells are text (blank = missing). ``frame.attrs["read"]`` records the encoding, delimiter and
    the columns whose decimal commas were rewritten.
    """
    path = Path(path)
    if not path.is_file():
        raise MappingError(f"flat file {path} does not exist")
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    text, encoding = decode(path.read_bytes())
    delimiter = sniff_delimiter(text)
    frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False, na_values=[""])
    decimal = _decimal_commas(frame) if delimiter != "," else []
    frame.attrs["read"] = {"encoding": encoding, "delimiter": delimiter, "decimal_comma_columns": decimal}
    return frame
