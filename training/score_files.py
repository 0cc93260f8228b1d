"""The score file of ``leadscore score`` and ``leadscore scores export``: Parquet or CSV (chosen by suffix),
appended chunk by chunk so a run never holds all its rows, and read back with its types."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from leadscore.training.batch_score import COLUMNS, BatchScoreError


class ScoreWriter:
    """Appends score chunks to one Parquet or CSV file (chosen by suffix) without holding them all."""

    def __init__(self, path: Path, columns: Sequence[str] = COLUMNS) -> None:
        self.columns = list(columns)
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".csv"):
            raise BatchScoreError(f"--out {path}: write a .parquet or .csv file")
        self.path, self.kind = path, suffix[1:]
        self._writer: Any = None
        self.rows = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()

    def write(self, frame: pd.DataFrame) -> None:
        if self.kind == "csv":
            frame.to_csv(self.path, mode="a", header=not self.path.exists(), index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(frame, preserve_index=False, schema=self._schema(frame))
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.path, table.schema)
            self._writer.write_table(table)
        self.rows += len(frame)

    def _schema(self, frame: pd.DataFrame) -> Any:
        """A fixed schema, so an empty chunk or an all-None column does not change the file's types."""
        import pyarrow as pa

        ts = pa.timestamp("us", tz="UTC")
        types = {"scored_at": ts, "computed_at": ts, "stage_since": ts, "p_sql": pa.float64(),
                 "p_opportunity": pa.float64(), "days_in_stage": pa.float64()}
        return pa.schema([(c, types.get(c, pa.string())) for c in frame.columns])

    def close(self) -> None:
        """Finish the file; with no chunk written, an empty file with the header (zero open leads is an answer)."""
        if self._writer is not None:
            self._writer.close()
        elif not self.path.exists():
            empty = pd.DataFrame(columns=self.columns)
            if self.kind == "csv":
                empty.to_csv(self.path, index=False)
            else:
                import pyarrow as pa
                import pyarrow.parquet as pq

                pq.write_table(pa.Table.from_pandas(empty, preserve_index=False, schema=self._schema(empty)), self.path)


def read_scores(path: Path) -> pd.DataFrame:
    """A file written by :class:`ScoreWriter`, with its types (CSV: times and ``None`` stages restored)."""
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    frame = pd.read_csv(path, dtype={"lead_id": str, "stage": str, "previous_stage": object, "model_version": str,
                                     "trend": str, "changes": str, "band": object})
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True)
    frame["previous_stage"] = frame["previous_stage"].astype(object).where(frame["previous_stage"].notna(), None)
    if "band" in frame:
        frame["band"] = frame["band"].astype(object).where(frame["band"].notna(), None)
    return frame


__all__ = ["ScoreWriter", "read_scores"]
