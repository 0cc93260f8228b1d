"""The errors a person can fix: bad config, bad data, a missing model, an unreachable store.

Every module raises a subclass of :class:`LeadscoreError` for a problem the user caused or can
remedy, with a message that names the file, key, column or URI at fault. The command line catches
``LeadscoreError`` alone and prints that message as one line (exit ``exit_code``, 2 by default);
anything else (``ValueError``, ``KeyError``, ...) is a bug in leadscore and keeps its traceback
(exit 1). Keeping the two apart is why no domain error derives from a built-in exception.

This module imports nothing from the package, so any module can import it without a cycle.
"""

from __future__ import annotations

from typing import ClassVar


class LeadscoreError(Exception):
    """A problem the user can fix; the message says what and where."""

    #: process exit status when the command line stops on this error
    exit_code: ClassVar[int] = 2
    #: the word printed before the message
    label: ClassVar[str] = "error"


class ConfigError(LeadscoreError):
    """A configuration problem, phrased for the person who edits the YAML or the ``--set`` overrides."""

    label = "config error"


class DataError(LeadscoreError):
    """Input data (CRM history, an export, a flat file, a dataset) is missing or cannot be used."""


class NotEnoughDataError(DataError):
    """The data is valid but too little to do the job (train a model); a distinct outcome, not a failure.

    Exit status 3 lets a scheduler tell "wait for more history" from "fix the input".
    """

    exit_code = 3
    label = "not trained"


class ModelError(LeadscoreError):
    """A model or scoring bundle is not found, not loadable, or does not match the running code."""


class StoreError(LeadscoreError):
    """The event store cannot be reached or written."""
