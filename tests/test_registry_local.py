"""A bundle directory's version names its content, so the audit table can always hold it."""

from __future__ import annotations

import shutil
from pathlib import Path

from leadscore.tables import SERVICE_TABLES
from leadscore.training.registry import load_bundle
from tests.conftest import SmallModel


def test_a_local_bundle_version_is_a_content_digest_that_fits_the_audit_column(
        small_model: SmallModel, tmp_path: Path) -> None:
    """A deep directory used to give ``local:<path>``, longer than ``scores.model_version`` allows
    (PostgreSQL refused the insert; SQLite stored it silently). The same bundle anywhere is one version."""
    deep = tmp_path.joinpath(*(["a-rather-long-directory-name"] * 6), "bundle")
    shutil.copytree(small_model.bundle_dir, deep)
    here = load_bundle(str(small_model.bundle_dir), small_model.settings).version
    there = load_bundle(str(deep), small_model.settings).version
    limit = next(c.max_length for c in SERVICE_TABLES["scores"].fields if c.name == "model_version")
    assert here == there and here is not None and here.startswith("local:")
    assert limit is not None and len(here) <= limit
    (deep / "extra.txt").write_text("a changed bundle is another version")
    assert load_bundle(str(deep), small_model.settings).version != here
