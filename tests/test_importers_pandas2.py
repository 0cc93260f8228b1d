"""The HubSpot and Salesforce importers give the same tables on pandas 2 as on pandas 3.

Their text columns once went through ``astype("str")``, which on pandas 2 writes a missing value as the
text ``"None"``/``"nan"``: a contact without a company became an unknown account and a blank amount an
unparseable number (7 of the 10 importer tests failed on pandas 2.3.3). Each importer test is run again
with pandas 2's text handling (see :mod:`tests.test_history_pandas2`), so this is caught on pandas 3 too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from leadscore.config import Settings
from tests import test_importers as imp
from tests.test_history_pandas2 import _pandas2_strings

CASES: list[Callable[..., Any]] = [
    imp.test_hubspot_contacts_and_deals,
    imp.test_hubspot_lower_case_internal_names,
    imp.test_hubspot_companies_export,
    imp.test_hubspot_undated_lifecycle_stage_is_not_invented,
    imp.test_salesforce_full,
    imp.test_salesforce_lower_case_headers_and_status_map,
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_importer_under_pandas2_text_handling(case: Callable[..., Any], tmp_path: Path, settings: Settings) -> None:
    with _pandas2_strings():
        case(tmp_path, settings)
