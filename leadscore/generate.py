"""A generated B2B CRM history whose ground truth is known, streamed to Parquet block by block.

Why generate at all: real CRM exports never tell you how good a score *could* be. Here every lead has
a latent fit (a function of its firmographics and job title plus a little noise) and a latent
interest state that moves day by day through a Markov chain (cold → aware → engaged → buying).
Activities are emitted from the state (buying leads view the pricing page and ask for demos);
the lead becomes SQL through a daily hazard driven by state and fit. Because the process is a
Markov chain, the true probability of becoming SQL within 30 days (and an opportunity within 90)
given the latent state on a day is computed exactly, and written beside the tables
(``ground_truth``): the ceiling any model can be compared with.

On top of that latent process the generator plays the company's real history: a points rule sets
MQLs, sales accepts SQLs (passing them through MQL when the rule missed them), disqualifies some
MQLs, recycles stale MQLs back to marketing, and turns SQLs into opportunities, won or lost.
Funnel rates are calibrated to ``settings.generator``.

Scale: the history is drawn in blocks of :data:`~leadscore.generate_block.BLOCK_LEADS` leads with
their accounts (:mod:`leadscore.generate_block`), each from its own random stream, and each block is
appended to Parquet before the next is drawn, so memory is bounded by one block whatever the size.
Two layouts, the same rows in the same order:

* **files** (the default up to :data:`AUTO_PART_LEADS` leads): ``<out>/<table>.parquet``;
* **partitioned** (``partitions=N``, and the default above that size: one part per
  :data:`AUTO_PART_LEADS` leads): ``<out>/<table>/part-00000.parquet ...``, part *k* of every table
  holding the same consecutive blocks, i.e. the same accounts with all their leads' rows (a lead without
  an account sits in the block its ``lead_id`` falls in: ids are numbered block by block), and
  ``manifest.json`` says ``"partitioning": {"by": "account", "parts": N, ...}``.

Concatenating the parts in order gives the files layout's tables exactly, for any N.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from leadscore.config import Settings
from leadscore.generate_block import BLOCK_LEADS, Calibration, Counters, World, simulate_block
from leadscore.generate_sla import sla_truth
from leadscore.generate_truth import TRUTH_SCHEMA
from leadscore.scenarios import RegimeShift

#: above this many leads the default layout is partitioned, one part per this many leads (~10 M activities)
AUTO_PART_LEADS = 100_000
#: rows per Parquet row group (bounded, so readers can stream a part too)
ROW_GROUP_ROWS = 1 << 20
_TS = pa.timestamp("us", tz="UTC")
_DICT = pa.dictionary(pa.int32(), pa.string())
#: the written schema of every table: fixed, so every block and part agrees (a block whose ``reason``
#: is all empty must not write a null-typed column)
SCHEMAS: dict[str, pa.Schema] = {
    "accounts": pa.schema([("account_id", pa.string()), ("name", pa.string()), ("domain", pa.string()),
                           ("industry", pa.string()), ("employees", pa.int64()), ("annual_revenue", pa.float64()),
                           ("country", pa.string()), ("created_at", _TS)]),
    "leads": pa.schema([("lead_id", pa.string()), ("account_id", pa.string()), ("email_domain", pa.string()),
                        ("job_title", pa.string()), ("seniority", pa.string()), ("department", pa.string()),
                        ("country", pa.string()), ("source", pa.string()), ("created_at", _TS), ("owner", pa.string())]),
    "activities": pa.schema([("activity_id", pa.string()), ("lead_id", _DICT), ("occurred_at", _TS), ("type", _DICT),
                             ("properties", pa.string()), ("actor", _DICT)]),
    "stage_changes": pa.schema([("lead_id", pa.string()), ("stage", pa.string()), ("changed_at", _TS),
                                ("set_by", pa.string()), ("reason", pa.string())]),
    "opportunities": pa.schema([("opportunity_id", pa.string()), ("lead_id", pa.string()), ("account_id", pa.string()),
                                ("created_at", _TS), ("stage", pa.string()), ("amount", pa.float64()),
                                ("closed_at", _TS), ("is_won", pa.bool_())]),
    "ground_truth": TRUTH_SCHEMA,
}


def part_of_blocks(n_blocks: int, parts: int) -> list[int]:
    """The part of each block: ``parts`` groups of consecutive blocks, as even as they can be."""
    return [b * parts // n_blocks for b in range(n_blocks)]


class TableWriter:
    """One Parquet writer per table for the part being written; blocks arrive in part order."""

    def __init__(self, out: Path, parts: int | None) -> None:
        self.out, self.parts = out, parts
        self.writers: dict[str, pq.ParquetWriter] = {}
        #: each table's pandas metadata (from its first block), so readers get today's dtypes back
        self.metadata: dict[str, dict[bytes, bytes] | None] = {}
        self.part = 0
        for name in SCHEMAS:  # a previous history in either layout must not mix with this one
            shutil.rmtree(out / name, ignore_errors=True)
            (out / f"{name}.parquet").unlink(missing_ok=True)
            if parts is not None:
                (out / name).mkdir(parents=True)

    def _path(self, name: str, part: int) -> Path:
        return self.out / f"{name}.parquet" if self.parts is None else self.out / name / f"part-{part:05d}.parquet"

    def _finish_part(self) -> None:
        for name, schema in SCHEMAS.items():
            writer = self.writers.pop(name, None) or pq.ParquetWriter(
                self._path(name, self.part), schema.with_metadata(self.metadata.get(name)))
            writer.close()  # a part with no row of a table still gets its (empty) file

    def write(self, part: int, tables: dict[str, pd.DataFrame | pa.Table]) -> None:
        while self.part < part:
            self._finish_part()
            self.part += 1
        for name, frame in tables.items():
            schema = SCHEMAS[name]
            table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, schema=schema,
                                                                                  preserve_index=False)
            self.metadata.setdefault(name, table.schema.metadata)
            if name not in self.writers:
                self.writers[name] = pq.ParquetWriter(self._path(name, part),
                                                      schema.with_metadata(self.metadata[name]))
            self.writers[name].write_table(table, row_group_size=ROW_GROUP_ROWS)

    def close(self) -> None:
        last = 0 if self.parts is None else self.parts - 1
        while True:
            self._finish_part()
            if self.part >= last:
                break
            self.part += 1


def generate_crm(
    out_dir: Path | str,
    n_leads: int,
    months: int,
    seed: int,
    settings: Settings,
    end: str = "2026-11-01",
    scenario: RegimeShift | None = None,
    partitions: int | None = None,
    block_leads: int = BLOCK_LEADS,
) -> dict[str, object]:
    """Write the five CRM tables, ``ground_truth`` and ``manifest.json`` to ``out_dir``.

    Deterministic per ``seed``, whatever ``partitions`` (``None``: files up to :data:`AUTO_PART_LEADS`
    leads, else one part per that many; ``N``: the partitioned layout with ``N`` parts). ``block_leads``
    changes the history (tests use small blocks to have many). Returns a summary (counts, realised funnel
    rates, seconds). ``scenario`` changes the world from a shift day on (:mod:`leadscore.scenarios`).
    """
    started = time.perf_counter()
    g = settings.generator
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    end_ts = pd.Timestamp(end, tz="UTC").normalize()
    start_ts = end_ts - pd.DateOffset(months=months)
    n_days = int((end_ts - start_ts).days)
    n = int(n_leads)
    n_blocks = max(1, math.ceil(n / block_leads))
    if partitions is None and n > AUTO_PART_LEADS:
        partitions = math.ceil(n / AUTO_PART_LEADS)
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    max_accounts = 2 * n_blocks * max(1, round(g.accounts_per_lead * block_leads))  # scenarios add accounts
    world = World(
        settings=settings, seed=seed, start_ts=start_ts, n_days=n_days,
        shift_day=scenario.shift_day(start_ts, end_ts, months) if scenario else n_days, scenario=scenario,
        lead_width=max(7, len(str(n - 1))), account_width=max(6, len(str(max_accounts))),
        opportunity_width=max(6, len(str(n))),
    )
    writer = TableWriter(out, partitions)
    parts = part_of_blocks(n_blocks, partitions or 1)
    counters, calibration = Counters(), None
    totals: dict[str, int] = {}
    handovers: list[dict[str, np.ndarray]] = []
    for b in range(n_blocks):
        lead0 = b * block_leads
        block = simulate_block(world, b, lead0, min(block_leads, n - lead0), counters, calibration)
        calibration = block.calibration
        writer.write(parts[b], {**block.tables, "ground_truth": block.truth})
        for key, value in block.stats.items():
            totals[key] = totals.get(key, 0) + value
        handovers.append(block.handovers)
        del block
    writer.close()
    assert isinstance(calibration, Calibration)

    n_sql = totals["sql_leads"]
    summary: dict[str, object] = {
        **{k: totals[k] for k in ("leads", "accounts", "activities", "stage_changes", "opportunities", "won")},
        "lead_to_mql": totals["mql_leads"] / n,
        "mql_to_sql": n_sql / max(totals["mql_leads"], 1),
        "sql_to_opportunity": totals["opportunities"] / max(n_sql, 1),
        "opportunity_to_won": totals["won"] / max(totals["closed"], 1),
        "rule_mql_threshold": calibration.mql_threshold,
        "sales_touches": totals["sales_touches"],
        "ground_truth_rows": totals["ground_truth_rows"],
        "seconds": round(time.perf_counter() - started, 2),
    }
    pooled = {k: np.concatenate([h[k] for h in handovers]) for k in handovers[0]}
    manifest: dict[str, object] = {
        "cutoff": end_ts.isoformat(),
        "start": start_ts.isoformat(),
        "generator": {"seed": seed, "leads": n, "months": months, "block_leads": block_leads, **g.model_dump()},
        "realised": {k: v for k, v in summary.items() if k != "seconds"},
        "calibration": dataclasses.asdict(calibration),
        "sla": sla_truth(pooled, settings.sla.ops.delay_bands_hours, settings.sla.ops.acceptance_days,
                         n_days * 86_400),
    }
    if partitions is not None:
        manifest["partitioning"] = {
            "by": "account", "parts": partitions, "blocks": n_blocks, "block_leads": block_leads,
            # the blocks (and so the lead-number ranges) of each part: [first, end)
            "part_blocks": [[parts.index(k), len(parts) - parts[::-1].index(k)] if k in parts else [0, 0]
                            for k in range(partitions)],
        }
        summary["partitions"] = partitions
    if scenario is not None:
        shifted_from = (start_ts + pd.Timedelta(days=world.shift_day)).isoformat()
        manifest["scenario"] = {**dataclasses.asdict(scenario), "shifted_from": shifted_from}
        summary["scenario"], summary["shifted_from"] = scenario.name, shifted_from
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=float))
    return summary
