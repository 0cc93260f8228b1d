"""What every CRM-export importer shares: header matching, reading, and validation of the result.

Importers only *map* an export onto the five CRM tables (``leadscore.tables``); they keep every cell
as the text the export holds and write the mapped tables into the output directory. Validation is
then done by :func:`leadscore.history.load_history` — the same pandera schemas and the same
``_rejected/`` report as every other history — so an importer never has a validator of its own and a
bad date in an export ends up as a rejected row with its reason, not as a silently dropped row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leadscore.errors import DataError
from leadscore.tables import text_dtype

if TYPE_CHECKING:  # pandas is imported inside functions so ``leadscore --help`` stays fast
    import pandas as pd

    from leadscore.config import Settings
    from leadscore.history import ValidationReport

#: Side table written next to the five CRM tables: per-lead properties an export holds that have
#: no timestamp (aggregate counters, current status). Not part of the contract; features may read it.
LEAD_PROPERTIES = "lead_properties"


class ImportFailed(DataError):
    """An export cannot be imported at all (missing file, missing key column); the message says why."""


def normalize_header(label: object) -> str:
    """Lower-case and drop everything but letters and digits.

    Exports differ in case, spacing and punctuation ("Create Date", "createdate", "Country/Region",
    " Record  ID "); comparing the normalised forms lets one alias list cover all of them.
    """
    return re.sub(r"[^a-z0-9]", "", str(label).lower())


@dataclass
class ColumnMatch:
    """Which export column feeds which target field, and which export columns nobody used."""

    file: str
    mapping: dict[str, str] = field(default_factory=dict)  # target field -> export header
    unmapped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # target fields with no matching column

    def source(self, target: str) -> str | None:
        return self.mapping.get(target)


def match_columns(columns: list[str], aliases: dict[str, list[str]], file: str) -> ColumnMatch:
    """Match export headers to target fields by normalised alias, first alias wins.

    A header that matches no alias (or loses to a better alias of the same field) is reported as
    unmapped, so the user sees what the import left out instead of guessing.
    """
    by_norm: dict[str, str] = {}
    for col in columns:
        by_norm.setdefault(normalize_header(col), col)
    match = ColumnMatch(file=file)
    used: set[str] = set()
    for target, names in aliases.items():
        for name in names:
            found = by_norm.get(normalize_header(name))
            if found is not None and found not in used:
                match.mapping[target] = found
                used.add(found)
                break
        else:
            match.missing.append(target)
    match.unmapped = [c for c in columns if c not in used]
    return match


def read_export(path: Path | str, what: str) -> pd.DataFrame:
    """Read a CSV export with every cell as text (blank = missing), tolerating a UTF-8 BOM.

    Text only: parsing happens in validation, so an unparseable cell becomes a rejected row that
    still shows the original value.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ImportFailed(f"{what} export {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise ImportFailed(f"{what} export {path} is not a readable CSV file: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df


def column(df: pd.DataFrame, match: ColumnMatch, target: str) -> pd.Series:
    """The export column mapped to ``target`` as stripped text, or an all-missing column."""
    import pandas as pd

    src = match.source(target)
    if src is None:
        return pd.Series(pd.NA, index=df.index, dtype=text_dtype())
    s = df[src].astype(text_dtype()).str.strip()
    return s.where(s.str.len() > 0)


def require(match: ColumnMatch, targets: list[str], aliases: dict[str, list[str]]) -> None:
    """Stop with a message naming the missing key columns and the headers that would have matched."""
    missing = [t for t in targets if match.source(t) is None]
    if missing:
        wanted = "; ".join(f"{t} (one of: {', '.join(aliases[t])})" for t in missing)
        raise ImportFailed(f"{match.file}: required column(s) not found: {wanted}")


def email_domain(email: pd.Series) -> pd.Series:
    """The part after the last ``@``, lower-cased; missing when the value holds no ``@``."""
    text = email.astype(text_dtype()).str.strip().str.lower()
    dom = text.str.extract(r"@([^@\s]+)$", expand=False)
    return dom.astype(text_dtype())


def parse_ts_lenient(values: pd.Series) -> pd.Series:
    """UTC timestamps for *deciding* things (cut-off, ordering); unparseable values become NaT.

    The stored tables keep the original text; this is never used to write a timestamp.
    """
    import pandas as pd

    # ISO 8601 parses vectorised; only what it cannot read goes through the (per-value) mixed parser.
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    retry = parsed.isna() & values.notna()
    if retry.any():
        parsed[retry] = pd.to_datetime(values[retry], utc=True, errors="coerce", format="mixed")
    return parsed


@dataclass
class ImportReport:
    """What an import mapped, what it left out, and the validation report of the written tables."""

    source: str
    out_dir: Path
    files: list[ColumnMatch]
    notes: list[str]
    validation: ValidationReport
    counts: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "out_dir": str(self.out_dir),
            "files": [
                {"file": m.file, "mapping": m.mapping, "unmapped": m.unmapped, "missing": m.missing}
                for m in self.files
            ],
            "notes": self.notes,
            "counts": self.counts,
            "validation": self.validation.to_dict(),
        }


def default_cutoff(frames: list[pd.Series]) -> pd.Timestamp:
    """The latest parseable timestamp of the export that is not in the future.

    An export carries no "exported at" moment; its latest event is a safe lower bound of it. Using
    "now" instead would count the weeks between export and import as observed time, and leads
    whose horizon had not really elapsed would be labelled negative instead of censored.
    """
    import pandas as pd

    now = pd.Timestamp.now(tz="UTC")
    latest: pd.Timestamp | None = None
    for s in frames:
        ts = parse_ts_lenient(s)
        ts = ts[ts <= now]
        if len(ts.dropna()):
            m = ts.max()
            latest = m if latest is None or m > latest else latest
    return (latest if latest is not None else now).as_unit("us")


def parse_cutoff(value: str) -> pd.Timestamp:
    """A user-given cut-off as a UTC timestamp (naive values are taken as UTC)."""
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except ValueError as exc:
        raise ImportFailed(f"--cutoff {value!r} is not a date or timestamp") from exc
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).as_unit("us")


def write_and_validate(
    tables: dict[str, pd.DataFrame],
    out_dir: Path | str,
    settings: Settings,
    cutoff: pd.Timestamp,
    manifest: dict[str, object],
    properties: pd.DataFrame | None = None,
) -> ValidationReport:
    """Write the mapped (text) tables and validate them with :func:`leadscore.history.load_history`.

    The written files keep the export's text, so running ``leadscore validate OUT`` later gives the
    same report and the same ``_rejected/`` files; the cut-off goes into ``manifest.json``.
    """
    import json

    from leadscore.history import MANIFEST, load_history
    from leadscore.tables import TABLES

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, spec in TABLES.items():
        frame = tables.get(name)
        path = out / f"{name}.parquet"
        if frame is None:
            if path.exists():
                path.unlink()
            continue
        frame = frame[[c for c in spec.columns if c in frame.columns]].astype(text_dtype())
        frame.to_parquet(path, index=False)
    if properties is not None:
        properties.to_parquet(out / f"{LEAD_PROPERTIES}.parquet", index=False)
    (out / MANIFEST).write_text(json.dumps({"cutoff": cutoff.isoformat(), **manifest}, indent=2, default=str))
    _, report = load_history(out, settings, cutoff=cutoff)
    return report
