"""History validation gives the same answer on pandas 2 as on pandas 3.

pandas 2 reads text as ``object`` columns (``None`` from Parquet and SQL, NaN from CSV) and its
``astype("str")`` writes a missing value as the text ``"None"``/``"nan"``; pandas 3 reads text as its
``str`` dtype. ``future.infer_string = False`` gives pandas 2's behaviour on pandas 3 (and is pandas 2's
default), so these tests catch a pandas-2-only rejection on whichever pandas runs them: the loader once
rejected every lead without an account ("unknown account_id") and every stage change without a reason
("control characters in reason") on pandas 2 only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from leadscore.config import Settings
from leadscore.generate import generate_crm
from leadscore.history import REJECTED_DIR, load_history, text_dtype
from leadscore.tables import TABLES
from tests.test_validation import BAD_ROWS, CUTOFF, _tables, _write

T = TypeVar("T")


@contextmanager
def _pandas2_strings() -> Iterator[None]:
    """Text read as ``object`` columns and ``"str"`` meaning numpy's str, as on pandas 2."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas 3 deprecates the option (pandas 4 removes it)
        with pd.option_context("future.infer_string", False):
            yield


def _both(load: Callable[[], T]) -> tuple[T, T]:
    """``load()`` with pandas 3's text handling (pandas 2 for tests run on pandas 2), then pandas 2's."""
    native = load()
    with _pandas2_strings():
        return native, load()


def _assert_same_history(a: object, b: object) -> None:
    for name, spec in TABLES.items():
        fa, fb = a.table(name), b.table(name)  # type: ignore[attr-defined]
        for col, kind in spec.columns.items():
            if kind in ("id", "str", "json"):
                assert fb[col].dtype == text_dtype(), (name, col, fb[col].dtype)
        pd.testing.assert_frame_equal(fa, fb, check_column_type=False)  # labels alike, their Index's dtype not


@pytest.fixture(scope="module")
def small_crm(tmp_path_factory: pytest.TempPathFactory, settings: Settings) -> Path:
    out = tmp_path_factory.mktemp("crm_pd2")
    generate_crm(out, n_leads=400, months=6, seed=3, settings=settings)
    return out


def test_generated_crm_validates_with_pandas_2_strings(small_crm: Path, settings: Settings) -> None:
    """Leads without an account and stage changes without a reason are valid rows, on any pandas."""
    (native, native_report), (pd2, pd2_report) = _both(
        lambda: load_history(small_crm, settings, write_rejected=False)
    )
    # the rows that were wrongly rejected on pandas 2 exist in this CRM
    assert native.leads["account_id"].isna().any() and native.leads["account_id"].notna().any()
    assert native.stage_changes["reason"].isna().any() and native.stage_changes["reason"].notna().any()
    for report in (native_report, pd2_report):
        assert report.usable
        assert all(t.rejected_rows == 0 for t in report.tables.values()), report.to_dict()
    _assert_same_history(native, pd2)
    assert pd2_report.to_dict() == native_report.to_dict()


@pytest.mark.parametrize(("table", "change", "reason"), [(None, {}, ""), *BAD_ROWS],
                         ids=["valid", *(r[2] for r in BAD_ROWS)])
def test_csv_rows_are_judged_alike_with_pandas_2_strings(
    tmp_path: Path, settings: Settings, table: str | None, change: dict[str, str], reason: str
) -> None:
    """The same verdict, valid frames and rejected file, with blanks in optional columns everywhere."""
    tables = _tables()
    tables["stage_changes"][0]["reason"] = ""
    if table is not None:
        tables[table].append({**tables[table][0], **change})
    directory = _write(tmp_path / "crm", tables)

    def load() -> tuple[object, dict[str, object], pa.Table | None]:
        history, report = load_history(directory, settings, cutoff=CUTOFF)
        path = directory / REJECTED_DIR / f"{table}.parquet"
        return history, report.to_dict(), pq.read_table(path) if table is not None else None

    (native, native_report, native_rejected), (pd2, pd2_report, pd2_rejected) = _both(load)
    assert pd2_report == native_report
    _assert_same_history(native, pd2)
    assert pd2.leads["account_id"].isna().sum() == 1  # L2's blank account stays missing, not "nan"
    if table is None:
        assert all(t["rejected_rows"] == 0 for t in pd2_report["tables"].values())  # type: ignore[index, union-attr]
        return
    assert native_rejected is not None and pd2_rejected is not None
    [row] = pd2_rejected.to_pylist()
    assert reason in row["reason"]
    # a blank cell of a rejected row is written as missing (null), never as the text "None" or "nan"
    assert not {"None", "nan", "<NA>"} & set(row.values())
    assert pd2_rejected.to_pylist() == native_rejected.to_pylist()


def test_database_rows_are_judged_alike_with_pandas_2_strings(tmp_path: Path, settings: Settings) -> None:
    """SQL reads give ``None`` for NULL in object columns on pandas 2: still missing, not the text "None"."""
    from sqlalchemy import create_engine

    tables = _tables()
    tables["stage_changes"][0]["reason"] = None  # type: ignore[assignment]
    url = f"sqlite:///{tmp_path / 'crm.db'}"
    engine = create_engine(url)
    for name, rows in tables.items():
        pd.DataFrame(rows).replace({"": None}).to_sql(name, engine, index=False)
    engine.dispose()
    db_settings = settings.model_copy(
        update={"paths": settings.paths.model_copy(update={"reports_dir": str(tmp_path / "reports")})}
    )
    (native, native_report), (pd2, pd2_report) = _both(lambda: load_history(url, db_settings, cutoff=CUTOFF))
    assert all(t.rejected_rows == 0 for t in pd2_report.tables.values()), pd2_report.to_dict()
    assert pd2_report.to_dict() == native_report.to_dict()
    _assert_same_history(native, pd2)
