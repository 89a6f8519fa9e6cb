"""Errors a user can cause, reported as one line and exit code 2 by the CLI."""

from __future__ import annotations

__all__ = ["NotAvailableError", "UserError"]


class UserError(Exception):
    """An error caused by the user's input (file, config, data), not by tfuq.

    The CLI prints ``str(error)`` as a single line on stderr and exits with
    code 2; the traceback is shown only with ``--debug``. The message names
    what is wrong (file, section/key, value) and what was expected.
    """


class NotAvailableError(UserError):
    """A command or stage whose implementation has not landed yet."""
